"""The VectorIndex interface: cosine (inner product on L2-normalised vectors) top-k by image id."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class VectorIndex(ABC):
    dim: int

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ids int64, scores float32) for one query vector, best first.

        ``allowed`` (sorted int64 ids) restricts results to those ids; whenever at least k
        allowed ids exist, k results come back.
        """
