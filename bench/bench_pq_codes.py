"""Which 4-bit PQ codes the ``pqscan`` index should use: recall@10 after exact re-ranking of the scan's
best candidates, and single-query p99, for plain PQ, PQ after a random rotation, PQ after a learned
OPQ rotation, and PQ with twice the sub-quantizers (64 bytes per 128-d vector).

    .venv/bin/python bench/bench_pq_codes.py --n 1000000 --dataset clustered --threads 2

Datasets as in bench/bench_ann.py (clustered: noisy copies of PCA-reduced demo-catalog embeddings,
whose variance sits in the first dimensions; random: i.i.d. normal vectors).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_ann  # noqa: E402

DIM = 128


def variants() -> dict:
    ip = faiss.METRIC_INNER_PRODUCT
    return {
        "pq64": lambda: faiss.IndexPQFastScan(DIM, 64, 4, ip),
        "rotation+pq64": lambda: faiss.IndexPreTransform(
            faiss.RandomRotationMatrix(DIM, DIM), faiss.IndexPQFastScan(DIM, 64, 4, ip)
        ),
        "opq64+pq64": lambda: faiss.IndexPreTransform(
            faiss.OPQMatrix(DIM, 64), faiss.IndexPQFastScan(DIM, 64, 4, ip)
        ),
        "pq128": lambda: faiss.IndexPQFastScan(DIM, 128, 4, ip),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dataset", choices=("clustered", "random"), default="clustered")
    ap.add_argument("--threads", type=int, default=2, help="threads for training and encoding")
    ap.add_argument("--candidates", default="256,512,1000")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    make = bench_ann.clustered_dataset if args.dataset == "clustered" else bench_ann.random_dataset
    data, queries = make(args.n, args.queries, rng)
    truth = bench_ann.exact_topk(data, queries, 10)
    sample = data[np.sort(np.random.default_rng(1).choice(args.n, min(args.n, 65_536), replace=False))]
    print(f"{args.dataset}, n = {args.n:,} x {DIM}, {args.queries} queries; queries on one thread")
    print("| codes | build s | candidates | recall@10 | p99 ms |\n|---|---|---|---|---|")
    for name, new in variants().items():
        faiss.omp_set_num_threads(args.threads)
        index = new()
        t0 = time.perf_counter()
        index.train(sample)
        index.add(data)
        build = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        for cand in (int(c) for c in args.candidates.split(",")):
            found, lat = [], []
            for q in queries:
                t = time.perf_counter()
                _, rows = index.search(q[None, :], cand)
                rows = rows[0][rows[0] >= 0]
                found.append(rows[np.argsort(-(data[rows] @ q))[:10]])
                lat.append(time.perf_counter() - t)
            p99 = np.percentile(np.array(lat) * 1000, 99)
            print(
                f"| {name} | {build:.1f} | {cand} | {bench_ann.recall(found, truth):.4f} | {p99:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
