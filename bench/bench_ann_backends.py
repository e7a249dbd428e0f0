"""The embedded store's ANN backends on one catalog, small enough to run beside other work:
catalog-level search (vector in, products out) with each backend, and the raw graphs under it,
including usearch with quantised storage (f16, i8), all single-threaded, single queries.

    .venv/bin/python bench/bench_ann_backends.py --db /tmp/bench-ann/clustered.db --part catalog
    .venv/bin/python bench/bench_ann_backends.py --db /tmp/bench-ann/clustered.db --part raw --dtype i8

The catalog is one that bench_ann.py wrote (``--workdir``: ``<dataset>.db``, model ``bench128``,
one image per product, image id = row + 1). Queries are stored vectors plus the clustered
dataset's noise (norm 0.3), re-normalised; recall@10 is against exact search over the stored
vectors. ``--part catalog`` opens the catalog once per backend (loading or building its index
beside the file); ``--part raw`` builds a faiss ``IndexHNSWFlat`` (or reads ``--faiss-file``),
loads the usearch f32 graph beside the file and builds a usearch graph with ``--dtype`` storage
(M=32, ef_construction=128 everywhere). Times are the minimum of 3 rounds over the queries.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "bench128"
K = 10


def queries_and_truth(vecs: np.ndarray, n: int) -> tuple[np.ndarray, list[set[int]]]:
    rng = np.random.default_rng(0)
    q = vecs[rng.integers(0, len(vecs), n)]
    q = q + (0.3 / np.sqrt(vecs.shape[1])) * rng.standard_normal(q.shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = []
    for s in range(0, n, 100):
        scores = q[s : s + 100] @ vecs.T
        truth += [set(np.argpartition(-row, K)[:K].tolist()) for row in scores]
    return q, truth


def measure(label: str, fn, queries: np.ndarray, truth: list[set[int]]) -> None:
    """fn(q) -> dataset rows; prints recall@10 and the best of 3 rounds in µs per query."""
    best = float("inf")
    for _ in range(3):
        for q in queries[:20]:
            fn(q)
        t0 = time.perf_counter()
        got = [fn(q) for q in queries]
        best = min(best, (time.perf_counter() - t0) / len(queries) * 1e6)
    rec = np.mean([len(set(g.tolist()) & t) / K for g, t in zip(got, truth, strict=True)])
    print(f"{label}: recall@10 {rec:.4f}, {best:.0f} us/query", flush=True)


def catalog_part(db: Path, queries, truth, efs) -> None:
    from lookalike.catalog import Catalog

    cats = {}
    for backend in ("faiss", "usearch"):
        cat = Catalog.open(db)
        cat.ann_min_vectors, cat.ann_backend = 0, backend
        t0 = time.perf_counter()
        cat.search_vector(queries[0], k=K)
        print(f"{backend}: index {cat._ann[MODEL].last_action} in {time.perf_counter() - t0:.1f} s")
        cats[backend] = cat
    for ef in efs:
        for backend, cat in cats.items():
            cat._views[MODEL].index.expansion_search = ef

            def fn(q, cat=cat):
                return np.array([h.image_id - 1 for h in cat.search_vector(q, k=K)], dtype=np.int64)

            measure(f"ef {ef} catalog-level, {backend}", fn, queries, truth)


def raw_part(db: Path, vecs, queries, truth, efs, dtype: str, faiss_file: Path | None) -> None:
    import faiss
    from usearch.index import Index

    from lookalike.index.hnsw import PersistentHNSW, ann_folder
    from lookalike.store.sqlite import SQLiteStore

    faiss.omp_set_num_threads(1)
    if faiss_file is not None and faiss_file.exists():
        fa = faiss.read_index(str(faiss_file))
    else:
        fa = faiss.IndexHNSWFlat(vecs.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        fa.hnsw.efConstruction = 128
        t0 = time.perf_counter()
        fa.add(vecs)
        print(f"faiss build {time.perf_counter() - t0:.1f} s (1 thread)")
        if faiss_file is not None:
            faiss.write_index(fa, str(faiss_file))
    store = SQLiteStore(db)
    f32_path = PersistentHNSW(store, MODEL, ann_folder(store), backend="usearch").path
    store.close()
    u32 = Index(ndim=vecs.shape[1], metric="ip", dtype="f32", connectivity=32, expansion_add=128)
    u32.load(str(f32_path))
    uq = Index(ndim=vecs.shape[1], metric="ip", dtype=dtype, connectivity=32, expansion_add=128)
    t0 = time.perf_counter()
    uq.add(np.arange(len(vecs), dtype=np.uint64) + 1, vecs, threads=1)
    print(f"usearch {dtype} build {time.perf_counter() - t0:.1f} s (1 thread)")
    for ef in efs:
        fa.hnsw.efSearch = ef
        u32.expansion_search = uq.expansion_search = ef
        measure(f"ef {ef} raw faiss f32", lambda q: fa.search(q[None, :], K)[1][0], queries, truth)
        measure(
            f"ef {ef} raw usearch f32", lambda q: u32.search(q, K).keys.astype(np.int64) - 1, queries, truth
        )
        measure(
            f"ef {ef} raw usearch {dtype}",
            lambda q: uq.search(q, K).keys.astype(np.int64) - 1,
            queries,
            truth,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, required=True, help="a catalog written by bench_ann.py")
    ap.add_argument("--part", choices=["catalog", "raw"], required=True)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--efs", default="64,128")
    ap.add_argument("--dtype", default="i8", help="usearch storage of the extra raw graph: f16, bf16, i8")
    ap.add_argument(
        "--faiss-file", type=Path, help="read the raw faiss graph from here (built and saved if missing)"
    )
    args = ap.parse_args()
    from lookalike.store.sqlite import SQLiteStore

    store = SQLiteStore(args.db)
    ids, vecs = store.load_vectors(MODEL)
    store.close()
    assert np.array_equal(ids, np.arange(1, len(ids) + 1)), "expected image id = row + 1"
    queries, truth = queries_and_truth(vecs, args.queries)
    efs = [int(e) for e in args.efs.split(",")]
    if args.part == "catalog":
        catalog_part(args.db, queries, truth, efs)
    else:
        raw_part(args.db, vecs, queries, truth, efs, args.dtype, args.faiss_file)


if __name__ == "__main__":
    main()
