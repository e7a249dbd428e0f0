"""Convolutional latent variable models: VAE, beta-VAE (weighted-KL and capacity-annealed) and WAE-MMD.

Every model shares one encoder/decoder pair; they differ only in the objective (:meth:`objective`).
``arch`` dicts (plain values) rebuild a model with :func:`build_model`, which is what checkpoints store.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lookalike.train.vae.losses import kl_per_dim, mmd_imq, reconstruction_loss

MODEL_TYPES = ("vae", "beta-vae", "wae-mmd")


def _check_resolution(resolution: int, n_layers: int) -> int:
    factor = 2**n_layers
    if resolution % factor or resolution // factor < 2:
        raise ValueError(
            f"resolution {resolution} must be a multiple of {factor} (one halving per conv layer) "
            f"and at least {2 * factor}"
        )
    return resolution // factor


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (each halves the resolution), then a hidden layer and (mu, logvar) heads."""

    def __init__(
        self, in_channels: int, resolution: int, channels: tuple[int, ...], hidden: int, latent_dim: int
    ):
        super().__init__()
        self.final_size = _check_resolution(resolution, len(channels))
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 4, stride=2, padding=1), nn.BatchNorm2d(ch), nn.LeakyReLU(0.2)]
            prev = ch
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(prev * self.final_size**2, hidden), nn.LeakyReLU(0.2))
        self.mu = nn.Linear(hidden, latent_dim)
        self.logvar = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc(self.conv(x))
        return self.mu(h), self.logvar(h).clamp(-12.0, 8.0)


class ConvDecoder(nn.Module):
    """Mirror of :class:`ConvEncoder`: latent -> hidden -> feature map -> transposed convs -> pixel logits."""

    def __init__(
        self, out_channels: int, resolution: int, channels: tuple[int, ...], hidden: int, latent_dim: int
    ):
        super().__init__()
        self.start = _check_resolution(resolution, len(channels))
        rev = list(reversed(channels))
        self.start_channels = rev[0]
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, rev[0] * self.start**2),
            nn.LeakyReLU(0.2),
        )
        layers: list[nn.Module] = []
        for ch_in, ch_out in zip(rev, rev[1:], strict=False):
            layers += [nn.ConvTranspose2d(ch_in, ch_out, 4, stride=2, padding=1), nn.BatchNorm2d(ch_out)]
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.ConvTranspose2d(rev[-1], out_channels, 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.start_channels, self.start, self.start)
        return self.deconv(h)


