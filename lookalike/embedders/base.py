"""The Embedder interface: images in, L2-normalised float32 vectors out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookalike.progress import progress_bar


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


class Embedder(ABC):
    """Turns images into vectors; similar images get a high cosine similarity.

    Subclasses set ``name`` and ``dim`` and implement :meth:`_embed_batch` on a list of
    images of any size and mode. Batching, progress and normalisation live here.
    """

    name: str
    dim: int
    batch_size: int = 256
    #: True when the model can also embed text into the same space
    supports_text: bool = False
    #: identifies the weights (set by load_embedder); a catalog refuses vectors from other weights
    fingerprint: str = ""

    @abstractmethod
    def _embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Return an (n, dim) array for one batch; need not be normalised."""

    def embed_images(self, images: Sequence[Image.Image], *, progress: bool | None = None) -> np.ndarray:
        """Embed images in batches; returns (n, dim) float32 with L2-normalised rows."""
        n = len(images)
        out = np.empty((n, self.dim), dtype=np.float32)
        show = progress if progress is not None else n > 4 * self.batch_size
        with progress_bar(f"embedding ({self.name})", total=n, enabled=show) as advance:
            for start in range(0, n, self.batch_size):
                batch = images[start : start + self.batch_size]
                out[start : start + len(batch)] = self._embed_batch(batch)
                advance(len(batch))
        return l2_normalise(out)

    def embed_image(self, image: Image.Image) -> np.ndarray:
        return self.embed_images([image], progress=False)[0]

    def locate(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Where the product is in each image: (n, 4) boxes ``(cx, cy, side, angle)`` in pixels and
        degrees, NaN rows for "the whole frame" (all of them, unless the model has a localizer)."""
        return np.full((len(images), 4), np.nan)

    def embed_and_locate(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`embed_images` and :meth:`locate` in one pass (a localizer runs once, not twice)."""
        return self.embed_images(images, progress=False), self.locate(images)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        from lookalike.errors import ModelError

        raise ModelError(f"model {self.name!r} cannot embed text")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} dim={self.dim}>"
