"""`lookalike eval`: Recall@K / mAP@R of one or more embedders on a retrieval protocol."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.app import app
from lookalike.cli.options import console, writable_dir
from lookalike.errors import InvalidRequest


@app.command("eval")
def eval_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Embedder to evaluate (repeat to compare several)."),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(help="street-to-shop (street views vs 70k shop images) or class-level (test vs train)."),
    ] = "street-to-shop",
    queries: Annotated[
        int | None, typer.Option(min=1, help="Use N sampled queries (default: all 10k).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Report folder: PROTOCOL.md, PROTOCOL.json, PROTOCOL-topk.png.")
    ] = Path("runs/eval"),
    street: Annotated[
        Path | None,
        typer.Option(help="Your own street photos: a CSV of product_id,path[,clean] (needs --gallery)."),
    ] = None,
    gallery: Annotated[
        Path | None, typer.Option(help="With --street: a folder of shop images (file stem = product id).")
    ] = None,
    distractors: Annotated[
        int | None,
        typer.Option(min=0, help="Sample N distractor gallery images (default: the whole gallery)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the query sample and of the street views.")] = 0,
    rerank: Annotated[
        int,
        typer.Option(
            min=0,
            max=1000,
            help="Also score each model re-ranked: alignment screens its first 3×N results, the verifier "
            "checks the best N (0: off).",
        ),
    ] = 0,
    verifier: Annotated[
        str,
        typer.Option(help="With --rerank: the verifier checkpoint, 'default' (shipped) or 'none'."),
    ] = "default",
) -> None:
    """Evaluate embedders on Fashion-MNIST: queries against a gallery with distractors."""
    from lookalike.embedders import load_embedder
    from lookalike.evaluation import evaluate
    from lookalike.evaluation.datasets import PROTOCOLS, class_level, from_files, street_to_shop
    from lookalike.evaluation.report import markdown_table, write_report

    models = model or ["pixels", "default"]
    for name in models:  # an unknown model or unreadable checkpoint fails before the queries render
        load_embedder(name)
    writable_dir(out, "--out")  # before minutes of embedding, not after
    if street is not None or gallery is not None:
        if street is None or gallery is None:
            raise InvalidRequest("--street and --gallery go together")
        protocol = "custom"
        q, g = from_files(street, gallery)
    elif protocol not in PROTOCOLS:
        raise InvalidRequest(f"unknown protocol {protocol!r} (choose {', '.join(PROTOCOLS)})")
    else:
        build = street_to_shop if protocol == "street-to-shop" else class_level
        q, g = build(queries, seed, distractors)
    if queries is not None and len(q) < queries:
        console.print(
            f"[yellow]note:[/] --queries {queries}: this protocol has {len(q)} queries; using all of them"
        )
    console.print(f"{protocol}: {len(q)} queries vs {len(g)} gallery images; models {', '.join(models)}")
    reranker = None
    if rerank:
        from lookalike.rerank import Reranker

        reranker = Reranker(depth=rerank, verifier=None if verifier == "none" else verifier)
    result = evaluate(models, q, g, protocol=protocol, rerank=reranker)
    command = "lookalike " + shlex.join(sys.argv[1:])
    paths = write_report(result, out, q, g, title=f"{protocol} evaluation", command=command, seed=seed)
    console.print(markdown_table(result))
    console.print(f"report {paths['md']}\njson {paths['json']}\ntop-k {paths['png']}")
