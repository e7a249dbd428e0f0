"""`lookalike products`: list the catalog's products a page at a time (over Catalog.list_products)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from lookalike.cli.app import app
from lookalike.cli.options import DbOption, JsonOption, console, open_catalog


@app.command()
def products(
    db: DbOption = None,
    category: Annotated[str | None, typer.Option("--category", "-c", help="Only this category.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000, help="Products per page.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Start after this cursor (printed under the previous page).")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """List products in the order they were added, a page at a time."""
    with open_catalog(db) as cat:
        page = cat.list_products(limit, cursor=cursor, category=category)
    if json_:
        typer.echo(json.dumps(page.to_dict(), indent=2))
        return
    table = Table()
    for col in ("product", "category", "title", "images"):
        table.add_column(col, justify="right" if col == "images" else "left")
    for p in page.products:
        table.add_row(p.product_id, p.category or "", p.title or "", str(len(p.image_ids)))
    console.print(table)
    if page.next_cursor:
        console.print(f"more: run again with --cursor {page.next_cursor}")
    elif not page.products:
        console.print("[yellow]no products[/]")
