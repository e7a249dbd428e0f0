"""Duplicate listings and copied photos, by perceptual hash."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from lookalike.cli.app import app
from lookalike.cli.options import DbOption, JsonOption, console, image_input, open_catalog


@app.command()
def duplicates(
    db: DbOption = None,
    max_distance: Annotated[
        int, typer.Option(min=0, max=32, help="Largest Hamming distance (of 64 pHash bits) that counts.")
    ] = 4,
    json_: JsonOption = False,
) -> None:
    """List groups of products that share a near-identical photo (duplicate listings)."""
    from lookalike.duplicates import find_duplicates

    with open_catalog(db) as cat:
        groups = find_duplicates(cat, max_distance=max_distance)
    if json_:
        typer.echo(
            json.dumps({"max_distance": max_distance, "groups": [g.to_dict() for g in groups]}, indent=2)
        )
        return
    for g in groups:
        console.print(f"{len(g.product_ids)} products (≤{g.max_distance} bits): {', '.join(g.product_ids)}")
    console.print(f"[bold]{len(groups)}[/] duplicate group(s)")


@app.command()
def copies(
    image: Annotated[str, typer.Argument(help="Image path, http(s) URL or - (standard input) to check.")],
    db: DbOption = None,
    max_distance: Annotated[
        int,
        typer.Option(
            min=0, max=32, help="Largest Hamming distance (of 64 pHash bits) that counts as a copy."
        ),
    ] = 6,
    json_: JsonOption = False,
) -> None:
    """Check whether a photo is a copy of a catalog photo (stolen-image detection)."""
    from lookalike.duplicates import find_copies

    with open_catalog(db) as cat:
        found = find_copies(cat, image_input(image), max_distance=max_distance)
    image = "<stdin>" if image == "-" else image
    if json_:
        typer.echo(json.dumps({"query": image, "copies": [c.to_dict() for c in found]}, indent=2))
        return
    if not found:
        console.print("no copies found")
    for c in found:
        console.print(f"image {c.image_id} (distance {c.distance}): {', '.join(c.product_ids)}")
