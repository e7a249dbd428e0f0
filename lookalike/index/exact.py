"""Exact cosine search: one matrix-vector product (BLAS) and a partial sort."""

from __future__ import annotations

import numpy as np

from lookalike.index.base import VectorIndex

_EMPTY = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))


class ExactIndex(VectorIndex):
    backend = "exact"

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order]
        self.vectors = (
            np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[order]) if len(ids) else vectors
        )
        self.dim = self.vectors.shape[1] if len(self.ids) else 0

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, allowed: np.ndarray) -> np.ndarray:
        """Row positions of the allowed ids that are in the index."""
        allowed = np.asarray(allowed, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.ids, allowed), len(self.ids) - 1)
        return pos[self.ids[pos] == allowed]

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(self.ids) == 0 or k <= 0:
            return _EMPTY
        q = np.asarray(query, dtype=np.float32)
        rows = None
        if allowed is not None:
            rows = self.rows_of(np.unique(allowed))
            if len(rows) == 0:
                return _EMPTY
            if len(rows) * 4 < len(self.ids):  # selective: score only the allowed rows
                scores = self.vectors[rows] @ q
            else:  # broad: one full pass, then mask
                full = self.vectors @ q
                mask = np.full(len(full), -np.inf, dtype=np.float32)
                mask[rows] = full[rows]
                scores, rows = mask, None
                k = min(k, int(np.isfinite(scores).sum()))
        else:
            scores = self.vectors @ q
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        positions = rows[top] if rows is not None else top
        return self.ids[positions], scores[top].astype(np.float32)
