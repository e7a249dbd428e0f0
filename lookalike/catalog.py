"""The Catalog facade: index sources, search by image, find similar products, delete, stats.

cat = Catalog.open("shop.db")
cat.index("photos/", model="default")
for hit in cat.search("street-photo.jpg", k=5, filters={"category": "Bag"}):
    print(hit.product_id, hit.score)
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from lookalike.config import Settings, get_settings
from lookalike.embedders import Embedder, canonical_model_name, load_embedder
from lookalike.errors import (
    CatalogNotFound,
    ImageError,
    ImagesGone,
    InvalidRequest,
    ModelError,
    ModelMismatchError,
    ProductNotFound,
    StoreError,
)
from lookalike.images import LoadedImage, load_image, perceptual_hash, thumbnail_bytes
from lookalike.index import ExactIndex, VectorIndex
from lookalike.progress import progress_bar
from lookalike.sources import Source, SourceProduct, open_source
from lookalike.store import NewImage, ProductRecord, ProductWrite, Store, open_store

if TYPE_CHECKING:
    from lookalike.authenticity import AuthenticityCheck
    from lookalike.text import Tag, TextModel

Product = ProductRecord
ImageInput = Image.Image | np.ndarray | str | Path | bytes


@dataclass
class Hit:
    product_id: str
    score: float
    image_id: int
    title: str | None
    category: str | None
    #: with re-ranking (``search(..., rerank=N)``): how well the image aligns with the photo, 0..1
    alignment: float | None = None
    #: with re-ranking and a verifier: its match score for the pair (a logit; higher = more alike)
    verifier: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("alignment", "verifier"):
            if d[key] is None:
                del d[key]
        return d


@dataclass
class IndexReport:
    source: str
    model: str
    products_seen: int = 0
    products_indexed: int = 0
    products_failed: int = 0
    products_created: int = 0
    products_updated: int = 0
    images_seen: int = 0
    images_failed: int = 0
    images_embedded: int = 0
    images_reused: int = 0
    #: with ``replace_images``: images products no longer list (the image goes unless another
    #: product uses it)
    images_unlinked: int = 0
    failures: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    report_path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def add(self, other: IndexReport) -> None:
        for name in (
            "products_seen products_indexed products_failed products_created products_updated "
            "images_seen images_failed images_embedded images_reused images_unlinked"
        ).split():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.report_path = str(path)  # the file names itself, as the returned report does
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


class _View:
    """An in-memory search view of one model: vector index plus the image -> products map."""

    def __init__(self, generation: int, index: VectorIndex, link_pks: np.ndarray, link_images: np.ndarray):
        self.generation = generation
        self.index = index
        order = np.argsort(link_images, kind="stable")
        self.link_images = link_images[order]
        self.link_pks = link_pks[order]
        #: image id -> its product pk, -1 for no product, -2 for several: one array read per hit
        #: instead of two binary searches (None when the image ids are too sparse for an array)
        self.owner: np.ndarray | None = None
        if len(self.link_images) and int(self.link_images[-1]) < 4 * len(self.link_images) + 1_000_000:
            # one slot more than the largest image id, left -1: an index's "no result" id -1 reads it
            owner = np.full(int(self.link_images[-1]) + 2, -1, dtype=np.int64)
            owner[self.link_images] = self.link_pks
            owner[self.link_images[1:][self.link_images[1:] == self.link_images[:-1]]] = -2
            self.owner = owner
        self._product_count: int | None = None
        #: filters -> (allowed product pks, their images, pk set), valid for this generation only
        self.filters_cache: dict[tuple, tuple[np.ndarray, np.ndarray, set[int]]] = {}

    def best_products(
        self, ids: np.ndarray, scores: np.ndarray, excluded: set[int], allowed: set[int] | None
    ) -> dict[int, tuple[float, int]]:
        """product pk -> (score, image id) of its best image among ranked images, best first."""
        best: dict[int, tuple[float, int]] = {}
        owner = self.owner
        if owner is not None and len(ids):
            try:
                owners = owner[ids]
            except IndexError:  # an image id past the links (an image without products)
                owners = None
            if owners is not None and int(owners.min()) >= 0:  # one product per image
                for pk, score, iid in zip(owners.tolist(), scores.tolist(), ids.tolist(), strict=True):
                    if pk in best or pk in excluded or (allowed is not None and pk not in allowed):
                        continue
                    best[pk] = (score, iid)
                return best
        lo = np.searchsorted(self.link_images, ids, side="left")
        hi = np.searchsorted(self.link_images, ids, side="right")
        if len(ids) and bool(np.all(hi - lo == 1)):  # one product per image: no slices
            owners = self.link_pks[lo].tolist()
            for pk, score, iid in zip(owners, scores.tolist(), ids.tolist(), strict=True):
                if pk in best or pk in excluded or (allowed is not None and pk not in allowed):
                    continue
                best[pk] = (score, iid)
            return best
        for iid, score, a, b in zip(ids.tolist(), scores.tolist(), lo.tolist(), hi.tolist(), strict=True):
            for pk in self.link_pks[a:b].tolist():
                if pk in best or pk in excluded or (allowed is not None and pk not in allowed):
                    continue
                best[pk] = (score, iid)
        return best

    @property
    def product_count(self) -> int:
        """Products with at least one image in this view (computed once per generation)."""
        if self._product_count is None:
            self._product_count = int(len(np.unique(self.link_pks)))
        return self._product_count

    def images_of(self, pks: np.ndarray) -> np.ndarray:
        return np.unique(self.link_images[np.isin(self.link_pks, pks)])


def _attribute_problem(key: object, value: object) -> str | None:
    """Why an attribute cannot be stored as JSON the database can read, or None. Lists and objects
    are kept (filters match only scalars); NaN and infinities are not JSON."""
    if not isinstance(key, str) or not key:
        return f"attribute keys must be non-empty strings, got {key!r}"
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return "not a finite number (NaN or infinity)"
    except TypeError as exc:
        return f"not a JSON value ({exc})"
    return None


class Catalog:
    """One product catalog in a store, searched with one or more embedding models."""

    def __init__(self, store: Store, *, settings: Settings | None = None):
        self.store = store
        self.settings = settings or get_settings()
        self._views: dict[str, _View] = {}
        self._fingerprint_checked: set[str] = set()
        self._model: str | None = None
        self._view_lock = threading.Lock()
        #: builds the vector index for a model's vectors; replaced by the ANN-backed stores
        self.index_factory: Callable[[str, np.ndarray, np.ndarray], VectorIndex] = lambda model, ids, vecs: (
            ExactIndex(ids, vecs)
        )
        #: file-backed stores with at least this many vectors of a model search an HNSW index kept
        #: beside the file (lookalike.index.hnsw); smaller catalogs are searched exactly
        from lookalike.index.hnsw import ANN_MIN_VECTORS

        self.ann_min_vectors: int | None = ANN_MIN_VECTORS
        #: the library of that index: "faiss" or "usearch" (Settings.ann)
        self.ann_backend: str = self.settings.ann
        self._ann: dict = {}

    @classmethod
    def open(
        cls, path_or_url: str | Path | None = None, *, settings: Settings | None = None, create: bool = True
    ) -> Catalog:
        """Open (or, with ``create``, create) the catalog at a SQLite path or a PostgreSQL URL.

        ``create=False`` raises :class:`CatalogNotFound` for a SQLite file that does not exist,
        for callers that only read."""
        settings = settings or get_settings()
        target = str(path_or_url or settings.default_db())
        if not create and not target.startswith(("postgresql://", "postgres://")):
            path = target.removeprefix("sqlite:///")
            if Path(path).is_dir():
                raise StoreError(f"{path} is a folder, not a catalog file: check --db / LOOKALIKE_DB")
            if not Path(path).is_file():
                raise CatalogNotFound(path)
        return cls(open_store(target), settings=settings)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- models -----------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The model the catalog was indexed with (searches use it unless told otherwise)."""
        if self._model is None:  # set once, by the first index run; cached from then on
            self._model = self.store.get_meta("model")
        return self._model or canonical_model_name(self.settings.model)

    def _name(self, model: str | None) -> str:
        """A model name as the catalog records it (relative paths made absolute); None: the
        catalog's model. A name the catalog already knows stays as it is (catalogs indexed before
        names were made absolute hold relative ones)."""
        if not model or model == self.model:
            return model or self.model
        canonical = canonical_model_name(model)
        if canonical != model and self.store.get_meta(f"fingerprint:{model}") is not None:
            return model  # recorded under this very spelling
        return canonical

    def embedder(self, model: str | None = None, *, record: bool = False) -> Embedder:
        """The embedder for ``model``. A catalog remembers the weights (fingerprint) each model was
        indexed with and refuses to mix in vectors from other weights under the same name."""
        model = self._name(model)
        embedder = load_embedder(model)
        if model in self._fingerprint_checked and not record:
            return embedder
        key = f"fingerprint:{model}"
        stored = self.store.get_meta(key)
        if stored is None and record and embedder.fingerprint:
            self.store.set_meta(key, embedder.fingerprint)
        elif stored is not None and embedder.fingerprint and stored != embedder.fingerprint:
            raise ModelMismatchError(
                f"model {model!r} now has other weights ({embedder.fingerprint}) than the catalog was "
                f"indexed with ({stored}); re-index into a new catalog or use the original checkpoint"
            )
        self._fingerprint_checked.add(model)
        return embedder

    def warm(self, model: str | None = None) -> None:
        """Load the model and build the in-memory search index now, not on the first search."""
        model = self._name(model)
        self.embedder(model)
        if self.store.models().get(model):
            self._view(model)

    # --- indexing ---------------------------------------------------------------------------
    def index(
        self,
        source: str | Path | Source | Iterable[SourceProduct],
        model: str | None = None,
        *,
        limit: int | None = None,
        batch_size: int | None = None,
        report_path: str | Path | None = None,
        progress: bool | None = None,
        on_batch: Callable[[IndexReport], None] | None = None,
        replace_images: bool = False,
    ) -> IndexReport:
        """Index every product of a source. Bad images are skipped and reported; each batch of
        whole products is one transaction; unchanged images (same sha256) are not embedded again.

        By default indexing adds: a product keeps the images it had and gains those the source
        lists. ``replace_images``: each product's images become exactly those the source lists now
        (a photo replaced in a folder replaces the stored one; images no product uses any more are
        deleted); a product with an image that cannot be read keeps its stored images."""
        if not isinstance(source, str | Path | Source):
            from lookalike.sources import ListSource

            source = ListSource(source)
        src = open_source(source, limit=limit)
        model = self._name(model)
        embedder = self.embedder(model, record=True)
        if self.store.get_meta("model") is None:
            self.store.set_meta("model", model)
        report = IndexReport(source=src.name, model=model)
        started = time.perf_counter()
        try:
            total = len(src)
        except TypeError:
            total = None
        batch_images = batch_size or self.settings.batch_size
        with progress_bar(f"indexing {src.name}", total=total, enabled=progress is not False) as advance:
            for batch in _batches(src, batch_images):
                part = self._index_batch(batch, embedder, model, replace_images=replace_images)
                report.add(part)
                advance(len(batch), failed=report.products_failed)
                if on_batch is not None:
                    on_batch(part)
        report.elapsed_s = round(time.perf_counter() - started, 3)
        if report_path is None:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
            report_path = self.settings.data_dir / "reports" / f"index-{stamp}.json"
        report.write(report_path)
        return report

    def index_products(
        self, products: list[SourceProduct], model: str | None = None, *, replace_images: bool = False
    ) -> IndexReport:
        """Index a few products now (one transaction), e.g. from an API call."""
        model = self._name(model)
        if self.store.get_meta("model") is None:
            self.store.set_meta("model", model)
        return self._index_batch(
            products, self.embedder(model, record=True), model, replace_images=replace_images
        )

    def _load(self, product: SourceProduct, i: int) -> LoadedImage | ImageError:
        try:
            return load_image(product.images[i], settings=self.settings, name=product.uri(i))
        except ImageError as exc:
            return exc

    def _index_batch(
        self, batch: list[SourceProduct], embedder: Embedder, model: str, *, replace_images: bool = False
    ) -> IndexReport:
        report = IndexReport(source="batch", model=model)
        jobs = [(p, i) for p in batch for i in range(len(p.images))]
        with ThreadPoolExecutor(max_workers=8) as pool:
            loaded = list(pool.map(lambda job: self._load(*job), jobs))
        per_product: dict[int, list[LoadedImage]] = {}
        failed_products: set[int] = set()
        for (product, i), result in zip(jobs, loaded, strict=True):
            report.images_seen += 1
            if isinstance(result, ImageError):
                report.images_failed += 1
                report.failures.append(
                    {
                        "product_id": product.product_id,
                        "item": product.uri(i),
                        "kind": result.kind,
                        "reason": result.reason,
                    }
                )
                if replace_images:
                    failed_products.add(id(product))
                continue
            per_product.setdefault(id(product), []).append(result)
        writes: list[ProductWrite] = []
        new: dict[str, LoadedImage] = {}
        for product in batch:
            report.products_seen += 1
            for problem in product.problems:
                report.failures.append(
                    {
                        "product_id": product.product_id,
                        "item": product.product_id,
                        "kind": "bad_row",
                        "reason": problem,
                    }
                )
            good = per_product.get(id(product), [])
            if not good or id(product) in failed_products:
                report.products_failed += 1
                if not product.problems and not product.images:
                    report.failures.append(
                        {
                            "product_id": product.product_id,
                            "item": product.product_id,
                            "kind": "no_images",
                            "reason": "product has no images",
                        }
                    )
                continue
            for li in good:
                new.setdefault(li.sha256, li)
            attributes = {}
            for key, value in product.attributes.items():
                problem = _attribute_problem(key, value)
                if problem is None:
                    attributes[key] = value
                else:  # dropped and reported; the rest of the product is written
                    report.failures.append(
                        {
                            "product_id": product.product_id,
                            "item": f"{product.product_id}: attribute {key!r}",
                            "kind": "bad_attribute",
                            "reason": problem,
                        }
                    )
            writes.append(
                ProductWrite(
                    product_id=product.product_id,
                    title=product.title,
                    category=product.category,
                    attributes=attributes,
                    url=product.url,
                    image_shas=[li.sha256 for li in good],
                    replace_images=replace_images,
                )
            )
        for attempt in range(3):
            try:
                self._write(report, embedder, model, new, writes)
                break
            except ImagesGone as exc:
                # another writer dropped images this batch reuses (their last product went) between
                # the check and the write; nothing was written: check again and embed them anew
                if attempt == 2:
                    raise StoreError(f"images kept disappearing during the write ({exc})") from None
        report.products_indexed = len(writes)
        return report

    def _write(
        self,
        report: IndexReport,
        embedder: Embedder,
        model: str,
        new: dict[str, LoadedImage],
        writes: list[ProductWrite],
    ) -> None:
        existing = self.store.images_with_sha(new.keys(), model)
        to_embed = [li for sha, li in new.items() if not existing.get(sha, (0, False))[1]]
        report.images_reused = len(new) - len(to_embed)
        vectors = embedder.embed_images([li.image for li in to_embed], progress=False) if to_embed else []
        images = [
            NewImage(
                sha256=li.sha256,
                uri=li.uri,
                width=li.width,
                height=li.height,
                # also for images that exist without this model's vector: another writer may
                # delete such a row meanwhile, and the insert then makes it whole again
                phash=perceptual_hash(li.image),
                thumbnail=thumbnail_bytes(li.image),
                vector=vec,
            )
            for li, vec in zip(to_embed, vectors, strict=True)
        ]
        if writes:
            result = self.store.write_batch(model, images, writes)
            report.products_created = result.products_created
            report.products_updated = result.products_updated
            report.images_embedded = result.embeddings_added
            report.images_unlinked = result.links_removed

    # --- search -----------------------------------------------------------------------------
    def _view(self, model: str) -> _View:
        generation = self.store.generation()
        view = self._views.get(model)
        if view is not None and view.generation == generation:
            return view
        with self._view_lock:
            view = self._views.get(model)
            if view is None or view.generation != generation:
                index = self._make_index(model, generation)
                if len(index) == 0 and self.store.counts()["images"] > 0:
                    indexed = ", ".join(self.store.models()) or "none"
                    raise ModelMismatchError(
                        f"the catalog has no vectors for model {model!r} (indexed with: {indexed}); "
                        f"re-index with --model {model} or search with one of those"
                    )
                if hasattr(index, "search_products"):  # searches products in the store itself
                    pks = image_ids = np.empty(0, dtype=np.int64)
                else:
                    pks, image_ids = self.store.load_links()
                view = _View(generation, index, pks, image_ids)
                self._views[model] = view
        return view

    def _make_index(self, model: str, generation: int) -> VectorIndex:
        """The store's own index (pgvector), an HNSW index beside a large SQLite catalog, or exact."""
        make_index = getattr(self.store, "make_index", None)
        if make_index is not None:
            return make_index(model)
        if self.ann_min_vectors is not None:
            from lookalike.index.hnsw import ann_index_for

            ann = ann_index_for(
                self.store,
                model,
                generation,
                self._ann,
                min_vectors=self.ann_min_vectors,
                backend=self.ann_backend,
            )
            if ann is not None:
                return ann
        ids, vecs = self.store.load_vectors(model)
        return self.index_factory(model, ids, vecs)

    def missing_vectors(self, model: str | None = None) -> int:
        """How many stored images have no vector for ``model`` (indexed with another model only):
        searches with ``model`` cannot find them. 0 for a model the catalog has no vectors of."""
        embedded = self.store.models().get(self._name(model))
        return max(0, self.store.counts()["images"] - embedded) if embedded else 0

    def product_count(self, model: str | None = None) -> int:
        """How many products the search view of ``model`` holds (no database count per call)."""
        return self._view(self._name(model)).product_count

    def embed_query(self, query: ImageInput, model: str | None = None) -> np.ndarray:
        return self.embedder(model).embed_image(self._query_image(query))

    def _query_image(self, query: ImageInput) -> Image.Image:
        if isinstance(query, np.ndarray):
            query = Image.fromarray(query)
        return load_image(query, settings=self.settings).image

    def search(
        self,
        query: ImageInput,
        k: int = 10,
        filters: dict[str, str] | None = None,
        model: str | None = None,
        *,
        rerank: int = 0,
        verifier: str | None = None,
    ) -> list[Hit]:
        """Top-k products for an image (PIL image, path, http(s) URL or bytes).

        ``rerank=N`` checks the products' images against the photo (alignment screens the first
        3 × N, the learned verifier checks the best N of them; :mod:`lookalike.rerank`) and
        re-orders them: for customer photos the exact product comes first far more often, at about
        10× the search time for N=100 (``bench/bench_rerank.py``). ``verifier``: "default",
        "none" (alignment only) or a checkpoint path; None takes the ``verifier`` setting.
        """
        model = self._name(model)
        if not rerank:
            return self.search_vector(self.embed_query(query, model), k=k, filters=filters, model=model)
        image = self._query_image(query)
        return self.search_reranked(
            image, k=k, filters=filters, model=model, rerank=rerank, verifier=verifier
        )

    def search_reranked(
        self,
        image: Image.Image,
        k: int = 10,
        filters: dict[str, str] | None = None,
        model: str | None = None,
        *,
        rerank: int = 100,
        verifier: str | None = None,
        located: tuple[np.ndarray, Any] | None = None,
    ) -> list[Hit]:
        """Search with a loaded photo, then re-order its first products by alignment with it
        and a learned verifier (:mod:`lookalike.rerank`): alignment screens the first
        3 × ``rerank`` results and the verifier checks the best ``rerank`` of them. Each aligned
        hit carries its ``alignment`` score, each verified one its ``verifier`` score too.
        ``verifier``: "default", "none" or a checkpoint path (None: the ``verifier`` setting).
        ``located``: the photo's (vector, box) from ``embed_and_locate`` when the caller has them."""
        from lookalike.rerank import Reranker

        if not 1 <= k <= 1000:
            raise InvalidRequest(f"k must be between 1 and 1000, got {k}")
        verifier = verifier or self.settings.verifier
        reranker = Reranker(
            depth=rerank,
            verifier=None if verifier == "none" else verifier,
            verifier_precision=self.settings.verifier_precision,
        )
        model = self._name(model)
        if located is None:
            vectors, boxes = self.embedder(model).embed_and_locate([image])
            located = (vectors[0], boxes[0])
        vector, box = located
        hits = self.search_vector(vector, k=max(k, reranker.reach), filters=filters, model=model)
        a = min(reranker.reach, len(hits))
        # an image deleted since the search has no thumbnail: it aligns with nothing (0)
        blank = Image.new("L", (1, 1))
        stored = self.store.get_thumbnails([h.image_id for h in hits[:a]])
        thumbs = [
            Image.open(io.BytesIO(data)) if (data := stored.get(h.image_id)) else blank for h in hits[:a]
        ]
        order, scores = reranker.rerank(image, thumbs, [h.score for h in hits], box)
        out = []
        for i in order[:k]:
            h = hits[int(i)]
            found = {name: round(float(v[i]), 6) for name, v in scores.items() if np.isfinite(v[i])}
            out.append(replace(h, **found) if found else h)
        return out

    def search_vector(
        self,
        vector: np.ndarray,
        k: int = 10,
        filters: dict[str, str] | None = None,
        model: str | None = None,
        *,
        exclude: Iterable[str] = (),
    ) -> list[Hit]:
        if not 1 <= k <= 1000:
            raise InvalidRequest(f"k must be between 1 and 1000, got {k}")
        model = self._name(model)
        view = self._view(model)
        if len(view.index) == 0:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != view.index.dim:
            raise ModelMismatchError(
                f"query vector has {q.shape[0]} dims, model {model!r} has {view.index.dim}"
            )
        q = q / (math.sqrt(float(np.dot(q, q))) or 1.0)
        excluded_pks: set[int] = set()
        if exclude:
            excluded_pks = set(self.store.product_pks(exclude).values())
        search_products = getattr(view.index, "search_products", None)
        if search_products is not None:  # the store filters and ranks products itself
            return self._hits(search_products(q, k, filters, excluded_pks))
        allowed_pks = allowed_images = allowed_set = None
        if filters:
            key = tuple(sorted((str(k), str(v)) for k, v in filters.items()))
            cached = view.filters_cache.get(key)
            if cached is None:
                pks = self.store.matching_product_pks(filters)
                cached = (pks, view.images_of(pks), set(pks.tolist()))
                if len(view.filters_cache) >= 64:
                    view.filters_cache.clear()
                view.filters_cache[key] = cached
            allowed_pks, allowed_images, allowed_set = cached
            if len(allowed_pks) == 0:
                return []
        want = k + len(excluded_pks)
        # unfiltered, the best `want` images name the best products unless images share products
        # (then the loop fetches more); filtered, the index over-fetches and the pks are checked
        m = min(len(view.index), want if allowed_pks is None else max(4 * want, 32))
        while True:
            ids, scores = view.index.search(q, m, allowed_images)
            best = view.best_products(ids, scores, excluded_pks, allowed_set)
            if len(best) >= k or len(ids) < m or m >= len(view.index):
                break
            m = min(len(view.index), max(m * 4, 32))
        return self._hits([(pk, iid, score) for pk, (score, iid) in list(best.items())[:k]])

    def _hits(self, ranked: list[tuple[int, int, float]]) -> list[Hit]:
        """(product pk, image id, score) rows, best first -> Hits with the products' metadata."""
        labels = self.store.product_labels([pk for pk, _, _ in ranked])
        hits = []
        for pk, iid, score in ranked:
            label = labels.get(pk)
            if label is not None:
                hits.append(Hit(label[0], round(float(score), 6), iid, label[1], label[2]))
        return hits

    # --- words ------------------------------------------------------------------------------
    def text_model(self, text_model: TextModel | str | Path | None = None) -> TextModel:
        """``text_model`` (a :class:`~lookalike.text.TextModel` or the path of one), else the
        ``text_model`` setting (``LOOKALIKE_TEXT_MODEL``), checked against this catalog's vectors."""
        from lookalike.text import TextModel, load_text_model

        if text_model is None:
            text_model = self.settings.text_model
            if not text_model:
                raise ModelError(
                    "no text model: train one on this catalog with `lookalike train text --out text.pt`, "
                    "then pass it (--text-model text.pt) or set LOOKALIKE_TEXT_MODEL"
                )
        if not isinstance(text_model, TextModel):
            text_model = _load_text_model_cached(
                str(Path(text_model).expanduser().resolve()), load_text_model
            )
        models = self.store.models()
        if text_model.image_model not in models:
            have = ", ".join(sorted(models)) or "none"
            raise ModelMismatchError(
                f"the text model maps words into {text_model.image_model!r}, but this catalog has "
                f"vectors of {have}: train a text model on this catalog (`lookalike train text`)"
            )
        stored = self.store.get_meta(f"fingerprint:{text_model.image_model}")
        if text_model.image_fingerprint and stored and stored != text_model.image_fingerprint:
            raise ModelMismatchError(
                f"the text model learned from {text_model.image_model!r} vectors of other weights "
                f"({text_model.image_fingerprint}) than this catalog's ({stored}): train it again on "
                "this catalog (`lookalike train text`)"
            )
        return text_model

    def search_text(
        self,
        text: str,
        k: int = 10,
        filters: dict[str, str] | None = None,
        *,
        text_model: TextModel | str | Path | None = None,
    ) -> list[Hit]:
        """Top-k products for words ("red tote bag"): the words go into the image space through a
        text model trained on this catalog (:mod:`lookalike.text`), then search like a photo."""
        tm = self.text_model(text_model)
        return self.search_vector(tm.embed_texts([text])[0], k=k, filters=filters, model=tm.image_model)

    def tag(
        self, query: ImageInput, k: int = 5, *, text_model: TextModel | str | Path | None = None
    ) -> list[Tag]:
        """The catalog's ``k`` tags (categories, frequent attribute values) nearest to a photo."""
        tm = self.text_model(text_model)
        return tm.tag_vector(self.embed_query(query, tm.image_model), k=k)

    def product_vector(self, product_id: str, model: str | None = None) -> np.ndarray:
        """A product's vector: the normalised mean of its images' vectors."""
        model = self._name(model)
        product = self.get_product(product_id)
        vecs = self.store.vectors_for_images(product.image_ids, model)
        if not vecs:
            raise ModelMismatchError(f"product {product_id!r} has no vectors for model {model!r}")
        v = np.mean(np.stack(list(vecs.values())), axis=0)
        return (v / (np.linalg.norm(v) or 1.0)).astype(np.float32)

    def similar(
        self, product_id: str, k: int = 10, filters: dict[str, str] | None = None, model: str | None = None
    ) -> list[Hit]:
        """Products that look like ``product_id`` (the product itself excluded)."""
        vector = self.product_vector(product_id, model)
        return self.search_vector(vector, k=k, filters=filters, model=model, exclude=[product_id])

    def recommend(
        self,
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
        """Products that look like the ``liked`` ones and unlike the ``disliked`` ones, none of
        them (nor ``exclude``) included: :func:`lookalike.recommend.recommend`."""
        from lookalike.recommend import recommend

        return recommend(
            self,
            liked,
            k,
            disliked=disliked,
            exclude=exclude,
            filters=filters,
            method=method,
            diversity=diversity,
            dislike_weight=dislike_weight,
            model=model,
        )

    def check_authenticity(
        self,
        product_id: str,
        photo: ImageInput,
        *,
        rerank: int = 0,
        window: int = 100,
        copy_distance: int = 6,
        verifier: str | None = None,
    ) -> AuthenticityCheck:
        """Does ``photo`` show ``product_id``? Its reference photos and the whole catalog decide:
        :func:`lookalike.authenticity.check_authenticity` (verdict copy/match/lookalike/different)."""
        from lookalike.authenticity import check_authenticity

        return check_authenticity(
            self,
            product_id,
            photo,
            rerank=rerank,
            window=window,
            copy_distance=copy_distance,
            verifier=verifier,
        )

    def product_vectors(self, model: str | None = None) -> tuple[list[str], np.ndarray]:
        """(product ids, one L2-normalised vector per product) for every product with vectors."""
        model = self._name(model)
        ids, vecs = self.store.load_vectors(model)
        pks, image_ids = self.store.load_links()
        if len(ids) == 0:
            return [], np.empty((0, 0), dtype=np.float32)
        row_of = {iid: r for r, iid in enumerate(ids.tolist())}
        sums: dict[int, np.ndarray] = {}
        for pk, iid in zip(pks.tolist(), image_ids.tolist(), strict=True):
            r = row_of.get(iid)
            if r is None:
                continue
            if pk in sums:
                sums[pk] = sums[pk] + vecs[r]
            else:
                sums[pk] = vecs[r].copy()
        order = sorted(sums)
        records = self.store.products_by_pk(order)
        mat = np.stack([sums[pk] for pk in order]).astype(np.float32)
        mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        return [records[pk].product_id for pk in order], mat

    # --- records ----------------------------------------------------------------------------
    def get_product(self, product_id: str) -> Product:
        found = self.store.get_products([product_id])
        if product_id not in found:
            raise ProductNotFound(product_id)
        return found[product_id]

    def get_products(self, product_ids: Iterable[str]) -> dict[str, Product]:
        return self.store.get_products(product_ids)

    def list_products(
        self, limit: int = 50, cursor: str | None = None, category: str | None = None
    ) -> ProductPage:
        """One page of products in the order they were added, optionally of one ``category``.

        Pass the page's ``next_cursor`` to get the next page (None on the last one). Paging is
        keyset-based, so a deep page costs what the first does, and products added meanwhile
        appear on a later page."""
        if not isinstance(limit, int) or limit < 1:
            raise InvalidRequest(f"limit must be a positive integer, got {limit!r}")
        after = decode_cursor(cursor) if cursor else None
        rows = self.store.list_products(after, limit + 1, category)  # one more: is there a next page?
        more = len(rows) > limit
        rows = rows[:limit]
        return ProductPage([r for _, r in rows], encode_cursor(rows[-1][0]) if more else None)

    def delete(self, product_id: str) -> None:
        if not self.store.delete_product(product_id):
            raise ProductNotFound(product_id)

    def set_attributes(self, updates: dict[str, dict[str, Any]]) -> int:
        return self.store.set_attributes(updates)

    def thumbnail(self, image_id: int) -> bytes:
        from lookalike.errors import ImageNotFound

        data = self.store.get_thumbnail(image_id)
        if data is None:
            raise ImageNotFound(image_id)
        return data

    def check_index(
        self, model: str | None = None, *, samples: int = 200, k: int = 10, seed: int = 0
    ) -> dict:
        """How well the index that serves ``model`` finds true neighbours in this catalog: recall@k
        of its search against exact search over every stored vector, with ``samples`` stored
        vectors as queries (each query's own image left out), and its single-query latency.

        An HNSW graph is fast on clustered embeddings but misses neighbours of spread-out ones;
        this measures which case a catalog is in (see ``Settings.ann``)."""
        if not 1 <= k <= 1000:
            raise InvalidRequest(f"k must be between 1 and 1000, got {k}")
        if samples < 1:
            raise InvalidRequest(f"samples must be at least 1, got {samples}")
        model = self._name(model)
        index = self._view(model).index
        ids, vecs = self.store.load_vectors(model)
        if len(ids) < 2:
            raise InvalidRequest(f"model {model!r} has {len(ids)} vectors: nothing to check")
        ids = np.asarray(ids, dtype=np.int64)
        vecs = np.asarray(vecs, dtype=np.float32)
        pick = np.random.default_rng(seed).choice(len(ids), size=min(samples, len(ids)), replace=False)
        kk = min(k, len(ids) - 1)
        queries = vecs[pick] / np.maximum(np.linalg.norm(vecs[pick], axis=1, keepdims=True), 1e-12)
        # the exact answers first: interleaved, their full scans would evict the index from the caches
        exact = ExactIndex(ids, vecs)
        truths = [
            [i for i in exact.search(q, kk + 1)[0].tolist() if i != own][:kk]
            for q, own in zip(queries, ids[pick], strict=True)
        ]
        for q in queries[:3]:  # warm up: the first searches after loading an index pay one-off costs
            index.search(q, kk + 1)
        hits, lat = [], []
        for q, own, truth in zip(queries, ids[pick], truths, strict=True):
            t0 = time.perf_counter()
            got, _ = index.search(q, kk + 1)
            lat.append(time.perf_counter() - t0)
            got = [i for i in got.tolist() if i != own][:kk]
            hits.append(len(set(got) & set(truth)) / max(1, len(truth)))
        lat_ms = np.array(lat) * 1000
        return {
            "model": model,
            "index": getattr(index, "backend", type(index).__name__),
            "vectors": len(ids),
            "samples": len(pick),
            "k": kk,
            f"recall@{kk}": round(float(np.mean(hits)), 4),
            "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 3),
        }

    def stats(self) -> dict:
        counts = self.store.counts()
        return {
            "db": self.store.url,
            "schema_version": self.store.schema_version(),
            "model": self.store.get_meta("model"),
            **counts,
            "models": self.store.models(),
            "categories": self.store.categories(),
        }


@dataclass
class ProductPage:
    """A page of :meth:`Catalog.list_products`; ``next_cursor`` is None on the last page."""

    products: list[Product]
    next_cursor: str | None

    def to_dict(self) -> dict:
        return {"products": [p.to_dict() for p in self.products], "next_cursor": self.next_cursor}


_CURSOR_PREFIX = "after:"


def encode_cursor(pk: int) -> str:
    """An opaque page cursor: the last product's internal key, base64url-encoded."""
    import base64

    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{int(pk)}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    import base64
    import binascii

    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    key = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not key.isdigit() or len(key) > 19:
        raise InvalidRequest(
            f"cursor {cursor[:100]!r} is not a page cursor (pass the next_cursor of a previous page)"
        )
    return int(key)


def _batches(source: Iterable[SourceProduct], max_images: int) -> Iterator[list[SourceProduct]]:
    """Group whole products into batches of about ``max_images`` images."""
    batch: list[SourceProduct] = []
    n = 0
    for product in source:
        batch.append(product)
        n += max(1, len(product.images))
        if n >= max_images:
            yield batch
            batch, n = [], 0
    if batch:
        yield batch


_text_models: dict[tuple[str, float], Any] = {}
_text_models_lock = threading.Lock()


def _load_text_model_cached(path: str, load: Callable[[str], Any]):
    """A text model file, loaded once per process (again when the file changes)."""
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return load(path)  # names the problem
    with _text_models_lock:
        key = (path, mtime)
        if key not in _text_models:
            if len(_text_models) >= 8:
                _text_models.clear()
            _text_models[key] = load(path)
        return _text_models[key]
