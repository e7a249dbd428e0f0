"""How far can the default's network go at class level when it learns categories only?

    .venv/bin/python bench/bench_class_ceiling.py --epochs 3
    .venv/bin/python bench/bench_class_ceiling.py --epochs 8 --shift 2

Trains the shipped model's network (same widths, grid head, FC512-ELU-FC128-L2, same 32x32
per-image preprocessing) from scratch on the 60,000 clean train images with nothing but the class
proxies (pytorch-metric-learning's ``NormalizedSoftmaxLoss``, temperature 0.05, as in the shipped
recipe) in bfloat16 autocast, then measures the issue's class-level protocol: R@1 of the 10,000
clean test images against the 60,000 train images. No street views, no instance term: an upper
bound for what this network and input give at class level, against which the shipped model's
0.894 can be read.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import UTC, datetime

import numpy as np
import torch
from PIL import Image
from pytorch_metric_learning import losses

from lookalike.checkpoint import load_checkpoint
from lookalike.datasets.fashion_mnist import load_split
from lookalike.embedders import default_model_path
from lookalike.evaluation.metrics import nearest_neighbours
from lookalike.train.metric.model import build_model, preprocess_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--shift", type=int, default=0, help="random shifts of up to N pixels per batch")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--widths", default=None, help="other stage widths (default: the shipped model's)")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    ck = load_checkpoint(default_model_path(), kind="metric")
    arch = dict(ck["arch"])
    if args.widths:
        arch["widths"] = [int(w) for w in args.widths.split(",")]
    model = build_model(arch).to(memory_format=torch.channels_last)
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")

    def prep(a: np.ndarray) -> torch.Tensor:
        return preprocess_images([Image.fromarray(x) for x in a], ck["preprocess"])

    train_x, test_x = prep(xtr), prep(xte)
    labels = torch.as_tensor(ytr.astype(np.int64))
    proxies = losses.NormalizedSoftmaxLoss(10, arch["dim"], temperature=0.05)
    params = [{"params": list(model.parameters())}, {"params": list(proxies.parameters()), "weight_decay": 0}]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    steps = int(args.epochs * len(xtr) / args.batch)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    for step in range(steps):
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.choice(len(xtr), args.batch, replace=False)
        x = train_x[idx]
        if args.shift:
            dy, dx = (int(v) for v in rng.integers(-args.shift, args.shift + 1, 2))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb = model(x.contiguous(memory_format=torch.channels_last))
        loss = proxies(emb.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0:
            print(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f} s)", flush=True)
    seconds = time.time() - t0
    model.eval()
    with torch.no_grad():
        g = torch.cat([model(train_x[i : i + 2048]) for i in range(0, len(train_x), 2048)]).numpy()
        q = torch.cat([model(test_x[i : i + 2048]) for i in range(0, len(test_x), 2048)]).numpy()
    r1 = float((ytr[nearest_neighbours(q, g, 1)[:, 0]] == yte).mean())
    machine = os.environ.get("LOOKALIKE_BENCH_MACHINE", f"{os.cpu_count()}-core {platform.machine()} VM")
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine}")
    print(
        f"widths {arch['widths']}, {args.epochs:g} epochs ({steps} steps), shift {args.shift}: "
        f"training {seconds:.0f} s, "
        f"class-level R@1 {r1:.4f}"
    )


if __name__ == "__main__":
    main()
