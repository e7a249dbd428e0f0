"""Recommendations: products that look like what a shopper liked, and unlike what they did not.

A shopper's liked products (a wishlist, a cart, the pages they dwelt on) become one query:

- ``method="balanced"`` (the default) scores a product by its similarity to the nearest liked
  product, each liked product's similarities measured from the mean similarity of its own
  ``LOCAL_NEIGHBOURS`` nearest products (local scaling, as CSLS does against hubness). A liked
  product in a crowded corner of the catalog then does not take every slot: a shopper who liked
  boots and a bag is shown boots *and* bags;
- ``method="nearest"`` scores by the plain similarity to the nearest liked product: the most
  alike products first, from whichever liked product has the closest neighbours;
- ``method="centroid"`` scores by the similarity to the liked products' mean (Rocchio's query),
  which favours products in the middle of all of them.

``disliked`` products push candidates that look like them down (their similarity to the nearest
disliked product, times ``dislike_weight``, is subtracted). ``diversity`` (0..1) re-orders the
list by maximal marginal relevance, so ten near-copies of one liked product do not fill it.
Liked, disliked and ``exclude`` products are never recommended. ``bench/bench_recommend.py``
measures the methods on Fashion-MNIST.

    recs = catalog.recommend(["fmnist-test-0", "fmnist-test-7"], k=10, disliked=["fmnist-test-3"])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from lookalike.errors import InvalidRequest, ProductNotFound

if TYPE_CHECKING:
    from lookalike.catalog import Catalog, Hit

METHODS = ("balanced", "nearest", "centroid")
#: "balanced" measures each liked product's similarities against the mean of its this many nearest
LOCAL_NEIGHBOURS = 10
#: at most this many liked / disliked / excluded products in one request
MAX_PRODUCTS = 100


def _unit(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)


def _check_ids(ids: Iterable[str], item: str) -> list[str]:
    if isinstance(ids, str):
        raise InvalidRequest(f"{item} must be a list of product ids, not one string")
    ids = list(dict.fromkeys(ids))  # first occurrence order, duplicates dropped
    if len(ids) > MAX_PRODUCTS:
        raise InvalidRequest(f"{item}: at most {MAX_PRODUCTS} products, got {len(ids)}")
    return ids


def recommend(
    catalog: Catalog,
    liked: Iterable[str],
    k: int = 10,
    *,
    disliked: Iterable[str] = (),
    exclude: Iterable[str] = (),
    filters: dict[str, str] | None = None,
    method: str = "balanced",
    diversity: float = 0.0,
    dislike_weight: float = 0.5,
    model: str | None = None,
) -> list[Hit]:
    """The ``k`` products that look most like ``liked`` (best first; see the module docs).

    Each hit's ``score`` is the recommendation score: the cosine similarity to the nearest liked
    product (``balanced``: less that product's local mean, so near 0 and possibly negative;
    ``centroid``: to their mean), less ``dislike_weight`` × the similarity to the nearest disliked
    product.
    Raises :class:`ProductNotFound` for an unknown id (nothing is searched) and
    :class:`InvalidRequest` for bad parameters.
    """
    liked = _check_ids(liked, "liked")
    disliked = _check_ids(disliked, "disliked")
    exclude = _check_ids(exclude, "exclude")
    if not liked:
        raise InvalidRequest("liked: give at least one product id")
    both = sorted(set(liked) & set(disliked))
    if both:
        raise InvalidRequest(f"{both[0]!r} is both liked and disliked")
    if method not in METHODS:
        raise InvalidRequest(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 0.0 <= diversity <= 1.0:
        raise InvalidRequest(f"diversity must be between 0 and 1, got {diversity}")
    if not 0.0 <= dislike_weight <= 10.0:
        raise InvalidRequest(f"dislike_weight must be between 0 and 10, got {dislike_weight}")
    if not 1 <= k <= 1000:
        raise InvalidRequest(f"k must be between 1 and 1000, got {k}")
    model = catalog._name(model)
    known = catalog.store.product_pks([*liked, *disliked])
    for pid in [*liked, *disliked]:
        if pid not in known:
            raise ProductNotFound(pid)

    like = np.stack([catalog.product_vector(p, model) for p in liked])
    dislike = np.stack([catalog.product_vector(p, model) for p in disliked]) if disliked else None
    centroid = _unit(like.mean(axis=0))
    skip = [*liked, *disliked, *exclude]

    # the candidates: each liked product's neighbours and the centroid's, more than k of each so
    # that re-scoring (dislikes, diversity) has products to promote
    pool = min(1000, max(3 * k, 50))
    queries = [centroid] if method == "centroid" else [centroid, *like]
    candidates: dict[str, Hit] = {}
    for q in queries:
        for hit in catalog.search_vector(q, k=pool, filters=filters, model=model, exclude=skip):
            candidates.setdefault(hit.product_id, hit)
    if not candidates:
        return []
    hits, vecs = _candidate_vectors(catalog, list(candidates.values()), model)
    if not hits:
        return []

    sims = vecs @ centroid[:, None] if method == "centroid" else vecs @ like.T
    if method == "balanced":  # each liked product's similarities against its own neighbourhood
        sims = sims - _local_similarity(catalog, like, [*liked, *disliked], model)
    score = sims.max(axis=1)
    if dislike is not None and dislike_weight:
        score = score - dislike_weight * np.maximum((vecs @ dislike.T).max(axis=1), 0.0)
    order = _mmr(score, vecs, k, diversity) if diversity else np.argsort(-score, kind="stable")[:k]
    return [replace(hits[i], score=round(float(score[i]), 6)) for i in order]


def _local_similarity(catalog: Catalog, like: np.ndarray, skip: list[str], model: str) -> np.ndarray:
    """Per liked product, the mean similarity of its ``LOCAL_NEIGHBOURS`` nearest products in the
    whole catalog, the liked and disliked products left out (no filters and no ``exclude``: a
    shopper's exclusions do not change the scale)."""
    out = np.zeros(len(like), dtype=np.float32)
    for i, v in enumerate(like):
        hits = catalog.search_vector(v, k=LOCAL_NEIGHBOURS, model=model, exclude=skip)
        if hits:
            hits, vecs = _candidate_vectors(catalog, hits, model)
            if hits:
                out[i] = float((vecs @ v).mean())
    return out


def _candidate_vectors(catalog: Catalog, hits: list[Hit], model: str) -> tuple[list[Hit], np.ndarray]:
    """The candidates that still have vectors, and one unit vector each: the mean of its images'
    vectors, as ``product_vector`` (a product deleted since the search is left out)."""
    products = catalog.store.get_products([h.product_id for h in hits])
    image_ids = {i for p in products.values() for i in p.image_ids}
    stored = catalog.store.vectors_for_images(image_ids, model)
    rows, kept = [], []
    for h in hits:
        record = products.get(h.product_id)
        vs = [stored[i] for i in (record.image_ids if record else []) if i in stored]
        if not vs:  # deleted or re-indexed since the search: its matched image still stands for it
            vs = [stored.get(h.image_id)] if h.image_id in stored else []
        if vs:
            kept.append(h)
            rows.append(np.mean(np.stack(vs), axis=0))
    if not rows:
        return [], np.empty((0, 0), dtype=np.float32)
    return kept, _unit(np.stack(rows).astype(np.float32))


def _mmr(score: np.ndarray, vecs: np.ndarray, k: int, diversity: float) -> list[int]:
    """Maximal marginal relevance: each pick maximises (1 - diversity) × score - diversity × its
    similarity to the nearest product already picked."""
    chosen: list[int] = []
    nearest = np.full(len(score), -np.inf, dtype=np.float32)
    free = np.ones(len(score), dtype=bool)
    for _ in range(min(k, len(score))):
        gain = (1.0 - diversity) * score - diversity * np.where(np.isfinite(nearest), nearest, 0.0)
        gain = gain + 1e-9 * score  # ties (diversity 1 at the first pick) go to the best score
        gain[~free] = -np.inf
        i = int(np.argmax(gain))
        chosen.append(i)
        free[i] = False
        nearest = np.maximum(nearest, vecs @ vecs[i])
    return chosen
