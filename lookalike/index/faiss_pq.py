"""Approximate search by a 4-bit product-quantized scan of every vector, re-ranked exactly
(``ann=pqscan``), for the embedded store.

An HNSW graph is the fastest index on real image embeddings, which cluster tightly. On vectors
with no structure to exploit (high intrinsic dimension: i.i.d. random vectors are the extreme) a
graph of practical density misses most true neighbours at 1M (recall@10 0.74 for faiss HNSW, M=32,
at ef 1000; BENCHMARKS.md). This index does not depend on structure:

1. every vector is randomly rotated (so each sub-quantizer gets a fair share of the variance)
   and encoded with a product quantizer of ``dim / 2`` sub-quantizers of 4 bits (one byte per 4
   dimensions: 32 bytes for 128-d), which faiss's fast-scan kernels compare to a query in
   registers (SIMD lookup tables) — a scan of 1M codes takes about 2 ms on one core;
2. the best ``expansion_search`` candidates of that scan are re-ranked with the exact inner
   product of the stored float32 vectors, so the scores returned are exact.

The same interface and id handling as :class:`~lookalike.index.faiss_hnsw.FaissHNSWIndex`:
deletes are tombstones (the scan cannot take a selector, so it over-fetches by the dead share and
drops them), filters over-fetch in proportion to their selectivity, and selective filters are
searched exactly over the allowed vectors. The quantizer is trained on the vectors present when
the index first reaches ``TRAIN_MIN`` vectors and re-trained (every code re-encoded, seconds at
1M) whenever the index has grown ``RETRAIN_GROWTH`` times since; below ``TRAIN_MIN`` every search
is exact.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from pathlib import Path

import faiss
import numpy as np

from lookalike.index.faiss_hnsw import FaissHNSWIndex
from lookalike.index.hnsw import ReadWriteLock, exact_top

#: the quantizer is trained once the index holds this many vectors (exact search until then)
TRAIN_MIN = 1024
#: vectors sampled to train the quantizer
TRAIN_SAMPLE = 65_536
#: re-train (and re-encode) when the index has grown this many times since the last training
RETRAIN_GROWTH = 4


class _Mask:
    """The allowed internal ids of a search, as a boolean mask, with their count."""

    __slots__ = ("mask", "count")

    def __init__(self, mask: np.ndarray):
        self.mask = mask
        self.count = int(mask.sum())


class FaissPQScanIndex(FaissHNSWIndex):
    backend = "pqscan"
    suffix = ".pqscan"
    #: the scan reads 1/16 of the bytes exact search reads per vector (2 bits vs 32 bits per
    #: dimension): filters allowing less than that share are cheaper to search exactly
    exact_allowed_fraction = 1 / 16

    def __init__(
        self,
        dim: int,
        *,
        expansion_search: int = 1000,
        threads: int | None = None,
        connectivity: int | None = None,
        expansion_add: int | None = None,
    ):
        # connectivity / expansion_add are the graph backends' options: accepted, nothing to apply
        self.dim = dim
        self.threads = threads or max(1, (os.cpu_count() or 1) // 2)
        #: candidates of the quantized scan re-ranked exactly (at least k)
        self.expansion_search = expansion_search
        self._index: faiss.IndexPreTransform | None = None
        self._trained_on = 0
        self._flat = np.empty((0, dim), dtype=np.float32)  # capacity grows by doubling
        self._labels = np.empty(0, dtype=np.int64)
        self.deleted = 0
        self._version = 0
        self._lookup = None
        self._live_sel = None
        self._filter_cache: OrderedDict[int, tuple] = OrderedDict()
        self._lock = ReadWriteLock()
        self._cache_lock = threading.Lock()

    def _new_quantizer(self) -> faiss.IndexPreTransform:
        subq = self.dim // 2 if self.dim % 2 == 0 else self.dim
        pq = faiss.IndexPQFastScan(self.dim, subq, 4, faiss.METRIC_INNER_PRODUCT)
        # a random rotation spreads the variance evenly over the sub-quantizers (embeddings often
        # keep most of it in a few dimensions); inner products are unchanged
        return faiss.IndexPreTransform(faiss.RandomRotationMatrix(self.dim, self.dim), pq)

    # --- changes ---------------------------------------------------------------------------------
    def _append(self, vectors: np.ndarray) -> None:
        start = len(self._labels)
        end = start + len(vectors)
        if end > len(self._flat):  # grow by doubling: small adds do not copy every vector
            grown = np.empty((max(end, 2 * len(self._flat)), self.dim), dtype=np.float32)
            grown[:start] = self._flat[:start]
            self._flat = grown
        self._flat[start:end] = vectors
        self._encode(start, end)

    def _encode(self, start: int, end: int) -> None:
        """Quantize rows start:end, training (or re-training on every row) when due."""
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        try:
            if end >= TRAIN_MIN and (self._index is None or end >= RETRAIN_GROWTH * self._trained_on):
                rows = self._flat[:end]
                sample = rows
                if end > TRAIN_SAMPLE:
                    pick = np.random.default_rng(end).choice(end, TRAIN_SAMPLE, replace=False)
                    sample = rows[np.sort(pick)]
                index = self._new_quantizer()
                index.train(np.ascontiguousarray(sample))
                index.add(rows)
                self._index, self._trained_on = index, end
            elif self._index is not None:
                self._index.add(self._flat[start:end])
        finally:
            faiss.omp_set_num_threads(before)

    # --- search ----------------------------------------------------------------------------------
    def _bitmap_selector(self, mask: np.ndarray) -> _Mask:
        return _Mask(mask)

    def _vectors(self) -> np.ndarray:
        return self._flat[: len(self._labels)]

    def _graph(
        self, query: np.ndarray, count: int, sel: _Mask | None, ef: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        total = len(self._labels)
        if self._index is None:  # not trained yet (a small index): every live vector, exactly
            rows = np.flatnonzero(self._labels >= 0) if sel is None else np.flatnonzero(sel.mask)
            top, scores = exact_top(self._flat[rows], query, count)
            return self._labels[rows[top]], scores
        live = len(self) if sel is None else sel.count
        # the scan cannot skip tombstones or filtered-out rows: over-fetch by their share
        want = max(self.expansion_search, count)
        fetch = min(total, math.ceil(want * total / max(1, live)))
        _, cand = self._index.search(query.reshape(1, -1), fetch)
        cand = cand[0]
        cand = cand[cand >= 0]
        keep = self._labels[cand] >= 0 if sel is None else sel.mask[cand]
        cand = cand[keep]
        top, scores = exact_top(self._flat[cand], query, count)
        return self._labels[cand[top]], scores

    # --- files -----------------------------------------------------------------------------------
    @staticmethod
    def vectors_path(path: Path) -> Path:
        return path.with_name(path.name + ".vectors.npy")

    def _write_index(self, tmp: Path) -> None:
        if self._index is not None:
            faiss.write_index(self._index, str(tmp))
        else:
            tmp.write_bytes(b"")  # not trained yet: the vectors alone

    def _arrays(self) -> dict[str, np.ndarray]:
        return {"ids": self._labels, "vectors": self._vectors()}

    def load(self, path: Path) -> None:
        labels = np.load(self.ids_path(path)).astype(np.int64, copy=False)
        flat = np.load(self.vectors_path(path))
        index = faiss.read_index(str(path)) if path.stat().st_size else None
        if (
            flat.ndim != 2
            or len(flat) != len(labels)
            or (
                index is not None
                and (not isinstance(index, faiss.IndexPreTransform) or index.ntotal != len(labels))
            )
        ):
            raise ValueError(f"{path}: codes, vectors and image ids do not match")
        self._lock.acquire_write()
        try:
            self._index, self._labels = index, labels
            self._flat = np.ascontiguousarray(flat, dtype=np.float32)
            self.dim = flat.shape[1]
            self._trained_on = index.ntotal if index is not None else 0
            self.deleted = int((labels < 0).sum())
            self._version += 1
        finally:
            self._lock.release_write()
