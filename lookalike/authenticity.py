"""Authenticity checks: does this photo show this catalog product?

A seller lists "product X" with a photo, a customer files a claim with one, a reseller offers an
item: the photo is checked against X's reference photos *and against the whole catalog*, because
a similarity score alone means little (a counterfeit of a lookalike product scores high too).

- ``copy``: the photo is a (re-encoded, resized) copy of one of X's own reference photos
  (perceptual hash within ``copy_distance`` bits). It shows the catalog's photo, not an item in hand.
- ``match``: X is the catalog product the photo looks most like (rank 1 of all products).
- ``lookalike``: others look more like the photo (the best of them is named), but X is among the
  first ``window`` products and the first ``LOOKALIKE_SHARE`` of the catalog's (so that in a small
  shop not every product "looks like" every photo).
- ``different``: X ranks further down (its rank is given when it is among the first ``window``).

``rerank=N`` ranks with alignment and the learned verifier (as ``Catalog.search(rerank=N)``), which
finds the exact product in customer photos far more often than the embedding alone
(``bench/bench_authenticity.py`` measures both on Fashion-MNIST street views).

    check = catalog.check_authenticity("sku-123", "claim-photo.jpg", rerank=100)
    check.verdict, check.reason
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lookalike.errors import InvalidRequest, ModelMismatchError

if TYPE_CHECKING:
    from lookalike.catalog import Catalog, Hit, ImageInput

VERDICTS = ("copy", "match", "lookalike", "different")
#: "lookalike" needs the product among this share of the catalog's products (and the first ``window``)
LOOKALIKE_SHARE = 0.05
#: a "copy" must also be this close to the copied reference photo by the model's cosine
COPY_MIN_SCORE = 0.9


@dataclass
class ReferenceScore:
    image_id: int
    #: cosine similarity between the photo and this reference photo
    score: float
    #: perceptual-hash distance in bits (0 = the same picture)
    hash_distance: int


@dataclass
class AuthenticityCheck:
    product_id: str
    verdict: str
    reason: str
    #: the product's place among the catalog's products for this photo (1 = best), None when it
    #: is not among the first ``window`` (a verdict of "different")
    rank: int | None
    #: the photo's cosine similarity to the product's best reference photo
    score: float
    #: the catalog product the photo looks most like, other than this one
    best_other: dict | None
    references: list[ReferenceScore] = field(default_factory=list)
    rerank: int = 0
    #: with rerank and a verifier: its match score for the product's best image (a logit)
    verifier: float | None = None
    #: with verdict "copy": the reference photo the photo copies
    copy_of: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def check_authenticity(
    catalog: Catalog,
    product_id: str,
    photo: ImageInput,
    *,
    rerank: int = 0,
    window: int = 100,
    copy_distance: int = 6,
    verifier: str | None = None,
) -> AuthenticityCheck:
    """Check ``photo`` against ``product_id``'s reference photos and the catalog (module docs).

    Raises :class:`~lookalike.errors.ProductNotFound` for an unknown product,
    :class:`~lookalike.errors.ImageError` for a photo that cannot be read, and
    :class:`~lookalike.errors.InvalidRequest` for bad parameters.
    """
    from lookalike.images import perceptual_hash

    if not 1 <= window <= 1000:
        raise InvalidRequest(f"window must be between 1 and 1000, got {window}")
    if not 0 <= rerank <= 1000:
        raise InvalidRequest(f"rerank must be between 0 and 1000, got {rerank}")
    if not 0 <= copy_distance <= 32:
        raise InvalidRequest(f"copy_distance must be between 0 and 32 bits, got {copy_distance}")
    product = catalog.get_product(product_id)  # ProductNotFound before any image work
    model = catalog.model
    image = catalog._query_image(photo)
    vectors, boxes = catalog.embedder(model).embed_and_locate([image])  # once, also for re-ranking
    query = vectors[0] / (np.linalg.norm(vectors[0]) or 1.0)
    stored = catalog.store.vectors_for_images(product.image_ids, model)
    if not stored:
        catalog.get_product(product_id)  # deleted meanwhile: ProductNotFound, not a model problem
        raise ModelMismatchError(f"product {product_id!r} has no vectors for model {model!r}")

    # reference photos: similarity and perceptual-hash distance, most alike first
    photo_hash = int(perceptual_hash(image), 16)
    refs = []
    for iid, vec in stored.items():
        v = np.asarray(vec, dtype=np.float32)
        sim = float(query @ (v / (np.linalg.norm(v) or 1.0)))
        record = catalog.store.get_image(int(iid))
        dist = (photo_hash ^ int(record.phash, 16)).bit_count() if record and record.phash else 64
        refs.append(ReferenceScore(int(iid), round(sim, 6), dist))
    refs.sort(key=lambda r: (-r.score, r.hash_distance))
    score = refs[0].score

    # the product's rank among all products for this photo (among the first ``window``); a
    # lookalike must rank within ``near`` of them, fewer in a small catalog
    near = min(window, max(2, math.ceil(LOOKALIKE_SHARE * catalog.product_count(model))))
    if rerank:
        hits = catalog.search_reranked(
            image, k=window, model=model, rerank=rerank, verifier=verifier, located=(vectors[0], boxes[0])
        )
    else:
        hits = catalog.search_vector(query, k=window, model=model)
    rank = next((i for i, h in enumerate(hits, 1) if h.product_id == product_id), None)
    own = hits[rank - 1] if rank else None
    others = [h for h in hits if h.product_id != product_id]
    if own is not None and not rerank:  # products sharing the matched image tie: no one is ahead
        rank = 1 + sum(h.score > own.score + 1e-6 for h in others)
    best_other = _public(others[0]) if others else None

    # a copy: near-identical by hash *and* by the model (small plain images can share a hash)
    copy = min(refs, key=lambda r: (r.hash_distance, -r.score))
    if copy.hash_distance <= copy_distance and copy.score >= COPY_MIN_SCORE:
        verdict, reason = (
            "copy",
            (
                f"the photo is a copy of this product's reference photo {copy.image_id} "
                f"({copy.hash_distance} bits apart): it shows the catalog's own picture, not an item in hand"
            ),
        )
    elif rank == 1:
        verdict, reason = (
            "match",
            (
                "no other product of the catalog looks more like the photo"
                + (" after re-ranking" if rerank else "")
                + f" (cosine {score:.3f})"
            ),
        )
    elif rank is not None and rank <= near:
        verdict, reason = (
            "lookalike",
            (
                f"{rank - 1} other product{'s look' if rank > 2 else ' looks'} more like the photo; "
                "the best is "
                f"{others[0].product_id!r}" + (f" ({others[0].category})" if others[0].category else "")
            ),
        )
    else:
        verdict, reason = (
            "different",
            (
                "the photo does not look like this product: "
                + (
                    f"{rank - 1} other products look more like it"
                    if rank is not None
                    else f"it is not among the {len(hits)} products that look most like it"
                )
                + (f"; the best is {others[0].product_id!r}" if others else "")
            ),
        )
    return AuthenticityCheck(
        product_id=product_id,
        verdict=verdict,
        reason=reason,
        rank=rank,
        score=score,
        best_other=best_other,
        references=refs,
        rerank=rerank,
        verifier=own.verifier if own is not None else None,
        copy_of=copy.image_id if verdict == "copy" else None,
    )


def _public(hit: Hit) -> dict:
    return {"product_id": hit.product_id, "score": hit.score, "title": hit.title, "category": hit.category}
