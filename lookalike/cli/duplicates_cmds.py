"""Duplicate listings and copied photos (perceptual hash); authenticity checks of a photo."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from lookalike.cli.app import app
from lookalike.cli.options import DbOption, JsonOption, RerankOption, console, image_input, open_catalog


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


@app.command()
def authenticate(
    product_id: Annotated[str, typer.Argument(help="The product the photo is said to show.")],
    image: Annotated[str, typer.Argument(help="Image path, http(s) URL or - (standard input) to check.")],
    db: DbOption = None,
    rerank: RerankOption = 0,
    window: Annotated[
        int, typer.Option(min=1, max=1000, help="Products looked at before the verdict is 'different'.")
    ] = 100,
    json_: JsonOption = False,
) -> None:
    """Check a photo against a product's reference photos and the whole catalog: copy (of the
    reference photo), match (no product looks more like it), lookalike or different.
    Exit status 0 for a match, 3 otherwise, so scripts can branch on it.

    Example: lookalike authenticate sku-123 claim.jpg --rerank 100
    """
    with open_catalog(db) as cat:
        check = cat.check_authenticity(product_id, image_input(image), rerank=rerank, window=window)
    if json_:
        typer.echo(json.dumps({"query": "<stdin>" if image == "-" else image, **check.to_dict()}, indent=2))
    else:
        colour = {"match": "green", "copy": "red", "lookalike": "yellow", "different": "red"}[check.verdict]
        console.print(f"[bold {colour}]{check.verdict}[/]: {escape(check.reason)}")
        rank = f"rank {check.rank}" if check.rank else f"not in the first {window}"
        console.print(f"{escape(product_id)}: cosine {check.score:.4f}, {rank}")
        if check.rerank:
            verified = "" if check.verifier is None else f"; its verifier score {check.verifier:+.2f}"
            console.print(
                f"ranked after re-ranking (alignment, then the verifier on the best {check.rerank}){verified}"
            )
        if check.best_other:
            other = check.best_other
            console.print(f"best other: {escape(other['product_id'])} (cosine {other['score']:.4f})")
    if check.verdict != "match":
        raise typer.Exit(3)
