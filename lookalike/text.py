"""Words in an image model's space: text search ("ankle boots") and tags for a photo.

A catalog already pairs words with pictures: each product has a title, a category and attributes,
and images embedded by the catalog's model. :func:`train_text_model` learns a linear map from a
sentence encoder's vectors (all-MiniLM-L6-v2 by default, which works offline) into the image
model's space by ridge regression (scikit-learn), so that a product's words land where its images
are. :meth:`TextModel.embed_texts` then puts any words into that space:
:meth:`lookalike.catalog.Catalog.search_text` finds the products whose images are nearest, and
:meth:`~lookalike.catalog.Catalog.tag` gives a photo the catalog's tags (its categories and frequent
attribute values) nearest to it.

The map is only as good as the catalog's words: it learns what "tote" looks like from products
whose titles say "tote". Words the catalog never uses reach the image space through the sentence
encoder's sense of meaning ("handbag" lands near "Bag"), which is weaker. A CLIP-style model
trained on web image-text pairs knows far more words; this needs none and runs on a CPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lookalike.errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    from lookalike.catalog import Catalog

#: at most this many tags (categories first, then the most frequent attribute values)
MAX_TAGS = 1000


@dataclass(frozen=True)
class Tag:
    tag: str
    #: "category", or the attribute the value belongs to
    kind: str
    #: cosine similarity between the photo and the tag's words in the image space
    score: float

    def to_dict(self) -> dict:
        return {"tag": self.tag, "kind": self.kind, "score": self.score}


@dataclass
class TextModel:
    """A learned map from a sentence encoder into one image model's space."""

    encoder: str
    #: the catalog model whose space the words are mapped into (as the catalog records it)
    image_model: str
    coef: np.ndarray  # (encoder dim, image dim)
    intercept: np.ndarray  # (image dim,)
    tags: list[str] = field(default_factory=list)
    tag_kinds: list[str] = field(default_factory=list)
    #: the weights of the image model whose vectors it learned from (the catalog's record of them)
    image_fingerprint: str | None = None
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    path: Path | None = None
    _tag_vectors: np.ndarray | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Words -> L2-normalised vectors in the image model's space, one row per text."""
        from lookalike.embedders import l2_normalise
        from lookalike.embedders._text import load_text_encoder

        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not any(ch.isalnum() for ch in t):
                what = (
                    "empty" if not isinstance(t, str) or not t.strip() else "not words (no letter or digit)"
                )
                raise InvalidRequest(f"text #{i} is {what}: give some words to search with")
        x = load_text_encoder(self.encoder).embed_texts(texts)
        if x.shape[1] != self.coef.shape[0]:
            raise ModelError(
                f"text encoder {self.encoder!r} gives {x.shape[1]}-d vectors; this text model expects "
                f"{self.coef.shape[0]}"
            )
        return l2_normalise(x @ self.coef + self.intercept).astype(np.float32)

    def tag_vectors(self) -> np.ndarray:
        if self._tag_vectors is None:
            self._tag_vectors = (
                self.embed_texts(self.tags) if self.tags else np.zeros((0, self.dim), dtype=np.float32)
            )
        return self._tag_vectors

    def tag_vector(self, vector: np.ndarray, k: int = 5) -> list[Tag]:
        """The ``k`` tags nearest to an image vector of :attr:`image_model`, best first."""
        if not 1 <= k <= 1000:
            raise InvalidRequest(f"k must be between 1 and 1000, got {k}")
        if not self.tags:
            raise InvalidRequest(
                "this text model has no tags: the catalog it learned from had no categories and no "
                "attribute values shared by enough products (--min-tag-count)"
            )
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ModelError(f"image vector has {v.shape[0]} dims, this text model maps into {self.dim}")
        scores = self.tag_vectors() @ (v / (np.linalg.norm(v) or 1.0))
        order = np.argsort(-scores, kind="stable")[:k]
        # a tag the photo points away from (cosine <= 0) is no suggestion
        return [
            Tag(self.tags[i], self.tag_kinds[i], round(float(scores[i]), 6)) for i in order if scores[i] > 0
        ]

    def save(self, path: str | Path) -> Path:
        import torch

        from lookalike.checkpoint import save_checkpoint

        return save_checkpoint(
            path,
            kind="text",
            state_dict={"coef": torch.from_numpy(self.coef), "intercept": torch.from_numpy(self.intercept)},
            arch={
                "encoder": self.encoder,
                "encoder_dim": int(self.coef.shape[0]),
                "image_model": self.image_model,
                "image_fingerprint": self.image_fingerprint,
                "dim": self.dim,
            },
            preprocess={},
            recipe=self.recipe,
            metrics=self.metrics,
            extra={"tags": list(self.tags), "tag_kinds": list(self.tag_kinds)},
        )


