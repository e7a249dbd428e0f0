"""POST /v1/index-jobs and GET /v1/index-jobs/{id}: in-process without Redis, and real Celery workers."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from lookalike.api.app import create_app
from lookalike.config import Settings
from tests.jobs_fixtures import assert_exact

pytest_plugins = ["tests.jobs_fixtures"]

KEY = "jobs-key-0123456789abcdef"


def _poll(client: TestClient, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/index-jobs/{job_id}")
        assert r.status_code == 200, r.text
        if r.json()["finished_at"]:
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {r.json()}")


def test_index_job_in_process_through_the_api(tmp_path):
    db = str(tmp_path / "c.db")
    with TestClient(create_app(Settings(api_key=KEY), db=db), raise_server_exceptions=False) as client:
        body = {"source": "fashion-mnist:test", "model": "pixels", "limit": 60, "batch_products": 25}
        r = client.post("/v1/index-jobs", json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = client.post("/v1/index-jobs", json=body, headers={"X-API-Key": KEY})
        assert r.status_code == 202, r.text
        job = _poll(client, r.json()["id"])
        assert job["state"] == "succeeded" and job["batches"]["total"] == 3
        assert_exact(db, job, 60)
        # the catalog behind the API sees the new products
        assert client.get("/v1/products/fmnist-test-59").status_code == 200

        r = client.get("/v1/index-jobs/0123456789abcdef")
        assert r.status_code == 404 and "not found" in r.json()["error"]["message"]
        r = client.post("/v1/index-jobs", json={"source": str(tmp_path / "nope")}, headers={"X-API-Key": KEY})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_source"
        r = client.post(
            "/v1/index-jobs", json={"source": "fashion-mnist", "limit": 0}, headers={"X-API-Key": KEY}
        )
        assert r.status_code == 422
        # a request never names a file the server would load as a model (nor weights to download)
        secret = tmp_path / "weights.pt"
        secret.write_bytes(b"not a checkpoint")
        for model in (f"trained:{secret}", "trained:/nonexistent.pt", "torchvision:resnet50"):
            body = {"source": "fashion-mnist:test", "limit": 2, "model": model}
            r = client.post("/v1/index-jobs", json=body, headers={"X-API-Key": KEY})
            assert r.status_code == 422, r.text
            message = r.json()["error"]["message"]
            assert model in message and "pixels" in message and "cannot be read" not in message


def test_in_process_jobs_run_one_at_a_time_in_order(tmp_path):
    """Without Redis, background jobs share one thread: a second job waits for the first instead of
    running beside it (a client submitting many jobs cannot start a thread for each)."""
    db = str(tmp_path / "c.db")
    with TestClient(create_app(Settings(api_key=KEY), db=db), raise_server_exceptions=False) as client:
        ids = []
        for offset_limit in (120, 40, 40):
            body = {
                "source": "fashion-mnist:test",
                "model": "pixels",
                "limit": offset_limit,
                "batch_products": 20,
            }
            r = client.post("/v1/index-jobs", json=body, headers={"X-API-Key": KEY})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        jobs = [_poll(client, job_id) for job_id in ids]
    assert [j["state"] for j in jobs] == ["succeeded"] * 3
    for before, after in zip(jobs, jobs[1:], strict=False):
        assert after["started_at"] >= before["finished_at"], (before, after)


def test_index_job_through_the_api_runs_on_celery_workers(db_url, workers):
    workers.start(1)
    settings = Settings(api_key=KEY, redis_url=workers.redis_url)
    with TestClient(create_app(settings, db=db_url), raise_server_exceptions=False) as client:
        r = client.post(
            "/v1/index-jobs",
            json={"source": "fashion-mnist:test", "model": "pixels", "limit": 90, "batch_products": 30},
            headers={"X-API-Key": KEY},
        )
        assert r.status_code == 202, r.text
        assert r.json()["state"] in {"queued", "running", "succeeded"}
        job = _poll(client, r.json()["id"])
    assert_exact(db_url, job, 90)
    assert job["batches"]["attempts"] == 3


def test_index_jobs_read_server_files_only_inside_the_index_roots(tmp_path):
    from PIL import Image

    from lookalike.datasets.fashion_mnist import load_split

    x, _ = load_split("test")
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "shop").mkdir(parents=True)
    outside.mkdir()
    for i in range(3):
        Image.fromarray(x[i]).save(allowed / "shop" / f"p{i}.png")
        Image.fromarray(x[10 + i]).save(outside / f"secret{i}.png")
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    (allowed / "rows.csv").write_text("product_id,image\nok,shop/p0.png\nsneaky,../outside/secret0.png\n")
    db = str(tmp_path / "c.db")
    headers = {"X-API-Key": KEY}

    def refused(client, source: str, reason: str) -> None:
        r = client.post("/v1/index-jobs", json={"source": source, "model": "pixels"}, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_source", r.text
        assert reason in r.json()["error"]["message"], r.json()

    with TestClient(create_app(Settings(api_key=KEY), db=db), raise_server_exceptions=False) as client:
        refused(client, str(allowed / "shop"), "only the built-in datasets")  # no roots configured
    settings = Settings(api_key=KEY, index_roots=[allowed])
    with TestClient(create_app(settings, db=db), raise_server_exceptions=False) as client:
        refused(client, str(outside), "outside the folders")
        refused(client, str(allowed / "link"), "outside the folders")  # a symlink out of the root
        refused(client, str(allowed / "shop" / ".." / ".." / "outside"), "outside the folders")
        refused(client, str(allowed / "rows.csv"), "'sneaky' lists image")  # a row pointing out
        assert client.get("/v1/stats").json()["products"] == 0  # nothing was indexed by the refusals
        r = client.post(
            "/v1/index-jobs", json={"source": str(allowed / "shop"), "model": "pixels"}, headers=headers
        )
        assert r.status_code == 202, r.text
        job = _poll(client, r.json()["id"])
        assert job["state"] == "succeeded" and job["products_indexed"] == 3
