"""CrossDomainSampler: batches of shop anchors with street positives and negatives.

Each batch holds P product identities. Every identity contributes its shop (catalog) image, the
anchor, and K street views, its positives; the street views of the other identities in the batch
are the negatives. Batches are a pure function of (seed, step), so a resumed run sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CrossDomainBatch:
    """Indices into the training items. ``shop[i]`` is the anchor of identity ``identities[i]``;
    ``street[j]`` is a street view of item ``street[j]`` (its identity is ``street_labels[j]``)."""

    identities: np.ndarray  # (P,) item indices, one per identity in the batch
    shop: np.ndarray  # (P,) item indices of the shop anchors
    street: np.ndarray  # (P*K,) item indices whose street views are the positives/negatives
    shop_labels: np.ndarray  # (P,) identity labels of the anchors
    street_labels: np.ndarray  # (P*K,) identity labels of the street views


class CrossDomainSampler:
    """Yields :class:`CrossDomainBatch` es that walk through all identities once per epoch.

    ``identity_labels[i]`` is the product identity of training item ``i`` (for Fashion-MNIST every
    item is its own product, so it is ``arange(N)``). ``batch(step, identities=...)`` builds a batch
    from identities chosen elsewhere, e.g. anchors with their offline-mined hard negatives.
    """

    def __init__(
        self,
        identity_labels: np.ndarray,
        identities_per_batch: int = 96,
        street_per_identity: int = 2,
        seed: int = 0,
    ):
        self.labels = np.asarray(identity_labels)
        # one representative shop item per identity
        uniq, first = np.unique(self.labels, return_index=True)
        self.identity_items = first
        self.n_identities = len(uniq)
        if identities_per_batch < 2:
            raise ValueError("a batch needs at least 2 identities (one gives the negatives)")
        self.p = min(identities_per_batch, self.n_identities)
        self.k = street_per_identity
        self.seed = seed

    def steps_per_epoch(self) -> int:
        return max(1, self.n_identities // self.p)

    def _random_identities(self, step: int) -> np.ndarray:
        spe = self.steps_per_epoch()
        epoch, pos = divmod(step, spe)
        perm = np.random.default_rng([self.seed, epoch, 7]).permutation(self.n_identities)
        return perm[pos * self.p : (pos + 1) * self.p]

    def batch(self, step: int, identities: np.ndarray | None = None) -> CrossDomainBatch:
        """The batch of ``step``; pass ``identities`` (indices into the identity list) to override."""
        ids = self._random_identities(step) if identities is None else np.asarray(identities)
        items = self.identity_items[ids]
        labels = self.labels[items]
        return CrossDomainBatch(
            identities=items,
            shop=items,
            street=np.repeat(items, self.k),
            shop_labels=labels,
            street_labels=np.repeat(labels, self.k),
        )

    def __iter__(self):
        step = 0
        while True:
            yield self.batch(step)
            step += 1