def load_text_model(path: str | Path) -> TextModel:
    """A text model saved by :meth:`TextModel.save` (``lookalike train text``)."""
    from lookalike.checkpoint import load_checkpoint

    payload = load_checkpoint(path, kind="text")
    try:
        arch, state, extra = payload["arch"], payload["state_dict"], payload.get("extra") or {}
        model = TextModel(
            encoder=str(arch["encoder"]),
            image_model=str(arch["image_model"]),
            coef=state["coef"].float().numpy(),
            intercept=state["intercept"].float().numpy(),
            tags=[str(t) for t in extra.get("tags", [])],
            tag_kinds=[str(t) for t in extra.get("tag_kinds", [])],
            image_fingerprint=arch.get("image_fingerprint"),
            recipe=payload.get("recipe", {}),
            metrics=payload.get("metrics", {}),
            path=Path(path),
        )
    except (KeyError, AttributeError, TypeError) as exc:
        raise ModelError(f"text model {path} is incomplete: {exc}") from None
    if model.coef.ndim != 2 or model.intercept.shape != (model.coef.shape[1],):
        raise ModelError(f"text model {path} has weights of the wrong shape")
    if len(model.tags) != len(model.tag_kinds):
        raise ModelError(f"text model {path} has {len(model.tags)} tags but {len(model.tag_kinds)} kinds")
    return model


def product_text(record) -> str:
    """The words a product is known by: title, category and attributes (``key: value``)."""
    parts = [s.strip() for s in (record.title, record.category) if isinstance(s, str) and s.strip()]
    for key, value in (record.attributes or {}).items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, str | int | float) and str(value).strip():
            parts.append(f"{key}: {value}")
    return ". ".join(parts)


#: an attribute value becomes a tag only if its products' mean image vector stands this many
#: standard errors away from the catalog's mean (a random subset of the products: about 1)
MIN_TAG_CONTRAST = 2.0


def tag_contrast(vectors: np.ndarray, members: np.ndarray) -> float:
    """How far the mean image vector of the products ``members`` (row indices) lies from the
    whole catalog's mean, in standard errors of the mean of a random subset of the same size (one
    drawn without replacement). About 1 for a set that does not look different from the catalog
    (a ``split: test`` attribute, a shared currency), far more for a category or a colour. 0 when
    the set is the whole catalog."""
    n, m = len(vectors), len(members)
    if m == 0 or m >= n:
        return 0.0
    mean = vectors.mean(axis=0)
    spread = float(np.mean(np.sum((vectors - mean) ** 2, axis=1)))  # trace of the covariance
    noise = spread * (1 / m - 1 / n) * n / (n - 1)
    if noise <= 0:
        return 0.0
    return float(np.linalg.norm(vectors[members].mean(axis=0) - mean) / np.sqrt(noise))


def catalog_tags(
    records: Sequence, *, min_count: int = 5, vectors: np.ndarray | None = None
) -> tuple[list[str], list[str]]:
    """The catalog's tags: every category, then string attribute values that at least
    ``min_count`` products share (most frequent first), at most :data:`MAX_TAGS` in all. With the
    products' image ``vectors`` (rows as ``records``), an attribute value is kept only if its
    products look different from the catalog as a whole (:func:`tag_contrast` at least
    :data:`MIN_TAG_CONTRAST`): a value that every product shares, or one that cuts the catalog at
    random, is no tag a photo could show."""
    categories = Counter(r.category for r in records if isinstance(r.category, str) and r.category.strip())
    values: Counter = Counter()
    holders: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        for key, value in (r.attributes or {}).items():
            if isinstance(value, str) and value.strip():
                values[(key, value.strip())] += 1
                holders.setdefault((key, value.strip()), []).append(i)
    tags: list[str] = []
    kinds: list[str] = []
    seen: set[str] = set()
    for name, _ in sorted(categories.items(), key=lambda kv: (-kv[1], kv[0])):
        tags.append(name)
        kinds.append("category")
        seen.add(name.casefold())
    for (key, value), count in sorted(values.items(), key=lambda kv: (-kv[1], kv[0])):
        if count < min_count or value.casefold() in seen:
            continue
        if (
            vectors is not None
            and tag_contrast(vectors, np.asarray(holders[(key, value)])) < MIN_TAG_CONTRAST
        ):
            continue
        tags.append(value)
        kinds.append(key)
        seen.add(value.casefold())
    return tags[:MAX_TAGS], kinds[:MAX_TAGS]


