"""Every source kind turns into products with the right ids, categories, images and attributes."""

from __future__ import annotations

import json

import pytest

from lookalike.errors import SourceError
from lookalike.sources import FashionMNISTSource, FolderSource, TableSource, open_source


def test_folder_source_uses_stem_and_subfolder(product_photos):
    src = open_source(product_photos)
    assert isinstance(src, FolderSource)
    products = {p.product_id: p for p in src}
    assert len(products) == 40 == len(src)
    p = products["sku000"]
    assert p.category == "Ankle boot"  # Fashion-MNIST test item 0 is an ankle boot
    assert p.images[0].endswith("sku000.jpg")


def test_csv_source_groups_rows_and_keeps_extra_columns_as_attributes(tmp_path, product_photos):
    csv_path = tmp_path / "catalog.csv"
    files = sorted(product_photos.rglob("*.*"))
    rel = [f.relative_to(tmp_path) for f in files]
    csv_path.write_text(
        "product_id,image,title,category,colour,price\n"
        f"A,{rel[0]},Boot A,Shoes,black,10\n"
        f"A,{rel[1]},,,,\n"
        f"B,{files[2]},Bag B,Bags,red,\n"
        f",{rel[3]},no id,,,\n"
    )
    src = open_source(csv_path)
    assert isinstance(src, TableSource)
    products = {p.product_id: p for p in src}
    assert products["A"].images == [str(tmp_path / rel[0]), str(tmp_path / rel[1])]
    assert products["A"].attributes == {"colour": "black", "price": "10"}
    assert products["A"].title == "Boot A" and products["A"].category == "Shoes"
    assert products["B"].attributes == {"colour": "red"}
    bad = [p for p in src if p.problems]
    assert len(bad) == 1 and "missing product_id" in bad[0].problems[0]


def test_jsonl_source(tmp_path, product_photos):
    files = sorted(product_photos.rglob("*.*"))
    path = tmp_path / "catalog.jsonl"
    rows = [
        {"product_id": "x1", "image": str(files[0]), "title": "X1", "category": "C", "size": 42},
        {"product_id": "x1", "image": str(files[1])},
        {"product_id": "x2", "image": str(files[2]), "tags": ["a", "b"]},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    products = {p.product_id: p for p in open_source(path)}
    assert len(products["x1"].images) == 2 and products["x1"].attributes == {"size": 42}
    assert products["x2"].attributes == {"tags": ["a", "b"]}
    assert any("invalid JSON" in pr for p in products.values() for pr in p.problems)


def test_fashion_mnist_source_ids_categories_split():
    src = open_source("fashion-mnist:test", limit=3)
    items = list(src)
    assert [p.product_id for p in items] == ["fmnist-test-0", "fmnist-test-1", "fmnist-test-2"]
    assert items[0].category == "Ankle boot" and items[0].attributes == {"split": "test"}
    assert items[0].images[0].size == (28, 28)
    assert len(FashionMNISTSource(("train", "test"))) == 70_000


def test_fashion_mnist_dir_env_override(tmp_path, monkeypatch):
    import shutil

    from lookalike.datasets import fashion_mnist

    for name in fashion_mnist.FILES["test"]:
        shutil.copy(fashion_mnist.DEBIAN_DIR / name, tmp_path / name)
    monkeypatch.setenv("LOOKALIKE_FASHION_MNIST_DIR", str(tmp_path))
    assert fashion_mnist._find(fashion_mnist.FILES["test"][0]) == tmp_path / fashion_mnist.FILES["test"][0]


@pytest.mark.parametrize("spec", ["/no/such/folder", "notes.txt"])
def test_bad_source_is_a_clear_error(tmp_path, spec):
    if spec == "notes.txt":
        (tmp_path / spec).write_text("hello")
        spec = str(tmp_path / spec)
    with pytest.raises(SourceError, match="source"):
        open_source(spec)


def test_csv_without_required_columns(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("sku,picture\n1,a.jpg\n")
    with pytest.raises(SourceError, match="missing column"):
        list(open_source(p))
