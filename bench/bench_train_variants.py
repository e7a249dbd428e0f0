"""Short A/B runs of the default metric recipe: what one change does to early quality.

    .venv/bin/python bench/bench_train_variants.py --variants base,class-proxy,class-proxy-w1 \
        --steps 300 --out runs/bench_variants
    .venv/bin/python bench/bench_train_variants.py --variants fp32,base --steps 300  # precision

Every variant trains the previous default model's recipe (bf16, 128 identities, one street view
each, the 24-48-96-192 grid network, a class-level *triplet* term of weight 0.5) for ``--steps``
steps from the localizer shipped in ``lookalike/models/default.pt`` (so no run spends minutes
retraining it), with one change. Each is validated on the recipe's held-out products (street R@1,
R@10, class R@1) and then measured at class level: ``--class-queries`` clean test images against
the 60,000 train images. Runs go one after the other; single runs, so differences under about
0.015 R@1 are noise (1,000 validation queries). Use ``--stop-after`` with ``--steps 3800`` to
follow the full schedule's first steps.
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
from lookalike.evaluation.datasets import class_level
from lookalike.evaluation.protocol import evaluate
from lookalike.train.metric import MetricRecipe, train_metric

BASE = dict(
    identities_per_batch=128,
    street_per_identity=1,
    widths=(24, 48, 96, 192),
    pool="grid",
    class_weight=0.5,
    class_loss="triplet",  # the default model before the class proxies
    aug_size=(48, 192),
    precision="bf16",
)

VARIANTS = {
    "base": {},
    "fp32": {"precision": "fp32"},  # float32 training passes: speed and quality against bf16
    "class-proxy": {"class_loss": "proxy"},
    "class-proxy-w1": {"class_loss": "proxy", "class_weight": 1.0},
    "class-proxy-w0.25": {"class_loss": "proxy", "class_weight": 0.25},
    "class-triplet-w1": {"class_weight": 1.0},
    "no-class": {"class_weight": 0.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="base,class-proxy", help=f"from {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=300, help="the schedule's length (cosine decay over it)")
    ap.add_argument("--stop-after", type=int, default=None, help="stop early, validating every 300 steps")
    ap.add_argument("--class-queries", type=int, default=5000)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_variants"))
    args = ap.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    localizer = load_checkpoint(default_model_path(), kind="metric")["extra"]["localizer"]
    # train every variant with the shipped localizer's own settings, so the run reuses it
    lrec = localizer["recipe"]
    shipped = dict(
        localizer_steps=lrec["steps"],
        localizer_views=lrec["views"],
        localizer_precision=lrec.get("precision", "fp32"),
    )
    rows = []
    for name in args.variants.split(","):
        run_dir = args.out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        torch.save(localizer, run_dir / "localizer.pt")  # the shipped localizer: skip its training
        every = 300 if args.stop_after else args.steps
        recipe = MetricRecipe(**(BASE | shipped | VARIANTS[name]), steps=args.steps, val_every=every)
        t0 = time.time()
        res = train_metric(recipe=recipe, run_dir=run_dir, progress=False, stop_after=args.stop_after)
        row = {"variant": name, "seconds": round(time.time() - t0, 1)}
        row["history"] = [h for h in res.history if "val_R@1" in h]
        row |= {k: v for k, v in row["history"][-1].items() if k.startswith("val_")}
        if args.stop_after is None:  # a finished run has a checkpoint to measure at class level
            q, g = class_level(n_queries=args.class_queries)
            result = evaluate([f"trained:{res.checkpoint}"], q, g)
            cls = next(iter(result.results.values()))["full"]["class"]
            row["class_level_R@1"], row["class_level_mAP@R"] = cls["R@1"], cls["mAP@R"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
    machine = os.environ.get(
        "LOOKALIKE_BENCH_MACHINE", f"{os.cpu_count()}-core {platform.machine()} VM, no GPU"
    )
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}, {args.steps}-step schedule\n")
    print(
        "| variant | change | wall | s/step | val R@1 | val R@10 | val class R@1 "
        "| class-level R@1 | class-level mAP@R |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    steps_run = args.stop_after or args.steps
    for r in rows:
        change = f"`{json.dumps(VARIANTS[r['variant']])}`" if VARIANTS[r["variant"]] else "—"
        cl = r.get("class_level_R@1")
        extra = f"{cl:.3f} | {r['class_level_mAP@R']:.3f}" if cl is not None else "— | —"
        print(
            f"| {r['variant']} | {change} | {r['seconds']:.0f} s | {r['seconds'] / steps_run:.2f} | "
            f"{r['val_R@1']:.3f} | "
            f"{r['val_R@10']:.3f} | {r['val_class_R@1']:.3f} | {extra} |"
        )
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
