"""Verifier training speed and early quality: fp32 against bf16 passes, in one run.

    .venv/bin/python bench/bench_train_verifier.py --precisions fp32,bf16 --steps 300

Each precision trains the shipped verifier's recipe (48 street views a step, 7 of the default
model's 40 nearest as negatives, the next step prepared by a background thread) for ``--steps``
steps on the Fashion-MNIST train split, then reports seconds per step (from step 100 on: the
first steps warm up), the loss of its last 100 steps and the held-out pick rate (each of the
last 500 products' street views against the embedder's 15 nearest other images). Runs go one
after the other on the same machine; compare the ratio, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from datetime import UTC, datetime

import torch

from lookalike.train.metric.trainer import fashion_mnist_data
from lookalike.train.metric.verifier import VerifierRecipe, train_verifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="runs/bench_train_verifier")
    args = ap.parse_args()
    if args.steps < 200:
        ap.error("--steps must be at least 200 (seconds per step are timed from step 100)")
    data = fashion_mnist_data()
    rows = []
    for precision in args.precisions.split(","):
        marks: dict[int, float] = {}

        def log(msg: str, marks=marks) -> None:
            m = re.match(r"step (\d+): loss", msg)
            if m:
                marks[int(m.group(1))] = time.perf_counter()

        recipe = VerifierRecipe(steps=args.steps, precision=precision, val_products=500, val_every=args.steps)
        t0 = time.perf_counter()
        _, metrics = train_verifier(data, recipe, out=f"{args.out}/{precision}.pt", progress=False, log=log)
        last = max(marks)
        rows.append(
            {
                "precision": precision,
                "steps": args.steps,
                "s_per_step": round((marks[last] - marks[100]) / (last - 100), 3),
                "wall_s": round(time.perf_counter() - t0, 1),
                **metrics,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["s_per_step"]
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, bf16 native: "
        f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}"
    )
    cols = ["precision", "s/step", "× first", "loss (last 100)", "pick (last 100)", "held-out pick"]
    print("| " + " | ".join(cols + ["embedding alone", "wall"]) + " |")
    print("|---" * (len(cols) + 2) + "|")
    for r in rows:
        cells = [r["precision"], f"{r['s_per_step']:.3f}", f"{r['s_per_step'] / base:.2f}"]
        cells += [f"{r[k]:.3f}" for k in ("final_loss", "final_pick_rate", "val_pick", "val_pick_embedding")]
        print("| " + " | ".join(cells + [f"{r['wall_s']:.0f} s"]) + " |")


if __name__ == "__main__":
    main()
