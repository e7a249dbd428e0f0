"""The ``vae`` family: ``vae:PATH`` embeds images as the encoder mean E[z|x] of a trained VAE / beta-VAE /
WAE checkpoint (``lookalike train vae``). Unlike other embedders it can also decode latents back to images,
which is what ``lookalike explore`` interpolation, traversal and arithmetic use."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.embedders.base import Embedder
from lookalike.errors import ModelError


class VAEEmbedder(Embedder):
    """Encoder mean of a latent variable model; ``encode``/``decode`` give the raw (unnormalised) latents."""

    batch_size = 512

    def __init__(self, path: str | Path, device: str | None = None):
        import torch

        from lookalike.checkpoint import load_checkpoint
        from lookalike.devices import resolve_device
        from lookalike.train.vae.models import build_model

        payload = load_checkpoint(path, kind="vae")
        try:
            self.model = build_model(payload["arch"])
            self.model.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{path}: not a usable VAE checkpoint ({exc})") from None
        self.device = resolve_device(device)
        self.model.eval().to(self.device)
        self._torch = torch
        self.path = Path(path)
        self.name = f"vae:{path}"
        self.dim = self.model.latent_dim
        self.resolution = self.model.resolution
        self.channels = self.model.in_channels
        self.model_type = self.model.model_type
        #: interpolating on a sphere makes sense when the prior is an isotropic Gaussian (all ours)
        self.gaussian_prior = bool(self.model.gaussian_prior)
        self.metrics = payload.get("metrics", {})
        self.recipe = payload.get("recipe", {})

    # -- Embedder ------------------------------------------------------------------------------
    def _embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode(images)

    # -- latent access -------------------------------------------------------------------------
    def encode(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Raw encoder means (n, dim), not normalised: the coordinates explore works in."""
        from lookalike.train.vae.data import pil_to_tensor

        out = []
        with self._torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                x = pil_to_tensor(images[start : start + self.batch_size], self.channels, self.resolution)
                out.append(self.model.encode(x.to(self.device))[0].cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def decode_array(self, z: np.ndarray) -> np.ndarray:
        """Latents (n, dim) -> images as float arrays (n, channels, res, res) in [0, 1]."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.dim)
        with self._torch.no_grad():
            return self.model.decode(self._torch.from_numpy(z).to(self.device)).cpu().numpy()

    def decode(self, z: np.ndarray) -> list[Image.Image]:
        """Latents (n, dim) -> PIL images (L for grey models, RGB for colour ones)."""
        from lookalike.train.vae.data import tensor_to_pil

        return tensor_to_pil(self._torch.from_numpy(self.decode_array(z)))

    def kl_per_dim(self) -> list[float] | None:
        """Validation KL per latent dimension recorded at training time (None for WAE)."""
        return self.metrics.get("kl_per_dim")


def load(spec: str, device: str | None = None) -> Embedder:
    if not spec:
        raise ModelError(
            "the vae model needs a checkpoint path: vae:PATH (train one with `lookalike train vae`)"
        )
    return VAEEmbedder(spec, device)
