"""Every source kind turns into products with the right ids, categories, images and attributes."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_folder_source_reads_jfif_and_jpe_and_lists_the_files_it_skips(tmp_path, product_photos):
    import shutil

    from lookalike.sources import describe_skipped

    jpeg = next(product_photos.rglob("*.jpg"))
    shutil.copy(jpeg, tmp_path / "a.jfif")
    shutil.copy(jpeg, tmp_path / "b.jpe")
    for name in ("c.heic", "d.heic", "notes.txt", ".DS_Store", "Thumbs.db", ".git/objects/ab", ".git/HEAD"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    shutil.copy(jpeg, tmp_path / ".cache" / "e.jpg")  # hidden folders are not catalog content
    src = FolderSource(tmp_path)
    products = {p.product_id: p for p in src}
    assert {"a", "b"} <= set(products)
    assert not {"c", "d", "notes", "e"} & set(products)
    assert sorted(Path(p).name for p in src.skipped) == ["c.heic", "d.heic", "notes.txt"]
    assert describe_skipped(src.skipped) == (
        "3 file(s) that are not images in a supported format (.heic 2, .txt 1)"
    )


def test_one_file_stem_in_two_category_folders_is_a_conflict_not_a_merge(tmp_path, product_photos):
    import shutil

    jpeg, png = next(product_photos.rglob("*.jpg")), next(product_photos.rglob("*.png"))
    for folder, src_file, name in (
        ("Bag", jpeg, "item.jpg"),
        ("Shoe", png, "item.png"),
        ("Bag", jpeg, "ok.jpg"),
    ):
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(src_file, tmp_path / folder / name)
    shutil.copy(png, tmp_path / "Bag" / "ok.png")  # one stem twice in one folder: two photos of one product
    products = {p.product_id: p for p in FolderSource(tmp_path)}
    assert len(products["ok"].images) == 2 and not products["ok"].problems
    item = products["item"]
    assert item.images == [] and len(item.problems) == 1
    assert "Bag/item.jpg (Bag)" in item.problems[0] and "Shoe/item.png (Shoe)" in item.problems[0]
