"""Indexing throughput of the demo catalog (70,000 Fashion-MNIST products): an in-process job
(no Redis) vs the same job on 1 and on 2 Celery workers (real redis-server, `lookalike worker`).

    .venv/bin/python bench/bench_indexing.py --limit 70000 --model pixels --out /tmp/bench-indexing.json
    .venv/bin/python bench/bench_indexing.py --db postgres ...   # a local PostgreSQL instead of SQLite
    .venv/bin/python bench/bench_indexing.py --runs postgres:in-process,postgres:1-worker,sqlite:in-process

Each run starts from an empty catalog. Time = job submitted -> last batch recorded in the catalog
database; products/s = products indexed / time. Every product is embedded, thumbnailed and hashed.
After the first run of each database, the time to make the catalog searchable is measured too
(``Catalog.warm``: PostgreSQL builds the model's HNSW index, SQLite the HNSW file beside the
database); writes do not build these graphs, so it is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOOKALIKE = str(Path(sys.executable).parent / "lookalike")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
         "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def fresh_db(kind: str, work: Path, name: str, server) -> str:
    if kind == "sqlite":
        path = work / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return str(path)
    import psycopg

    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
    return server.create_database(name)


def run_mode(mode: str, db: str, args, work: Path) -> dict:
    from lookalike.config import get_settings
    from lookalike.jobs import get_job, submit_index_job
    from lookalike.jobs.runner import close_catalogs

    workers: list[subprocess.Popen] = []
    redis = None
    n_workers = 0 if mode == "in-process" else int(mode.split("-")[0])
    if n_workers:
        redis, url = start_redis(work)
        os.environ["LOOKALIKE_REDIS_URL"] = url
        env = {**os.environ, "LOOKALIKE_PROGRESS": "0"}
        for i in range(n_workers):
            log = open(work / f"worker-{mode}-{i}.log", "w")  # noqa: SIM115
            cmd = [LOOKALIKE, "worker", "--hostname", f"b{i}@%h"]
            workers.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(8)  # workers import torch and connect before the clock starts
    else:
        os.environ.pop("LOOKALIKE_REDIS_URL", None)
    get_settings.cache_clear()
    try:
        t0 = time.perf_counter()
        job = submit_index_job(
            "fashion-mnist", db=db, model=args.model, limit=args.limit, batch_products=args.batch_products
        )
        while not job["finished_at"]:
            time.sleep(0.5)
            job = get_job(job["id"], db=db)
        elapsed = time.perf_counter() - t0
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
        if redis is not None:
            redis.terminate()
            redis.wait(10)
        close_catalogs()
    return {
        "state": job["state"],
        "products": job["products_indexed"],
        "batches": job["batches"],
        "elapsed_s": round(elapsed, 1),
        "products_per_s": round(job["products_indexed"] / elapsed, 1),
    }


def warm_up(db: str, model: str) -> dict:
    """Seconds until the catalog answers its first search (index built on first use)."""
    import numpy as np

    from lookalike.catalog import Catalog

    with Catalog.open(db) as cat:
        cat.embedder(model)  # the model load is not part of the index build
        t0 = time.perf_counter()
        cat.warm(model)
        build = time.perf_counter() - t0
        index = cat._views[model].index
        t0 = time.perf_counter()
        cat.search_vector(np.ones(index.dim, dtype=np.float32), k=10, model=model)
        return {
            "index": type(index).__name__,
            "index_build_s": round(build, 1),
            "first_search_ms": round((time.perf_counter() - t0) * 1000, 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=70_000)
    ap.add_argument("--model", default="pixels")
    ap.add_argument("--batch-products", type=int, default=500)
    ap.add_argument("--modes", default="in-process,1-worker,2-workers")
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument(
        "--runs", help="DB:MODE,... e.g. postgres:in-process,sqlite:in-process (overrides --db/--modes)"
    )
    ap.add_argument("--out", default="/tmp/bench-indexing.json")
    args = ap.parse_args()
    os.environ.setdefault("LOOKALIKE_PROGRESS", "0")
    runs = (
        [tuple(r.split(":", 1)) for r in args.runs.split(",")]
        if args.runs
        else [(args.db, mode) for mode in args.modes.split(",")]
    )
    work = Path(tempfile.mkdtemp(prefix="bench-indexing-"))
    server = None
    if any(db == "postgres" for db, _ in runs):
        from lookalike.store.pgserver import LocalPostgres

        server = LocalPostgres(work / "pgdata")
        server.start()
    results = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "limit": args.limit, "model": args.model, "runs": {}, "searchable": {},
    }  # fmt: skip
    started = time.perf_counter()
    for kind, mode in runs:
        db = fresh_db(kind, work, f"idx_{kind}_" + mode.replace("-", "_"), server)
        results["runs"][f"{kind}:{mode}"] = run_mode(mode, db, args, work)
        print(kind, mode, results["runs"][f"{kind}:{mode}"], flush=True)
        if kind not in results["searchable"]:
            results["searchable"][kind] = warm_up(db, args.model)
            print(kind, "searchable", results["searchable"][kind], flush=True)
        results["wall_s"] = round(time.perf_counter() - started, 1)
        Path(args.out).write_text(json.dumps(results, indent=2))
    if server is not None:
        server.stop()


if __name__ == "__main__":
    main()
