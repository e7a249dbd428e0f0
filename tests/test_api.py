"""The HTTP API through the real app (FastAPI TestClient) over a real catalog of Fashion-MNIST items
indexed with the pixels model, for every store backend (``db_url``)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re

import numpy as np
import pytest
from api_support import CATALOG_SIZE, image_server, index_small_catalog, photo_bytes
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.api.app import ServiceConfigError, create_app
from lookalike.catalog import Catalog
from lookalike.config import Settings
from lookalike.datasets.fashion_mnist import CLASSES
from lookalike.rerank import Reranker

KEY = "test-key-0123456789abcdef"


@pytest.fixture
def indexed_db(db_url) -> str:
    return index_small_catalog(db_url)


@pytest.fixture
def make_client(indexed_db):
    clients = []

    def make(**settings) -> TestClient:
        client = TestClient(create_app(Settings(**settings), db=indexed_db), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def small_client(tmp_path_factory) -> TestClient:
    """A client over a 20-item SQLite catalog, for checks that do not depend on the backend."""
    db = index_small_catalog(str(tmp_path_factory.mktemp("small") / "small.db"), n=20)
    with TestClient(create_app(Settings(), db=db), raise_server_exceptions=False) as client:
        yield client


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body["error"]


def noise_png(size: int = 200) -> bytes:
    """A real PNG that does not compress (random pixels): about 3 bytes per pixel."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def upload(client, data: bytes, name="photo.png", mime="image/png", **fields):
    return client.post("/v1/search", files={"image": (name, data, mime)}, data=fields)


