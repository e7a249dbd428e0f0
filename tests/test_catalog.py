"""The catalog facade on a real store: index, idempotency, bad input, search, filters, delete."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.errors import InvalidRequest, ModelMismatchError, ProductNotFound
from lookalike.sources import ListSource, SourceProduct
from tests.conftest import rotate_photo
from tests.image_corpus import build_corpus


@pytest.fixture
def small_catalog(db_url):
    cat = Catalog.open(db_url)
    cat.index("fashion-mnist:test", model="pixels", limit=300)
    yield cat
    cat.close()


def test_index_and_search_finds_the_item(small_catalog, fmnist_test):
    images, _ = fmnist_test
    hits = small_catalog.search(rotate_photo(images[7], angle=5), k=5)
    assert hits[0].product_id == "fmnist-test-7"
    assert hits[0].category == "Coat" or hits[0].category  # has metadata
    assert all(hits[i].score >= hits[i + 1].score for i in range(len(hits) - 1))
    assert small_catalog.stats()["products"] == 300


def test_thumbnails_in_one_call_equal_one_by_one(small_catalog):
    """The batch read the re-ranker uses (one query on both stores) returns what the single-row
    read does, and leaves out ids with no image."""
    store = small_catalog.store
    hits = small_catalog.search_vector(np.ones(small_catalog.embedder().dim, np.float32), k=20)
    ids = [h.image_id for h in hits]
    many = store.get_thumbnails([*ids, 10**9, -1])
    assert sorted(many) == sorted(ids)
    assert all(many[i] == store.get_thumbnail(i) and Image.open(io.BytesIO(many[i])).size for i in ids)
    assert store.get_thumbnails([]) == {}


def test_reindex_is_idempotent(small_catalog):
    before = small_catalog.stats()
    report = small_catalog.index("fashion-mnist:test", model="pixels", limit=300)
    after = small_catalog.stats()
    assert report.images_embedded == 0 and report.images_reused > 0
    assert report.products_created == 0
    for key in ("products", "images", "links", "embeddings"):
        assert after[key] == before[key]


def test_filters_category_and_attribute(small_catalog, fmnist_test):
    images, _ = fmnist_test
    hits = small_catalog.search(images[0], k=10, filters={"category": "Bag"})
    assert len(hits) == 10 and {h.category for h in hits} == {"Bag"}
    hits = small_catalog.search(images[0], k=3, filters={"split": "test"})
    assert len(hits) == 3
    assert small_catalog.search(images[0], k=3, filters={"split": "train"}) == []
    with pytest.raises(InvalidRequest):
        small_catalog.search(images[0], k=3, filters={'bad"key': "x"})
    # a quote in a key is data, never SQL: the JSON path is a bound parameter
    assert small_catalog.search(images[0], k=3, filters={"x') OR 1=1 OR ('": "x"}) == []


def test_filtered_search_returns_k_when_k_matches_exist(small_catalog, fmnist_test):
    images, labels = fmnist_test
    n_bags = int((labels[:300] == 8).sum())
    hits = small_catalog.search(images[0], k=n_bags + 5, filters={"category": "Bag"})
    assert len(hits) == n_bags


def test_similar_excludes_itself_and_delete(small_catalog):
    hits = small_catalog.similar("fmnist-test-0", k=5)
    assert len(hits) == 5 and "fmnist-test-0" not in {h.product_id for h in hits}
    small_catalog.delete("fmnist-test-0")
    assert small_catalog.stats()["products"] == 299
    with pytest.raises(ProductNotFound):
        small_catalog.get_product("fmnist-test-0")
    with pytest.raises(ProductNotFound):
        small_catalog.delete("fmnist-test-0")
    assert "fmnist-test-0" not in {h.product_id for h in small_catalog.similar("fmnist-test-1", k=50)}
    s = small_catalog.stats()
    assert s["images"] == s["embeddings"]  # the deleted product's image went with it


def test_many_to_many_shared_image_and_best_image_scoring(db_url, fmnist_test):
    images, _ = fmnist_test
    a, b, c = (Image.fromarray(images[i]) for i in (0, 1, 2))
    cat = Catalog.open(db_url)
    cat.index(
        ListSource(
            [
                SourceProduct("red-variant", [a, b], category="Shoes"),
                SourceProduct("blue-variant", [a], category="Shoes"),  # shares photo a
                SourceProduct("other", [c], category="Tops"),
            ]
        ),
        model="pixels",
    )
    s = cat.stats()
    assert (s["products"], s["images"], s["links"]) == (3, 3, 4)
    hits = cat.search(b, k=3)
    assert hits[0].product_id == "red-variant" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    # deleting one variant keeps the shared image for the other
    cat.delete("red-variant")
    assert cat.stats()["images"] == 2
    assert cat.search(a, k=1)[0].product_id == "blue-variant"
    cat.close()


def test_bad_items_are_skipped_and_reported_good_ones_kept(db_url, tmp_path):
    corpus = build_corpus(tmp_path / "corpus")
    table = tmp_path / "catalog.csv"
    lines = ["product_id,image,title"] + [
        f"p-{i},{item.path},{name}" for i, (name, item) in enumerate(corpus.items())
    ]
    table.write_text("\n".join(lines) + "\n")
    cat = Catalog.open(db_url)
    report = cat.index(table, model="pixels", report_path=tmp_path / "report.json")
    good = [n for n, item in corpus.items() if item.good]
    bad = {str(item.path): item.kind for item in corpus.values() if not item.good}
    assert report.products_indexed == len(good) == cat.stats()["products"]
    assert report.images_failed == len(bad)
    saved = json.loads((tmp_path / "report.json").read_text())
    kinds = {f["item"]: f["kind"] for f in saved["failures"]}
    assert kinds == bad
    assert all(f["reason"] for f in saved["failures"])
    cat.close()


def test_bad_image_does_not_lose_stored_product(db_url, tmp_path, fmnist_test):
    images, _ = fmnist_test
    cat = Catalog.open(db_url)
    cat.index(
        ListSource([SourceProduct("keep", [Image.fromarray(images[3])], title="Original")]), model="pixels"
    )
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    report = cat.index_products([SourceProduct("keep", [str(broken)], title="Changed")], replace_images=True)
    assert report.products_failed == 1
    p = cat.get_product("keep")
    assert p.title == "Original" and len(p.image_ids) == 1
    cat.close()


def test_search_with_unindexed_model_is_a_clear_error(small_catalog, fmnist_test):
    with pytest.raises(ModelMismatchError, match="no vectors for model"):
        small_catalog.search_vector(np.ones(10, dtype=np.float32), model="other-model")
    with pytest.raises(InvalidRequest):
        small_catalog.search(fmnist_test[0][0], k=0)


def test_product_vectors_one_per_product(small_catalog):
    ids, vecs = small_catalog.product_vectors()
    assert len(ids) == 300 and vecs.shape == (300, 1024)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_set_attributes_merges(small_catalog):
    assert small_catalog.set_attributes({"fmnist-test-1": {"colour": "grey"}, "nope": {"a": 1}}) == 1
    p = small_catalog.get_product("fmnist-test-1")
    assert p.attributes == {"split": "test", "colour": "grey"}
    hits = small_catalog.search(Image.new("L", (28, 28)), k=5, filters={"colour": "grey"})
    assert [h.product_id for h in hits] == ["fmnist-test-1"]


def test_catalog_refuses_vectors_from_other_weights_under_the_same_name(tmp_path, fmnist_test):
    """A retrained checkpoint at the same path must not silently mix with the catalog's vectors."""
    import torch

    from lookalike.checkpoint import load_checkpoint, save_checkpoint
    from lookalike.embedders import default_model_path

    if not default_model_path().exists():
        pytest.skip("no shipped default model")
    ckpt = load_checkpoint(default_model_path())
    path = tmp_path / "model.pt"
    fields = {k: ckpt[k] for k in ("kind", "arch", "preprocess", "recipe", "metrics")}
    save_checkpoint(path, state_dict=ckpt["state_dict"], **fields)
    name = f"trained:{path}"
    cat = Catalog.open(tmp_path / "c.db")
    cat.index("fashion-mnist:test", model=name, limit=50)
    images, _ = fmnist_test
    assert cat.search(images[3], k=1)[0].product_id == "fmnist-test-3"
    retrained = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in ckpt["state_dict"].items()
    }
    save_checkpoint(path, state_dict=retrained, **fields)
    from lookalike.embedders import _cache

    _cache.clear()
    fresh = Catalog.open(tmp_path / "c.db")
    with pytest.raises(ModelMismatchError, match="other weights"):
        fresh.search(images[3], k=1)
    with pytest.raises(ModelMismatchError, match="other weights"):
        fresh.index("fashion-mnist:test", model=name, limit=60)
    cat.close()
    fresh.close()


