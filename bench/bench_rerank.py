"""What alignment re-ranking costs a search: ``Catalog.search`` with ``rerank`` 0 / 50 / 100 / 200.

    .venv/bin/python bench/bench_rerank.py --items 10000 --photos 100
    .venv/bin/python bench/bench_rerank.py --figure docs/img/rerank-examples.png

Indexes ``--items`` Fashion-MNIST test items with the default model into a fresh SQLite catalog,
then searches street views of ``--photos`` of those items (drawn as in the street-to-shop protocol:
64–320 px), k=12, at each depth. The depths are interleaved in rounds and each
keeps its best round's median, so background noise hits them alike; the ratio to ``rerank=0`` is
the stable number. R@1 is over the same photos (the catalog is small, so it is higher than in the
70k protocol).

``--figure PATH`` instead draws examples from the street-to-shop protocol (1,000 queries against
all 70k shop images): queries whose product re-ranking brought to first place, and one it lost.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lookalike.catalog import Catalog
from lookalike.datasets.fashion_mnist import load_split
from lookalike.train.metric.augment import StreetViewAugment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--photos", type=int, default=100)
    ap.add_argument("--depths", default="0,50,100,200")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--figure", default=None, help="draw examples to this PNG instead")
    args = ap.parse_args()
    if args.figure:
        figure(Path(args.figure))
        return
    depths = [int(d) for d in args.depths.split(",")]
    x, _ = load_split("test")
    aug = StreetViewAugment()
    picks = np.random.default_rng(0).choice(args.items, size=args.photos, replace=False)
    photos = [aug(x[i], np.random.default_rng([7, int(i)])) for i in picks]
    with tempfile.TemporaryDirectory() as tmp, Catalog.open(str(Path(tmp) / "c.db")) as cat:
        t0 = time.time()
        cat.index("fashion-mnist:test", model="default", limit=args.items, progress=False)
        print(f"indexed {args.items} items in {time.time() - t0:.0f} s")
        cat.search(photos[0], k=12, rerank=max(depths))  # warm up: model, index, caches
        best: dict[int, float] = {}
        hits1: dict[int, float] = {}
        for _ in range(args.rounds):
            for d in depths:
                t, ok = [], 0
                for i, p in zip(picks, photos, strict=True):
                    t0 = time.perf_counter()
                    hits = cat.search(p, k=12, rerank=d)
                    t.append(time.perf_counter() - t0)
                    ok += hits[0].product_id == f"fmnist-test-{i}"
                best[d] = min(best.get(d, np.inf), float(np.median(t)))
                hits1[d] = ok / len(photos)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}")
    print(f"| rerank | search p50 (best of {args.rounds} rounds) | × rerank=0 | R@1 ({args.items:,} items) |")
    print("|---|---|---|---|")
    for d in depths:
        print(f"| {d} | {best[d] * 1000:.1f} ms | {best[d] / best[depths[0]]:.2f} | {hits1[d]:.2f} |")


def figure(path: Path, wins: int = 3, losses: int = 1) -> None:
    from lookalike.evaluation import evaluate
    from lookalike.evaluation.datasets import street_to_shop
    from lookalike.evaluation.report import topk_png
    from lookalike.rerank import Reranker

    q, g = street_to_shop(1000, seed=0)
    res = evaluate(["default"], q, g, protocol="street-to-shop", rerank=Reranker())

    def first(name: str) -> np.ndarray:  # rank of the product in each query's top list (99 = absent)
        hit = g.ids[res.neighbours[name]] == q.ids[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), 99)

    before, after = first("default"), first("default +rerank")
    won = np.flatnonzero((after == 0) & (before >= 2) & (before < 20))
    lost = np.flatnonzero((before == 0) & (after > 0))
    print(
        f"of 1000 queries: re-ranking brought {((after == 0) & (before > 0)).sum()} products to first "
        f"place and moved {len(lost)} away from it"
    )
    picks = np.concatenate([won[:wins], lost[:losses]])
    topk_png(res, q, g, path, picks=picks, k=8)
    print(f"figure: {path} (queries {picks.tolist()})")


if __name__ == "__main__":
    main()
