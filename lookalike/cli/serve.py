"""`lookalike serve`: run the HTTP API and the web page on uvicorn."""

from __future__ import annotations

import errno
from typing import Annotated

import typer
from rich.markup import escape

from lookalike.cli.app import app
from lookalike.cli.options import DbOption, console, err_console, open_catalog
from lookalike.errors import InvalidRequest

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
) -> None:
    """Serve the search API (/v1, docs at /docs) and the web page (/) over a catalog."""
    from lookalike.api.app import check_settings
    from lookalike.api.app import serve as run_server
    from lookalike.config import get_settings

    check_settings(get_settings())  # a bad setting fails before the "serving" line, not after it
    _check_address(host, port)  # and so do a busy port and a host that is not an address here
    settings = get_settings()
    with open_catalog(db, create=True) as cat:  # and so does a catalog that cannot be opened
        if settings.text_model:  # and a text model that does not load or fit this catalog
            cat.text_model()
        if cat.stats()["products"] == 0:
            err_console.print(
                f"[yellow]note[/] the catalog {escape(str(cat.store.url))} is empty: add products with "
                "`lookalike index SOURCE` or PUT /v1/products/{id}"
            )
        if settings.api_key is None and settings.environment == "development" and host not in LOOPBACK:
            err_console.print(
                f"[yellow]warning[/] listening on {escape(host)} without LOOKALIKE_API_KEY: anyone who can "
                "reach this address can add and delete products"
            )
        console.print(f"[bold green]lookalike[/] serving on http://{host}:{port}/  (API docs: /docs)")
        run_server(db=cat, host=host, port=port)


def _check_address(host: str, port: int) -> None:
    """Fail with the reason, naming the address, when uvicorn could not listen there."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidRequest(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise InvalidRequest(f"cannot listen on {host}:{port}: {reason}") from None
