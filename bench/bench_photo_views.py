"""What averaging crops around the box costs: one street photo per call (as a search request embeds
its query), and a batch (as indexing a catalog of real photos does), for 1, 5 and 9 views.

    .venv/bin/python bench/bench_photo_views.py --photos 200 --rounds 3

Street views of Fashion-MNIST test items (64–320 px, the protocol's sizes) through the default
model's ``embed_and_locate``: clean-shot check, localizer, two refiner passes, the crops, the
embedding network. The view counts are interleaved photo by photo (single calls) and round by
round (batches); medians and best-of-rounds, so a noisy machine shifts all counts alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np
import torch

from lookalike.datasets.fashion_mnist import load_split
from lookalike.embedders import load_embedder
from lookalike.embedders._localizer import PHOTO_VIEWS
from lookalike.train.metric.augment import StreetViewAugment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--views", default="1,5,9")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = load_split("test")[0]
    aug = StreetViewAugment()
    photos = [aug(x[i], np.random.default_rng([7, i])) for i in range(args.photos)]
    counts = [int(v) for v in args.views.split(",")]
    embs = {}
    for n in counts:
        embs[n] = load_embedder("default", cache=False)
        embs[n].views = PHOTO_VIEWS[:n]
        embs[n].embed_and_locate(photos[:4])  # warm-up
    single: dict[int, list[float]] = {n: [] for n in counts}
    for photo in photos:
        for n in counts:
            t = time.perf_counter()
            embs[n].embed_and_locate([photo])
            single[n].append(time.perf_counter() - t)
    batch = {n: np.inf for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            t = time.perf_counter()
            embs[n].embed_and_locate(photos)
            batch[n] = min(batch[n], time.perf_counter() - t)
    base = counts[0]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()}-core {platform.machine()}, "
        f"{args.threads} torch threads, {args.photos} street photos"
    )
    print("| views | one photo per call, p50 | p90 | × | batch of all, ms per photo | × |")
    print("|---|---|---|---|---|---|")
    p50 = {n: np.median(single[n]) * 1e3 for n in counts}
    for n in counts:
        per = batch[n] / args.photos * 1e3
        print(
            f"| {n} | {p50[n]:.1f} ms | {np.percentile(single[n], 90) * 1e3:.1f} ms | "
            f"{p50[n] / p50[base]:.2f} | {per:.2f} | {per / (batch[base] / args.photos * 1e3):.2f} |"
        )


if __name__ == "__main__":
    main()
