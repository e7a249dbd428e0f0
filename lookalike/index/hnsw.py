"""Approximate (HNSW) search for the embedded store, persisted beside the SQLite file.

Three backends with one interface, chosen per catalog (``Settings.ann``, ``LOOKALIKE_ANN``):
``faiss`` (:class:`~lookalike.index.faiss_hnsw.FaissHNSWIndex`, the default: faster per query on
this project's benchmarks), ``usearch`` (:class:`HNSWIndex`, real deletes), and ``pqscan``
(:class:`~lookalike.index.faiss_pq.FaissPQScanIndex`: no graph, a 4-bit product-quantized scan
of every vector re-ranked exactly, for embeddings too spread out for a graph to find their
neighbours).

:class:`HNSWIndex` is a VectorIndex over image ids with real deletes. Filtered queries
over-fetch in proportion to the filter's selectivity and fall back to exact search over the
allowed vectors when the filter is very selective or the graph search comes back short, so a
filtered query returns k results whenever k matches exist.

:class:`PersistentHNSW` keeps one model's index in ``<db>-ann/<model>.usearch`` (or ``.faiss``, ``.pqscan``)
with a JSON stamp (catalog id, backend, store generation, count). Opening a catalog loads the file;
when the stamp's generation differs from the store's, only the difference (image ids added or
deleted since) is applied; when the file is missing, unreadable, or the graph carries too many
deleted nodes, the index is rebuilt from the store's vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import numpy as np
from usearch.index import Index

from lookalike.errors import InvalidRequest
from lookalike.index.base import VectorIndex

#: catalogs with fewer vectors than this are searched exactly
ANN_MIN_VECTORS = 20_000
#: filtered queries allowing at most this many ids, or this fraction of the index, are searched exactly
EXACT_ALLOWED_MAX = 4_000
EXACT_ALLOWED_FRACTION = 0.05
#: the vectors of this many recent exact filters are kept (a filter's allowed ids are one array per
#: catalog generation, so repeated filtered queries skip reading the vectors out of the graph)
EXACT_CACHE_FILTERS = 4
#: rebuild the graph once this fraction of its nodes has been deleted since the last build
MAX_DELETED_FRACTION = 0.3
#: the ANN libraries the embedded store can use (Settings.ann); the first is the default
ANN_BACKENDS = ("faiss", "usearch", "pqscan")


def exact_top(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row numbers, scores) of the top-k rows of ``vectors`` by inner product, best first."""
    # einsum, not BLAS: a threaded matrix-vector product stalls for milliseconds on a busy machine
    scores = np.einsum("ij,j->i", vectors, query)
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top].astype(np.float32)


