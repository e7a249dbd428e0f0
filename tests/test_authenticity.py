"""Authenticity checks (does this photo show this product?) on a real catalog of Fashion-MNIST items
with the default model: library verdicts, the CLI's exit status and the HTTP API."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.api.app import create_app
from lookalike.catalog import Catalog
from lookalike.config import Settings
from lookalike.errors import InvalidRequest, ProductNotFound
from lookalike.train.metric.augment import StreetViewAugment

N = 300


@pytest.fixture(scope="module")
def catalog_db(tmp_path_factory) -> str:
    db = str(tmp_path_factory.mktemp("authenticity") / "catalog.db")
    with Catalog.open(db) as cat:
        report = cat.index("fashion-mnist:test", model="default", limit=N, progress=False)
    assert report.products_indexed == N
    return db


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(fmnist_test) -> dict[int, Image.Image]:
    """A gentle customer photo of each of the first 40 items (light street views)."""
    images, _ = fmnist_test
    aug = StreetViewAugment(difficulty=0.3)
    return {i: aug(images[i], np.random.default_rng([11, i])) for i in range(40)}


def test_the_reference_photo_itself_is_a_copy(catalog_db, fmnist_test):
    images, _ = fmnist_test
    resized = Image.fromarray(images[3]).resize((112, 112)).convert("RGB")  # re-encoded, enlarged
    with Catalog.open(catalog_db) as cat:
        check = cat.check_authenticity("fmnist-test-3", png(resized))
    assert check.verdict == "copy" and check.copy_of == check.references[0].image_id
    assert check.references[0].hash_distance <= 6 and check.score > 0.95
    assert "copy of this product's reference photo" in check.reason


def test_customer_photos_match_their_product_far_more_than_other_products(catalog_db, photos):
    """Genuine claims (each photo against its own product) are accepted far more often than
    impostor claims (each photo against the catalog product most like its own one)."""
    genuine, impostor = [], []
    with Catalog.open(catalog_db) as cat:
        for i, photo in photos.items():
            own = cat.check_authenticity(f"fmnist-test-{i}", photo)
            assert own.verdict in {"match", "lookalike", "different"}
            genuine.append(own.verdict == "match")
            twin = cat.similar(f"fmnist-test-{i}", k=1)[0].product_id  # a lookalike product
            other = cat.check_authenticity(twin, photo)
            impostor.append(other.verdict == "match")
            if own.verdict == "match":
                assert own.rank == 1 and other.verdict != "match"
                assert other.best_other["product_id"] == f"fmnist-test-{i}"
                assert f"'fmnist-test-{i}'" in other.reason
    assert np.mean(genuine) >= 0.5 and np.mean(impostor) <= 0.1, (np.mean(genuine), np.mean(impostor))


def test_products_sharing_the_matched_photo_both_rank_first(tmp_path, fmnist_test):
    """Two listings of one photo (variants) tie: neither is "behind" the other."""
    images, _ = fmnist_test
    for i in range(3):
        Image.fromarray(images[i]).save(tmp_path / f"img{i}.png")
    rows = ["product_id,image", "a,img0.png", "b,img0.png", "c,img1.png", "d,img2.png"]
    (tmp_path / "catalog.csv").write_text("\n".join(rows) + "\n")
    photo = Image.fromarray(images[0]).rotate(8, fillcolor=0).resize((84, 84))
    with Catalog.open(str(tmp_path / "c.db")) as cat:
        cat.index(str(tmp_path / "catalog.csv"), model="pixels", progress=False)
        checks = [cat.check_authenticity(p, photo) for p in ("a", "b")]
        other = cat.check_authenticity("c", photo)
    assert [c.rank for c in checks] == [1, 1] and {c.verdict for c in checks} <= {"match", "copy"}
    # in a four-product shop a third place is no lookalike: most products would be one
    assert other.rank == 3 and other.verdict == "different"
    assert "2 other products look more like it; the best is 'a'" in other.reason


def test_rerank_ranks_with_the_verifier(catalog_db, photos):
    with Catalog.open(catalog_db) as cat:
        check = cat.check_authenticity("fmnist-test-1", photos[1], rerank=20)
    assert check.rerank == 20 and check.rank is not None
    assert check.verifier is not None and np.isfinite(check.verifier)


def test_bad_input_is_named(catalog_db, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with Catalog.open(catalog_db) as cat:
        with pytest.raises(ProductNotFound, match="sku-404"):
            cat.check_authenticity("sku-404", photos[0])
        with pytest.raises(Exception, match="broken.jpg"):
            cat.check_authenticity("fmnist-test-0", broken)
        with pytest.raises(InvalidRequest, match="window must be between 1 and 1000"):
            cat.check_authenticity("fmnist-test-0", photos[0], window=0)


def test_cli_verdict_and_exit_status(catalog_db, fmnist_test, tmp_path):
    images, _ = fmnist_test
    copy = tmp_path / "copy.png"
    Image.fromarray(images[5]).resize((56, 56)).save(copy)

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "lookalike.cli", "authenticate", *args, "--db", catalog_db],
            capture_output=True,
            text=True,
            timeout=300,
        )

    out = run("fmnist-test-5", str(copy), "--json")
    assert out.returncode == 3, out.stderr  # anything but a match exits 3
    doc = json.loads(out.stdout)
    assert doc["verdict"] == "copy" and doc["product_id"] == "fmnist-test-5" and doc["query"] == str(copy)
    missing = run("sku-404", str(copy))
    assert missing.returncode == 1 and missing.stderr.strip() == "error: product 'sku-404' not found"


def test_api_authenticity(catalog_db, photos, fmnist_test):
    images, _ = fmnist_test
    with TestClient(create_app(Settings(), db=catalog_db)) as client:
        upload = client.post(
            "/v1/products/fmnist-test-2/authenticity",
            files={"image": ("claim.png", png(photos[2]), "image/png")},
        )
        assert upload.status_code == 200, upload.text
        doc = upload.json()
        with Catalog.open(catalog_db) as cat:
            same = cat.check_authenticity("fmnist-test-2", photos[2])
        assert doc["verdict"] == same.verdict and doc["rank"] == same.rank and doc["query"] == "claim.png"
        assert doc["references"][0]["thumbnail_url"].startswith("/v1/images/")

        copy = png(Image.fromarray(images[2]).resize((84, 84)))
        body = {"image_base64": base64.b64encode(copy).decode(), "window": 10}
        as_json = client.post("/v1/products/fmnist-test-2/authenticity", json=body)
        assert as_json.status_code == 200 and as_json.json()["verdict"] == "copy"
        raw = client.post(
            "/v1/products/fmnist-test-2/authenticity?rerank=10",
            content=copy,
            headers={"Content-Type": "image/png"},
        )
        assert raw.status_code == 200 and raw.json()["rerank"] == 10

        missing = client.post("/v1/products/sku-404/authenticity", json=body)
        assert missing.status_code == 404 and "sku-404" in missing.json()["error"]["message"]
        bad = client.post(
            "/v1/products/fmnist-test-2/authenticity",
            files={"image": ("claim.png", b"not an image", "image/png")},
        )
        assert bad.status_code == 400 and "claim.png" in bad.json()["error"]["message"]
        ssrf = client.post(
            "/v1/products/fmnist-test-2/authenticity", json={"image_url": "http://127.0.0.1:22/x.png"}
        )
        assert ssrf.status_code == 400, ssrf.text
        none = client.post("/v1/products/fmnist-test-2/authenticity", json={"window": 10})
        assert none.status_code == 422 and "image_url or image_base64" in none.json()["error"]["message"]
        text = client.post(
            "/v1/products/fmnist-test-2/authenticity", content=b"x", headers={"Content-Type": "text/plain"}
        )
        assert text.status_code == 415
