"""Fault tests with real processes: kill -9 a worker mid-job, restart Redis mid-job, restart
PostgreSQL under load. Nothing is mocked: real Redis, real Celery workers, real PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime

import pytest

from lookalike.catalog import Catalog
from lookalike.errors import StoreError
from tests.jobs_fixtures import assert_exact, wait_for_job

pytest_plugins = ["tests.jobs_fixtures"]


def _running_batches(db: str, job_id: str) -> list[tuple[int, str]]:
    from lookalike.jobs.runner import catalog_for

    store = catalog_for(db).store
    with store._tx() as c:
        q = "SELECT batch_no, worker FROM job_batches WHERE job_id = ? AND state = 'running'"
        if type(store).__name__ == "PostgresStore":
            q = q.replace("?", "%s")
        return [tuple(r) for r in c.execute(q, (job_id,)).fetchall()]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_worker_mid_job_another_worker_finishes_it(db_url, workers):
    from lookalike.jobs import submit_index_job

    victim, survivor = workers.start(2)
    n = 400
    job = submit_index_job("fashion-mnist:test", db=db_url, model="pixels", limit=n, batch_products=20)
    # wait until the victim is inside a batch, then kill it without warning
    batch = _wait(
        lambda: [b for b in _running_batches(db_url, job["id"]) if b[1].endswith(f":{victim.pid}")],
        60,
        "the victim to start a batch",
    )
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    job = wait_for_job(job["id"], db_url, timeout=120, workers=workers)
    assert_exact(db_url, job, n)  # no lost product, no duplicate
    assert survivor.poll() is None
    assert job["batches"]["attempts"] > job["batches"]["total"], "the killed batch was redone"
    from lookalike.jobs.runner import catalog_for

    store = catalog_for(db_url).store
    with store._tx() as c:
        q = "SELECT attempts, worker FROM job_batches WHERE job_id = ? AND batch_no = ?"
        if type(store).__name__ == "PostgresStore":
            q = q.replace("?", "%s")
        attempts, worker = c.execute(q, (job["id"], batch[0][0])).fetchone()
    assert attempts >= 2 and worker.endswith(f":{survivor.pid}")


def test_redis_restart_mid_job(tmp_path, redis_server, workers):
    from lookalike.jobs import submit_index_job

    db = str(tmp_path / "catalog.db")
    workers.start(1)
    n = 300
    job = submit_index_job("fashion-mnist:test", db=db, model="pixels", limit=n, batch_products=15)
    _wait(lambda: _running_batches(db, job["id"]), 60, "the worker to start")
    redis_server.stop()
    stopped_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(2)
    redis_server.start()  # same port, same append-only file: queued messages are still there
    job = wait_for_job(job["id"], db, timeout=120, workers=workers)
    assert_exact(db, job, n)
    with Catalog.open(db) as cat:
        with cat.store._tx() as c:
            (after,) = c.execute(
                "SELECT COUNT(*) FROM job_batches WHERE job_id = ? AND started_at > ?",
                (job["id"], stopped_at),
            ).fetchone()
    assert after > 0, "batches ran after the restart (the job was not already done)"


def test_postgres_restart_under_load_fails_clearly_then_reconnects(
    postgres_server, postgres_db_url, fmnist_test
):
    images, _ = fmnist_test
    cat = Catalog.open(postgres_db_url)
    cat.index("fashion-mnist:test", model="pixels", limit=100)
    errors: list[Exception] = []
    ok_after: list[float] = []
    stop = threading.Event()
    restarted = threading.Event()

    def load():
        while not stop.is_set():
            try:
                hits = cat.search(images[5], k=3)
                assert hits[0].product_id == "fmnist-test-5"
                if restarted.is_set():
                    ok_after.append(time.monotonic())
            except StoreError as exc:
                errors.append(exc)
            time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        postgres_server.stop("fast")
        _wait(lambda: len(errors) >= 3, 30, "requests to fail while the server is down")
        postgres_server.start()
        restarted.set()
        _wait(lambda: len(ok_after) >= 10, 30, "the pool to reconnect")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        postgres_server.start()
    assert all("PostgreSQL at postgresql://" in str(e) and "unreachable" in str(e) for e in errors), errors[
        :3
    ]
    assert cat.stats()["products"] == 100
    cat.close()


def test_unreachable_postgres_is_a_clear_error():
    with pytest.raises(
        StoreError, match=r"PostgreSQL at postgresql://lookalike:\*\*\*@127.0.0.1:1/x is unreachable"
    ):
        Catalog.open("postgresql://lookalike:secret@127.0.0.1:1/x")
