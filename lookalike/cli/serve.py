"""`lookalike serve`: run the HTTP API and the web page on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from lookalike.cli.app import app
from lookalike.cli.options import DbOption, console


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the search API (/v1, docs at /docs) and the web page (/) over a catalog."""
    from lookalike.api.app import serve as run_server

    console.print(f"[bold green]lookalike[/] serving on http://{host}:{port}/  (API docs: /docs)")
    run_server(db=db, host=host, port=port)
