"""The retrieval protocol: queries searched against a gallery that includes distractors.

A :class:`QuerySet` holds query images with their product id (instance label), category (class
label) and a ``clean`` flag; a :class:`Gallery` holds every shop image with the same labels.
``evaluate`` embeds both with each embedder and reports Recall@K and mAP@R at instance and class
level, for the clean subset and for the full set. Any embedders can be compared in one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lookalike.embedders import Embedder, load_embedder
from lookalike.errors import InvalidRequest
from lookalike.evaluation.metrics import nearest_neighbours, recall_at_k
from lookalike.progress import progress_bar
from lookalike.rerank import Reranker

KS = (1, 5, 10, 20)


@dataclass
class QuerySet:
    """Query images (a sequence, or a callable i -> image for lazily rendered views)."""

    images: Sequence | Callable[[int], object]
    ids: np.ndarray  # product id of each query (instance label)
    classes: np.ndarray | None = None
    clean: np.ndarray | None = None  # bool mask of the clean subset
    name: str = "queries"

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, i: int):
        return self.images(i) if callable(self.images) else self.images[i]


@dataclass
class Gallery:
    images: Sequence
    ids: np.ndarray
    classes: np.ndarray | None = None
    name: str = "gallery"

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EvalResult:
    """``results[embedder][subset][level]`` -> {"R@1": ..., "mAP@R": ...}; subsets: clean, full."""

    protocol: str
    n_queries: int
    n_gallery: int
    n_clean: int
    ks: tuple = KS
    results: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    neighbours: dict = field(default_factory=dict)  # embedder -> (n_queries, k) gallery rows

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "n_queries": self.n_queries,
            "n_gallery": self.n_gallery,
            "n_clean": self.n_clean,
            "ks": list(self.ks),
            "results": self.results,
            "seconds": self.seconds,
        }


def score(
    q_emb: np.ndarray,
    g_emb: np.ndarray,
    q_ids: np.ndarray,
    g_ids: np.ndarray,
    q_cls: np.ndarray | None = None,
    g_cls: np.ndarray | None = None,
    ks: Sequence[int] = KS,
    chunk: int = 256,
    reorder: Callable[[int, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[dict, np.ndarray]:
    """Instance- and class-level Recall@K and mAP@R over all queries (exact inner-product search).

    ``reorder(start, head, sims)``, when given, re-ranks the first results of queries ``start ..``:
    ``head`` (n, d) gallery rows best first, ``sims`` their similarities; it returns ``head``
    reordered, and the metrics are taken on that order (the rows after ``head`` keep theirs).

    Returns ``({"instance": {...}, "class": {...}}, top)`` where ``top`` holds each query's best
    max(ks) gallery rows. A level is None when no query's label occurs in the gallery.
    """
    q_emb = np.ascontiguousarray(q_emb, dtype=np.float32)
    g_emb = np.ascontiguousarray(g_emb, dtype=np.float32)
    kmax = max(ks)
    levels = {"instance": (np.asarray(q_ids), np.asarray(g_ids))}
    if q_cls is not None and g_cls is not None:
        levels["class"] = (np.asarray(q_cls), np.asarray(g_cls))
    counts = {}
    for level, (ql, gl) in levels.items():
        uniq, cnt = np.unique(gl, return_counts=True)
        lookup = dict(zip(uniq.tolist(), cnt.tolist(), strict=True))
        counts[level] = np.array([lookup.get(x, 0) for x in ql.tolist()], dtype=np.int64)
    depth = min(len(g_emb), max([kmax] + [int(c.max()) if len(c) else 0 for c in counts.values()]))
    hits = {lv: {f"R@{k}": [] for k in ks} for lv in levels}
    aps = {lv: [] for lv in levels}
    top = np.empty((len(q_emb), min(kmax, len(g_emb))), dtype=np.int64)
    for s in range(0, len(q_emb), chunk):
        ranked = nearest_neighbours(q_emb[s : s + chunk], g_emb, depth, chunk=chunk)
        if reorder is not None:
            head = ranked[:, : getattr(reorder, "depth", ranked.shape[1])]
            sims = np.einsum("nd,nkd->nk", q_emb[s : s + chunk], g_emb[head])
            ranked[:, : head.shape[1]] = reorder(s, head, sims)
        top[s : s + chunk] = ranked[:, : top.shape[1]]
        for level, (ql, gl) in levels.items():
            rl = gl[ranked]
            lab = ql[s : s + chunk]
            rec = recall_at_k(rl[:, :kmax], lab, ks)
            n = len(lab)
            for k in ks:
                hits[level][f"R@{k}"].append(rec[f"R@{k}"] * n)
            aps[level].append(_ap_at_r(rl, lab, counts[level][s : s + chunk]))
    out: dict = {}
    n = len(q_emb)
    for level in levels:
        if (counts[level] > 0).sum() == 0:
            out[level] = None
            continue
        res = {k: float(sum(v) / n) for k, v in hits[level].items()}
        res["mAP@R"] = float(np.concatenate(aps[level]).mean()) if n else 0.0
        out[level] = res
    return out, top


def _ap_at_r(ranked_labels: np.ndarray, labels: np.ndarray, r: np.ndarray) -> np.ndarray:
    width = ranked_labels.shape[1]
    hit = (ranked_labels == labels[:, None]).astype(np.float64)
    ranks = np.arange(1, width + 1)
    prec = np.cumsum(hit, axis=1) / ranks
    within = ranks[None, :] <= r[:, None]
    ap = (prec * hit * within).sum(axis=1) / np.maximum(r, 1)
    ap[r == 0] = 0.0
    return ap


def _embed(
    embedder: Embedder, images, n: int, batch: int = 2048, *, desc: str = "embedding", progress: bool = False
) -> np.ndarray:
    out = []
    with progress_bar(desc, total=n, enabled=progress) as advance:
        for s in range(0, n, batch):
            e = min(n, s + batch)
            chunk = [images(i) for i in range(s, e)] if callable(images) else list(images[s:e])
            out.append(embedder.embed_images(chunk, progress=False))
            advance(e - s)
    return np.concatenate(out) if out else np.zeros((0, embedder.dim), np.float32)


def evaluate(
    embedders: Sequence[str | Embedder],
    queries: QuerySet,
    gallery: Gallery,
    *,
    protocol: str = "custom",
    ks: Sequence[int] = KS,
    rerank: Reranker | dict[str, Reranker] | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """Embed queries and gallery with every embedder and score them (clean subset and full set).

    With ``rerank``, each embedder is also scored with its first results re-ranked (alignment and
    verifier, :mod:`lookalike.rerank`), reported as ``"<name> +rerank"``; a dict of rerankers is
    reported as ``"<name> +<key>"`` for each.

    Progress bars (gallery, queries, re-ranking) are drawn on an interactive stderr unless
    ``progress`` is False (see :mod:`lookalike.progress`).
    """
    bars = progress is not False
    if len(queries) == 0 or len(gallery) == 0:
        raise InvalidRequest("evaluation needs at least one query and one gallery image")
    clean = queries.clean if queries.clean is not None else np.ones(len(queries), dtype=bool)
    res = EvalResult(protocol, len(queries), len(gallery), int(clean.sum()), tuple(ks))
    for spec in embedders:
        emb = load_embedder(spec) if isinstance(spec, str) else spec
        name = spec if isinstance(spec, str) else emb.name
        t0 = time.time()
        g = _embed(emb, gallery.images, len(gallery), desc=f"{name}: embedding the gallery", progress=bars)
        q = _embed(emb, queries.image, len(queries), desc=f"{name}: embedding the queries", progress=bars)
        t_embed = time.time() - t0
        res.results[name], res.neighbours[name] = _score_subsets(q, g, queries, gallery, clean, ks)
        res.seconds[name] = {"embed": round(t_embed, 1), "total": round(time.time() - t0, 1)}
        rerankers = {} if rerank is None else rerank if isinstance(rerank, dict) else {"rerank": rerank}
        for label, reranker in rerankers.items():
            t1 = time.time()
            key = f"{name} +{label}"
            with progress_bar(f"{key}: re-ranking", total=len(queries), enabled=bars) as advance:
                reorder = _rerank_reorder(reranker, emb, queries, gallery, advance)
                res.results[key], res.neighbours[key] = _score_subsets(
                    q, g, queries, gallery, clean, ks, reorder
                )
            res.seconds[key] = {"rerank": round(time.time() - t1, 1)}
    return res


def _score_subsets(q, g, queries: QuerySet, gallery: Gallery, clean, ks, reorder=None):
    """{"full": ..., "clean": ...} and the full set's top rows."""
    full, top = score(q, g, queries.ids, gallery.ids, queries.classes, gallery.classes, ks, reorder=reorder)
    subsets = {"full": full}
    if clean.any() and not clean.all():
        rows = np.flatnonzero(clean)
        sub = None
        if reorder is not None:

            def sub(start, head, sims):  # the clean queries' own rows
                return reorder(rows[start : start + len(head)], head, sims)

            sub.depth = reorder.depth
        subsets["clean"], _ = score(
            q[clean],
            g,
            queries.ids[clean],
            gallery.ids,
            None if queries.classes is None else queries.classes[clean],
            gallery.classes,
            ks,
            reorder=sub,
        )
    elif clean.all():
        subsets["clean"] = full
    return subsets, top


