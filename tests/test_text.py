"""Words in the image space: a text model trained on a real catalog (the default model's vectors of
Fashion-MNIST items, the bundled all-MiniLM-L6-v2), text search and tags through the library, the CLI
and the HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from api_support import photo_bytes
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.api.app import create_app
from lookalike.catalog import Catalog
from lookalike.config import Settings
from lookalike.datasets.fashion_mnist import CLASSES
from lookalike.errors import InvalidRequest, ModelError, ModelMismatchError
from lookalike.text import load_text_model, product_text, train_text_model

N = 400


@pytest.fixture(scope="module")
def catalog_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("text") / "catalog.db")
    with Catalog.open(db) as cat:
        report = cat.index("fashion-mnist:test", model="default", limit=N, progress=False)
    assert report.products_indexed == N
    return db


@pytest.fixture(scope="module")
def text_model_path(catalog_db, tmp_path_factory) -> str:
    with Catalog.open(catalog_db) as cat:
        tm = train_text_model(cat, progress=False)
    return str(tm.save(tmp_path_factory.mktemp("text-model") / "text.pt"))


def test_training_measures_the_map_on_held_out_products(catalog_db):
    with Catalog.open(catalog_db) as cat:
        tm = train_text_model(cat, progress=False, holdout=0.25)
    assert tm.image_model == "default" and tm.encoder == "minilm" and tm.coef.shape == (384, 128)
    assert set(CLASSES) <= set(tm.tags) and tm.tag_kinds[: len(CLASSES)] == ["category"] * len(CLASSES)
    assert tm.metrics["holdout"] == N // 4
    # ten categories: a guess gets 0.1; the default model's space separates them
    assert tm.metrics["category_tag_accuracy"] > 0.6


@pytest.mark.parametrize(
    "words, category", [("Ankle boot", "Ankle boot"), ("handbag", "Bag"), ("coat", "Coat")]
)
def test_words_find_the_products_of_their_category(catalog_db, text_model_path, words, category):
    with Catalog.open(catalog_db) as cat:
        hits = cat.search_text(words, k=10, text_model=text_model_path)
    assert len(hits) == 10
    assert Counter(h.category for h in hits)[category] >= 8, [h.category for h in hits]


def test_text_search_takes_filters(catalog_db, text_model_path):
    with Catalog.open(catalog_db) as cat:
        hits = cat.search_text("Ankle boot", k=5, filters={"category": "Bag"}, text_model=text_model_path)
    assert hits and {h.category for h in hits} == {"Bag"}


def test_a_photo_of_an_unseen_item_gets_its_category_as_first_tag(catalog_db, text_model_path, fmnist_test):
    images, labels = fmnist_test
    unseen = range(N, N + 40)  # not in the catalog the text model learned from
    with Catalog.open(catalog_db) as cat:
        first = [cat.tag(Image.fromarray(images[i]), k=3, text_model=text_model_path)[0].tag for i in unseen]
    right = sum(f == CLASSES[labels[i]] for f, i in zip(first, unseen, strict=True))
    assert right >= 0.6 * len(first), list(zip(first, [CLASSES[labels[i]] for i in unseen], strict=True))


def test_a_saved_text_model_gives_the_same_vectors(catalog_db, text_model_path, tmp_path):
    with Catalog.open(catalog_db) as cat:
        trained = train_text_model(cat, progress=False)
    again = load_text_model(trained.save(tmp_path / "t.pt"))
    words = ["ankle boots", "a red bag", "Trouser"]
    assert np.array_equal(trained.embed_texts(words), again.embed_texts(words))
    assert again.tags == trained.tags and again.metrics == trained.metrics


def test_product_text_reads_title_category_and_attributes():
    from lookalike.store import ProductRecord

    record = ProductRecord(
        "p1", title=" Red tote ", category="Bag", attributes={"colour": "red", "sale": True}
    )
    assert product_text(record) == "Red tote. Bag. colour: red"
    assert product_text(ProductRecord("p2")) == ""


def test_a_text_model_for_another_image_model_is_refused(text_model_path, tmp_path):
    db = str(tmp_path / "pixels.db")
    with Catalog.open(db) as cat:
        cat.index("fashion-mnist:test", model="pixels", limit=20, progress=False)
        with pytest.raises(ModelMismatchError, match="maps words into 'default'.*vectors of pixels"):
            cat.search_text("bag", text_model=text_model_path)


def test_a_text_model_from_other_weights_of_its_model_is_refused(catalog_db, text_model_path):
    tm = load_text_model(text_model_path)
    assert tm.image_fingerprint and tm.image_fingerprint.startswith("sha256:")
    tm.image_fingerprint = "sha256:0123456789abcdef"  # as if learned from an earlier default model
    with Catalog.open(catalog_db) as cat:
        with pytest.raises(ModelMismatchError, match="other weights .* train it again"):
            cat.search_text("bag", text_model=tm)


def test_max_products_learns_from_a_sample(catalog_db):
    with Catalog.open(catalog_db) as cat:
        tm = train_text_model(cat, progress=False, max_products=100, holdout=0.2)
        with pytest.raises(InvalidRequest, match="max_products must be at least 10"):
            train_text_model(cat, progress=False, max_products=3)
    assert tm.metrics["products"] == 100 and tm.metrics["holdout"] == 20
    assert tm.recipe["max_products"] == 100


def test_bad_inputs_are_named(catalog_db, text_model_path, tmp_path):
    with Catalog.open(catalog_db) as cat:
        with pytest.raises(ModelError, match="no text model"):
            cat.search_text("bag")
        with pytest.raises(InvalidRequest, match="empty"):
            cat.search_text("   ", text_model=text_model_path)
        with pytest.raises(ModelError, match="'metric' checkpoint, not 'text'"):
            cat.search_text("bag", text_model=cat.embedder().path)
        with pytest.raises(InvalidRequest, match="k must be"):
            cat.tag(Image.new("RGB", (28, 28)), k=0, text_model=text_model_path)
    folder = tmp_path / "photos"  # images without titles, categories or attributes: nothing to learn
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(folder / f"p{i}.png")
    with Catalog.open(str(tmp_path / "bare.db")) as cat:
        cat.index(str(folder), model="pixels", progress=False)
        with pytest.raises(InvalidRequest, match="0 of 12 products .* have any"):
            train_text_model(cat, progress=False)


def run(*args, env_text_model: str | None = None):
    import os

    env = {**os.environ, **({"LOOKALIKE_TEXT_MODEL": env_text_model} if env_text_model else {})}
    return subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


def test_cli_trains_searches_with_words_and_tags(catalog_db, tmp_path, fmnist_test):
    out = tmp_path / "cli-text.pt"
    proc = run("train", "text", "--db", catalog_db, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "held out 40 products" in proc.stdout and f"wrote {out}" in proc.stdout
    assert load_text_model(out).recipe["command"].startswith("lookalike train text")
    proc = run(
        "search", "--text", "handbag", "--text-model", str(out), "--db", catalog_db, "--json", "-k", "5"
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["query"] == "handbag" and doc["model"] == "default"
    assert Counter(h["category"] for h in doc["results"])["Bag"] >= 4
    photo = tmp_path / "boot.png"
    photo.write_bytes(photo_bytes(fmnist_test[0][0]))  # item 0 is an ankle boot
    proc = run("tag", str(photo), "--text-model", str(out), "--db", catalog_db, "--json")
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout)["tags"][0]
    assert (first["tag"], first["kind"]) == ("Ankle boot", "category") and 0 < first["score"] <= 1
    both = run("search", str(photo), "--text", "bag", "--db", catalog_db)
    assert both.returncode == 1 and "not both" in both.stderr
    none = run("search", "--text", "bag", "--db", catalog_db)
    assert none.returncode == 1 and "LOOKALIKE_TEXT_MODEL" in none.stderr and "Traceback" not in none.stderr


def test_api_searches_with_words_when_the_server_has_a_text_model(catalog_db, text_model_path):
    with TestClient(create_app(Settings(text_model=text_model_path), db=catalog_db)) as client:
        assert client.get("/v1/stats").json()["text_search"] is True
        r = client.post("/v1/search", json={"text": "ankle boots", "k": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == "ankle boots" and body["model"] == "default"
        assert Counter(h["category"] for h in body["results"])["Ankle boot"] >= 8
        assert all(h["thumbnail_url"].startswith("/v1/images/") for h in body["results"])
        r = client.post("/v1/search", json={"text": "boots", "rerank": 100})
        assert r.status_code == 422 and "text search has none" in r.json()["error"]["message"]
        r = client.post("/v1/search", json={"text": "boots", "product_id": "fmnist-test-1"})
        assert r.status_code == 422 and "exactly one" in r.json()["error"]["message"]
        r = client.post("/v1/search", json={"text": "x" * 501})
        assert r.status_code == 422
    with TestClient(create_app(Settings(), db=catalog_db), raise_server_exceptions=False) as client:
        assert client.get("/v1/stats").json()["text_search"] is False
        r = client.post("/v1/search", json={"text": "ankle boots"})
        assert r.status_code == 422 and "no text model" in r.json()["error"]["message"]


def test_api_tags_a_photo_uploaded_or_by_base64(catalog_db, text_model_path, fmnist_test):
    import base64

    boot = photo_bytes(fmnist_test[0][0], "JPEG", size=120)  # item 0 is an ankle boot
    with TestClient(create_app(Settings(text_model=text_model_path), db=catalog_db)) as client:
        r = client.post("/v1/tags", files={"image": ("boot.jpg", boot, "image/jpeg")}, data={"k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == "boot.jpg" and body["model"] == "default" and len(body["tags"]) == 3
        assert body["tags"][0]["tag"] == "Ankle boot" and body["tags"][0]["kind"] == "category"
        scores = [t["score"] for t in body["tags"]]
        assert scores == sorted(scores, reverse=True)
        r = client.post("/v1/tags", json={"image_base64": base64.b64encode(boot).decode(), "k": 1})
        assert r.status_code == 200 and [t["tag"] for t in r.json()["tags"]] == ["Ankle boot"]
        r = client.post("/v1/tags", content=boot, headers={"Content-Type": "image/jpeg"})
        tags = r.json()["tags"]  # at most the default 5: only tags the photo points towards
        assert r.status_code == 200 and 1 <= len(tags) <= 5 and all(t["score"] > 0 for t in tags)
        r = client.post("/v1/tags", json={"image_url": "http://127.0.0.1:1/x.png"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "url_not_allowed"
        r = client.post("/v1/tags", files={"image": ("x.jpg", b"not an image", "image/jpeg")})
        assert r.status_code == 400 and "x.jpg" in r.json()["error"]["message"]
        r = client.post("/v1/tags", json={"k": 3})
        assert r.status_code == 422 and "exactly one" in r.json()["error"]["message"]
    with TestClient(create_app(Settings(), db=catalog_db)) as client:
        r = client.post("/v1/tags", files={"image": ("boot.jpg", boot, "image/jpeg")})
        assert r.status_code == 422 and "no text model" in r.json()["error"]["message"]


def test_encoding_from_many_threads_at_once_works(text_model_path):
    from concurrent.futures import ThreadPoolExecutor

    tm = load_text_model(text_model_path)
    words = [f"{w} number {i}" for i in range(8) for w in ("boots", "bag")]
    with ThreadPoolExecutor(8) as pool:  # the service encodes in a thread pool
        rows = list(pool.map(lambda w: tm.embed_texts([w])[0], words))
    assert np.allclose(np.stack(rows), tm.embed_texts(words), atol=1e-5)


def test_a_catalog_of_titles_alone_searches_with_words_but_has_no_tags(tmp_path, fmnist_test):
    images, labels = fmnist_test
    rows = ["product_id,image,title"]
    for i in range(30):
        Image.fromarray(images[i]).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i},{tmp_path / f'p{i}.png'},{CLASSES[labels[i]]} number {i}")
    (tmp_path / "catalog.csv").write_text("\n".join(rows) + "\n")
    with Catalog.open(str(tmp_path / "titles.db")) as cat:
        cat.index(str(tmp_path / "catalog.csv"), model="pixels", progress=False)
        tm = train_text_model(cat, progress=False)
        assert tm.tags == [] and len(cat.search_text("Trouser", k=3, text_model=tm)) == 3
        with pytest.raises(InvalidRequest, match="no tags"):
            cat.tag(Image.fromarray(images[0]), text_model=tm)


def test_only_attribute_values_that_look_different_become_tags(tmp_path, fmnist_test):
    images, labels = fmnist_test
    footwear = {"Sandal", "Sneaker", "Ankle boot"}
    rows = ["product_id,image,title,category,currency,batch,footwear"]
    for i in range(120):
        Image.fromarray(images[i]).save(tmp_path / f"p{i}.png")
        name = CLASSES[labels[i]]
        # currency: every product (no tag); batch: odd/even, nothing to see; footwear: shoes or not
        kind = "shoe" if name in footwear else "garment"
        rows.append(f"p{i},{tmp_path / f'p{i}.png'},item {i},{name},EUR,b{i % 2},{kind}")
    (tmp_path / "catalog.csv").write_text("\n".join(rows) + "\n")
    with Catalog.open(str(tmp_path / "attrs.db")) as cat:
        cat.index(str(tmp_path / "catalog.csv"), model="default", progress=False)
        tm = train_text_model(cat, progress=False)
    assert set(tm.tags) == set(CLASSES) | {"shoe", "garment"}, tm.tags
    assert dict(zip(tm.tags, tm.tag_kinds, strict=True))["shoe"] == "footwear"


def test_text_without_any_word_is_refused(text_model_path):
    tm = load_text_model(text_model_path)
    for nonsense in ["\x00\x01", "\u200b", "\U0001f462\U0001f462", " - ! "]:
        with pytest.raises(InvalidRequest, match="not words"):
            tm.embed_texts([nonsense])
    assert tm.embed_texts(["boots 2"]).shape == (1, 128)


def test_a_broken_text_model_turns_words_off_but_not_the_service(catalog_db, tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with TestClient(create_app(Settings(text_model=str(broken)), db=catalog_db)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text  # photo search works
        assert ready.json()["checks"]["text_model"].startswith("failed: ModelError")
        assert client.get("/v1/stats").json()["text_search"] is False  # the page hides the words box
        r = client.post("/v1/search", json={"text": "boots"})
        assert r.status_code == 503 and "broken.pt" in r.json()["error"]["message"]
    proc = run("serve", "--db", catalog_db, "--port", "1", env_text_model=str(broken))
    assert proc.returncode == 1 and "broken.pt is not a lookalike checkpoint" in proc.stderr