# --- search -----------------------------------------------------------------------------------
def test_search_upload_finds_the_photographed_item(client, fmnist_test):
    images, labels = fmnist_test
    for i in (0, 7, 123):
        r = upload(
            client, photo_bytes(images[i], "JPEG", size=96), name=f"shot-{i}.jpg", mime="image/jpeg", k="5"
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert set(doc) == {"query", "model", "results"}
        assert doc["query"] == f"shot-{i}.jpg" and doc["model"] == "pixels"
        assert len(doc["results"]) == 5
        top = doc["results"][0]
        assert set(top) == {"product_id", "score", "image_id", "title", "category", "thumbnail_url"}
        assert top["product_id"] == f"fmnist-test-{i}"
        assert top["category"] == CLASSES[labels[i]]
        assert top["thumbnail_url"] == f"/v1/images/{top['image_id']}"
        scores = [h["score"] for h in doc["results"]]
        assert scores == sorted(scores, reverse=True)


def test_search_matches_the_catalog_library_call(client, indexed_db, fmnist_test):
    """The API returns what Catalog.search returns (same ids, same scores)."""
    data = photo_bytes(fmnist_test[0][42], angle=10)
    doc = upload(client, data, k="8").json()
    with Catalog.open(indexed_db) as cat:
        hits = cat.search(data, k=8, model="pixels")
    assert [h["product_id"] for h in doc["results"]] == [h.product_id for h in hits]
    assert [h["score"] for h in doc["results"]] == pytest.approx([h.score for h in hits], abs=1e-6)


def test_search_json_base64_with_filters_and_k(client, fmnist_test):
    images, labels = fmnist_test
    data = photo_bytes(images[3])
    r = client.post(
        "/v1/search",
        json={"image_base64": base64.b64encode(data).decode(), "k": 7, "filters": {"category": "Bag"}},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["query"] == "image_base64"
    assert len(doc["results"]) == 7 and {h["category"] for h in doc["results"]} == {"Bag"}
    # a data: URL pasted as is works too, and an attribute filter
    r = client.post(
        "/v1/search",
        json={
            "image_base64": "data:image/png;base64," + base64.b64encode(data).decode(),
            "filters": {"split": "test"},
            "k": 1,
        },
    )
    assert r.json()["results"][0]["product_id"] == "fmnist-test-3"


def test_search_by_product_id_excludes_it(client):
    r = client.post("/v1/search", json={"product_id": "fmnist-test-5", "k": 10})
    assert r.status_code == 200, r.text
    ids = [h["product_id"] for h in r.json()["results"]]
    assert len(ids) == 10 and "fmnist-test-5" not in ids
    same = client.get("/v1/products/fmnist-test-5/similar", params={"k": 10}).json()
    assert [h["product_id"] for h in same["results"]] == ids


def test_search_raw_image_body_and_multipart_filters(client, fmnist_test):
    images, _ = fmnist_test
    r = client.post("/v1/search?k=3", content=photo_bytes(images[9]), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["product_id"] == "fmnist-test-9" and len(r.json()["results"]) == 3
    r = upload(client, photo_bytes(images[9]), k="4", category="Trouser")
    assert {h["category"] for h in r.json()["results"]} == {"Trouser"} and len(r.json()["results"]) == 4
    r = client.post(
        "/v1/search",
        files={"image": ("p.png", photo_bytes(images[9]), "image/png")},
        data={"filter": ["split=test", "category=Bag"], "k": "2"},
    )
    assert {h["category"] for h in r.json()["results"]} == {"Bag"}


def test_search_rerank_in_every_input_mode(client, fmnist_test):
    """rerank=N verifies the first N products: each hit then carries its alignment and verifier
    scores and the hits come in their fused order; the query string, form field and JSON body agree."""
    images, _ = fmnist_test
    data = photo_bytes(images[42], "JPEG", size=96, angle=8)
    docs = [
        upload(client, data, name="p.jpg", mime="image/jpeg", k="5", rerank="30").json(),
        client.post("/v1/search?k=5&rerank=30", content=data, headers={"Content-Type": "image/jpeg"}).json(),
        client.post(
            "/v1/search", json={"image_base64": base64.b64encode(data).decode(), "k": 5, "rerank": 30}
        ).json(),
    ]
    for doc in docs:
        hits = doc["results"]
        assert len(hits) == 5 and all(0 <= h["alignment"] <= 1 for h in hits), doc
        rr = Reranker()
        fused = [h["score"] + rr.weight * h["alignment"] + rr.verifier_weight * h["verifier"] for h in hits]
        assert fused == sorted(fused, reverse=True)
        assert hits[0]["product_id"] == "fmnist-test-42"
    assert [h["product_id"] for h in docs[1]["results"]] == [h["product_id"] for h in docs[0]["results"]]
    assert [h["product_id"] for h in docs[2]["results"]] == [h["product_id"] for h in docs[0]["results"]]
    plain = upload(client, data, name="p.jpg", mime="image/jpeg", k="5").json()
    assert all("alignment" not in h and "verifier" not in h for h in plain["results"])


def test_search_by_url_refuses_loopback_by_default(client, fmnist_test):
    png = photo_bytes(fmnist_test[0][11])
    with image_server({"item.png": png}) as base:
        r = client.post("/v1/search", json={"image_url": f"{base}/item.png"})
        err = assert_error(r, 400, "url_not_allowed")
        assert "127.0.0.1" in err["message"] and "loopback" in err["message"]
    for url in (
        "http://localhost/x.png",
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
        "http://[::1]/x.png",
        "http://10.0.0.1/a.png",
    ):
        assert_error(client.post("/v1/search", json={"image_url": url}), 400, "url_not_allowed")


def test_image_urls_never_read_server_files(client, tmp_path, fmnist_test):
    """A path where a URL belongs must not be read, even when it names a real image on the server."""
    local = tmp_path / "on-the-server.png"
    local.write_bytes(photo_bytes(fmnist_test[0][2]))
    for value in (str(local), "/etc/passwd", "../../etc/hostname", "C:\\boot.ini"):
        err = assert_error(client.post("/v1/search", json={"image_url": value}), 422, "invalid_request")
        assert "http:// or https://" in err["message"]
        r = client.put("/v1/products/sku-path", json={"image_urls": [value]})
        assert_error(r, 422, "invalid_request")
        r = client.put(
            "/v1/products/sku-path",
            files=[("images", ("ok.png", local.read_bytes(), "image/png"))],
            data={"image_url": value},
        )
        assert_error(r, 422, "invalid_request")
    for value in (
        "file://" + str(local),
        "file:" + str(local),
        "gopher://127.0.0.1/x",
        "javascript:alert(1)",
    ):
        assert_error(client.post("/v1/search", json={"image_url": value}), 400, "url_not_allowed")
        assert_error(
            client.put("/v1/products/sku-path", json={"image_urls": [value]}), 400, "url_not_allowed"
        )
    assert_error(client.get("/v1/products/sku-path"), 404, "not_found")


def test_search_by_url_when_private_urls_allowed(make_client, fmnist_test):
    client = make_client(allow_private_urls=True)
    png = photo_bytes(fmnist_test[0][11])
    with image_server({"item.png": png}) as base:
        r = client.post("/v1/search", json={"image_url": f"{base}/item.png", "k": 3})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["product_id"] == "fmnist-test-11"
        assert r.json()["query"] == f"{base}/item.png"
        assert_error(
            client.post("/v1/search", json={"image_url": f"{base}/missing.png"}), 400, "fetch_failed"
        )


# --- bad input --------------------------------------------------------------------------------
def test_broken_and_non_image_uploads(client, fmnist_test):
    good = photo_bytes(fmnist_test[0][0], "JPEG")
    err = assert_error(
        upload(client, good[: len(good) // 3], name="cut.jpg", mime="image/jpeg"), 400, "bad_image"
    )
    assert err["message"].startswith("cut.jpg:") and "truncated" in err["message"].lower()
    err = assert_error(upload(client, b"hello, I am text", name="notes.png"), 400, "bad_image")
    assert "notes.png" in err["message"] and "not an image" in err["message"]
    assert_error(upload(client, b"", name="empty.png"), 400, "bad_image")
    assert_error(client.post("/v1/search", json={"image_base64": "%%%not base64%%%"}), 400, "bad_image")


def test_unsupported_image_format_is_415(client, fmnist_test):
    buf = io.BytesIO()
    Image.fromarray(fmnist_test[0][0]).convert("RGB").save(buf, format="ICO")
    err = assert_error(
        upload(client, buf.getvalue(), name="icon.ico", mime="image/x-icon"), 415, "unsupported_format"
    )
    assert "icon.ico" in err["message"]


def test_wrong_content_type_is_415(small_client):
    client = small_client
    assert_error(
        client.post("/v1/search", content=b"k=3", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_error(client.post("/v1/search", content=b"x"), 415, "unsupported_media_type")
    assert_error(
        client.put("/v1/products/x1", content=b"<p/>", headers={"Content-Type": "text/html"}),
        415,
        "unsupported_media_type",
    )


def test_oversize_upload_is_413_from_content_length(make_client, fmnist_test):
    client = make_client(max_upload_bytes=20_000)
    big = noise_png()
    assert len(big) > 100_000
    assert_error(upload(client, big), 413, "too_large")
    assert_error(
        client.post("/v1/search", json={"image_base64": base64.b64encode(big).decode()}), 413, "too_large"
    )
    # under the body limit (which leaves room for multipart/base64 framing) but over the image limit
    mid = noise_png(120)
    assert 20_000 < len(mid) < 20_000 * 4 // 3 + 64 * 1024
    err = assert_error(upload(client, mid, name="mid.png"), 413, "too_large")
    assert err["message"].startswith("mid.png:") and "20000" in err["message"]
    small = photo_bytes(fmnist_test[0][0], "PNG")
    assert upload(client, small).status_code == 200


def test_oversize_upload_is_413_while_reading_a_chunked_body(make_client, fmnist_test):
    """No Content-Length (chunked): the limit is enforced on the bytes as they arrive."""
    client = make_client(max_upload_bytes=20_000)
    big = noise_png()

    def chunks():
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    r = client.post("/v1/search", content=chunks(), headers={"Content-Type": "image/png"})
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "too_large")


def test_too_many_pixels_is_413(make_client, fmnist_test):
    client = make_client(max_image_pixels=100 * 100)
    err = assert_error(upload(client, photo_bytes(fmnist_test[0][0], size=200)), 413, "too_large")
    assert "pixels" in err["message"]


INVALID_SEARCHES = [
    {"json": {"product_id": "fmnist-test-1", "k": 0}},
    {"json": {"product_id": "fmnist-test-1", "k": 101}},
    {"json": {"product_id": "fmnist-test-1", "image_url": "https://example.com/a.png"}},
    {"json": {}},
    {"json": {"product_id": "bad/id"}},
    {"json": {"product_id": "x" * 200}},
    {"json": {"product_id": "fmnist-test-1", "surprise": 1}},
    {"json": {"product_id": "fmnist-test-1", "filters": {'a"b': "c"}}},
    {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
    {"files": {"image": ("a.png", b"x", "image/png")}, "data": {"k": "abc"}},
    {"files": {"image": ("a.png", b"x", "image/png")}, "data": {"k": "0"}},
    {"files": {"image": ("a.png", b"x", "image/png")}, "data": {"k": "\u0663"}},  # an Arabic-Indic 3
    {"files": {"photo": ("a.png", b"x", "image/png")}},
    {"json": {"product_id": "fmnist-test-1", "model": "trained:/etc/passwd"}},  # only the catalog's models
    {"files": {"image": ("a.png", b"x", "image/png")}, "data": {"rerank": "501"}},
    {"files": {"image": ("a.png", b"x", "image/png")}, "data": {"rerank": "-1"}},
    {"files": {"image": ("a.png", b"x", "image/png")}, "data": {"rerank": "many"}},
    {"params": {"rerank": "5000"}, "content": b"x", "headers": {"Content-Type": "image/png"}},
    {"json": {"image_url": "https://shop.example/a.jpg", "rerank": 1000}},
    {"json": {"product_id": "fmnist-test-1", "rerank": 10}},  # no photo to check against
]


def test_invalid_search_parameters_are_422(small_client):
    for request_args in INVALID_SEARCHES:
        r = small_client.post("/v1/search", **request_args)
        assert r.status_code == 422, (request_args, r.text)
        assert_error(r, 422, "invalid_request")
    ok = small_client.post("/v1/search", json={"product_id": "fmnist-test-1", "model": "pixels", "k": 3})
    assert ok.status_code == 200 and ok.json()["model"] == "pixels"


def test_invalid_ids_and_k_on_products_are_422(small_client):
    client = small_client
    assert_error(client.get("/v1/products/fmnist-test-1/similar", params={"k": 0}), 422, "invalid_request")
    assert_error(client.get("/v1/products/fmnist-test-1/similar", params={"k": 1000}), 422, "invalid_request")
    assert_error(client.get("/v1/products/" + "a" * 129), 422, "invalid_request")
    assert_error(client.get("/v1/products/%3Cscript%3E"), 422, "invalid_request")
    assert_error(client.get("/v1/images/0"), 422, "invalid_request")
    assert_error(client.get("/v1/images/abc"), 422, "invalid_request")


def test_unknown_things_are_404(client):
    err = assert_error(client.get("/v1/products/no-such-sku"), 404, "not_found")
    assert "no-such-sku" in err["message"]
    assert_error(client.get("/v1/products/no-such-sku/similar"), 404, "not_found")
    assert_error(client.post("/v1/search", json={"product_id": "no-such-sku"}), 404, "not_found")
    assert_error(client.delete("/v1/products/no-such-sku"), 404, "not_found")
    assert_error(client.get("/v1/images/987654321"), 404, "not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")
    assert_error(client.patch("/v1/products/fmnist-test-1", json={}), 405, "method_not_allowed")


# --- products and images ----------------------------------------------------------------------
def test_get_product_and_its_thumbnail(client):
    r = client.get("/v1/products/fmnist-test-0")
    assert r.status_code == 200
    p = r.json()
    assert p["product_id"] == "fmnist-test-0" and p["category"] == "Ankle boot"
    assert p["attributes"] == {"split": "test"} and len(p["image_ids"]) == 1
    assert p["thumbnail_urls"] == [f"/v1/images/{p['image_ids'][0]}"]
    img = client.get(p["thumbnail_urls"][0])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(img.content)).size == (28, 28)
    assert "max-age" in img.headers["cache-control"] and img.headers["etag"]
    again = client.get(p["thumbnail_urls"][0], headers={"If-None-Match": img.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_put_creates_updates_and_delete_removes(client, indexed_db, fmnist_test):
    images, _ = fmnist_test
    # two photos of an item that is not in the 300-item catalog
    a, b = photo_bytes(images[5000], "JPEG", size=120), photo_bytes(images[5000], "PNG", size=90, angle=5)
    body = {
        "title": "Our boot",
        "category": "Shoes",
        "attributes": {"brand": "Acme", "size": 42},
        "images_base64": [base64.b64encode(a).decode(), base64.b64encode(b).decode()],
    }
    r = client.put("/v1/products/sku-new-1", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["title"] == "Our boot" and created["attributes"] == {"brand": "Acme", "size": 42}
    assert len(created["image_ids"]) == 2
    thumb = client.get(created["thumbnail_urls"][0])
    assert thumb.status_code == 200 and thumb.headers["content-type"] in {"image/webp", "image/png"}
    # it is searchable at once, and the category filter sees it
    hit = upload(client, photo_bytes(images[5000], size=100), k="1", category="Shoes").json()["results"]
    assert hit[0]["product_id"] == "sku-new-1"
    # update: one different image replaces both; the title stays, the category changes
    c = photo_bytes(images[5001], "PNG", size=64)
    r = client.put(
        "/v1/products/sku-new-1", json={"category": "Boots", "images_base64": [base64.b64encode(c).decode()]}
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["title"] == "Our boot" and updated["category"] == "Boots"
    assert len(updated["image_ids"]) == 1 and updated["created_at"] == created["created_at"]
    for old in created["image_ids"]:
        assert_error(client.get(f"/v1/images/{old}"), 404, "not_found")  # orphaned images go
    with Catalog.open(indexed_db) as cat:
        sha = cat.store.get_image(updated["image_ids"][0]).sha256
    assert sha == hashlib.sha256(c).hexdigest()
    stats = client.get("/v1/stats").json()
    assert stats["products"] == CATALOG_SIZE + 1 and stats["images"] == CATALOG_SIZE + 1
    # delete
    assert client.delete("/v1/products/sku-new-1").status_code == 204
    assert_error(client.get("/v1/products/sku-new-1"), 404, "not_found")
    assert_error(client.get(f"/v1/images/{updated['image_ids'][0]}"), 404, "not_found")
    ids = [h["product_id"] for h in upload(client, c, k="20").json()["results"]]
    assert "sku-new-1" not in ids
    assert client.get("/v1/stats").json()["products"] == CATALOG_SIZE


def test_put_multipart_uploads_and_urls(make_client, fmnist_test):
    client = make_client(allow_private_urls=True)
    images, _ = fmnist_test
    up = photo_bytes(images[6000], "PNG", size=100)
    remote = photo_bytes(images[6001], "PNG", size=100)
    with image_server({"remote.png": remote}) as base:
        r = client.put(
            "/v1/products/sku-multi",
            files=[("images", ("front.png", up, "image/png"))],
            data={
                "title": "Multi",
                "category": "Bag",
                "attributes": json.dumps({"colour": "red"}),
                "image_url": f"{base}/remote.png",
            },
        )
    assert r.status_code == 201, r.text
    p = r.json()
    bad = client.put(
        "/v1/products/sku-multi",
        files=[("images", ("f.png", up, "image/png"))],
        data={"attributes": '{"nested": {"a": 1}}'},
    )
    assert_error(bad, 422, "invalid_request")
    assert_error(
        client.put(
            "/v1/products/sku-multi",
            files=[("images", ("f.png", up, "image/png"))],
            data={"attributes": "[1, 2]"},
        ),
        422,
        "invalid_request",
    )
    assert p["title"] == "Multi" and p["attributes"] == {"colour": "red"} and len(p["image_ids"]) == 2
    r = upload(client, remote, k="1", filter="colour=red")
    assert r.json()["results"][0]["product_id"] == "sku-multi"


def test_put_with_a_bad_image_changes_nothing(client, fmnist_test):
    images, _ = fmnist_test
    good = base64.b64encode(photo_bytes(images[7000])).decode()
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()
    assert (
        client.put("/v1/products/sku-keep", json={"title": "v1", "images_base64": [good]}).status_code == 201
    )
    before = client.get("/v1/products/sku-keep").json()
    err = assert_error(
        client.put("/v1/products/sku-keep", json={"title": "v2", "images_base64": [good, broken]}),
        400,
        "bad_image",
    )
    assert err["message"].startswith("sku-keep:images_base64[1]:")
    assert client.get("/v1/products/sku-keep").json() == before
    err = assert_error(
        client.put("/v1/products/sku-keep", json={"image_urls": ["http://127.0.0.1:9/x.png"]}),
        400,
        "url_not_allowed",
    )
    assert "127.0.0.1" in err["message"]
    assert client.get("/v1/products/sku-keep").json() == before
    assert_error(client.put("/v1/products/sku-keep", json={"title": "no images"}), 422, "invalid_request")
    assert_error(client.put("/v1/products/bad%2Fid", json={"images_base64": [good]}), 404, "not_found")
    assert_error(client.put("/v1/products/bad!id", json={"images_base64": [good]}), 422, "invalid_request")


# --- access -----------------------------------------------------------------------------------
def test_api_key_guards_writes(make_client, fmnist_test):
    client = make_client(api_key=KEY)
    body = {"images_base64": [base64.b64encode(photo_bytes(fmnist_test[0][8000])).decode()]}
    assert_error(client.put("/v1/products/sku-k", json=body), 401, "missing_api_key")
    assert_error(
        client.put("/v1/products/sku-k", json=body, headers={"X-API-Key": KEY + "x"}), 403, "invalid_api_key"
    )
    assert_error(
        client.put("/v1/products/sku-k", json=body, headers={"X-API-Key": ""}), 401, "missing_api_key"
    )
    assert client.put("/v1/products/sku-k", json=body, headers={"X-API-Key": KEY}).status_code == 201
    assert_error(client.delete("/v1/products/sku-k"), 401, "missing_api_key")
    assert_error(client.delete("/v1/products/sku-k", headers={"X-API-Key": "nope"}), 403, "invalid_api_key")
    # reads stay open
    assert client.get("/v1/products/sku-k").status_code == 200
    assert client.get("/v1/stats").status_code == 200
    assert client.post("/v1/search", json={"product_id": "sku-k", "k": 2}).status_code == 200
    assert client.delete("/v1/products/sku-k", headers={"X-API-Key": KEY}).status_code == 204


def test_protect_reads_needs_the_key_for_reads(make_client):
    client = make_client(api_key=KEY, protect_reads=True)
    for method, url, kwargs in [
        ("get", "/v1/products/fmnist-test-1", {}),
        ("get", "/v1/products/fmnist-test-1/similar", {}),
        ("get", "/v1/stats", {}),
        ("get", "/v1/images/1", {}),
        ("post", "/v1/search", {"json": {"product_id": "fmnist-test-1"}}),
    ]:
        assert_error(getattr(client, method)(url, **kwargs), 401, "missing_api_key")
        r = getattr(client, method)(url, headers={"X-API-Key": KEY}, **kwargs)
        assert r.status_code == 200, (url, r.text)
    assert (
        client.get("/v1/images/1", headers={"X-API-Key": KEY}).headers["cache-control"].startswith("private")
    )
    assert client.get("/healthz").status_code == 200  # probes stay open


def test_insecure_configurations_are_refused(indexed_db):
    with pytest.raises(ServiceConfigError, match="protect_reads"):
        create_app(Settings(protect_reads=True), db=indexed_db)
    with pytest.raises(ServiceConfigError, match="placeholder"):
        create_app(Settings(environment="production", api_key="changethis"), db=indexed_db)
    app = create_app(Settings(environment="production"), db=indexed_db)
    with TestClient(app) as client:
        err = assert_error(client.delete("/v1/products/fmnist-test-1"), 403, "writes_disabled")
        assert "LOOKALIKE_API_KEY" in err["message"]
        assert client.get("/v1/products/fmnist-test-1").status_code == 200


def test_the_verifier_setting_is_checked_at_start_and_used(indexed_db, tmp_path, fmnist_test):
    with pytest.raises(ServiceConfigError, match="LOOKALIKE_VERIFIER='/no/such/verifier.pt'"):
        create_app(Settings(verifier="/no/such/verifier.pt"), db=indexed_db)
    data = photo_bytes(fmnist_test[0][42], fmt="JPEG")
    with TestClient(create_app(Settings(verifier="none"), db=indexed_db)) as client:
        r = upload(client, data, name="p.jpg", mime="image/jpeg", k="5", rerank="30")
        assert r.status_code == 200, r.text
        hits = r.json()["results"]
        assert all(0 <= h["alignment"] <= 1 and "verifier" not in h for h in hits)


# --- system -----------------------------------------------------------------------------------
def test_stats_health_ready(client):
    s = client.get("/v1/stats").json()
    assert s["products"] == CATALOG_SIZE and s["embeddings"] == CATALOG_SIZE and s["model"] == "pixels"
    assert s["models"] == {"pixels": CATALOG_SIZE}
    assert sum(s["categories"].values()) == CATALOG_SIZE and set(s["categories"]) <= set(CLASSES)
    assert "@" not in s["db"] and "password" not in s["db"]
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    assert r.json()["checks"]["model"].startswith("ok (pixels, 1024 dims)")
    assert r.json()["checks"]["index"] == "ok"
    for probe in ("/healthz", "/readyz"):  # load balancers often probe with HEAD
        head = client.head(probe)
        assert head.status_code == 200 and head.content == b"", probe


def test_readyz_reports_a_model_that_cannot_load(db_url):
    with Catalog.open(db_url) as cat:
        cat.store.set_meta("model", "nosuchfamily")
    with TestClient(create_app(Settings(), db=db_url)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable" and r.json()["checks"]["database"] == "ok"
        assert "nosuchfamily" in r.json()["checks"]["model"]
        assert client.get("/healthz").status_code == 200


def test_readyz_reports_a_catalog_without_vectors_for_its_model(tmp_path):
    db = index_small_catalog(str(tmp_path / "c.db"), n=10)  # vectors under "pixels"
    with Catalog.open(db) as cat:
        cat.store.set_meta("model", "default")  # ...but the catalog says it uses "default"
    with TestClient(create_app(Settings(), db=db), raise_server_exceptions=False) as client:
        r = client.get("/readyz")
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["index"].startswith("failed: ModelMismatchError")
        assert "re-index" in r.json()["checks"]["index"]
        assert_error(client.post("/v1/search", json={"product_id": "fmnist-test-1"}), 503, "model_mismatch")


def test_warm_up_at_startup_builds_the_index_before_the_first_search(indexed_db):
    app = create_app(Settings(), db=indexed_db, warm_up=True)
    with TestClient(app) as client:
        assert app.state.service.warm_up.wait(30)
        assert app.state.service.warm_up.state == "ok"
        assert client.get("/readyz").json()["checks"]["index"] == "ok"


def test_database_failure_is_503_without_a_trace(tmp_path):
    db = index_small_catalog(str(tmp_path / "c.db"), n=10)
    app = create_app(Settings(), db=db)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/stats").status_code == 200
        app.state.service.catalog.store.close()  # the database goes away under the running service
        for r in (
            client.get("/v1/stats"),
            client.get("/v1/products/fmnist-test-1"),
            client.post("/v1/search", json={"product_id": "fmnist-test-1"}),
        ):
            err = assert_error(r, 503, "store_unavailable")
            assert "sqlite" not in err["message"].lower()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("failed")
        assert client.get("/healthz").status_code == 200


def test_stats_hides_database_credentials_and_server_paths():
    from lookalike.api.routers.system import redact_db_url

    assert redact_db_url("postgresql://shop:hunter2@db.internal:5432/cat?sslmode=require") == (
        "postgresql://db.internal:5432/cat"
    )
    assert redact_db_url("/srv/data/catalog.db") == "catalog.db"


def test_openapi_docs_and_web_page(small_client):
    client = small_client
    spec = client.get("/openapi.json").json()
    for path in (
        "/v1/search",
        "/v1/products/{product_id}",
        "/v1/products/{product_id}/similar",
        "/v1/images/{image_id}",
        "/v1/stats",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert body["application/json"]["examples"]
    assert spec["paths"]["/v1/products/{product_id}"]["put"]["security"]
    assert "SearchResponse" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'capture="environment"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.split("<body>")[0].replace("https://shop.example", "")  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200
        assert not re.search(r"(src|href)=.https?:|url\(.?https?:|import .*https?:", r.text)  # no CDN


def test_serve_command_is_documented():
    from typer.testing import CliRunner

    from lookalike.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--db", "--host", "--port"):
        assert option in result.output
    assert "127.0.0.1" in result.output and "8000" in result.output


# --- hostile product fields -------------------------------------------------------------------
def test_attributes_must_be_finite_scalars_under_filterable_keys(client, fmnist_test):
    """A NaN or Infinity stored as an attribute would be invalid JSON in the database and break
    every attribute filter of the catalog; JSON bodies and multipart forms refuse it alike."""
    png = photo_bytes(fmnist_test[0][7100])
    b64 = base64.b64encode(png).decode()
    raw = json.dumps({"images_base64": [b64], "attributes": {"weight": 1}}).replace(
        '"weight": 1', '"weight": 1e999'
    )
    r = client.put("/v1/products/sku-inf", content=raw, headers={"content-type": "application/json"})
    assert "weight" in assert_error(r, 422, "invalid_request")["message"]
    for bad in ('{"weight": NaN}', '{"weight": -Infinity}'):
        r = client.put(
            "/v1/products/sku-nan", files=[("images", ("p.png", png, "image/png"))], data={"attributes": bad}
        )
        assert "weight" in assert_error(r, 422, "invalid_request")["message"], bad
    for attributes in ({"x" * 65: 1}, {'a"b': 1}, {"color\n": 1}, {" lead": 1}, {"long": "v" * 1001}):
        r = client.put("/v1/products/sku-attr", json={"images_base64": [b64], "attributes": attributes})
        assert_error(r, 422, "invalid_request")
        form = {"attributes": json.dumps(attributes)}
        r = client.put("/v1/products/sku-attr", files=[("images", ("p.png", png, "image/png"))], data=form)
        assert_error(r, 422, "invalid_request")
    for missing in ("sku-inf", "sku-nan", "sku-attr"):
        assert_error(client.get(f"/v1/products/{missing}"), 404, "not_found")  # nothing half-written
    # attribute filters still work, booleans included, and match as JSON writes them
    r = client.put(
        "/v1/products/sku-flag", json={"images_base64": [b64], "attributes": {"gift": True, "n": 1}}
    )
    assert r.status_code == 201, r.text
    found = lambda f: [h["product_id"] for h in upload(client, png, k="3", filter=f).json()["results"]]  # noqa: E731
    assert found("gift=true") == ["sku-flag"] and found("n=1") == ["sku-flag"]
    assert found("gift=1") == [] and found("gift=false") == []
    assert found("split=test")[0] != "sku-flag"


def test_multipart_fields_have_the_json_bodys_limits(client, fmnist_test):
    png = photo_bytes(fmnist_test[0][7101])
    files = [("images", ("p.png", png, "image/png"))]
    for field, value in (("title", "t" * 501), ("category", "c" * 201), ("url", "javascript:alert(1)")):
        r = client.put("/v1/products/sku-form", files=files, data={field: value})
        assert field in assert_error(r, 422, "invalid_request")["message"], field
        b64 = base64.b64encode(png).decode()
        r = client.put("/v1/products/sku-form", json={"images_base64": [b64], field: value})
        assert field in assert_error(r, 422, "invalid_request")["message"], field
    assert_error(client.get("/v1/products/sku-form"), 404, "not_found")
    r = client.put(
        "/v1/products/sku-form", files=files, data={"title": "ok", "url": "https://shop.example/p/1"}
    )
    assert r.status_code == 201 and r.json()["url"] == "https://shop.example/p/1"
    r = client.put(
        "/v1/products/sku-form", files=files, data={"url": "/p/1", "attributes": '{"Size (EU)": 42}'}
    )
    assert r.status_code == 200 and r.json()["url"] == "/p/1"  # a path on the shop's site is fine
    assert r.json()["attributes"] == {"Size (EU)": 42}


def test_product_ids_from_file_names_are_reachable_but_not_ids_ending_with_a_space(small_client, fmnist_test):
    from urllib.parse import quote

    b64 = base64.b64encode(photo_bytes(fmnist_test[0][7102])).decode()
    r = small_client.put("/v1/products/sku1%20", json={"images_base64": [b64]})
    assert_error(r, 422, "invalid_request")
    assert_error(small_client.get("/v1/products/fmnist-test-1%20"), 422, "invalid_request")
    assert small_client.get("/v1/products/fmnist-test-1").status_code == 200
    for product_id in ("photo (1)", "sac#2", "50% off", "O'Neill [red]"):
        path = "/v1/products/" + quote(product_id, safe="")
        r = small_client.put(path, json={"images_base64": [b64]})
        assert r.status_code == 201, (product_id, r.text)
        assert small_client.get(path).json()["product_id"] == product_id
        assert small_client.get(path + "/similar", params={"k": 1}).status_code == 200
        assert small_client.delete(path).status_code == 204
    for bad in ("a\\b", 'a"b', "<b>", "(1) photo"):
        assert_error(small_client.get("/v1/products/" + quote(bad, safe="")), 422, "invalid_request")


def test_keyless_development_writes_refuse_a_domain_name_host(small_client, fmnist_test):
    """DNS rebinding: a page on evil.example re-points its name at 127.0.0.1 and writes through the
    developer's browser. Without an API key, writes need the server named by IP or a local name."""
    body = {"images_base64": [base64.b64encode(photo_bytes(fmnist_test[0][8001])).decode()]}
    for host in ("evil.example", "evil.example:8000", "rebind.attacker.example."):
        r = small_client.put("/v1/products/sku-rebind", json=body, headers={"host": host})
        assert "LOOKALIKE_API_KEY" in assert_error(r, 403, "writes_disabled")["message"], host
        assert_error(
            small_client.delete("/v1/products/fmnist-test-1", headers={"host": host}), 403, "writes_disabled"
        )
    assert small_client.get("/v1/products/sku-rebind").status_code == 404
    assert small_client.get("/v1/products/fmnist-test-1", headers={"host": "evil.example"}).status_code == 200
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "api:8000", "shop.localhost"):
        r = small_client.put("/v1/products/sku-rebind", json=body, headers={"host": host})
        assert r.status_code in (200, 201), (host, r.text)
