"""What one re-ranked search's verifier pass costs: the trained network as it is, against the
folded channels-last copy the product scores with (``lookalike.verifier.inference_copy``), in
float32 and bfloat16.

    .venv/bin/python bench/bench_verifier_speed.py --pairs 300 --rounds 5

One street view of a test item against ``--pairs`` test catalog images, the shipped verifier. The
variants are interleaved in rounds and each keeps its best round, so background noise hits them
alike; the ratio to the first row is the stable number. Also prints how far each variant's logits
are from the trained network's.
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
from lookalike.train.metric.augment import StreetViewAugment
from lookalike.verifier import catalog_inputs, load_verifier, photo_inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x, _ = load_split("test")
    photo = StreetViewAugment()(x[0], np.random.default_rng(0))
    q = photo_inputs([photo], np.full((1, 4), np.nan))
    c = catalog_inputs(list(x[: args.pairs]))
    fp32, bf16 = load_verifier(), load_verifier(precision="bf16")
    trained = fp32.model

    @torch.inference_mode()
    def as_trained() -> np.ndarray:  # the scoring loop before the folded copy (batches of 256)
        out = [
            trained(q.expand(len(c[s : s + 256]), -1, -1, -1), c[s : s + 256]) for s in range(0, len(c), 256)
        ]
        return torch.cat(out).numpy()

    variants = {
        "trained network (batch norm, contiguous), fp32": as_trained,
        "folded, channels-last, fp32 (the default)": lambda: fp32.scores(q, c),
        "folded, channels-last, bf16 (LOOKALIKE_VERIFIER_PRECISION=bf16)": lambda: bf16.scores(q, c),
    }
    ref = as_trained()
    diffs = {name: float(np.abs(f() - ref).max()) for name, f in variants.items()}  # also warms up
    best = dict.fromkeys(variants, np.inf)
    for _ in range(args.rounds):
        for name, f in variants.items():
            t0 = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t0)
    first = next(iter(best.values()))
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}; "
        f"{args.pairs} pairs, best of {args.rounds} rounds; logit spread (std) {ref.std():.2f}"
    )
    print("| variant | time | per pair | × first | max logit difference |")
    print("|---|---|---|---|---|")
    for name, t in best.items():
        print(
            f"| {name} | {t * 1000:.1f} ms | {t / args.pairs * 1000:.3f} ms | {t / first:.2f} "
            f"| {diffs[name]:.1e} |"
        )


if __name__ == "__main__":
    main()
