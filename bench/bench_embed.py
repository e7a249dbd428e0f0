"""Embedding cost of trained models: single-photo latency and batch throughput, side by side.

    .venv/bin/python bench/bench_embed.py --models pixels,default,trained:/tmp/old-default.pt

Single photo: one 256×256 street photo at a time (what a search request pays before the
neighbour search). Batch: 2,048 catalog images (28×28 Fashion-MNIST) in the embedder's batches
(what indexing pays). The models are interleaved in rounds and the best round is kept, so
background noise on a shared machine hits all of them alike.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from lookalike.datasets.fashion_mnist import load_split
from lookalike.embedders import load_embedder
from lookalike.train.metric.augment import StreetViewAugment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="pixels,default")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--photos", type=int, default=50)
    ap.add_argument("--batch", type=int, default=2048)
    args = ap.parse_args()
    x, _ = load_split("test")
    aug = StreetViewAugment(size=(256, 256), aspect=(1.0, 1.0))
    photos = [aug(x[i], np.random.default_rng(i)) for i in range(args.photos)]
    catalog = [Image.fromarray(a) for a in x[: args.batch]]
    models = {name: load_embedder(name) for name in args.models.split(",")}
    for emb in models.values():  # warm up
        emb.embed_images(photos[:2])
    single: dict[str, list[float]] = {m: [] for m in models}
    batch: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(args.rounds):
        for name, emb in models.items():
            t = []
            for p in photos:
                t0 = time.perf_counter()
                emb.embed_image(p)
                t.append(time.perf_counter() - t0)
            single[name].append(float(np.median(t)))
            t0 = time.perf_counter()
            emb.embed_images(catalog)
            batch[name].append(len(catalog) / (time.perf_counter() - t0))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print("| model | dim | single photo p50 (best round) | catalog images/s (best round) |")
    print("|---|---|---|---|")
    for name, emb in models.items():
        print(f"| `{name}` | {emb.dim} | {min(single[name]) * 1000:.1f} ms | {max(batch[name]):,.0f} |")


if __name__ == "__main__":
    main()
