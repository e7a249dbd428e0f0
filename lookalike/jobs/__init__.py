"""Index jobs: turn a source into products in the background, in batches of whole products.

    job = submit_index_job("photos/", db="postgresql://...", model="pixels")
    get_job(job["id"], db="postgresql://...")   # state, progress counts, failures, bad items

With ``LOOKALIKE_REDIS_URL`` set, each batch is a Celery task run by `lookalike worker` processes
(any number, on any machines that reach the database and the source). Without it, the job runs
in-process: to completion before returning, or with ``background=True`` queued for the process's
one background thread, which runs such jobs one at a time.
The job's state lives in the catalog database either way.
"""

from __future__ import annotations

import math
import queue
import threading
import time

from lookalike.config import Settings, get_settings
from lookalike.errors import ModelError, SourceError, StoreError
from lookalike.jobs.state import JobNotFound, JobTable

__all__ = ["JobNotFound", "get_job", "submit_index_job"]

#: in-process attempts of a failing batch (Celery workers use JobSettings.retries)
INLINE_ATTEMPTS = 3


class BrokerError(StoreError):
    """The job broker (Redis) cannot be reached."""

    code = "broker_unavailable"


def submit_index_job(
    source: str,
    *,
    db: str | None = None,
    model: str | None = None,
    limit: int | None = None,
    batch_products: int | None = None,
    background: bool = False,
    settings: Settings | None = None,
) -> dict:
    """Create an index job and queue its batches; returns the job (``id``, ``state``, counts ...)."""
    from lookalike.embedders import canonical_model_name, load_embedder
    from lookalike.jobs.runner import catalog_for, normalise_db, normalise_source
    from lookalike.sources import open_source

    settings = settings or get_settings()
    db = normalise_db(str(db or settings.default_db()))
    source = normalise_source(str(source))
    src = open_source(source, limit=limit)  # a bad source fails here, not in a worker
    try:
        total = len(src)
    except TypeError:
        total = sum(1 for _ in src)
    cat = catalog_for(db)
    model = canonical_model_name(model or cat.store.get_meta("model") or settings.model)
    load_embedder(model)  # an unknown model fails here too
    if cat.store.get_meta("model") is None:
        cat.store.set_meta("model", model)
    size = batch_products or settings.batch_size
    params = {"source": source, "model": model, "limit": limit, "batch_products": size, "db": db}
    jobs = JobTable(cat.store)
    job_id = jobs.create(params, total, math.ceil(total / size))
    n_batches = math.ceil(total / size)
    if settings.redis_url:
        _enqueue(settings.redis_url, db, job_id, n_batches, jobs)
    elif background:
        _background_jobs().put((db, job_id, n_batches))
    else:
        run_inline(db, job_id, n_batches)
    return jobs.get(job_id)


def _enqueue(redis_url: str, db: str, job_id: str, n_batches: int, jobs: JobTable) -> None:
    from kombu.exceptions import OperationalError

    from lookalike.jobs.celery_app import QUEUE, TASK_NAME, make_app

    app = make_app(redis_url)
    try:
        with app.producer_or_acquire() as producer:
            for n in range(n_batches):
                app.send_task(
                    TASK_NAME,
                    args=(db, job_id, n),
                    queue=QUEUE,
                    producer=producer,
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.5},
                )
    except OperationalError as exc:
        jobs.fail_job(job_id, f"could not queue the job: {exc}")
        raise BrokerError(f"Redis at {redis_url} is unreachable: {exc}") from None


_queue: queue.Queue | None = None
_queue_lock = threading.Lock()


def _background_jobs() -> queue.Queue:
    """The in-process job queue: one daemon thread runs background jobs one at a time, in the order
    they came (a server submitting many jobs does not start a thread for each)."""
    global _queue
    with _queue_lock:
        if _queue is None:
            _queue = queue.Queue()
            threading.Thread(
                target=_run_queued, args=(_queue,), daemon=True, name="lookalike-index-jobs"
            ).start()
        return _queue


def _run_queued(jobs: queue.Queue) -> None:
    while True:
        db, job_id, n_batches = jobs.get()
        try:
            run_inline(db, job_id, n_batches)
        except Exception as exc:  # noqa: BLE001 - the job table says why; the queue goes on
            try:
                from lookalike.jobs.runner import catalog_for

                JobTable(catalog_for(db).store).fail_job(job_id, f"{type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - the database itself is gone
                pass


def run_inline(db: str, job_id: str, n_batches: int) -> None:
    """Run every batch of a job in this process (the embedded default, without Redis)."""
    from lookalike.jobs.runner import run_batch

    for n in range(n_batches):
        for attempt in range(1, INLINE_ATTEMPTS + 1):
            try:
                run_batch(db, job_id, n)
                break
            except (SourceError, ModelError) as exc:
                _record_failure(db, job_id, n, exc, final=True)
                break
            except Exception as exc:  # noqa: BLE001 - retried, then recorded on the batch
                final = attempt == INLINE_ATTEMPTS
                _record_failure(db, job_id, n, exc, final=final)
                if final:
                    break
                time.sleep(2**attempt / 4)


def _record_failure(db: str, job_id: str, batch_no: int, exc: Exception, *, final: bool) -> None:
    from lookalike.jobs.runner import catalog_for

    JobTable(catalog_for(db).store).fail_batch(job_id, batch_no, f"{type(exc).__name__}: {exc}", final=final)


def get_job(job_id: str, *, db: str | None = None) -> dict:
    """A job's state, progress counts, failures and bad-item report (raises JobNotFound)."""
    from lookalike.jobs.runner import catalog_for, normalise_db

    db = normalise_db(str(db or get_settings().default_db()))
    return JobTable(catalog_for(db).store).get(job_id)
