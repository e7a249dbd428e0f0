"""Index jobs: in-process without Redis, and real Celery workers with a real Redis broker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from lookalike.catalog import Catalog
from tests.jobs_fixtures import LOOKALIKE, assert_exact, wait_for_job

pytest_plugins = ["tests.jobs_fixtures"]


# --- in-process (no Redis) ----------------------------------------------------------------------
def test_job_runs_in_process_without_redis(db_url):
    from lookalike.jobs import get_job, submit_index_job

    job = submit_index_job("fashion-mnist:test", db=db_url, model="pixels", limit=120, batch_products=50)
    assert job["state"] == "succeeded"
    assert job["batches"] == {"total": 3, "done": 3, "failed": 0, "running": 0, "queued": 0, "attempts": 3}
    assert_exact(db_url, job, 120)
    assert get_job(job["id"], db=db_url)["products_indexed"] == 120
    # idempotent: the same job again adds nothing
    again = submit_index_job("fashion-mnist:test", db=db_url, model="pixels", limit=120, batch_products=50)
    assert again["images_embedded"] == 0 and again["images_reused"] == 120
    assert_exact(db_url, again, 120)


def test_job_reports_bad_items(tmp_path, fmnist_test):
    from lookalike.jobs import submit_index_job

    images, _ = fmnist_test
    root = tmp_path / "shop"
    root.mkdir()
    for i in range(6):
        Image.fromarray(images[i]).resize((56, 56)).save(root / f"sku{i}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    db = str(tmp_path / "c.db")
    job = submit_index_job(str(root), db=db, model="pixels", batch_products=3)
    assert job["state"] == "succeeded"
    assert job["products_indexed"] == 6 and job["products_failed"] == 2
    bad = {Path(f["item"]).name: f for f in job["failures"]}
    assert set(bad) == {"broken.jpg", "empty.png"}
    assert all(f["reason"] for f in bad.values())


def test_bad_source_and_unknown_job_are_clear_errors(tmp_path):
    from lookalike.errors import NotFoundError, SourceError
    from lookalike.jobs import get_job, submit_index_job

    db = str(tmp_path / "c.db")
    with pytest.raises(SourceError, match="nope"):
        submit_index_job(str(tmp_path / "nope"), db=db)
    with pytest.raises(NotFoundError, match="index job 'missing' not found"):
        get_job("missing", db=db)


def test_cli_async_without_redis_runs_in_process(tmp_path):
    db = str(tmp_path / "c.db")
    env = {**os.environ, "LOOKALIKE_PROGRESS": "0"}
    env.pop("LOOKALIKE_REDIS_URL", None)
    out = subprocess.run(
        [
            LOOKALIKE,
            "index",
            "fashion-mnist:test",
            "--db",
            db,
            "--model",
            "pixels",
            "--limit",
            "40",
            "--async",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "ran in this process (succeeded)" in out.stdout and "LOOKALIKE_REDIS_URL is not set" in out.stdout
    job_id = out.stdout.split("index job ")[1].split()[0]
    out = subprocess.run(
        [LOOKALIKE, "job", job_id, "--db", db], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "succeeded" in out.stdout and "40/40 products indexed" in out.stdout
    out = subprocess.run([LOOKALIKE, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "LOOKALIKE_REDIS_URL is not set" in out.stderr


# --- Celery workers + Redis ---------------------------------------------------------------------
def test_celery_workers_index_a_job(db_url, workers):
    from lookalike.jobs import submit_index_job

    workers.start(2)
    job = submit_index_job("fashion-mnist:test", db=db_url, model="pixels", limit=200, batch_products=25)
    assert job["state"] in {"queued", "running", "succeeded"} and job["batches"]["total"] == 8
    job = wait_for_job(job["id"], db_url, workers=workers)
    assert_exact(db_url, job, 200)
    with Catalog.open(db_url) as cat:
        assert cat.search_vector(cat.product_vector("fmnist-test-3"), k=1)[0].product_id == "fmnist-test-3"
