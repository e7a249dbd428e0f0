"""What alignment costs per search, with and without the smooth field taken out.

    .venv/bin/python bench/bench_alignment_speed.py --candidates 900 --rounds 5

One street view against ``--candidates`` Fashion-MNIST test images (a ``rerank=300`` short-list):
the time to prepare their templates and to align the photo with them, for each
``Reranker.background`` degree, interleaved in rounds; best of the rounds. Alignment only: the
verifier's share is in ``bench_verifier_speed.py``.
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
from lookalike.rerank import Reranker
from lookalike.train.metric.augment import StreetViewAugment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=900)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backgrounds", default="0,4")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = list(load_split("test")[0][: args.candidates])
    aug = StreetViewAugment()
    photo = aug(images[0], np.random.default_rng(0))
    box = aug.last_params["box"]
    rerankers = {int(b): Reranker(verifier=None, background=int(b)) for b in args.backgrounds.split(",")}
    best: dict[int, list[float]] = {b: [np.inf, np.inf] for b in rerankers}
    for _ in range(args.rounds):
        for b, rr in rerankers.items():
            t0 = time.perf_counter()
            templates = rr.templates(images)
            t1 = time.perf_counter()
            rr.alignment(rr.views(photo, box), templates)
            t2 = time.perf_counter()
            best[b] = [min(best[b][0], t1 - t0), min(best[b][1], t2 - t1)]
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}; "
        f"{args.candidates} candidates, best of {args.rounds} rounds\n"
    )
    print("| background | templates | align | total | × first |")
    print("|---|---|---|---|---|")
    first = sum(best[next(iter(best))])
    for b, (prep, align) in best.items():
        total = prep + align
        ms = " | ".join(f"{t * 1000:.1f} ms" for t in (prep, align, total))
        print(f"| {b} | {ms} | {total / first:.2f} |")


if __name__ == "__main__":
    main()