def _rerank_reorder(
    reranker: Reranker, embedder: Embedder, queries: QuerySet, gallery: Gallery, advance=None
):
    """A ``reorder`` for :func:`score`: each query's first ``reranker.reach`` results re-ranked
    (alignment and verifier). ``start`` is a query number, or an array of them (the clean subset's
    rows); a query's new order is kept, so the clean subset reuses the full set's work.
    ``advance(n)`` is told of each query re-ranked."""
    done: dict[int, np.ndarray] = {}

    def reorder(start, head, sims):
        rows = np.arange(start, start + len(head)) if np.isscalar(start) else np.asarray(start)
        todo = [i for i, r in enumerate(rows.tolist()) if r not in done]
        if todo:
            photos = [_as_image(queries.image(int(rows[i]))) for i in todo]
            boxes = embedder.locate(photos)
            uniq, inv = np.unique(head[todo], return_inverse=True)
            inv = inv.reshape(len(todo), -1)
            prepared = reranker.prepare([gallery.images[int(j)] for j in uniq])
            for n, i in enumerate(todo):
                order, _ = reranker.rerank(photos[n], (), sims[i], boxes[n], prepared[inv[n]])
                done[int(rows[i])] = head[i][order]
            if advance is not None:
                advance(len(todo))
        return np.stack([done[int(r)] for r in rows.tolist()])

    reorder.depth = reranker.reach
    return reorder


def _as_image(image) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