def test_url_items_that_fail_are_reported_and_the_rest_indexed(db_url, tmp_path, fmnist_test):
    """404, HTML, a timeout and an SSRF-refused URL in the same run as good files and a good URL."""
    import threading
    from http.server import ThreadingHTTPServer

    from lookalike.config import Settings
    from tests.test_images import Handler

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads, httpd.seen = True, []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    images, _ = fmnist_test
    good_file = tmp_path / "good.png"
    Image.fromarray(images[0]).save(good_file)
    rows = {
        "file-ok": str(good_file),
        "url-ok": f"{base}/image.png",
        "url-404": f"{base}/missing.png",
        "url-html": f"{base}/page",
        "url-slow": f"{base}/slow",
        "url-private": "http://10.0.0.1/a.png",
    }
    table = tmp_path / "urls.csv"
    table.write_text("product_id,image\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))
    settings = Settings(allowed_private_networks=["127.0.0.1/32"], fetch_timeout=0.5)
    try:
        cat = Catalog.open(db_url, settings=settings)
        report = cat.index(table, model="pixels")
    finally:
        httpd.shutdown()
        httpd.server_close()
    kinds = {f["product_id"]: f["kind"] for f in report.failures}
    assert kinds == {
        "url-404": "http_status",
        "url-html": "not_image_content",
        "url-slow": "timeout",
        "url-private": "ssrf",
    }
    assert sorted(cat.get_products(rows)) == ["file-ok", "url-ok"]
    cat.close()


def test_a_write_whose_shared_image_another_writer_deleted_meanwhile_embeds_it_again(db_url, fmnist_test):
    """Product B reuses product A's photo. Between B's check of which images exist and its write,
    another writer deletes A (and with it the photo): B's write notices, checks again, embeds
    the photo anew, and lands whole."""
    images, _ = fmnist_test
    shared, own = Image.fromarray(images[20]), Image.fromarray(images[21])
    cat = Catalog.open(db_url)
    cat.index(ListSource([SourceProduct("a", [shared], category="Tops")]), model="pixels")
    check = cat.store.images_with_sha
    other = Catalog.open(db_url)  # the other writer, with its own connection
    raced = []

    def check_then_race(shas, model):
        found = check(shas, model)
        if not raced:
            raced.append(True)
            other.delete("a")  # a real delete, committed between the check and the write
        return found

    cat.store.images_with_sha = check_then_race
    report = cat.index_products([SourceProduct("b", [shared, own], category="Tops")], model="pixels")
    assert raced and report.products_indexed == 1 and report.images_embedded == 2
    record = cat.get_product("b")
    assert len(record.image_ids) == 2
    s = cat.stats()
    assert (s["products"], s["images"], s["embeddings"], s["links"]) == (1, 2, 2, 2)
    assert cat.search(shared, k=1)[0].product_id == "b"
    other.close()
    cat.close()


def test_attributes_that_cannot_be_stored_are_dropped_and_reported(db_url, fmnist_test):
    images, _ = fmnist_test
    cat = Catalog.open(db_url)
    attrs = {
        "weight": float("nan"),
        "size": float("inf"),
        "dims": [1.0, float("nan")],
        "brand": "Acme",
        "n": 2.5,
    }
    attrs |= {"tags": ["a", "b"], "when": object(), "Size (EU)": "42"}
    report = cat.index(
        ListSource([SourceProduct("p", [Image.fromarray(images[30])], attributes=attrs)]), model="pixels"
    )
    assert report.products_indexed == 1
    bad = {f["item"]: f["kind"] for f in report.failures}
    assert bad == {f"p: attribute {k!r}": "bad_attribute" for k in ("weight", "size", "dims", "when")}
    kept = {"brand": "Acme", "n": 2.5, "tags": ["a", "b"], "Size (EU)": "42"}
    assert cat.get_product("p").attributes == kept
    # the catalog's attribute filters keep working, keys from table headers too
    assert [h.product_id for h in cat.search(images[30], k=1, filters={"brand": "Acme"})] == ["p"]
    assert [h.product_id for h in cat.search(images[30], k=1, filters={"Size (EU)": "42"})] == ["p"]
    cat.close()


def test_a_model_named_by_a_relative_path_is_recorded_absolute(tmp_path, fmnist_test, monkeypatch):
    """Indexed as trained:models/m.pt in one directory, the catalog searches from any other, and
    ./models/m.pt or the absolute path name the same model."""
    import shutil

    from lookalike.embedders import default_model_path

    if not default_model_path().exists():
        pytest.skip("no shipped default model")
    (tmp_path / "shop" / "models").mkdir(parents=True)
    shutil.copy(default_model_path(), tmp_path / "shop" / "models" / "m.pt")
    monkeypatch.chdir(tmp_path / "shop")
    with Catalog.open(tmp_path / "c.db") as cat:
        cat.index("fashion-mnist:test", model="trained:models/m.pt", limit=30, progress=False)
    absolute = f"trained:{tmp_path / 'shop' / 'models' / 'm.pt'}"
    monkeypatch.chdir(tmp_path)  # elsewhere: models/m.pt does not exist here
    images, _ = fmnist_test
    with Catalog.open(tmp_path / "c.db") as cat:
        assert cat.model == absolute and list(cat.store.models()) == [absolute]
        assert cat.search(images[3], k=1)[0].product_id == "fmnist-test-3"
        assert cat.search(images[3], k=1, model="trained:./shop/models/m.pt")[0].product_id == "fmnist-test-3"
    from lookalike.embedders import canonical_model_name

    (tmp_path / "resnet50").write_bytes(b"")  # a file named like a network does not make a path of it
    (tmp_path / "best.pt").write_bytes(b"")
    assert canonical_model_name("trained:runs/m@best.pt") == "trained:runs/m@best.pt"  # no such file
    assert canonical_model_name("torchvision:resnet50@w@best.pt") == "torchvision:resnet50@w@best.pt"
    assert canonical_model_name("torchvision:resnet50") == "torchvision:resnet50"
    assert canonical_model_name("torchvision:resnet50@shop/models/m.pt") == (
        f"torchvision:resnet50@{tmp_path / 'shop' / 'models' / 'm.pt'}"
    )
    assert canonical_model_name("pixels") == "pixels" and canonical_model_name("default") == "default"


def test_opening_a_missing_catalog_to_read_is_an_error_and_creates_nothing(tmp_path):
    from lookalike.errors import CatalogNotFound

    missing = tmp_path / "typo" / "catalgo.db"
    with pytest.raises(CatalogNotFound, match="no catalog at .*catalgo.db"):
        Catalog.open(missing, create=False)
    assert not missing.exists() and not missing.parent.exists()
    with Catalog.open(tmp_path / "c.db") as cat:  # creating stays the default
        assert cat.stats()["products"] == 0
    with Catalog.open(f"sqlite:///{tmp_path / 'c.db'}", create=False) as cat:
        assert cat.stats()["products"] == 0


def test_reindexing_a_folder_adds_by_default_and_replaces_when_asked(tmp_path, fmnist_test):
    images, _ = fmnist_test
    shop = tmp_path / "shop" / "Bag"
    shop.mkdir(parents=True)
    photo = shop / "p.png"
    Image.fromarray(images[40]).save(photo)
    Image.fromarray(images[41]).save(shop / "q.png")
    with Catalog.open(tmp_path / "c.db") as cat:
        cat.index(tmp_path / "shop", model="pixels", progress=False)
        Image.fromarray(images[42]).save(photo)  # the shop replaced the photo of p
        cat.index(tmp_path / "shop", model="pixels", progress=False)
        assert len(cat.get_product("p").image_ids) == 2  # added beside the old one
        report = cat.index(tmp_path / "shop", model="pixels", progress=False, replace_images=True)
        assert report.products_indexed == 2 and report.images_embedded == 0
        assert report.images_unlinked == 1  # the old photo of p, reported
        (image_id,) = cat.get_product("p").image_ids
        assert cat.store.get_image(image_id).sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()
        s = cat.stats()
        assert (s["products"], s["images"], s["links"], s["embeddings"]) == (2, 2, 2, 2)  # the old photo went
        assert cat.search(images[42], k=1)[0].product_id == "p"


def test_a_catalog_that_recorded_a_relative_model_name_keeps_working(tmp_path, fmnist_test, monkeypatch):
    """Catalogs indexed before names were made absolute hold e.g. trained:models/m.pt: where that
    path works, searching and indexing go on under that very name (no second model)."""
    import shutil

    import lookalike.catalog
    from lookalike.embedders import default_model_path

    if not default_model_path().exists():
        pytest.skip("no shipped default model")
    (tmp_path / "models").mkdir()
    shutil.copy(default_model_path(), tmp_path / "models" / "m.pt")
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as old_version:  # what earlier versions recorded
        old_version.setattr(lookalike.catalog, "canonical_model_name", lambda name: name)
        with Catalog.open(tmp_path / "c.db") as cat:
            cat.index("fashion-mnist:test", model="trained:models/m.pt", limit=20, progress=False)
    images, _ = fmnist_test
    with Catalog.open(tmp_path / "c.db") as cat:
        assert cat.model == "trained:models/m.pt"
        assert cat.search(images[3], k=1)[0].product_id == "fmnist-test-3"
        cat.index("fashion-mnist:test", model="trained:models/m.pt", limit=30, progress=False)
        assert cat.store.models() == {"trained:models/m.pt": 30}


def test_a_photo_deleted_while_another_model_embeds_it_comes_back_whole(db_url, fmnist_test):
    """The photo exists (for another model) when B's write checks, so B embeds it for its own model;
    A's delete then removes the row before B writes. B's insert must bring it back whole: with its
    perceptual hash and thumbnail, not as a bare row."""
    images, _ = fmnist_test
    shared = Image.fromarray(images[22])
    cat = Catalog.open(db_url)
    cat.index(ListSource([SourceProduct("a", [shared])]), model="pixels")
    check = cat.store.images_with_sha
    other = Catalog.open(db_url)
    raced = []

    def check_then_race(shas, model):
        found = check(shas, model)
        if not raced:
            raced.append(True)
            other.delete("a")
        return found

    cat.store.images_with_sha = check_then_race
    report = cat.index_products([SourceProduct("b", [shared])], model="pixels:v2")
    assert raced and report.products_indexed == 1
    (image_id,) = cat.get_product("b").image_ids
    record = cat.store.get_image(image_id)
    assert record.phash and cat.store.get_thumbnail(image_id)
    other.close()
    cat.close()
