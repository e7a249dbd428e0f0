"""``train_vae``: fit a VAE / beta-VAE / WAE-MMD on unlabelled images and write a checkpoint plus pictures.

Outputs in ``out_dir``: ``model.pt`` (the shared checkpoint format, kind ``vae``), ``epochs.gif``
(the same fixed latent vectors decoded after every epoch), ``losses.png`` (reconstruction, KL per
dimension or MMD) and ``history.json``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lookalike.checkpoint import save_checkpoint
from lookalike.errors import InvalidRequest
from lookalike.progress import progress_bar
from lookalike.train.vae.data import grid_image, to_tensor
from lookalike.train.vae.models import VAE, build_model, canonical_type


@dataclass
class VAETrainConfig:
    """Everything that defines a run; stored as the checkpoint's recipe."""

    model: str = "vae"  # vae | beta-vae | wae-mmd
    latent_dim: int = 16
    beta: float = 4.0  # beta-vae, plain variant
    capacity: float = 0.0  # beta-vae: > 0 selects the capacity-annealed variant (nats)
    capacity_steps: int = 5_000
    gamma: float = 100.0  # beta-vae capacity variant weight
    reg_weight: float = 100.0  # wae-mmd lambda
    likelihood: str = "bernoulli"
    resolution: int = 28
    in_channels: int = 1
    channels: tuple[int, ...] = (16, 32)
    hidden: int = 256
    epochs: int = 6
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None
    grid_size: int = 8  # the epoch GIF shows grid_size x grid_size fixed latents
    val_fraction: float = 0.05
    data: str = ""  # where the images came from (for the record)
    command: str = field(default_factory=lambda: " ".join(sys.argv))

    def model_arch(self) -> dict[str, Any]:
        arch: dict[str, Any] = {
            "model": canonical_type(self.model),
            "latent_dim": self.latent_dim,
            "in_channels": self.in_channels,
            "resolution": self.resolution,
            "channels": list(self.channels),
            "hidden": self.hidden,
            "likelihood": self.likelihood,
        }
        if arch["model"] == "beta-vae":
            arch |= {
                "beta": self.beta,
                "capacity": self.capacity,
                "capacity_steps": self.capacity_steps,
                "gamma": self.gamma,
            }
        elif arch["model"] == "wae-mmd":
            arch["reg_weight"] = self.reg_weight
        return arch


@dataclass
class TrainResult:
    checkpoint: Path
    gif: Path
    curves: Path
    history: dict[str, Any]
    metrics: dict[str, Any]
    model: VAE


def _validate(config: VAETrainConfig, n: int) -> None:
    if config.latent_dim < 1:
        raise InvalidRequest(f"latent_dim must be >= 1, got {config.latent_dim}")
    if config.epochs < 1:
        raise InvalidRequest(f"epochs must be >= 1, got {config.epochs}")
    if config.batch_size < 2:
        raise InvalidRequest(f"batch_size must be >= 2, got {config.batch_size}")
    if n < 4:
        raise InvalidRequest(f"need at least 4 training images, got {n}")
    try:
        canonical_type(config.model)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


@torch.no_grad()
def evaluate(model: VAE, x: torch.Tensor, batch_size: int = 512) -> dict[str, Any]:
    """Validation numbers: reconstruction loss (nats/example), MSE per pixel, KL per dim, active units."""
    from lookalike.train.vae.losses import kl_per_dim, reconstruction_loss

    model.eval()
    recon, mse, kl_sum, mus = 0.0, 0.0, None, []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        mu, logvar = model.encode(xb)
        logits = model.decoder(mu)
        recon += reconstruction_loss(logits, xb, model.likelihood).sum().item()
        mse += ((torch.sigmoid(logits) - xb) ** 2).mean(dim=(1, 2, 3)).sum().item()
        kl = kl_per_dim(mu, logvar).sum(0)
        kl_sum = kl if kl_sum is None else kl_sum + kl
        mus.append(mu)
    n = len(x)
    mu_all = torch.cat(mus)
    variances = mu_all.var(0)
    out: dict[str, Any] = {
        "recon": recon / n,
        "mse": mse / n,
        "active_units": int((variances > 0.01).sum().item()),
        "latent_variance": [round(v, 5) for v in variances.tolist()],
    }
    if model.model_type != "wae-mmd":
        out["kl_per_dim"] = [round(v / n, 5) for v in kl_sum.tolist()]
        out["kl"] = float(sum(out["kl_per_dim"]))
    return out


