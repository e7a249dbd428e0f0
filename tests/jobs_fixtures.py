"""Fixtures shared by the job, API-job and fault tests: a real redis-server, real `lookalike worker`
processes, and helpers that wait for a job and check its counts against the catalog.
Loaded with ``pytest_plugins = ["tests.jobs_fixtures"]``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lookalike.catalog import Catalog

REDIS = "/usr/bin/redis-server"
LOOKALIKE = str(Path(sys.executable).parent / "lookalike")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on 127.0.0.1 with append-only persistence (messages survive a restart)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                REDIS,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    if not Path(REDIS).exists():
        pytest.fail(f"{REDIS} is missing: apt-get install redis-server (scripts/system-deps.sh)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


class Workers:
    """Real `lookalike worker` processes (Celery, solo pool) talking to a real Redis."""

    def __init__(self, redis_url: str, log_dir: Path):
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "LOOKALIKE_REDIS_URL": redis_url,
            "LOOKALIKE_JOB_VISIBILITY_TIMEOUT": "4",
            "LOOKALIKE_PROGRESS": "0",
        }

    def start(self, n: int = 1) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            i = len(self.procs)
            log = open(self.log_dir / f"worker{i}.log", "w")  # noqa: SIM115 - closed with the process
            proc = subprocess.Popen(
                [LOOKALIKE, "worker", "--hostname", f"w{i}@%h", "--loglevel", "info"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            self.procs.append(proc)
            started.append(proc)
        return started

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.log_dir.glob("worker*.log")))


@pytest.fixture
def workers(redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKALIKE_REDIS_URL", redis_server.url)
    monkeypatch.setenv("LOOKALIKE_JOB_VISIBILITY_TIMEOUT", "4")
    from lookalike.config import get_settings

    get_settings.cache_clear()
    w = Workers(redis_server.url, tmp_path)
    yield w
    w.stop()
    from lookalike.jobs.runner import close_catalogs

    close_catalogs()


def wait_for_job(job_id: str, db: str, timeout: float = 90, workers: Workers | None = None) -> dict:
    from lookalike.jobs import get_job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(job_id, db=db)
        if job["finished_at"]:
            return job
        time.sleep(0.2)
    raise AssertionError(
        f"job {job_id} did not finish: {get_job(job_id, db=db)}\n{workers.logs() if workers else ''}"
    )


def assert_exact(db: str, job: dict, n: int) -> None:
    """The job and the catalog hold exactly n products, each with one image, link and vector."""
    assert job["state"] == "succeeded", job
    assert job["products_indexed"] == n and job["products_seen"] == n and job["products_failed"] == 0
    assert job["batches"]["done"] == job["batches"]["total"]
    with Catalog.open(db) as cat:
        s = cat.stats()
    assert (s["products"], s["images"], s["links"], s["embeddings"]) == (n, n, n, n), s


@pytest.fixture(autouse=True)
def _close_job_catalogs():
    yield
    from lookalike.jobs.runner import close_catalogs

    close_catalogs()
