"""`lookalike train vae`: fit a VAE, beta-VAE or WAE-MMD on unlabelled product images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lookalike.cli.app import train_app
from lookalike.cli.options import console, index_hint, one_of, writable_dir
from lookalike.errors import InvalidRequest


@train_app.command("vae")
def train_vae_cmd(
    data: Annotated[
        str, typer.Option(help="fashion-mnist[:train] or a folder of images (the test split is for eval).")
    ] = "fashion-mnist:train",
    out: Annotated[
        Path, typer.Option(help="Output folder: model.pt, epochs.gif, losses.png, history.json.")
    ] = Path("runs/vae"),
    model: Annotated[str, typer.Option("--model", help="vae, beta-vae or wae-mmd.")] = "vae",
    latent_dim: Annotated[
        int, typer.Option("--latent-dim", "-z", min=1, max=512, help="Latent dimensions.")
    ] = 16,
    beta: Annotated[float, typer.Option(help="beta-vae: KL weight (plain variant).")] = 4.0,
    capacity: Annotated[
        float,
        typer.Option(help="beta-vae: target KL capacity in nats; > 0 selects the annealed 'C' variant."),
    ] = 0.0,
    capacity_steps: Annotated[int, typer.Option(help="beta-vae C variant: steps to raise C from 0.")] = 5000,
    gamma: Annotated[float, typer.Option(help="beta-vae C variant: weight of |KL - C|.")] = 100.0,
    reg_weight: Annotated[float, typer.Option(help="wae-mmd: weight (lambda) of the MMD term.")] = 100.0,
    likelihood: Annotated[
        str,
        typer.Option(
            callback=one_of("bernoulli", "gaussian"),
            help="bernoulli (cross-entropy) or gaussian (squared error).",
        ),
    ] = "bernoulli",
    resolution: Annotated[
        int, typer.Option(help="Input size in pixels (a multiple of 4 per conv layer pair).")
    ] = 28,
    rgb: Annotated[
        bool, typer.Option("--rgb/--grey", help="Model colour (3 channels) or grey images.")
    ] = False,
    conv_channels: Annotated[
        str, typer.Option(help="Conv widths, one stride-2 layer each, e.g. 16,32.")
    ] = "16,32",
    epochs: Annotated[int, typer.Option(min=1)] = 6,
    batch_size: Annotated[int, typer.Option(min=2)] = 256,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (one-cycle schedule).")] = 1e-3,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N images.")] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto (a CUDA GPU when there is one), cpu, cuda, cuda:N or mps.")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train a latent variable model; the checkpoint is an embedder: --model vae:OUT/model.pt."""
    from lookalike.train.vae import VAETrainConfig, train_vae
    from lookalike.train.vae.data import load_training_images

    try:
        channels = tuple(int(c) for c in conv_channels.split(",") if c.strip())
    except ValueError:
        raise InvalidRequest(
            f"--conv-channels {conv_channels!r} is not a comma-separated list of integers"
        ) from None
    if not channels:
        raise InvalidRequest("--conv-channels needs at least one width")
    if resolution % (2 ** len(channels)):
        raise InvalidRequest(
            f"--resolution {resolution} must be a multiple of {2 ** len(channels)} "
            f"for {len(channels)} conv layers"
        )
    in_channels = 3 if rgb else 1
    images, _ = load_training_images(data, channels=in_channels, resolution=resolution, limit=limit)
    writable_dir(out, "--out")  # before the training, not after it
    config = VAETrainConfig(
        model=model,
        latent_dim=latent_dim,
        beta=beta,
        capacity=capacity,
        capacity_steps=capacity_steps,
        gamma=gamma,
        reg_weight=reg_weight,
        likelihood=likelihood,
        resolution=resolution,
        in_channels=in_channels,
        channels=channels,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        threads=threads,
        data=data,
    )
    console.print(f"training [bold]{model}[/] z={latent_dim} on {len(images)} images from {data}")
    result = train_vae(images, out, config, log=console.print, device=device)
    m = result.metrics
    console.print(
        f"[bold green]done[/] in {m['train_seconds']:.0f}s: val MSE/pixel {m['mse']:.4f}, "
        f"active units {m['active_units']}/{latent_dim}"
    )
    console.print(f"checkpoint {result.checkpoint}\nepochs GIF {result.gif}\nloss curves {result.curves}")
    console.print(f"use it: lookalike index {index_hint(data)} --model vae:{result.checkpoint}")
