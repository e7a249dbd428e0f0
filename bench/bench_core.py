"""Core benchmark: index the 70k Fashion-MNIST catalog, then time 1,000 searches.

    .venv/bin/python bench/bench_core.py --model pixels --db /tmp/bench-core.db

Prints indexing images/s and search latency p50/p99 for (a) the whole query path (photo in,
products out: decode, embed, exact search, product lookup) and (b) vector-in search alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="pixels")
    ap.add_argument("--db", default="/tmp/bench-core.db")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="reuse an existing DB (skip indexing)")
    args = ap.parse_args()

    from lookalike.catalog import Catalog
    from lookalike.datasets.fashion_mnist import load_split

    db = Path(args.db)
    if not args.keep:
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    cat = Catalog.open(db)
    t0 = time.perf_counter()
    report = cat.index("fashion-mnist", model=args.model, progress=False)
    index_s = time.perf_counter() - t0
    n_images = report.images_embedded + report.images_reused

    images, _ = load_split("test")
    rng = np.random.default_rng(0)
    picks = rng.choice(len(images), size=args.queries, replace=False)
    queries = [Image.fromarray(images[i]).rotate(float(rng.uniform(-15, 15)), fillcolor=0) for i in picks]
    embedder = cat.embedder(args.model)
    vectors = embedder.embed_images(queries)
    cat.ann_min_vectors = None  # this benchmark measures exact search (the HNSW path: bench_ann.py)
    cat.search_vector(vectors[0], k=10, model=args.model)  # warm the in-memory view

    def timed(fn, items) -> np.ndarray:
        out = []
        for it in items:
            t = time.perf_counter()
            fn(it)
            out.append((time.perf_counter() - t) * 1000)
        return np.array(out)

    full = timed(lambda q: cat.search(q, k=10, model=args.model), queries)
    vec = timed(lambda v: cat.search_vector(v, k=10, model=args.model), vectors)
    filt = timed(lambda v: cat.search_vector(v, k=10, model=args.model, filters={"category": "Bag"}), vectors)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# bench_core  {stamp}  {platform.node()}  cpus={os.cpu_count()}  model={args.model}")
    print(
        f"indexed {report.products_indexed} products ({n_images} images, {report.images_embedded} embedded) "
        f"in {index_s:.1f}s = {report.images_embedded / index_s:.0f} images/s"
    )
    for name, arr in [
        ("photo -> products", full),
        ("vector -> products", vec),
        ("vector, category filter", filt),
    ]:
        print(
            f"search {name:26s} p50 {np.percentile(arr, 50):6.2f} ms  p99 {np.percentile(arr, 99):6.2f} ms  "
            f"({len(arr)} queries)"
        )


if __name__ == "__main__":
    main()
