"""Options shared by several commands, and helpers to open the catalog and print results."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from lookalike.errors import InvalidRequest

console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", envvar="LOOKALIKE_DB", help="SQLite file or postgresql:// URL (default: user data dir)."
    ),
]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Embedder: default, pixels, trained:PATH, vae:PATH, torchvision:NAME."
    ),
]
KOption = Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many products to return.")]
FilterOption = Annotated[
    list[str] | None,
    typer.Option(
        "--filter", "-f", help="Only products with key=value (category=Bag, or any attribute). Repeatable."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def open_catalog(db: str | None):
    from lookalike.catalog import Catalog

    return Catalog.open(db)


def parse_filters(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"filter {item!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def print_hits(query: str, model: str, hits, as_json: bool) -> None:
    if as_json:
        doc = {"query": query, "model": model, "results": [h.to_dict() for h in hits]}
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"{query}  ·  model {model}")
    aligned = any(h.alignment is not None for h in hits)
    cols = ("#", "product", "score") + (("alignment",) if aligned else ()) + ("category", "title", "image")
    for col in cols:
        table.add_column(col, justify="right" if col in {"#", "score", "alignment", "image"} else "left")
    for i, h in enumerate(hits, 1):
        cells = [str(i), h.product_id, f"{h.score:.4f}"]
        if aligned:
            cells.append("" if h.alignment is None else f"{h.alignment:.4f}")
        table.add_row(*cells, h.category or "", h.title or "", str(h.image_id))
    console.print(table)
    if not hits:
        console.print("[yellow]no matching products[/]")
