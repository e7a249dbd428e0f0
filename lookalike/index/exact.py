"""Exact cosine search: one matrix-vector product (BLAS) and a partial sort."""

from __future__ import annotations

import numpy as np

from lookalike.index.base import VectorIndex


class ExactIndex(VectorIndex):
    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.dim = self.vectors.shape[1] if self.vectors.ndim == 2 and len(self.ids) else 0

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(self.ids) == 0 or k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        if allowed is not None:
            rows = np.flatnonzero(np.isin(self.ids, allowed, assume_unique=False))
            if len(rows) == 0:
                return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
            scores = self.vectors[rows] @ query.astype(np.float32)
        else:
            rows = None
            scores = self.vectors @ query.astype(np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        positions = rows[top] if rows is not None else top
        return self.ids[positions], scores[top].astype(np.float32)
