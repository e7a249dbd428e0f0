"""The service under concurrency, on a real uvicorn server: concurrent writes to one product, the
inference queue bound (429), the request time limit (503), and slow work not stalling the loop."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_support import CATALOG_SIZE, image_server, index_small_catalog, live_server, photo_bytes

from lookalike.api.app import create_app
from lookalike.catalog import Catalog
from lookalike.config import Settings


@pytest.fixture
def indexed_db(db_url) -> str:
    return index_small_catalog(db_url)


def test_concurrent_puts_to_one_product_leave_one_whole_version(indexed_db, fmnist_test):
    images, _ = fmnist_test
    # 8 writers, each replacing the product with its own pair of photos
    versions = [
        [photo_bytes(images[9000 + 2 * w], size=60 + w), photo_bytes(images[9001 + 2 * w], size=60 + w)]
        for w in range(8)
    ]
    app = create_app(Settings(), db=indexed_db, inference_threads=4)
    start = threading.Barrier(len(versions))

    def put(w: int) -> httpx.Response:
        body = {"title": f"writer {w}", "images_base64": [base64.b64encode(b).decode() for b in versions[w]]}
        with httpx.Client(base_url=base, timeout=60) as client:
            start.wait()
            return client.put("/v1/products/sku-contended", json=body)

    with live_server(app) as base:
        with ThreadPoolExecutor(len(versions)) as pool:
            responses = list(pool.map(put, range(len(versions))))
        assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
        assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
        final = httpx.get(f"{base}/v1/products/sku-contended").json()
        winner = int(final["title"].split()[1])
        assert len(final["image_ids"]) == 2
        # searching with the winner's photo finds the product; other writers' photos are gone
        r = httpx.post(
            f"{base}/v1/search", files={"image": ("q.png", versions[winner][0], "image/png")}, data={"k": "1"}
        )
        assert r.json()["results"][0]["product_id"] == "sku-contended"
    with Catalog.open(indexed_db) as cat:
        shas = {cat.store.get_image(i).sha256 for i in final["image_ids"]}
        assert shas == {hashlib.sha256(b).hexdigest() for b in versions[winner]}
        stats = cat.stats()
        # no orphaned images from the losing writers, one vector per image
        assert stats["products"] == CATALOG_SIZE + 1
        assert stats["images"] == CATALOG_SIZE + 2 == stats["embeddings"] == stats["links"]


def test_concurrent_puts_to_different_products_all_land(indexed_db, fmnist_test):
    images, _ = fmnist_test
    app = create_app(Settings(), db=indexed_db, inference_threads=2)

    def put(i: int) -> int:
        body = {
            "category": "Batch",
            "images_base64": [base64.b64encode(photo_bytes(images[9500 + i])).decode()],
        }
        return httpx.put(f"{base}/v1/products/sku-par-{i}", json=body, timeout=60).status_code

    with live_server(app) as base:
        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(put, range(12))) == [201] * 12
        assert httpx.get(f"{base}/v1/stats").json()["categories"]["Batch"] == 12


def test_full_inference_queue_answers_429_and_health_stays_fast(tmp_path, fmnist_test):
    """One inference thread, at most 2 searches running or queued: the third is refused at once.
    Meanwhile /healthz and a product read answer quickly (the event loop is not blocked)."""
    db = index_small_catalog(str(tmp_path / "c.db"), n=50)
    app = create_app(Settings(allow_private_urls=True), db=db, inference_threads=1, max_pending=2)
    png = photo_bytes(fmnist_test[0][3])
    with image_server({"slow.png": png}) as images, live_server(app) as base:
        slow = {"image_url": f"{images}/slow.png?delay=3", "k": 3}
        gate = app.state.service.inference
        with ThreadPoolExecutor(2) as pool:
            first = [pool.submit(httpx.post, f"{base}/v1/search", json=slow, timeout=30) for _ in range(2)]
            deadline = time.monotonic() + 10
            while gate.pending < 2:  # wait until both slow searches are admitted (one runs, one queues)
                assert time.monotonic() < deadline, "the slow searches were not admitted"
                time.sleep(0.02)
            t0 = time.perf_counter()
            photo = {"image": ("q.png", png, "image/png")}
            refused = httpx.post(f"{base}/v1/search", files=photo, timeout=30)
            assert time.perf_counter() - t0 < 2.5  # refused at once, not after the ~6 s of queued work
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "too_many_requests"
            assert refused.headers["retry-after"] == "1"
            t0 = time.perf_counter()
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{base}/v1/products/fmnist-test-1", timeout=5).status_code == 200
            assert time.perf_counter() - t0 < 2.0
            assert gate.pending == 2  # the reads did not wait for the slow searches
            assert [f.result().status_code for f in first] == [200, 200]
        assert gate.pending == 0
        # once the queue drained, searches are admitted again
        again = httpx.post(f"{base}/v1/search", files={"image": ("q.png", png, "image/png")}, timeout=30)
        assert again.status_code == 200 and again.json()["results"][0]["product_id"] == "fmnist-test-3"


def test_request_time_limit_answers_503(tmp_path, fmnist_test):
    db = index_small_catalog(str(tmp_path / "c.db"), n=50)
    app = create_app(Settings(allow_private_urls=True, request_timeout=1.0), db=db, inference_threads=2)
    png = photo_bytes(fmnist_test[0][4])
    with image_server({"slow.png": png}) as images, live_server(app) as base:
        t0 = time.perf_counter()
        r = httpx.post(f"{base}/v1/search", json={"image_url": f"{images}/slow.png?delay=4"}, timeout=30)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "timeout" and "1 s" in r.json()["error"]["message"]
        assert elapsed < 3.0
        fast = httpx.post(f"{base}/v1/search", files={"image": ("q.png", png, "image/png")}, timeout=30)
        assert fast.status_code == 200 and fast.json()["results"][0]["product_id"] == "fmnist-test-4"


def test_a_write_that_timed_out_still_lands_before_a_later_write(tmp_path, fmnist_test):
    """The first PUT's image is slow: the client gets 503 while the write goes on in its thread. A
    second PUT to the same product, sent after that 503, waits for the first and lands after it,
    so the product ends as the last acknowledged write left it."""
    db = index_small_catalog(str(tmp_path / "c.db"), n=20)
    app = create_app(Settings(allow_private_urls=True, request_timeout=3.0), db=db, inference_threads=2)
    first, second = photo_bytes(fmnist_test[0][9100]), photo_bytes(fmnist_test[0][9101])
    gate = app.state.service.inference
    with image_server({"first.png": first}) as images, live_server(app) as base:
        slow = {"title": "FIRST", "image_urls": [f"{images}/first.png?delay=4.5"]}
        r = httpx.put(f"{base}/v1/products/sku-late", json=slow, timeout=30)
        assert r.status_code == 503 and "may still complete" in r.json()["error"]["message"], r.text
        assert gate.pending == 1  # the first write still runs, and still counts
        fast = {"title": "SECOND", "images_base64": [base64.b64encode(second).decode()]}
        r = httpx.put(f"{base}/v1/products/sku-late", json=fast, timeout=30)
        assert r.status_code == 200, r.text  # the first write created the product meanwhile
        assert r.json()["title"] == "SECOND"
        product = httpx.get(f"{base}/v1/products/sku-late").json()
        assert product["title"] == "SECOND" and len(product["image_ids"]) == 1
    with Catalog.open(db) as cat:
        assert cat.store.get_image(product["image_ids"][0]).sha256 == hashlib.sha256(second).hexdigest()
    assert gate.pending == 0


def test_a_search_that_timed_out_keeps_its_thread_until_it_returns(tmp_path, fmnist_test):
    """One inference thread: a search abandoned at the time limit still occupies it, so the next
    search waits for it instead of running beside it (the bound on concurrent work holds)."""
    db = index_small_catalog(str(tmp_path / "c.db"), n=20)
    app = create_app(Settings(allow_private_urls=True, request_timeout=1.0), db=db, inference_threads=1)
    png = photo_bytes(fmnist_test[0][5])
    running = []
    gate = app.state.service.inference
    with image_server({"slow.png": png}) as images, live_server(app) as base:
        r = httpx.post(f"{base}/v1/search", json={"image_url": f"{images}/slow.png?delay=4"}, timeout=30)
        assert r.status_code == 503, r.text
        running.append(gate.pending)
        r = httpx.post(f"{base}/v1/search", files={"image": ("q.png", png, "image/png")}, timeout=30)
        assert r.status_code == 503  # queued behind the abandoned search past its own time limit
        deadline = time.monotonic() + 10
        while gate.pending:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.post(f"{base}/v1/search", files={"image": ("q.png", png, "image/png")}, timeout=30)
        assert r.status_code == 200 and r.json()["results"][0]["product_id"] == "fmnist-test-5"
    assert running == [1]
