"""The Celery application: Redis broker (``LOOKALIKE_REDIS_URL``), one task per batch.

    LOOKALIKE_REDIS_URL=redis://127.0.0.1:6379/0 celery -A lookalike.jobs.celery_app worker
    # or: lookalike worker

Tasks are acknowledged after they finish (``acks_late``) and requeued when the worker process
dies (``reject_on_worker_lost``); a message whose worker vanished entirely (``kill -9``) is handed
to another worker once the broker's visibility timeout passes. A failing batch is retried with
exponential backoff; errors that retrying cannot fix (bad source, unknown model) fail at once.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from pydantic_settings import BaseSettings, SettingsConfigDict

from lookalike.config import get_settings
from lookalike.errors import ModelError, SourceError

TASK_NAME = "lookalike.index_batch"
QUEUE = "lookalike"


class JobSettings(BaseSettings):
    """Worker tuning, from LOOKALIKE_JOB_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="LOOKALIKE_JOB_", extra="ignore")

    #: seconds before a message taken by a vanished worker goes to another worker; longer than a batch
    visibility_timeout: int = 300
    #: retries of a failing batch, with backoff 2, 4, 8 ... seconds (at most backoff_max)
    retries: int = 5
    backoff_max: int = 60


@lru_cache(maxsize=8)
def make_app(broker_url: str | None) -> Celery:
    job = JobSettings()
    app = Celery("lookalike", broker=broker_url or "memory://", set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        broker_transport_options={
            "visibility_timeout": job.visibility_timeout,
            # sweep for abandoned messages every few seconds, not every 100 s (kombu's default)
            "unacked_restore_interval": max(1, min(10, job.visibility_timeout // 2)),
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=5,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
    )
    return app


app = make_app(get_settings().redis_url)


@app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def index_batch(self, db: str, job_id: str, batch_no: int) -> dict | None:
    from lookalike.jobs.runner import run_batch

    job = JobSettings()
    try:
        report = run_batch(db, job_id, batch_no)
    except (SourceError, ModelError) as exc:
        _fail(db, job_id, batch_no, exc, final=True)
        return None
    except Exception as exc:  # retried with backoff; the batch is idempotent
        final = self.request.retries >= job.retries
        _fail(db, job_id, batch_no, exc, final=final)
        if final:
            return None
        raise self.retry(exc=exc, countdown=min(job.backoff_max, 2 ** (self.request.retries + 1))) from None
    if report is None:
        return None
    return {k: report[k] for k in ("products_indexed", "products_failed", "images_embedded")}


def _fail(db: str, job_id: str, batch_no: int, exc: Exception, *, final: bool) -> None:
    from lookalike.jobs.runner import catalog_for
    from lookalike.jobs.state import JobTable

    try:
        JobTable(catalog_for(db).store).fail_batch(
            job_id, batch_no, f"{type(exc).__name__}: {exc}", final=final
        )
    except Exception:  # the database itself is down: the retry will record it
        pass
