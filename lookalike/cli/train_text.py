"""`lookalike train text`: learn words -> the catalog model's image space (text search and tags)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.app import train_app
from lookalike.cli.options import DbOption, ModelOption, console, open_catalog, writable_file


@train_app.command("text")
def train_text_cmd(
    out: Annotated[Path, typer.Option(help="Where to write the text model.")] = Path("text.pt"),
    db: DbOption = None,
    model: ModelOption = None,
    encoder: Annotated[
        str,
        typer.Option(
            help="Sentence encoder: minilm (bundled all-MiniLM-L6-v2, offline), a sentence-transformers "
            "model folder, or a Hugging Face model id (downloads when online)."
        ),
    ] = "minilm",
    alpha: Annotated[float, typer.Option(min=1e-6, help="Ridge regularisation strength.")] = 1.0,
    min_tag_count: Annotated[
        int, typer.Option(min=1, help="An attribute value becomes a tag when this many products share it.")
    ] = 5,
    holdout: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of products held out to measure the map first.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split and the sample.")] = 0,
    max_products: Annotated[
        int | None,
        typer.Option(min=10, help="Learn from this many products at random (default: all of them)."),
    ] = None,
) -> None:
    """Learn words -> this catalog's image space from its products' titles, categories and
    attributes; then `lookalike search --text` and `lookalike tag` use it."""
    from lookalike.text import train_text_model

    writable_file(out, "--out")
    with open_catalog(db) as cat:
        tm = train_text_model(
            cat,
            model=model,
            encoder=encoder,
            alpha=alpha,
            min_tag_count=min_tag_count,
            holdout=holdout,
            seed=seed,
            max_products=max_products,
            log=lambda msg: console.print(msg, highlight=False),
        )
    tm.recipe["command"] = shlex.join(["lookalike", *sys.argv[1:]])
    path = tm.save(out)
    console.print(
        f"wrote {path}: {tm.metrics['products']:,} products, {len(tm.tags)} tags, words -> {tm.image_model}",
        highlight=False,
    )
