"""Duplicate and copied-image detection with perceptual hashes (64-bit pHash, Hamming distance).

One interface in the spirit of imagededup: ``find_duplicates(catalog, max_distance)`` groups the
catalog's listings whose photos are near-identical (re-encoded, resized, slightly edited), and
``find_copies(catalog, image, max_distance)`` tells whether an uploaded photo is a copy of a
catalog photo (stolen-image check). Hamming search runs in faiss's binary index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lookalike.errors import InvalidRequest


@dataclass
class DuplicateGroup:
    """Products whose images are within ``max_distance`` bits of each other (transitively)."""

    product_ids: list[str]
    image_ids: list[int]
    max_distance: int = 0

    def to_dict(self) -> dict:
        return {
            "product_ids": self.product_ids,
            "image_ids": self.image_ids,
            "max_distance": self.max_distance,
        }


@dataclass
class Copy:
    image_id: int
    distance: int
    product_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"image_id": self.image_id, "distance": self.distance, "product_ids": self.product_ids}


def _codes(hashes: list[str]) -> np.ndarray:
    return np.array([list(bytes.fromhex(h)) for h in hashes], dtype=np.uint8).reshape(len(hashes), -1)


def _check(max_distance: int) -> None:
    if not 0 <= max_distance <= 32:
        raise InvalidRequest(f"max_distance must be between 0 and 32 bits, got {max_distance}")


def _binary_index(codes: np.ndarray):
    import faiss

    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    return index


def find_duplicates(catalog, max_distance: int = 4) -> list[DuplicateGroup]:
    """Groups of two or more products sharing a near-identical photo, largest groups first."""
    _check(max_distance)
    image_ids, hashes = catalog.store.load_phashes()
    if len(image_ids) == 0:
        return []
    codes = _codes(hashes)
    lims, dists, labels = _binary_index(codes).range_search(codes, max_distance + 1)
    parent = np.arange(len(image_ids))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    worst: dict[int, int] = {}
    for i in range(len(image_ids)):
        for j, d in zip(labels[lims[i] : lims[i + 1]], dists[lims[i] : lims[i + 1]], strict=True):
            if j != i:
                a, b = root(i), root(int(j))
                if a != b:
                    parent[b] = a
                worst[i] = max(worst.get(i, 0), int(d))
    members: dict[int, list[int]] = {}
    for i in range(len(image_ids)):
        members.setdefault(root(i), []).append(i)
    pks, links = catalog.store.load_links()
    products_of: dict[int, list[int]] = {}
    for pk, iid in zip(pks.tolist(), links.tolist(), strict=True):
        products_of.setdefault(iid, []).append(pk)
    groups = []
    all_pks = set()
    raw = []
    for rows in members.values():
        imgs = [int(image_ids[r]) for r in rows]
        prods = sorted({pk for iid in imgs for pk in products_of.get(iid, [])})
        if len(prods) >= 2:
            raw.append((imgs, prods, max(worst.get(r, 0) for r in rows)))
            all_pks.update(prods)
    records = catalog.store.products_by_pk(all_pks)
    for imgs, prods, worst_d in raw:
        groups.append(
            DuplicateGroup(sorted(records[p].product_id for p in prods if p in records), imgs, worst_d)
        )
    groups.sort(key=lambda g: (-len(g.product_ids), g.product_ids))
    return groups


def find_copies(catalog, image, max_distance: int = 6) -> list[Copy]:
    """Catalog images that the given photo is a (possibly re-encoded or resized) copy of."""
    from lookalike.images import load_image, perceptual_hash

    _check(max_distance)
    image_ids, hashes = catalog.store.load_phashes()
    if len(image_ids) == 0:
        return []
    loaded = load_image(image, settings=catalog.settings)
    query = _codes([perceptual_hash(loaded.image)])
    lims, dists, labels = _binary_index(_codes(hashes)).range_search(query, max_distance + 1)
    found = sorted(zip(dists[lims[0] : lims[1]].tolist(), labels[lims[0] : lims[1]].tolist(), strict=True))
    pks, links = catalog.store.load_links()
    out = []
    for d, row in found:
        iid = int(image_ids[row])
        prods = catalog.store.products_by_pk(pks[links == iid].tolist())
        out.append(Copy(iid, int(d), sorted(p.product_id for p in prods.values())))
    return out
