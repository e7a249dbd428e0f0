"""PostgresStore.write_batch throughput with real 1024-d `pixels` vectors of Fashion-MNIST items,
batches of 500 products (one image each, thumbnail, attributes), on a local PostgreSQL:

  no index     the model has no HNSW index yet (a fresh catalog: the first search builds it)
  m=16 / m=32  the index exists, so every insert grows the graph (pgvector maintains it)
  build        one CREATE INDEX over the rows stored in "no index" (what the first search does)

    .venv/bin/python bench/bench_pg_writes.py --n 5000

Isolates the store: no image decoding or embedding (bench_indexing.py measures whole jobs).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pixel_vectors(n: int) -> np.ndarray:
    from PIL import Image

    from lookalike.datasets.fashion_mnist import load_split
    from lookalike.embedders import load_embedder

    images, _ = load_split("train")
    return load_embedder("pixels").embed_images([Image.fromarray(a) for a in images[:n]], progress=False)


def write_all(url: str, vectors: np.ndarray, batch: int) -> float:
    from lookalike.store import NewImage, ProductWrite
    from lookalike.store.postgres import PostgresStore

    store = PostgresStore(url)
    t0 = time.perf_counter()
    for s in range(0, len(vectors), batch):
        images, products = [], []
        for i in range(s, min(len(vectors), s + batch)):
            sha = hashlib.sha256(f"item{i}".encode()).hexdigest()
            images.append(NewImage(sha, f"bench:{i}", 28, 28, "0f" * 8, b"t" * 600, vectors[i]))
            products.append(
                ProductWrite(
                    f"p{i}", title=f"item {i}", category="c", attributes={"split": "train"}, image_shas=[sha]
                )
            )
        store.write_batch("pixels", images, products)
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed


def main() -> None:
    import psycopg

    from lookalike.store.pgserver import LocalPostgres
    from lookalike.store.postgres import PostgresStore

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    vectors = pixel_vectors(args.n)
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="bench-pg-writes-")) / "pgdata", fast_unsafe=True)
    server.start()
    try:
        url = server.create_database("noindex")
        elapsed = write_all(url, vectors, args.batch)
        print(
            f"no index: {args.n} products in {elapsed:.1f} s = {args.n / elapsed:,.0f} products/s", flush=True
        )
        store = PostgresStore(url)
        built = store.ensure_hnsw("pixels", workers=0)
        print(f"build (m=32, ef_construction=128, one process): {built:.1f} s", flush=True)
        store.close()
        for m, efc in [(16, 64), (32, 128)]:
            url = server.create_database(f"m{m}") + f"?hnsw_m={m}&hnsw_ef_construction={efc}"
            store = PostgresStore(url)
            write_all(url, vectors[:1], 1)  # one vector, so the index can be built
            store.ensure_hnsw("pixels")
            store.close()
            with psycopg.connect(url.split("?")[0], autocommit=True) as conn:
                conn.execute("TRUNCATE products, images CASCADE")
            elapsed = write_all(url, vectors, args.batch)
            rate = args.n / elapsed
            print(f"index m={m}, ef_construction={efc}: {args.n} products in {elapsed:.1f} s = {rate:,.0f}/s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
