"""`lookalike train metric`: learn a street-to-shop embedding with triplets (see docs/metric-learning.md)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.app import train_app
from lookalike.cli.options import console, index_hint, writable_dir, writable_file
from lookalike.errors import InvalidRequest


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InvalidRequest(f"{what} {text!r} is not a comma-separated list of integers") from None
    if not out:
        raise InvalidRequest(f"{what} needs at least one value")
    return out


@train_app.command("metric")
def train_metric_cmd(
    data: Annotated[
        str, typer.Option(help="Training catalog: fashion-mnist[:train], an image folder or a CSV/JSONL.")
    ] = "fashion-mnist:train",
    street: Annotated[
        Path | None,
        typer.Option(
            help="Real street photos: a CSV with product_id,path columns (else synthetic views only)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Checkpoint to write (default RUN_DIR/model.pt).")] = None,
    run_dir: Annotated[
        Path, typer.Option(help="Run folder: state.pt (resume), curves.png, history.json.")
    ] = Path("runs/metric"),
    backbone: Annotated[
        str, typer.Option(help="smallcnn, or a torchvision model name (resnet18, ...).")
    ] = "smallcnn",
    pretrained: Annotated[
        str | None,
        typer.Option(
            help="torchvision backbones: 'imagenet' (download when online) or a local weights file."
        ),
    ] = None,
    widths: Annotated[str, typer.Option(help="smallcnn stage widths.")] = "24,48,96,192",
    pool: Annotated[
        str,
        typer.Option(help="smallcnn pooling: grid (keeps the item's 4x4 layout) or avgmax (global)."),
    ] = "grid",
    input_size: Annotated[int, typer.Option(min=16, max=512, help="Input resolution in pixels.")] = 32,
    steps: Annotated[int, typer.Option(min=1, help="Training steps (batches).")] = 3000,
    identities: Annotated[int, typer.Option(min=2, help="Product identities per batch.")] = 96,
    street_per_identity: Annotated[
        int, typer.Option(min=1, help="Street views per identity in a batch.")
    ] = 1,
    lr: Annotated[
        float, typer.Option(min=0.0, help="Peak learning rate (warm-up, then cosine decay).")
    ] = 2e-3,
    margin: Annotated[float, typer.Option(min=0.0, help="Triplet margin on squared L2 distance.")] = 0.2,
    mining: Annotated[
        str,
        typer.Option(
            help="Online miner: semihard, hard, random, batchhard, multisimilarity, all (every triplet) "
            "or none."
        ),
    ] = "semihard",
    cross_domain: Annotated[
        bool, typer.Option("--cross-domain/--mixed", help="Shop anchors vs street positives/negatives.")
    ] = True,
    symmetric: Annotated[bool, typer.Option(help="Also street anchors vs shop positives/negatives.")] = True,
    offline_every: Annotated[
        int, typer.Option(min=0, help="Offline hard mining every N steps (0 = off).")
    ] = 0,
    offline_pool: Annotated[
        int, typer.Option(min=2, help="Identities embedded per offline mining round.")
    ] = 4096,
    offline_kind: Annotated[str, typer.Option(help="Offline negatives: hard or semihard.")] = "hard",
    class_weight: Annotated[
        float, typer.Option(help="Weight of an extra class-level loss (needs category labels).")
    ] = 0.0,
    class_loss: Annotated[
        str,
        typer.Option(
            help="The class-level loss: triplet (semi-hard class triplets in the batch) or proxy "
            "(a learned proxy vector per category, NormalizedSoftmax; the shipped model's)."
        ),
    ] = "proxy",
    aug_size: Annotated[
        str, typer.Option(help="Street view size range (min,max) in pixels while training.")
    ] = "48,192",
    curriculum: Annotated[
        int, typer.Option(min=0, help="Steps over which street views ramp from easy to full difficulty.")
    ] = 0,
    difficulty: Annotated[float, typer.Option(min=0.0, max=1.0, help="Final street-view difficulty.")] = 1.0,
    val_every: Annotated[
        int, typer.Option(min=1, help="Validate (R@K on held-out products) every N steps.")
    ] = 500,
    limit: Annotated[int | None, typer.Option(min=1, help="Train on the first N items only.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 2,
    localize: Annotated[
        bool,
        typer.Option(
            help="First train a localizer that finds the item in a photo; embed the item cut out upright."
        ),
    ] = True,
    localizer_steps: Annotated[int, typer.Option(min=1, help="Localizer training steps.")] = 2400,
    localizer_views: Annotated[
        int, typer.Option(min=100, help="Street views rendered to train the localizer.")
    ] = 48000,
    localizer_precision: Annotated[
        str,
        typer.Option(
            help="fp32, or bf16: the localizer's and refiner's training passes in bfloat16 autocast "
            "(about half the time a step on CPUs with AVX512-BF16/AMX)."
        ),
    ] = "fp32",
    refine: Annotated[
        bool,
        typer.Option(help="Also train a refiner that looks twice more around the localizer's box."),
    ] = True,
    polarity: Annotated[
        bool, typer.Option(help="Flip products darker than their surroundings to light-on-dark.")
    ] = True,
    crop_jitter: Annotated[
        float, typer.Option(min=0.0, help="Scale of the box jitter on training crops (localizer errors).")
    ] = 1.0,
    init: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune: start from a trained metric checkpoint's network ('default' or a path) "
            "instead of random weights. It must have this run's network and preprocessing options.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: a run is deterministic for it.")] = 0,
    precision: Annotated[
        str,
        typer.Option(
            help="fp32, or bf16: bfloat16 autocast (about 2x faster steps on CPUs with AVX512-BF16/AMX "
            "and on recent GPUs; weights and loss stay float32)."
        ),
    ] = "fp32",
    device: Annotated[
        str | None, typer.Option(help="auto (a CUDA GPU when there is one), cpu, cuda, cuda:N or mps.")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=0,
            help="Processes rendering street views ahead of the network (0: one thread; "
            "use most of the cores when training on a GPU). Results do not depend on it.",
        ),
    ] = 0,
) -> None:
    """Train FC512-ELU-FC128-L2 embeddings with triplets; rerun the same command to resume."""
    from lookalike.devices import resolve_device
    from lookalike.train.metric import MetricRecipe, train_metric
    from lookalike.train.metric.data import load_train_data

    size = _ints(aug_size, "--aug-size")
    if len(size) != 2 or size[0] > size[1]:
        raise InvalidRequest(f"--aug-size {aug_size!r} must be MIN,MAX")
    recipe = MetricRecipe(
        backbone=backbone,
        pretrained=pretrained,
        widths=_ints(widths, "--widths"),
        pool=pool,
        input_size=input_size,
        steps=steps,
        identities_per_batch=identities,
        street_per_identity=street_per_identity,
        lr=lr,
        margin=margin,
        mining=mining,
        cross_domain=cross_domain,
        symmetric=symmetric,
        offline_every=offline_every,
        offline_pool=offline_pool,
        offline_kind=offline_kind,
        class_weight=class_weight,
        class_loss=class_loss,
        aug_size=size,
        curriculum=curriculum,
        difficulty=difficulty,
        val_every=val_every,
        limit=limit,
        threads=threads,
        localize=localize,
        localizer_steps=localizer_steps,
        localizer_views=localizer_views,
        localizer_precision=localizer_precision,
        refine=refine,
        crop_jitter=crop_jitter,
        polarity=polarity,
        precision=precision,
        seed=seed,
        init=init,
        command="lookalike " + shlex.join(sys.argv[1:]),
    )
    dev = resolve_device(device)  # a device this machine lacks fails before the data loads
    writable_dir(run_dir, "--run-dir")  # an unwritable output fails before the training too
    writable_file(out, "--out")
    if init is not None and init != "default":  # a missing or wrong file fails before the data loads
        from lookalike.checkpoint import load_checkpoint

        load_checkpoint(init, kind="metric")
    train_data = load_train_data(data, street, limit=limit)
    console.print(
        f"training [bold]{backbone}[/] on {len(train_data)} products from {data} ({steps} steps, {dev})"
    )
    result = train_metric(
        train_data, recipe, run_dir=run_dir, out=out, log=console.print, device=device, workers=workers
    )
    m = result.metrics
    shown = ", ".join(f"{k.removeprefix('val_')} {v:.3f}" for k, v in m.items() if k.startswith("val_"))
    console.print(f"[bold green]done[/] in {result.seconds:.0f}s: validation {shown}")
    console.print(f"checkpoint {result.checkpoint}\ncurves {result.curves}")
    console.print(f"use it: lookalike index {index_hint(data)} --model trained:{result.checkpoint}")
