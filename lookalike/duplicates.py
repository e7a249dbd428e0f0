"""Duplicate and copied-image detection with perceptual hashes (64-bit pHash, Hamming distance).

One interface in the spirit of imagededup: ``find_duplicates(catalog, max_distance)`` groups the
catalog's listings whose photos are near-identical (re-encoded, resized, slightly edited; colours
checked too, since the hash is grey), and
``find_copies(catalog, image, max_distance)`` tells whether an uploaded photo is a copy of a
catalog photo (stolen-image check). Hamming search runs in faiss's binary index.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lookalike.errors import InvalidRequest

#: the mean chroma difference (YCbCr Cb and Cr on a 4×4 grid, 0-255) above which two photos with
#: near-identical grey hashes are colour variants, not copies
MAX_CHROMA_DIFF = 12.0


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


def colour_signature(image: Image.Image) -> np.ndarray:
    """The photo's colours without its light: YCbCr chroma (Cb, Cr) on a 4×4 grid, 32 values."""
    ycc = image.convert("RGB").resize((4, 4), Image.Resampling.BILINEAR).convert("YCbCr")
    return np.asarray(ycc, dtype=np.float32)[..., 1:].reshape(-1)


def same_colours(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two colour signatures can be one photo (re-encoded, resized, brightened): a grey
    hash sees a red and a blue bag of one cut as the same picture; their chroma tells them apart."""
    return float(np.mean(np.abs(a - b))) <= MAX_CHROMA_DIFF


def _signatures(catalog, image_ids) -> dict[int, np.ndarray]:
    """Colour signatures of stored images, from their thumbnails (an image without one: absent)."""
    out = {}
    for iid, data in catalog.store.get_thumbnails(sorted({int(i) for i in image_ids})).items():
        try:
            out[iid] = colour_signature(Image.open(io.BytesIO(data)))
        except (OSError, ValueError):  # an unreadable thumbnail: the hash alone decides
            continue
    return out


def find_duplicates(catalog, max_distance: int = 4) -> list[DuplicateGroup]:
    """Groups of two or more products with a near-identical photo, largest groups first.

    Two products are linked when they share a stored photo, or when two of their photos are within
    ``max_distance`` bits of pHash *and* have the same colours (so colour variants of one cut are
    not duplicates); a group is a set of products linked directly or through each other, so a
    product is in one group at most."""
    _check(max_distance)
    image_ids, hashes = catalog.store.load_phashes()
    if len(image_ids) == 0:
        return []
    codes = _codes(hashes)
    lims, dists, labels = _binary_index(codes).range_search(codes, max_distance + 1)
    pks, links = catalog.store.load_links()
    products_of: dict[int, list[int]] = {}
    for pk, iid in zip(pks.tolist(), links.tolist(), strict=True):
        products_of.setdefault(iid, []).append(pk)

    # candidate pairs by hash, then the colour check on the images they involve
    pairs = []
    for i in range(len(image_ids)):
        a = int(image_ids[i])
        for j, d in zip(
            labels[lims[i] : lims[i + 1]].tolist(), dists[lims[i] : lims[i + 1]].tolist(), strict=True
        ):
            b = int(image_ids[j])
            if j > i and products_of.get(a) and products_of.get(b):
                pairs.append((a, b, int(d)))
    sigs = _signatures(catalog, {x for a, b, _ in pairs for x in (a, b)})
    pairs = [
        (a, b, d) for a, b, d in pairs if a not in sigs or b not in sigs or same_colours(sigs[a], sigs[b])
    ]

    parent: dict[int, int] = {}

    def root(p: int) -> int:
        parent.setdefault(p, p)
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    def union(p: int, q: int) -> None:
        rp, rq = root(p), root(q)
        if rp != rq:
            parent[max(rp, rq)] = min(rp, rq)

    evidence: list[tuple[int, int, int]] = []  # (a product, image id, distance)
    for iid, prods in products_of.items():
        if len(prods) > 1:  # one stored photo listed by several products
            for p in prods[1:]:
                union(prods[0], p)
            evidence.append((prods[0], iid, 0))
    for a, b, d in pairs:
        union(products_of[a][0], products_of[b][0])
        evidence += [(products_of[a][0], a, d), (products_of[b][0], b, d)]

    members: dict[int, set[int]] = {}
    for p in parent:
        members.setdefault(root(p), set()).add(p)
    images: dict[int, set[int]] = {}
    worst: dict[int, int] = {}
    for p, iid, d in evidence:
        r = root(p)
        images.setdefault(r, set()).add(iid)
        worst[r] = max(worst.get(r, 0), d)
    records = catalog.store.products_by_pk({p for m in members.values() if len(m) > 1 for p in m})
    groups = [
        DuplicateGroup(
            sorted(records[p].product_id for p in m if p in records),
            sorted(images.get(r, ())),
            worst.get(r, 0),
        )
        for r, m in members.items()
        if len(m) > 1
    ]
    groups = [g for g in groups if len(g.product_ids) > 1]
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
    sigs = _signatures(catalog, [int(image_ids[row]) for _, row in found])
    mine = colour_signature(loaded.image)
    pks, links = catalog.store.load_links()
    out = []
    for d, row in found:
        iid = int(image_ids[row])
        if iid in sigs and not same_colours(mine, sigs[iid]):
            continue  # the same outline in other colours: a colour variant, not a copy
        prods = catalog.store.products_by_pk(pks[links == iid].tolist())
        out.append(Copy(iid, int(d), sorted(p.product_id for p in prods.values())))
    return out
