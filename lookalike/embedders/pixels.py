"""The `pixels` baseline: 32x32 grey thumbnail, centred and normalised. Every learned model must beat it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookalike.embedders.base import Embedder

SIZE = 32


class PixelsEmbedder(Embedder):
    name = "pixels"
    dim = SIZE * SIZE
    batch_size = 1024

    def _embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for i, img in enumerate(images):
            grey = img.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            out[i] = np.asarray(grey, dtype=np.float32).reshape(-1) / 255.0
        # centre each vector so cosine similarity compares shape, not overall brightness
        out -= out.mean(axis=1, keepdims=True)
        return out


def load(spec: str, device: str | None = None) -> Embedder:  # noqa: ARG001 - numpy only
    return PixelsEmbedder()
