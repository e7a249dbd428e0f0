"""Fine-tune the shipped default (``--init default``) a few hundred steps with one change each.

    .venv/bin/python bench/bench_finetune.py --variants continue,class-w2,class-w8 \
        --steps 300 --out runs/bench_finetune

Every variant starts from ``lookalike/models/default.pt``'s network and localizer, with the shipped
recipe (seed 0, so the same 1,000 held-out validation products the default never trained on) and
one change, at a lower peak learning rate (``--lr``). ``continue`` changes nothing: it separates
the effect of the change from that of more training. Each is validated like the training run (street
R@1, R@10, class R@1 on the held-out products) and measured at class level: the 10,000 clean test
images against the 60,000 train images, the issue's class-level protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import torch

from lookalike.checkpoint import load_checkpoint
from lookalike.embedders import default_model_path
from lookalike.evaluation.datasets import class_level
from lookalike.evaluation.protocol import evaluate
from lookalike.train.metric import MetricRecipe, train_metric

VARIANTS = {
    "continue": {},
    "class-w2": {"class_weight": 2.0},
    "class-w8": {"class_weight": 8.0},
    "no-class": {"class_weight": 0.0},
}


def _row(name: str, seconds: float, val: dict, cls: dict) -> dict:
    return {"variant": name, "seconds": round(seconds, 1), **val, "class_level": cls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="continue,class-w2,class-w8", help=f"from {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=5e-4, help="peak learning rate of the fine-tuning")
    ap.add_argument("--class-queries", type=int, default=None, help="default: all 10,000")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_finetune"))
    args = ap.parse_args()
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    shipped = load_checkpoint(default_model_path(), kind="metric")
    names = {f.name for f in fields(MetricRecipe)}
    base = {k: tuple(v) if isinstance(v, list) else v for k, v in shipped["recipe"].items() if k in names}
    base |= dict(steps=args.steps, lr=args.lr, warmup=min(50, args.steps // 4), init="default", command="")
    q, g = class_level(n_queries=args.class_queries)

    def class_numbers(model: str) -> dict:
        cls = next(iter(evaluate([model], q, g).results.values()))["full"]["class"]
        return {k: round(cls[k], 4) for k in ("R@1", "mAP@R")}

    start = {k: v for k, v in shipped["metrics"].items() if k.startswith("val_")}
    rows = [_row("shipped default (start)", 0.0, start, class_numbers("default"))]
    print(json.dumps(rows[-1]), flush=True)
    for name in args.variants.split(","):
        run_dir = args.out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        torch.save(shipped["extra"]["localizer"], run_dir / "localizer.pt")  # skip its training
        recipe = MetricRecipe(**(base | VARIANTS[name] | {"val_every": args.steps}))
        t0 = time.time()
        res = train_metric(recipe=recipe, run_dir=run_dir, progress=False)
        val = {k: v for k, v in res.history[-1].items() if k.startswith("val_")}
        rows.append(_row(name, time.time() - t0, val, class_numbers(f"trained:{res.checkpoint}")))
        print(json.dumps(rows[-1]), flush=True)
    machine = os.environ.get(
        "LOOKALIKE_BENCH_MACHINE", f"{os.cpu_count()}-core {platform.machine()} VM, no GPU"
    )
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}, {args.steps} steps at lr {args.lr}\n")
    print("| variant | change | wall | val R@1 | val R@10 | val class R@1 | class-level R@1 | mAP@R |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        change = VARIANTS.get(r["variant"])
        change = f"`{json.dumps(change)}`" if change else "—"
        c = r["class_level"]
        print(
            f"| {r['variant']} | {change} | {r['seconds']:.0f} s | {r['val_R@1']:.3f} | "
            f"{r['val_R@10']:.3f} | {r['val_class_R@1']:.3f} | {c['R@1']:.3f} | {c['mAP@R']:.3f} |"
        )
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