class VAE(nn.Module):
    """Kingma & Welling's VAE: reconstruction + KL(q(z|x) || N(0, I)); the encoder mean is the embedding."""

    model_type = "vae"
    #: the aggregate posterior is trained towards N(0, I), so spherical interpolation makes sense
    gaussian_prior = True

    def __init__(
        self,
        latent_dim: int = 16,
        *,
        in_channels: int = 1,
        resolution: int = 28,
        channels: tuple[int, ...] = (32, 64),
        hidden: int = 256,
        likelihood: str = "bernoulli",
    ):
        super().__init__()
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.resolution = resolution
        self.channels = tuple(channels)
        self.hidden = hidden
        self.likelihood = likelihood
        self.encoder = ConvEncoder(in_channels, resolution, self.channels, hidden, latent_dim)
        self.decoder = ConvDecoder(in_channels, resolution, self.channels, hidden, latent_dim)

    # -- the parts -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images in [0, 1], shape (n, channels, resolution, resolution)."""
        return torch.sigmoid(self.decoder(z))

    def sample_latent(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * (0.5 * logvar).exp()

    # -- the objective ---------------------------------------------------------------------------
    def regulariser(self, mu, logvar, z, step: int) -> dict[str, torch.Tensor]:
        kl = kl_per_dim(mu, logvar)
        return {"kl": kl.sum(1).mean(), "kl_per_dim": kl.mean(0).detach(), "reg": kl.sum(1).mean()}

    def objective(self, x: torch.Tensor, step: int = 0) -> dict[str, torch.Tensor]:
        """All loss terms for a batch; ``loss`` is the scalar to minimise (mean per example)."""
        mu, logvar = self.encode(x)
        z = self.sample_latent(mu, logvar)
        logits = self.decoder(z)
        recon = reconstruction_loss(logits, x, self.likelihood).mean()
        terms = self.regulariser(mu, logvar, z, step)
        terms["recon"] = recon
        terms["loss"] = recon + terms.pop("reg")
        return terms

    def arch(self) -> dict[str, Any]:
        return {
            "model": self.model_type,
            "latent_dim": self.latent_dim,
            "in_channels": self.in_channels,
            "resolution": self.resolution,
            "channels": list(self.channels),
            "hidden": self.hidden,
            "likelihood": self.likelihood,
        }


class BetaVAE(VAE):
    """beta-VAE. Plain (Higgins et al. 2017): recon + beta * KL. Capacity-annealed "C" variant
    (Burgess et al. 2018), chosen by ``capacity > 0``: recon + gamma * |KL - C(step)|, with C rising
    linearly from 0 to ``capacity`` nats over ``capacity_steps`` steps."""

    model_type = "beta-vae"

    def __init__(
        self,
        latent_dim: int = 16,
        *,
        beta: float = 4.0,
        capacity: float = 0.0,
        capacity_steps: int = 10_000,
        gamma: float = 100.0,
        **kwargs,
    ):
        super().__init__(latent_dim, **kwargs)
        self.beta = float(beta)
        self.capacity = float(capacity)
        self.capacity_steps = int(capacity_steps)
        self.gamma = float(gamma)

    def capacity_at(self, step: int) -> float:
        return self.capacity * min(1.0, step / max(1, self.capacity_steps))

    def regulariser(self, mu, logvar, z, step: int) -> dict[str, torch.Tensor]:
        kl = kl_per_dim(mu, logvar)
        total = kl.sum(1).mean()
        out = {"kl": total, "kl_per_dim": kl.mean(0).detach()}
        if self.capacity > 0:
            c = self.capacity_at(step)
            out["reg"] = self.gamma * (total - c).abs()
            out["capacity"] = torch.tensor(c)
        else:
            out["reg"] = self.beta * total
        return out

    def arch(self) -> dict[str, Any]:
        return super().arch() | {
            "beta": self.beta,
            "capacity": self.capacity,
            "capacity_steps": self.capacity_steps,
            "gamma": self.gamma,
        }


class WAE(VAE):
    """WAE-MMD (Tolstikhin et al. 2018): deterministic encoder, recon + lambda * MMD(q(z), N(0, I)) with an
    inverse multiquadric kernel. The logvar head is unused."""

    model_type = "wae-mmd"

    def __init__(self, latent_dim: int = 16, *, reg_weight: float = 100.0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.reg_weight = float(reg_weight)

    def sample_latent(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu

    def regulariser(self, mu, logvar, z, step: int) -> dict[str, torch.Tensor]:
        prior = torch.randn_like(z)
        mmd = mmd_imq(z, prior)
        return {"mmd": mmd, "reg": self.reg_weight * mmd}

    def arch(self) -> dict[str, Any]:
        return super().arch() | {"reg_weight": self.reg_weight}


_CLASSES = {"vae": VAE, "beta-vae": BetaVAE, "wae-mmd": WAE}
_ALIASES = {"beta": "beta-vae", "betavae": "beta-vae", "beta_vae": "beta-vae", "wae": "wae-mmd"}


def canonical_type(model: str) -> str:
    name = _ALIASES.get(model.lower(), model.lower())
    if name not in _CLASSES:
        raise ValueError(f"unknown latent model {model!r} (choose from {', '.join(MODEL_TYPES)})")
    return name


def build_model(arch: dict[str, Any]) -> VAE:
    """Rebuild a model from its ``arch`` dict (as stored in a checkpoint)."""
    arch = dict(arch)
    cls = _CLASSES[canonical_type(arch.pop("model", "vae"))]
    latent_dim = arch.pop("latent_dim")
    if "channels" in arch:
        arch["channels"] = tuple(arch["channels"])
    return cls(latent_dim, **arch)
