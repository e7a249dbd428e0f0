"""Retrieval metrics on L2-normalised vectors: exact neighbours, Recall@K and mAP@R.

``recall_at_k`` and ``map_at_r`` take the ranked gallery labels of each query, so they work for any
label (instance = product id, class = category) and any embedder.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nearest_neighbours(queries: np.ndarray, gallery: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indices (n_queries, k) of the k gallery rows with the highest inner product, best first."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    g = np.ascontiguousarray(gallery, dtype=np.float32)
    k = min(k, len(g))
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), chunk):
        sims = q[s : s + chunk] @ g.T
        if k < sims.shape[1]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.tile(np.arange(sims.shape[1]), (len(sims), 1))
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(
    ranked_labels: np.ndarray, query_labels: np.ndarray, ks: Sequence[int] = (1, 5, 10, 20)
) -> dict:
    """Fraction of queries with at least one correct item among their first k results.

    ``ranked_labels[i]`` are the labels of query i's results, best first.
    """
    ranked = np.asarray(ranked_labels)
    hits = ranked == np.asarray(query_labels)[:, None]
    out = {}
    for k in ks:
        out[f"R@{k}"] = float(hits[:, :k].any(axis=1).mean()) if len(hits) else 0.0
    return out


def map_at_r(ranked_labels: np.ndarray, query_labels: np.ndarray, relevant_counts: np.ndarray) -> float:
    """Mean average precision at R (Musgrave et al., 2020): R is the number of gallery items that
    share the query's label; AP@R = (1/R) * sum over the first R ranks of precision@i at each hit.

    ``ranked_labels`` must hold at least max(R) results per query (extra columns are ignored).
    """
    ranked = np.asarray(ranked_labels)
    labels = np.asarray(query_labels)
    r = np.asarray(relevant_counts, dtype=np.int64)
    if len(ranked) == 0:
        return 0.0
    width = ranked.shape[1]
    hits = (ranked == labels[:, None]).astype(np.float64)
    ranks = np.arange(1, width + 1)
    precision = np.cumsum(hits, axis=1) / ranks
    within = ranks[None, :] <= r[:, None]
    ap = (precision * hits * within).sum(axis=1) / np.maximum(r, 1)
    ap[r == 0] = 0.0
    return float(ap.mean())
