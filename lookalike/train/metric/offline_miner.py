"""OfflineHardMiner: every N steps, embed a pool with the current model and mine hard triplets.

Online miners only see the negatives that happen to share a batch. The offline miner pauses
training, embeds a large pool (a shop image and a street view per identity), and for each shop
anchor finds the street views of *other* identities that lie closest to it. The following batches
are then built from these anchors and their hard negatives, and the mined triplets are trained on.
"""

from __future__ import annotations

import numpy as np


class OfflineHardMiner:
    """Mine (anchor identity, hard-negative identity) pairs from pool embeddings.

    ``kind="hard"`` picks among the ``top_k`` street views nearest to each shop anchor;
    ``kind="semihard"`` prefers negatives farther than the positive but within ``margin`` of it
    (falling back to the hardest when none is). Distances are squared L2 on unit vectors.
    """

    def __init__(
        self, every: int = 300, pool_size: int = 4096, kind: str = "hard", top_k: int = 8, margin: float = 0.2
    ):
        if kind not in {"hard", "semihard"}:
            raise ValueError(f"offline mining kind must be 'hard' or 'semihard', not {kind!r}")
        self.every = every
        self.pool_size = pool_size
        self.kind = kind
        self.top_k = top_k
        self.margin = margin

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def mine(self, shop_emb: np.ndarray, street_emb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Return (n, 2) int array of (anchor row, negative row) into the pool.

        Row ``i`` of ``shop_emb`` and of ``street_emb`` belong to the same identity (the positive);
        every other row of ``street_emb`` is a candidate negative.
        """
        shop = np.asarray(shop_emb, dtype=np.float32)
        street = np.asarray(street_emb, dtype=np.float32)
        n = len(shop)
        pairs = np.empty((n, 2), dtype=np.int64)
        pairs[:, 0] = np.arange(n)
        chunk = 1024
        k = min(self.top_k, n - 1)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            d = 2.0 - 2.0 * shop[s:e] @ street.T  # squared L2 between unit vectors
            rows = np.arange(e - s)
            d_ap = d[rows, np.arange(s, e)].copy()
            d[rows, np.arange(s, e)] = np.inf  # the positive is not a negative
            if self.kind == "semihard":
                ok = (d > d_ap[:, None]) & (d < d_ap[:, None] + self.margin)
                for r in range(e - s):
                    cand = np.flatnonzero(ok[r])
                    if len(cand) == 0:
                        cand = np.argpartition(d[r], k)[:k]
                    pairs[s + r, 1] = rng.choice(cand)
            else:
                nearest = np.argpartition(d, k, axis=1)[:, :k]
                pick = rng.integers(0, k, size=e - s)
                pairs[s:e, 1] = nearest[rows, pick]
        return pairs

    @staticmethod
    def triplet_gaps(shop_emb: np.ndarray, street_emb: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """d(a, p) - d(a, n) for each mined pair: larger means harder (positive is the street view
        of the anchor's own identity)."""
        a = shop_emb[pairs[:, 0]]
        p = street_emb[pairs[:, 0]]
        n = street_emb[pairs[:, 1]]
        return ((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1)
