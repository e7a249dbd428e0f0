"""Training speed and early quality of metric training in float32 against bfloat16 autocast.

    .venv/bin/python bench/bench_train_precision.py --steps 300 --out runs/bench_precision

Each precision trains the default model's recipe (128 identities, one street view each, the
24-48-96-192 grid network, class weight 0.5) for ``--steps`` steps, from the localizer shipped in
``lookalike/models/default.pt`` (so no run spends minutes retraining it), and is validated on the
recipe's held-out products. Wall time covers the whole run: rendering, the network, validation.
The precisions run one after the other on the same machine; compare their ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from lookalike.checkpoint import load_checkpoint
from lookalike.embedders import default_model_path
from lookalike.train.metric import MetricRecipe, train_metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_precision"))
    args = ap.parse_args()
    localizer = load_checkpoint(default_model_path(), kind="metric")["extra"]["localizer"]
    rows = []
    for precision in args.precisions.split(","):
        run_dir = args.out / precision
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        torch.save(localizer, run_dir / "localizer.pt")  # the shipped localizer: skip its training
        recipe = MetricRecipe(
            steps=args.steps,
            identities_per_batch=128,
            street_per_identity=1,
            widths=(24, 48, 96, 192),
            pool="grid",
            class_weight=0.5,
            aug_size=(48, 192),
            val_every=args.steps,
            precision=precision,
        )
        t0 = time.time()
        res = train_metric(recipe=recipe, run_dir=run_dir, progress=False)
        seconds = time.time() - t0
        rows.append({"precision": precision, "seconds": round(seconds, 1)} | res.metrics)
        print(json.dumps(rows[-1]), flush=True)
    machine = os.environ.get(
        "LOOKALIKE_BENCH_MACHINE", f"{os.cpu_count()}-core {platform.machine()} VM, no GPU"
    )
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}, {args.steps} steps\n")
    print("| precision | wall | s/step | val R@1 | val R@10 | val class R@1 |")
    print("|---|---|---|---|---|---|")
    base = rows[0]["seconds"]
    for r in rows:
        print(
            f"| {r['precision']} | {r['seconds']:.0f} s ({r['seconds'] / base:.2f}×) | "
            f"{r['seconds'] / args.steps:.2f} | {r['val_R@1']:.3f} | {r['val_R@10']:.3f} | "
            f"{r['val_class_R@1']:.3f} |"
        )
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