def _recall(queries: np.ndarray, gallery: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Text i -> product i among all the held-out products: Recall@K."""
    from lookalike.evaluation.metrics import nearest_neighbours

    nn = nearest_neighbours(queries, gallery, max(ks))
    hit = nn == np.arange(len(queries))[:, None]
    return {f"text_R@{k}": round(float(hit[:, :k].any(axis=1).mean()), 4) for k in ks}


def _tag_rows(enc, records: Sequence, y: np.ndarray, tags: list[str], kinds: list[str]):
    """(tag vectors, the normalised mean image vector of the products with each tag, their counts)."""
    from lookalike.embedders import l2_normalise

    wanted = set(zip(kinds, tags, strict=True))
    members: dict[tuple[str, str], list[int]] = {}  # one pass over the products, not one per tag
    for i, r in enumerate(records):
        if ("category", r.category) in wanted:
            members.setdefault(("category", r.category), []).append(i)
        for key, value in (r.attributes or {}).items():
            if isinstance(value, str) and (key, value.strip()) in wanted:
                members.setdefault((key, value.strip()), []).append(i)
    rows, means, counts = [], [], []
    for tag, kind in zip(tags, kinds, strict=True):
        has = members.get((kind, tag))
        if has:
            rows.append(tag)
            means.append(y[has].mean(axis=0))
            counts.append(len(has))
    if not rows:
        return np.zeros((0, enc.dim), np.float32), np.zeros((0, y.shape[1]), np.float32), np.zeros(0)
    return enc.embed_texts(rows), l2_normalise(np.stack(means)), np.asarray(counts, dtype=np.float64)


def _fit(alpha: float, x, y, tag_x, tag_y, tag_w):
    from sklearn.linear_model import Ridge

    weights = np.concatenate([np.ones(len(x)), tag_w])
    return Ridge(alpha=alpha).fit(
        np.concatenate([x, tag_x]), np.concatenate([y, tag_y]), sample_weight=weights
    )


def train_text_model(
    catalog: Catalog,
    *,
    model: str | None = None,
    encoder: str = "minilm",
    alpha: float = 1.0,
    min_tag_count: int = 5,
    holdout: float = 0.1,
    seed: int = 0,
    max_products: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TextModel:
    """Learn words -> ``model``'s image space from ``catalog``'s products (see the module text).

    ``holdout`` of the products (at random, ``seed``) are kept out of a first fit to measure it:
    ``metrics`` holds text -> product Recall@K among them and, where products have categories, how
    often a held-out product's photo gets its own category as the first tag. The returned model is
    then fit on every product (on ``max_products`` of them at random, when given: a catalog of few
    distinct words needs no more)."""
    from lookalike.embedders._text import load_text_encoder
    from lookalike.progress import progress_bar

    if alpha <= 0:
        raise InvalidRequest(f"alpha must be positive, got {alpha}")
    if not 0 <= holdout < 1:
        raise InvalidRequest(f"holdout must be in [0, 1), got {holdout}")
    if max_products is not None and max_products < 10:
        raise InvalidRequest(f"max_products must be at least 10, got {max_products}")
    say = log or (lambda _msg: None)
    image_model = catalog._name(model)
    ids, vectors = catalog.product_vectors(image_model)
    if max_products is not None and len(ids) > max_products:
        pick = np.sort(np.random.default_rng(seed).choice(len(ids), max_products, replace=False))
        ids, vectors = [ids[i] for i in pick], vectors[pick]
    records_by_id = catalog.get_products(ids)
    records = [records_by_id[i] for i in ids if i in records_by_id]
    texts = [product_text(r) for r in records]
    keep = [i for i, t in enumerate(texts) if t]
    if len(keep) < 10:
        raise InvalidRequest(
            f"a text model learns from products' titles, categories and attributes: {len(keep)} of "
            f"{len(ids)} products with {image_model} vectors have any (at least 10 needed)"
        )
    records = [records[i] for i in keep]
    texts = [texts[i] for i in keep]
    row_of = {pid: i for i, pid in enumerate(ids)}
    y = vectors[[row_of[r.product_id] for r in records]]
    enc = load_text_encoder(encoder)
    say(f"encoding {len(texts):,} product texts with {encoder} ({enc.dim}-d)")
    unique = list(dict.fromkeys(texts))
    rows = {t: i for i, t in enumerate(unique)}
    chunk = 2048
    parts = []
    with progress_bar("encoding texts", len(unique), enabled=progress) as advance:
        for start in range(0, len(unique), chunk):
            parts.append(enc.embed_texts(unique[start : start + chunk]))
            advance(len(parts[-1]))
    x_unique = np.concatenate(parts)
    x = x_unique[[rows[t] for t in texts]]
    tags, kinds = catalog_tags(records, min_count=min_tag_count, vectors=y)

    # each tag is also a text of its products: "Sandal" alone should land where sandals are, not
    # only "Sandal #12 (test). Sandal. split: test" (one row per tag, its products' mean, weighted
    # by their number: the same fit as one row per product with the tag's words)
    tag_x, tag_y, tag_w = _tag_rows(enc, records, y, tags, kinds)

    metrics: dict = {"products": len(records), "distinct_texts": len(unique), "tags": len(tags)}
    n_val = int(round(len(records) * holdout))
    if 0 < holdout and n_val < 10:
        say(f"{len(records)} products: too few to hold {holdout:.0%} out and measure the map (10 needed)")
    if n_val >= 10:
        order = np.random.default_rng(seed).permutation(len(records))
        val, train = order[:n_val], order[n_val:]
        fit = _fit(
            alpha, x[train], y[train], *_tag_rows(enc, [records[i] for i in train], y[train], tags, kinds)
        )
        probe = TextModel(
            encoder, image_model, fit.coef_.T.astype(np.float32), fit.intercept_.astype(np.float32)
        )
        from lookalike.embedders import l2_normalise

        q = l2_normalise(x[val] @ probe.coef + probe.intercept)
        metrics.update(_recall(q, y[val], (1, 10)))
        metrics["holdout"] = int(n_val)
        cats = [r.category for r in records]
        cat_tags = [t for t, kd in zip(tags, kinds, strict=True) if kd == "category"]
        with_cat = [i for i in val if cats[i] in cat_tags]
        if with_cat and len(cat_tags) > 1:
            probe.tags, probe.tag_kinds = cat_tags, ["category"] * len(cat_tags)
            tv = l2_normalise(enc.embed_texts(cat_tags) @ probe.coef + probe.intercept)
            best = np.argmax(y[with_cat] @ tv.T, axis=1)
            metrics["category_tag_accuracy"] = round(
                float(np.mean([cat_tags[b] == cats[i] for b, i in zip(best, with_cat, strict=True)])), 4
            )
        line = (
            f"held out {n_val:,} products: words -> their own product R@1 {metrics['text_R@1']:.3f}, "
            f"R@10 {metrics['text_R@10']:.3f}"
        )
        if "category_tag_accuracy" in metrics:
            line += (
                f"; a photo's first tag is its category {metrics['category_tag_accuracy']:.1%} of the time"
            )
        say(line)
    fit = _fit(alpha, x, y, tag_x, tag_y, tag_w)
    return TextModel(
        encoder=encoder,
        image_model=image_model,
        coef=fit.coef_.T.astype(np.float32),
        intercept=fit.intercept_.astype(np.float32),
        tags=tags,
        tag_kinds=kinds,
        image_fingerprint=catalog.store.get_meta(f"fingerprint:{image_model}"),
        recipe={
            "alpha": alpha,
            "min_tag_count": min_tag_count,
            "holdout": holdout,
            "seed": seed,
            "max_products": max_products,
        },
        metrics=metrics,
    )
