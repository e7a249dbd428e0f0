"""`lookalike train verifier`: learn a pair verifier that re-ranks an embedder's short-lists."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.app import train_app
from lookalike.cli.options import console, index_hint, writable_dir, writable_file


@train_app.command("verifier")
def train_verifier_cmd(
    data: Annotated[
        str, typer.Option(help="Catalog to train on: fashion-mnist[:train] or any source `index` accepts.")
    ] = "fashion-mnist:train",
    run_dir: Annotated[
        Path, typer.Option(help="Run folder: state (resumes when re-run), curves, history.")
    ] = Path("runs/verifier"),
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write the verifier checkpoint (default RUN_DIR/verifier.pt)."),
    ] = None,
    embedder: Annotated[
        str,
        typer.Option(
            "--embedder",
            "--model",
            "-m",
            help="The embedder whose short-lists it will re-rank (as --model elsewhere).",
        ),
    ] = "default",
    steps: Annotated[int, typer.Option(min=1, help="Training steps.")] = 1200,
    batch: Annotated[
        int, typer.Option("--batch", "--batch-size", min=2, help="Street views (products) per step.")
    ] = 48,
    negatives: Annotated[int, typer.Option(min=1, help="Hard negatives per street view.")] = 7,
    pool: Annotated[int, typer.Option(min=2, help="Negatives come from the embedder's POOL nearest.")] = 40,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (one-cycle).")] = 1e-3,
    precision: Annotated[
        str, typer.Option(help="fp32, or bf16 (bfloat16 autocast: fast on CPUs with AVX512-BF16 / AMX).")
    ] = "fp32",
    val_products: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Hold out the last N products to validate on (0: none; default 500, at most a tenth).",
        ),
    ] = None,
    val_every: Annotated[int, typer.Option(min=1, help="Validate every N steps.")] = 500,
    stop_after: Annotated[
        int | None,
        typer.Option(min=1, help="Stop (and save the run's state) after N steps; re-run to go on."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N products.")] = None,
    seed: Annotated[int, typer.Option(help="Seed: a run is deterministic for it.")] = 0,
    threads: Annotated[int, typer.Option(min=1, help="Torch threads.")] = 2,
) -> None:
    """Train a verifier: street views vs their product and the embedder's near misses."""
    from lookalike.train.metric.data import load_train_data
    from lookalike.train.metric.verifier import VerifierRecipe, train_verifier

    writable_dir(run_dir, "--run-dir")  # before the training, not after it
    writable_file(out, "--out")
    train_data = load_train_data(data, limit=limit)
    if val_products is None:
        val_products = min(500, len(train_data) // 10)
    recipe = VerifierRecipe(
        steps=steps,
        batch=batch,
        negatives=negatives,
        pool=pool,
        lr=lr,
        seed=seed,
        threads=threads,
        embedder=embedder,
        precision=precision,
        val_products=val_products,
        val_every=val_every,
        command="lookalike " + shlex.join(sys.argv[1:]),
    )
    console.print(
        f"training a verifier for {embedder} on {len(train_data)} products from {data} ({steps} steps)"
    )
    out = out or run_dir / "verifier.pt"
    path, metrics = train_verifier(
        train_data, recipe, out=out, run_dir=run_dir, stop_after=stop_after, log=console.print
    )
    if stop_after is not None and stop_after < steps:
        console.print(f"stopped after {stop_after} steps; the same command goes on from {path}")
        return
    shown = ", ".join(
        f"{k.removeprefix('val_')} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in metrics.items()
        if k != "seconds"
    )
    console.print(f"[bold green]done[/] in {metrics['seconds']:.0f}s, wrote {path}: {shown}")
    if data.startswith("fashion-mnist"):
        console.print(f"use it: lookalike eval -m {embedder} --rerank 100 --verifier {path}")
    else:
        console.print(
            f"use it: lookalike index {index_hint(data)} --model {embedder}, then "
            f"lookalike search PHOTO --model {embedder} --rerank 20 --verifier {path}"
        )
