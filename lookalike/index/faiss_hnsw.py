"""Approximate search with faiss ``IndexHNSWFlat`` for the embedded store (``ann=faiss``).

The same interface as the usearch :class:`~lookalike.index.hnsw.HNSWIndex`. faiss HNSW cannot
remove nodes, so a delete leaves a tombstone: the node stays in the graph (searches still walk
through it) and an ``IDSelector`` keeps it out of the results. Image ids are mapped to faiss's
sequential internal ids by one array (internal id -> image id, -1 for a tombstone). The store's
rebuild once ``MAX_DELETED_FRACTION`` of the nodes are tombstones bounds the dead weight.

A faiss graph cannot be searched while it grows (its storage moves), so searches share a
read lock and changes take it alone.

Filtered queries pass the allowed ids to the graph search as a bitmap selector; very selective
filters, and any filtered query the graph answers short, are searched exactly over the allowed
vectors (read in place from the index's flat storage), so a filtered query returns k results
whenever k matches exist.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from pathlib import Path

import faiss
import numpy as np

from lookalike.index.hnsw import (
    EXACT_CACHE_FILTERS,
    GraphIndex,
    ReadWriteLock,
    exact_top,
)

_EMPTY_IDS = np.empty(0, dtype=np.int64)
_EMPTY_SCORES = np.empty(0, dtype=np.float32)


class FaissHNSWIndex(GraphIndex):
    backend = "faiss"
    #: the graph file; the image ids go beside it in ``<file>.ids.npy``
    suffix = ".faiss"

    def __init__(
        self,
        dim: int,
        *,
        connectivity: int = 32,
        expansion_add: int = 128,
        expansion_search: int = 96,
        threads: int | None = None,
    ):
        self.dim = dim
        #: threads used to insert (faiss OpenMP), half the cores like HNSWIndex
        self.threads = threads or max(1, (os.cpu_count() or 1) // 2)
        self.expansion_search = expansion_search
        self._index = faiss.IndexHNSWFlat(dim, connectivity, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = expansion_add
        #: internal id -> image id; -1 marks a tombstone
        self._labels = np.empty(0, dtype=np.int64)
        #: tombstones in the graph (nodes deleted since it was built)
        self.deleted = 0
        self._version = 0
        self._lookup: tuple[int, np.ndarray, np.ndarray] | None = None  # (version, sorted ids, internal)
        self._live_sel: tuple[int, object] | None = None
        self._params: dict[tuple[int, int], faiss.SearchParametersHNSW] = {}
        self._filter_cache: OrderedDict[int, tuple] = OrderedDict()
        self._lock = ReadWriteLock()
        self._cache_lock = threading.Lock()

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, **kwargs) -> FaissHNSWIndex:
        index = cls(vectors.shape[1], **kwargs)
        index.add(ids, vectors)
        return index

    def __len__(self) -> int:
        return len(self._labels) - self.deleted

    def keys(self) -> np.ndarray:
        return self._labels[self._labels >= 0]

    # --- image id <-> internal id ---------------------------------------------------------------
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """(live image ids sorted, their internal ids), rebuilt after each change."""
        if self._lookup is None or self._lookup[0] != self._version:
            internal = np.flatnonzero(self._labels >= 0)
            ext = self._labels[internal]
            order = np.argsort(ext, kind="stable")
            self._lookup = (self._version, ext[order], internal[order])
        return self._lookup[1], self._lookup[2]

    def internal_ids(self, ids: np.ndarray) -> np.ndarray:
        """Internal ids of the image ids that are in the index (absent ids are dropped)."""
        ext, internal = self._sorted()
        ids = np.asarray(ids, dtype=np.int64)
        if len(ext) == 0 or len(ids) == 0:
            return _EMPTY_IDS
        pos = np.searchsorted(ext, ids).clip(max=len(ext) - 1)
        return internal[pos[ext[pos] == ids]]

    # --- changes ---------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate image ids in one add")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._lock.acquire_write()
        try:
            self._remove(ids)  # an id added again replaces its old node
            self._append(vectors)
            self._labels = np.concatenate([self._labels, ids])
            self._version += 1
        finally:
            self._lock.release_write()

    def _append(self, vectors: np.ndarray) -> None:
        """Store new rows after the existing ones (their internal ids follow ``len(self._labels)``)."""
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            self._index.add(vectors)
        finally:
            faiss.omp_set_num_threads(before)

    def remove(self, ids: np.ndarray) -> None:
        self._lock.acquire_write()
        try:
            self._remove(ids)
        finally:
            self._lock.release_write()

    def _remove(self, ids: np.ndarray) -> None:
        internal = self.internal_ids(ids)
        if len(internal):
            self._labels[internal] = -1
            self.deleted += len(internal)
            self._version += 1

    # --- search ----------------------------------------------------------------------------------
    def _selector_params(self, ef: int, sel) -> faiss.SearchParametersHNSW:
        key = (ef, id(sel))  # the cached params keep ``sel`` alive, so its id is not reused
        params = self._params.get(key)
        if params is None:
            if len(self._params) > 64:
                self._params.clear()
            params = faiss.SearchParametersHNSW(efSearch=ef)
            if sel is not None:
                params.sel = sel
            params._sel_ref = sel  # faiss holds a bare pointer: keep the selector and its bitmap
            self._params[key] = params
        return params

    @staticmethod
    def _bitmap_selector(mask: np.ndarray):
        bits = np.packbits(mask, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits))
        sel._bits = bits  # faiss reads the bitmap in place
        return sel

    def _live_selector(self):
        """A selector that keeps tombstones out of the results (None: there are none)."""
        if self.deleted == 0:
            return None
        if self._live_sel is None or self._live_sel[0] != self._version:
            self._live_sel = (self._version, self._bitmap_selector(self._labels >= 0))
        return self._live_sel[1]

    def _graph(self, query: np.ndarray, count: int, sel, ef: int = 0) -> tuple[np.ndarray, np.ndarray]:
        base = self.expansion_search
        if self.deleted:  # tombstones take places in the beam: widen it by their share
            base = math.ceil(base * len(self._labels) / len(self))
        params = self._selector_params(max(base, count, ef), sel)
        scores, internal = self._index.search(query.reshape(1, -1), count, params=params)
        internal, scores = internal[0], scores[0]
        found = internal >= 0
        if not found.all():
            internal, scores = internal[found], scores[found]
        return self._labels[internal], scores

    def _vectors(self) -> np.ndarray:
        """Every stored vector, read in place (valid until the next add)."""
        storage = faiss.downcast_index(self._index.storage)
        n = self._index.ntotal
        return faiss.rev_swig_ptr(storage.get_xb(), n * self.dim).reshape(n, self.dim)

    def _filter(self, allowed: np.ndarray) -> tuple:
        """(internal ids of the allowed ids, their selector or None, their vectors or None),
        cached per allowed array: a filter's ids are one array per catalog generation."""
        with self._cache_lock:  # searches run concurrently
            hit = self._filter_cache.get(id(allowed))
            if hit is not None and hit[0] is allowed and hit[1] == self._version:
                self._filter_cache.move_to_end(id(allowed))
                return hit[2]
        entry = [self.internal_ids(allowed), None, None]
        with self._cache_lock:
            self._filter_cache[id(allowed)] = (allowed, self._version, entry)
            while len(self._filter_cache) > EXACT_CACHE_FILTERS:
                self._filter_cache.popitem(last=False)
        return entry

    def _exact(self, query: np.ndarray, k: int, entry: list) -> tuple[np.ndarray, np.ndarray]:
        internal = entry[0]
        if len(internal) == 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        if entry[2] is None:
            entry[2] = self._vectors()[internal]
        rows, scores = exact_top(entry[2], query, k)
        return self._labels[internal[rows]], scores

    def _search(self, query: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        if n == 0 or k <= 0:
            return _EMPTY_IDS, _EMPTY_SCORES
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        if allowed is None:
            return self._graph(query, min(k, n), self._live_selector())
        entry = self._filter(np.asarray(allowed, dtype=np.int64))
        matches = len(entry[0])
        if matches <= max(self.exact_allowed_max, k, self.exact_allowed_fraction * n):
            return self._exact(query, k, entry)
        if entry[1] is None:
            mask = np.zeros(len(self._labels), dtype=bool)
            mask[entry[0]] = True
            entry[1] = self._bitmap_selector(mask)
        want = min(k, matches)
        # the graph walk visits about ef nodes whether or not they pass the filter: widen the beam
        # in proportion to the filter's selectivity (as the usearch index over-fetches)
        ef = min(len(self._labels), math.ceil(want * len(self._labels) / matches * 1.5) + 16)
        keys, scores = self._graph(query, want, entry[1], ef)
        if len(keys) >= want:
            return keys, scores
        return self._exact(query, k, entry)  # the graph search came back short: answer exactly

    # --- files -----------------------------------------------------------------------------------
    @staticmethod
    def ids_path(path: Path) -> Path:
        return path.with_name(path.name + ".ids.npy")

    def _write_index(self, tmp: Path) -> None:
        faiss.write_index(self._index, str(tmp))

    def _arrays(self) -> dict[str, np.ndarray]:
        """Arrays saved beside the index file, as ``<file>.<name>.npy``."""
        return {"ids": self._labels}

    def save(self, path: Path) -> None:
        """Write the index and its arrays to temporary files, then move them into place."""
        pid = os.getpid()
        tmp = path.with_name(path.name + f".tmp{pid}")
        moves = []
        self._lock.acquire_read()
        try:
            self._write_index(tmp)
            for name, array in self._arrays().items():
                part = path.with_name(path.name + f".{name}.tmp{pid}.npy")
                np.save(part, array)
                moves.append((part, path.with_name(path.name + f".{name}.npy")))
        finally:
            self._lock.release_read()
        for part, final in moves:
            os.replace(part, final)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        index = faiss.read_index(str(path))
        labels = np.load(self.ids_path(path))
        if not isinstance(index, faiss.IndexHNSWFlat) or index.ntotal != len(labels):
            raise ValueError(f"{path}: graph and image ids do not match")
        self._lock.acquire_write()
        try:
            self._index, self._labels = index, labels.astype(np.int64, copy=False)
            self.dim = index.d
            self.deleted = int((labels < 0).sum())
            self._version += 1
        finally:
            self._lock.release_write()
