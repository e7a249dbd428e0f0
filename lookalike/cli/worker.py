"""`lookalike worker`: a Celery worker that runs index-job batches (needs LOOKALIKE_REDIS_URL)."""

from __future__ import annotations

from typing import Annotated

import typer

from lookalike.cli.app import app
from lookalike.errors import LookalikeError


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Batches run at once (processes).")
    ] = 1,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    hostname: Annotated[str | None, typer.Option(help="Worker name (default: celery@host).")] = None,
) -> None:
    """Run a worker for `lookalike index --async` and POST /v1/index-jobs (Redis from LOOKALIKE_REDIS_URL)."""
    from lookalike.config import get_settings

    if not get_settings().redis_url:
        raise LookalikeError(
            "LOOKALIKE_REDIS_URL is not set: workers take jobs from Redis (without Redis, index jobs run "
            "in-process and need no worker)"
        )
    from lookalike.jobs.celery_app import QUEUE
    from lookalike.jobs.celery_app import app as celery_app

    argv = [
        "worker",
        f"--loglevel={loglevel}",
        "-Q",
        QUEUE,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if concurrency <= 1:
        argv.append("--pool=solo")
    else:
        argv += ["--pool=prefork", f"--concurrency={concurrency}"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    celery_app.worker_main(argv)
