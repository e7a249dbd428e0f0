"""Running one batch of an index job: the same code in a Celery worker and in-process.

A batch is a slice of whole products of the job's source (``batch_no * batch_products`` onward).
Running it again is harmless: products are upserted, images deduplicated by sha256, vectors and
links inserted only when missing, and the batch's report replaces the previous one.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from pathlib import Path

from lookalike.catalog import Catalog
from lookalike.jobs.state import JobTable
from lookalike.sources import SourceProduct, open_source

_lock = threading.Lock()
_catalogs: dict[str, Catalog] = {}
_sources: OrderedDict[tuple, list[SourceProduct]] = OrderedDict()


def catalog_for(db: str) -> Catalog:
    """One Catalog (and connection pool) per database per process."""
    with _lock:
        cat = _catalogs.get(db)
        if cat is None:
            cat = _catalogs[db] = Catalog.open(db)
        return cat


def close_catalogs() -> None:
    with _lock:
        for cat in _catalogs.values():
            cat.close()
        _catalogs.clear()


def _products(source: str, limit: int | None) -> list[SourceProduct]:
    """The source's products, read once per process (a few sources kept)."""
    key = (source, limit)
    with _lock:
        if key in _sources:
            _sources.move_to_end(key)
            return _sources[key]
    products = list(open_source(source, limit=limit))
    with _lock:
        _sources[key] = products
        while len(_sources) > 3:
            _sources.popitem(last=False)
    return products


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_batch(db: str, job_id: str, batch_no: int) -> dict | None:
    """Index one batch; returns its report (None: the batch was already done)."""
    cat = catalog_for(db)
    jobs = JobTable(cat.store)
    params = jobs.params(job_id)
    if not jobs.start_batch(job_id, batch_no, worker_name()):
        return None
    size = int(params["batch_products"])
    products = _products(params["source"], params.get("limit"))[batch_no * size : (batch_no + 1) * size]
    started = time.perf_counter()
    report = cat.index_products(products, model=params["model"]).to_dict()
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    jobs.finish_batch(job_id, batch_no, report)
    return report


def normalise_source(source: str) -> str:
    """An absolute path for files and folders (workers may run elsewhere), else unchanged."""
    if source.startswith("fashion-mnist") or "://" in source:
        return source
    return str(Path(source).expanduser().absolute())


def normalise_db(db: str) -> str:
    if db.startswith(("postgresql://", "postgres://")):
        return db
    return str(Path(db.removeprefix("sqlite:///")).expanduser().absolute())
