"""Exact search equals a brute-force ranking, with and without id filters."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.index.exact import ExactIndex


@pytest.mark.parametrize("allowed_n", [None, 3, 50, 900, 0])
def test_exact_matches_brute_force(allowed_n):
    rng = np.random.default_rng(allowed_n or 1)
    ids = rng.permutation(1000) * 3 + 7
    vecs = rng.standard_normal((1000, 16)).astype(np.float32)
    index = ExactIndex(ids, vecs)
    q = rng.standard_normal(16).astype(np.float32)
    allowed = None if allowed_n is None else np.sort(rng.choice(ids, allowed_n, replace=False))
    if allowed is not None:
        allowed = np.concatenate([allowed, [1, 2]])  # ids not in the index are ignored
    got_ids, got_scores = index.search(q, 10, allowed)
    scores = vecs @ q
    mask = np.ones(1000, bool) if allowed is None else np.isin(ids, allowed)
    ranked = np.argsort(-np.where(mask, scores, -np.inf), kind="stable")[: min(10, mask.sum())]
    assert got_ids.tolist() == ids[ranked].tolist()
    assert np.allclose(got_scores, scores[ranked], atol=1e-5)


def test_empty_index():
    ids, scores = ExactIndex(np.empty(0), np.empty((0, 0))).search(np.ones(4), 5)
    assert len(ids) == len(scores) == 0
