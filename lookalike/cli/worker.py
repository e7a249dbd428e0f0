"""`lookalike worker`: a Celery worker that runs index-job batches (needs LOOKALIKE_REDIS_URL);
`lookalike job ID`: an index job's progress."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lookalike.cli.app import app
from lookalike.cli.options import DbOption, JsonOption, console, err_console, one_of
from lookalike.errors import LookalikeError


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Batches run at once (processes).")
    ] = 1,
    loglevel: Annotated[
        str,
        typer.Option(
            callback=one_of("debug", "info", "warning", "error", "critical"),
            help="Celery log level.",
        ),
    ] = "info",
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


@app.command()
def job(
    job_id: Annotated[str, typer.Argument(help="The id `lookalike index --async` printed.")],
    db: DbOption = None,
    json_: JsonOption = False,
) -> None:
    """Show an index job's state, progress counts and bad items."""
    from lookalike.jobs import get_job

    j = get_job(job_id, db=db)
    if json_:
        typer.echo(json.dumps(j, indent=2))
        return
    b = j["batches"]
    console.print(
        f"job [bold]{j['id']}[/] {j['state']}: {b['done']}/{b['total']} batches, "
        f"{j['products_indexed']}/{j['products_total']} products indexed, {j['products_failed']} skipped, "
        f"{j['images_embedded']} images embedded"
    )
    for f in j["failures"][:10]:
        err_console.print(f"[yellow]skipped[/] {f['item']}: {f['reason']}")
    if len(j["failures"]) > 10:
        err_console.print(f"... and {len(j['failures']) - 10} more")
    for e in j["errors"][:5]:
        err_console.print(f"[red]batch {e['batch']}[/] ({e['state']}): {e['error']}")
