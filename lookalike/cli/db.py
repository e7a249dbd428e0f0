"""`lookalike db start|stop|status|url`: a local PostgreSQL 18 + pgvector server in the data folder.

eval "$(lookalike db start --export)"   # sets LOOKALIKE_DB to the server's database URL
lookalike index fashion-mnist --model pixels
lookalike db stop
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.app import db_app
from lookalike.cli.options import console

DataDirOption = Annotated[
    Path | None,
    typer.Option("--pgdata", help="Server data folder (default: <data dir>/postgres)."),
]
DatabaseOption = Annotated[str, typer.Option("--database", "-d", help="Database name for the catalog.")]


def _server(pgdata: Path | None):
    from lookalike.config import get_settings
    from lookalike.errors import InvalidRequest
    from lookalike.store.pgserver import LocalPostgres

    if pgdata is not None and pgdata.exists() and not pgdata.is_dir():
        raise InvalidRequest(f"--pgdata {pgdata}: is a file, not a folder for the server's data")
    return LocalPostgres(pgdata or get_settings().data_dir / "postgres")


@db_app.command()
def start(
    pgdata: DataDirOption = None,
    database: DatabaseOption = "lookalike",
    export: Annotated[bool, typer.Option("--export", help="Print only `export LOOKALIKE_DB=...`.")] = False,
) -> None:
    """Start the local server (created on first use) and make sure the catalog database exists."""
    import psycopg

    server = _server(pgdata)
    server.start()
    with psycopg.connect(server.url(), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
    url = server.url(database) if exists else server.create_database(database)
    if export:
        typer.echo(f"export LOOKALIKE_DB={url}")
        return
    console.print(f"[bold green]PostgreSQL running[/] in {server.pgdata}")
    console.print(f"catalog URL: [bold]{url}[/]  (use --db, or export LOOKALIKE_DB={url})")


@db_app.command()
def stop(pgdata: DataDirOption = None) -> None:
    """Stop the local server."""
    server = _server(pgdata)
    if not server.running():
        console.print("PostgreSQL is not running")
        return
    server.stop()
    console.print(f"stopped PostgreSQL in {server.pgdata}")


@db_app.command()
def status(pgdata: DataDirOption = None) -> None:
    """Say whether the local server runs, and where."""
    server = _server(pgdata)
    if server.running():
        console.print(f"running: {server.url()} ({server.pgdata})")
    else:
        console.print(f"not running ({server.pgdata})")
        raise typer.Exit(3)


@db_app.command()
def url(pgdata: DataDirOption = None, database: DatabaseOption = "lookalike") -> None:
    """Print the catalog database URL of the local server."""
    typer.echo(_server(pgdata).url(database))