class ReadWriteLock:
    """Many readers at once, or one writer; a waiting writer holds new readers back. Searches
    read an index, adds and deletes write it: neither library gives consistent answers (faiss
    not even safe memory reads) while the graph changes under a search."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writers = 0  # waiting or writing
        self._writing = False

    def acquire_read(self) -> None:
        with self._cond:
            while self._writers:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._writers += 1
            while self._readers or self._writing:
                self._cond.wait()
            self._writing = True

    def release_write(self) -> None:
        with self._cond:
            self._writing = False
            self._writers -= 1
            self._cond.notify_all()


class GraphIndex(VectorIndex):
    """What both HNSW backends share: searches run under a shared read lock (adds and deletes take
    it alone), and filters this selective are answered by exact search."""

    #: filtered queries allowing at most this many ids, or this fraction of the index, are exact
    exact_allowed_max = EXACT_ALLOWED_MAX
    exact_allowed_fraction = EXACT_ALLOWED_FRACTION
    _lock: ReadWriteLock

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        self._lock.acquire_read()
        try:
            return self._search(query, k, allowed)
        finally:
            self._lock.release_read()

    def _search(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class HNSWIndex(GraphIndex):
    backend = "usearch"
    suffix = ".usearch"

    def __init__(
        self,
        dim: int,
        *,
        connectivity: int = 32,
        expansion_add: int = 128,
        expansion_search: int = 96,
        dtype: str = "f32",
        threads: int | None = None,
    ):
        self.dim = dim
        #: threads used to insert; half the cores, because usearch's spinning locks waste time when
        #: the machine is oversubscribed (2 threads on a busy 2-core machine build 2.4x slower than 1)
        self.threads = threads or max(1, (os.cpu_count() or 1) // 2)
        self.expansion_search = expansion_search
        self._index = Index(
            ndim=dim,
            metric="ip",
            dtype=dtype,
            connectivity=connectivity,
            expansion_add=expansion_add,
            expansion_search=expansion_search,
        )
        #: nodes deleted since the graph was built (usearch keeps them as tombstones)
        self.deleted = 0
        self._version = 0
        self._exact_cache: OrderedDict[int, tuple] = OrderedDict()
        self._lock = ReadWriteLock()

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, **kwargs) -> HNSWIndex:
        index = cls(vectors.shape[1], **kwargs)
        index.add(ids, vectors)
        return index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> np.ndarray:
        return np.asarray(self._index.keys, dtype=np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._lock.acquire_write()
            try:
                self._version += 1
                self._index.add(
                    np.asarray(ids, dtype=np.uint64),
                    np.ascontiguousarray(vectors, dtype=np.float32),
                    threads=self.threads,
                )
            finally:
                self._lock.release_write()

    def remove(self, ids: np.ndarray) -> None:
        if len(ids):
            self._lock.acquire_write()
            try:
                self._version += 1
                self.deleted += int(np.sum(self._index.remove(np.asarray(ids, dtype=np.uint64))))
            finally:
                self._lock.release_write()

    def _graph(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        self._index.expansion_search = max(self.expansion_search, count)
        m = self._index.search(query, count)
        return m.keys.astype(np.int64), (1.0 - m.distances).astype(np.float32)

    def _allowed_vectors(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of the allowed ids present in the index, cached per allowed array."""
        hit = self._exact_cache.get(id(allowed))
        if hit is not None and hit[0] is allowed and hit[1] == self._version:
            self._exact_cache.move_to_end(id(allowed))
            return hit[2], hit[3]
        keys = np.asarray(allowed, dtype=np.int64)
        keys = keys[self._index.contains(keys.astype(np.uint64))]
        vecs = (
            np.stack(self._index.get(keys.astype(np.uint64), dtype=np.float32))
            if len(keys)
            else np.empty((0, self.dim), dtype=np.float32)
        )
        self._exact_cache[id(allowed)] = (allowed, self._version, keys, vecs)
        while len(self._exact_cache) > EXACT_CACHE_FILTERS:
            self._exact_cache.popitem(last=False)
        return keys, vecs

    def _exact(self, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys, vecs = self._allowed_vectors(allowed)
        if len(keys) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        rows, scores = exact_top(vecs, query, k)
        return keys[rows], scores

    def _search(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._index)
        if n == 0 or k <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if allowed is None:
            return self._graph(query, min(k, n))
        allowed = np.asarray(allowed, dtype=np.int64)
        if len(allowed) <= max(self.exact_allowed_max, k, self.exact_allowed_fraction * n):
            return self._exact(query, k, allowed)
        selectivity = min(1.0, len(allowed) / n)
        count = min(n, math.ceil(k / selectivity * 1.5) + 16)
        while True:
            keys, scores = self._graph(query, count)
            pos = np.searchsorted(allowed, keys).clip(max=len(allowed) - 1)
            ok = allowed[pos] == keys
            if ok.sum() >= k:
                return keys[ok][:k], scores[ok][:k]
            if count >= n or count > 16 * k / selectivity:
                # the graph keeps missing matches: answer exactly
                return self._exact(query, k, allowed)
            count = min(n, count * 4)

    # --- files ------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        self._lock.acquire_read()
        try:
            self._index.save(str(tmp))
        finally:
            self._lock.release_read()
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        self._lock.acquire_write()
        try:
            self._index.load(str(path))
            self.dim = self._index.ndim
        finally:
            self._lock.release_write()


def _slug(model: str) -> str:
    return (
        re.sub(r"[^A-Za-z0-9]+", "-", model).strip("-")[:40]
        + "-"
        + hashlib.sha1(model.encode()).hexdigest()[:8]
    )


def ann_index_class(backend: str) -> type:
    """The index class of an ANN backend name ("faiss", "usearch" or "pqscan")."""
    if backend == "usearch":
        return HNSWIndex
    if backend == "faiss":
        from lookalike.index.faiss_hnsw import FaissHNSWIndex

        return FaissHNSWIndex
    if backend == "pqscan":
        from lookalike.index.faiss_pq import FaissPQScanIndex

        return FaissPQScanIndex
    raise InvalidRequest(f"unknown ANN backend {backend!r}: use one of {', '.join(ANN_BACKENDS)}")


def embedded_ids(store, model: str) -> np.ndarray:
    """Sorted image ids with a vector under ``model``."""
    fn = getattr(store, "embedded_image_ids", None)
    ids = fn(model) if fn is not None else store.load_vectors(model)[0]
    return np.sort(np.asarray(ids, dtype=np.int64))


class PersistentHNSW:
    """One model's HNSW index kept in sync with a file-backed store (see the module docstring)."""

    def __init__(self, store, model: str, folder: Path, *, backend: str = ANN_BACKENDS[0], **index_kwargs):
        self.store = store
        self.model = model
        self.backend = backend
        self.index_cls = ann_index_class(backend)
        self.folder = Path(folder)
        self.path = self.folder / f"{_slug(model)}{self.index_cls.suffix}"
        # usearch keeps the stamp name of the files written before there were two backends
        self.stamp_path = (
            self.path.with_suffix(".json")
            if backend == "usearch"
            else self.path.with_name(self.path.name + ".json")
        )
        self.index_kwargs = index_kwargs
        self.index: VectorIndex | None = None
        self.generation: int | None = None
        #: what the last sync did: "loaded", "built", "updated", "unchanged" (for tests and logs)
        self.last_action = ""
        self.last_sync_s = 0.0
        self._unsaved = 0

    def _catalog_id(self) -> str:
        cid = self.store.get_meta("catalog_uuid")
        if cid is None:
            cid = uuid.uuid4().hex
            self.store.set_meta("catalog_uuid", cid)
        return cid

    def _read_stamp(self) -> dict | None:
        try:
            return json.loads(self.stamp_path.read_text())
        except (OSError, ValueError):
            return None

    def save(self) -> None:
        if self.index is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index.save(self.path)
        stamp = {
            "catalog": self._catalog_id(),
            "backend": self.backend,
            "model": self.model,
            "generation": self.generation,
            "count": len(self.index),
            "dim": self.index.dim,
            "deleted": self.index.deleted,
            "saved_at": time.time(),
        }
        tmp = self.stamp_path.with_name(self.stamp_path.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(stamp))
        os.replace(tmp, self.stamp_path)
        self._unsaved = 0

    def _build(self) -> None:
        ids, vecs = self.store.load_vectors(self.model)
        self.index = self.index_cls.build(ids, vecs, **self.index_kwargs) if len(ids) else None
        self.last_action = "built"

    def _load(self) -> dict | None:
        stamp = self._read_stamp()
        if (
            stamp is None
            or stamp.get("catalog") != self._catalog_id()
            or stamp.get("backend", "usearch") != self.backend
            or not self.path.exists()
        ):
            return None
        index = self.index_cls(int(stamp["dim"]), **self.index_kwargs)
        try:
            index.load(self.path)
        except Exception:  # a damaged file is rebuilt
            return None
        if len(index) != stamp.get("count"):
            return None
        if self.backend == "usearch":  # faiss keeps its tombstones in the ids file
            index.deleted = int(stamp.get("deleted", 0))
        self.index = index
        return stamp

    def sync(self, generation: int) -> VectorIndex | None:
        """Bring the index up to the store's ``generation``; returns it (None: no vectors)."""
        if self.index is not None and self.generation == generation:
            self.last_action = "unchanged"
            return self.index
        started = time.perf_counter()
        fresh = False
        if self.index is None:
            stamp = self._load()
            if stamp is None:
                self._build()
                fresh = True
            elif stamp.get("generation") == generation:
                self.last_action = "loaded"
                self.generation = generation
                self.last_sync_s = time.perf_counter() - started
                return self.index
        if not fresh and self.index is not None:
            self._apply_changes()
        self.generation = generation
        if self.index is not None and (fresh or self._unsaved >= max(1000, len(self.index) // 100)):
            self.save()
        self.last_sync_s = time.perf_counter() - started
        return self.index

    def _apply_changes(self) -> None:
        assert self.index is not None
        ids = embedded_ids(self.store, self.model)
        have = np.sort(self.index.keys())
        added = np.setdiff1d(ids, have, assume_unique=True)
        removed = np.setdiff1d(have, ids, assume_unique=True)
        if len(added) == 0 and len(removed) == 0:
            self.last_action = "unchanged"
            return
        if (self.index.deleted + len(removed)) > MAX_DELETED_FRACTION * max(1, len(ids)):
            self._build()  # too many tombstones: a fresh graph searches better
            self._unsaved = len(ids)
            return
        self.index.remove(removed)
        if len(added):
            vectors = self.store.vectors_for_images(added.tolist(), self.model)
            keys = np.array(list(vectors), dtype=np.int64)
            if len(keys):
                self.index.add(keys, np.stack([vectors[int(k)] for k in keys]))
        self._unsaved += len(added) + len(removed)
        self.last_action = "updated"


def ann_folder(store) -> Path | None:
    """Where a file-backed store keeps its ANN indexes (None for server-backed stores)."""
    path = getattr(store, "path", None)
    if path is None:
        return None
    path = Path(path)
    return path.with_name(path.name + "-ann")


def ann_index_for(
    store,
    model: str,
    generation: int,
    cache: dict,
    *,
    min_vectors: int = ANN_MIN_VECTORS,
    backend: str = ANN_BACKENDS[0],
) -> VectorIndex | None:
    """The HNSW index of ``model`` for a file-backed store, or None where exact search serves
    (small catalogs, stores without a file)."""
    folder = ann_folder(store)
    if folder is None or store.models().get(model, 0) < min_vectors:
        return None
    ann = cache.get(model)
    if ann is None or ann.backend != backend:
        ann = cache[model] = PersistentHNSW(store, model, folder, backend=backend)
    return ann.sync(generation)