def train_vae(
    images: np.ndarray,
    out_dir: str | Path,
    config: VAETrainConfig | None = None,
    *,
    progress: bool = True,
    log=None,
    device: str | None = None,
) -> TrainResult:
    """Train one latent variable model on uint8 images (n, h, w[, c]); no labels needed.

    ``log`` (optional callable taking a str) receives one line per epoch. ``device``: where the
    network trains (``auto``: a CUDA GPU when there is one; see :mod:`lookalike.devices`).
    """
    from lookalike.devices import resolve_device

    config = config or VAETrainConfig()
    _validate(config, len(images))
    dev = resolve_device(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    n_val = max(2, min(2000, int(len(images) * config.val_fraction))) if len(images) >= 40 else 2
    order = rng.permutation(len(images))
    val_idx, train_idx = order[:n_val], order[n_val:]
    x_val = to_tensor(images[np.sort(val_idx)], config.in_channels, config.resolution).to(dev)

    model = build_model(config.model_arch()).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / config.batch_size))
    total_steps = steps_per_epoch * config.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=total_steps, pct_start=0.15
    )
    fixed_z = torch.randn(
        config.grid_size**2, config.latent_dim, generator=torch.Generator().manual_seed(1234)
    ).to(dev)
    frames = []
    history: dict[str, Any] = {"step": [], "loss": [], "recon": [], "kl": [], "mmd": [], "epochs": []}
    step = 0
    started = time.monotonic()
    with progress_bar(
        f"training {canonical_type(config.model)}", total=total_steps, enabled=progress
    ) as advance:
        for epoch in range(1, config.epochs + 1):
            model.train()
            perm = train_idx[rng.permutation(len(train_idx))]
            for start in range(0, len(perm), config.batch_size):
                batch = perm[start : start + config.batch_size]
                if len(batch) < 2:
                    continue
                xb = to_tensor(images[np.sort(batch)], config.in_channels, config.resolution).to(dev)
                terms = model.objective(xb, step)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
                opt.step()
                sched.step()
                step += 1
                history["step"].append(step)
                for key in ("loss", "recon", "kl", "mmd"):
                    history[key].append(round(float(terms[key].detach()), 5) if key in terms else None)
                fields = {"loss": float(terms["loss"].detach()), "epoch": epoch}
                advance(1, **fields)
            val = evaluate(model, x_val)
            val["epoch"] = epoch
            val["seconds"] = round(time.monotonic() - started, 1)
            history["epochs"].append(val)
            with torch.no_grad():
                frames.append(_frame(model.decode(fixed_z).cpu(), config.grid_size, epoch))
            if log:
                extra = f" kl={val['kl']:.2f}" if "kl" in val else ""
                log(
                    f"epoch {epoch}/{config.epochs}: val recon={val['recon']:.2f} mse={val['mse']:.4f}"
                    f"{extra} active={val['active_units']}/{config.latent_dim} ({val['seconds']}s)"
                )

    model.eval()
    final = history["epochs"][-1]
    metrics = {k: final[k] for k in ("recon", "mse", "active_units", "kl", "kl_per_dim") if k in final}
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    metrics["train_images"] = int(len(train_idx))
    metrics["train_device"] = str(dev)
    gif = out_dir / "epochs.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=600, loop=0, optimize=True)
    curves = plot_curves(
        history, out_dir / "losses.png", title=f"{canonical_type(config.model)} z={config.latent_dim}"
    )
    recipe = asdict(config)
    recipe["channels"] = list(config.channels)
    checkpoint = save_checkpoint(
        out_dir / "model.pt",
        kind="vae",
        state_dict=model.state_dict(),
        arch=model.arch(),
        preprocess={
            "resolution": config.resolution,
            "channels": config.in_channels,
            "mode": "L" if config.in_channels == 1 else "RGB",
            "scale": "0-1",
        },
        recipe=recipe,
        metrics=metrics,
    )
    (out_dir / "history.json").write_text(json.dumps(history))
    return TrainResult(checkpoint, gif, curves, history, metrics, model)


def _frame(decoded: torch.Tensor, nrow: int, epoch: int):
    from PIL import Image, ImageDraw

    grid = grid_image(decoded, nrow, scale=1).convert("L" if decoded.shape[1] == 1 else "RGB")
    canvas = Image.new(
        grid.mode, (grid.width, grid.height + 14), 255 if grid.mode == "L" else (255, 255, 255)
    )
    canvas.paste(grid, (0, 14))
    ImageDraw.Draw(canvas).text((3, 1), f"epoch {epoch}", fill=0 if grid.mode == "L" else (0, 0, 0))
    # 64 grey levels (or colours) look the same and keep the GIF small
    return canvas.quantize(64) if canvas.mode == "L" else canvas.quantize(128)


def plot_curves(history: dict[str, Any], path: Path, *, title: str = "") -> Path:
    """Loss curves: reconstruction (train steps + validation), then KL per dimension or MMD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = np.array(history["step"])
    recon = np.array(history["recon"], dtype=float)
    ax = axes[0]
    ax.plot(steps, _smooth(recon), lw=1, label="train (smoothed)")
    epochs = history["epochs"]
    if epochs and steps.size:
        per_epoch = steps[-1] / len(epochs)
        ax.plot(
            [e["epoch"] * per_epoch for e in epochs], [e["recon"] for e in epochs], "o-", label="validation"
        )
    ax.set_xlabel("step")
    ax.set_yscale("log")  # the first steps are far above the rest
    ax.set_ylabel("reconstruction (nats / image)")
    ax.set_title("reconstruction")
    ax.legend()
    ax = axes[1]
    if epochs and "kl_per_dim" in epochs[0]:
        kl = np.array([e["kl_per_dim"] for e in epochs])
        x = [e["epoch"] for e in epochs]
        order = np.argsort(-kl[-1])
        for rank, d in enumerate(order):
            ax.plot(x, kl[:, d], lw=1, label=f"z{d}" if rank < 6 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel("KL (nats)")
        ax.set_title("validation KL per latent dimension")
        ax.legend(fontsize=7, ncol=2)
    else:
        mmd = np.array([np.nan if v is None else v for v in history["mmd"]], dtype=float)
        ax.plot(steps, _smooth(mmd), lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("MMD^2 (IMQ)")
        ax.set_title("MMD to the prior (smoothed)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _smooth(values: np.ndarray, window: int = 20) -> np.ndarray:
    if values.size < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")
