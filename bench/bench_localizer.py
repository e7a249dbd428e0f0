"""A localizer variant against the shipped one: box errors on held-out views, and what the boxes do
to street-to-shop search with the shipped embedding network.

    .venv/bin/python bench/bench_localizer.py --steps 2400 --views 48000 --precision bf16 \
        --out runs/bench_localizer

1. Trains a localizer and refiner with ``LocalizerRecipe(steps, views, precision)`` on the
   Fashion-MNIST train split less the 1,000 products the metric trainer holds out (seed 0), exactly
   as ``lookalike train metric --localizer-steps S --localizer-views V --localizer-precision P``
   would; prints their errors and wall time. ``--localizer FILE`` loads one this script saved.
2. Puts it into the default model in place of the shipped one and searches 2 street views of each
   held-out product (``--queries``, 64–320 px) against all 70k catalog images: R@1/5/20/1000,
   category at rank 1 and the share of boxes off by more than 0.1 of the item's side, with 1 and 9
   crops per photo, beside the shipped localizer on the same queries, and crops at the true boxes
   (what a perfect localizer would give the network).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lookalike.datasets.fashion_mnist import load_split
from lookalike.embedders import load_embedder
from lookalike.embedders._localizer import PHOTO_VIEWS, build_localizer
from lookalike.train.metric.augment import StreetViewAugment
from lookalike.train.metric.localizer import LocalizerRecipe, train_localizer, train_refiner


def held_out(n: int, seed: int = 0, n_val: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The metric trainer's split of ``n`` products (``_Trainer``): validation, training."""
    perm = np.random.default_rng([seed, 99]).permutation(n)
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


def train(args, xtr: np.ndarray, val: np.ndarray, rest: np.ndarray) -> tuple[dict, dict]:
    lr = LocalizerRecipe(
        views=args.views,
        steps=args.steps,
        refine_views=args.views,
        refine_steps=args.steps,
        seed=0,
        workers=2,
        precision=args.precision,
    )
    t = time.time()
    loc, m1 = train_localizer(xtr, rest, val, lr)
    t_loc = time.time() - t
    ref, m2 = train_refiner(xtr, rest, val, loc, lr)
    info = {
        "localizer_seconds": round(t_loc),
        "seconds": round(time.time() - t),
        "localizer": m1,
        "refiner": m2,
    }
    nets = {
        "loc": loc.state_dict(),
        "ref": ref.state_dict(),
        "loc_w": list(loc.widths),
        "ref_w": list(ref.widths),
    }
    return nets, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--views", type=int, default=24000)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--localizer", type=Path, default=None, help="a file this script saved: skip training")
    ap.add_argument("--queries", type=int, default=2, help="street views per held-out product")
    ap.add_argument("--out", type=Path, default=Path("runs/bench_localizer"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    val, rest = held_out(len(xtr))
    doc: dict = {
        "date": started,
        "machine": f"{os.cpu_count()}-core {platform.machine()}",
        "args": vars(args),
    }
    if args.localizer:
        nets = torch.load(args.localizer, weights_only=True)
    else:
        nets, doc["training"] = train(args, xtr, val, rest)
        torch.save(nets, args.out / f"localizer_{args.steps}_{args.views}_{args.precision}.pt")
        print(json.dumps(doc["training"], default=float), flush=True)

    labels = np.concatenate([ytr, yte])
    shipped = load_embedder("default", cache=False)
    gallery = shipped.embed_images([Image.fromarray(x) for x in np.concatenate([xtr, xte])])
    aug = StreetViewAugment(size=(64, 320))
    photos, items, truth = [], [], []
    for rep in range(args.queries):
        for i in val:
            photos.append(aug(xtr[i], np.random.default_rng([13, rep, int(i)])))
            items.append(int(i))
            truth.append(aug.last_params["box"])
    items, truth = np.array(items), np.array(truth)
    variant = load_embedder("default", cache=False)
    variant.localizer = build_localizer({"widths": nets["loc_w"]}, nets["loc"])
    variant.refiner = build_localizer({"widths": nets["ref_w"]}, nets["ref"])
    rows = []
    for name, emb in (("shipped", shipped), ("variant", variant)):
        for n in (1, len(PHOTO_VIEWS)):
            emb.views = PHOTO_VIEWS[:n]
            q, boxes = emb.embed_and_locate(photos)
            s = q @ gallery.T
            rank = (s > s[np.arange(len(s)), items][:, None]).sum(1)
            off = np.hypot(*(boxes[:, :2] - truth[:, :2]).T) / truth[:, 2]
            row = {"localizer": name, "views": n}
            row |= {f"R@{k}": float(np.mean(rank < k)) for k in (1, 5, 20, 1000)}
            row["class R@1"] = float(np.mean(labels[s.argmax(1)] == labels[items]))
            row["boxes off > 0.1"] = float(np.mean(off > 0.1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    # the bound: crops at the true boxes (what a perfect localizer would give the network)
    from lookalike.embedders._localizer import crop_items
    from lookalike.embedders._metric_net import preprocess_images

    crops = crop_items(photos, truth, int(shipped.preprocess.get("size", 32)))
    with torch.inference_mode():
        q = shipped.model(preprocess_images(crops, shipped.preprocess)).numpy()
    s = q @ gallery.T
    rank = (s > s[np.arange(len(s)), items][:, None]).sum(1)
    row = {"localizer": "true boxes", "views": 1}
    row |= {f"R@{k}": float(np.mean(rank < k)) for k in (1, 5, 20, 1000)}
    row |= {"class R@1": float(np.mean(labels[s.argmax(1)] == labels[items])), "boxes off > 0.1": 0.0}
    rows.append(row)
    print(json.dumps(row), flush=True)
    doc["search"] = rows
    (args.out / "results.json").write_text(json.dumps(doc, indent=2, default=float))
    keys = ["R@1", "R@5", "R@20", "R@1000", "class R@1", "boxes off > 0.1"]
    print("\n| localizer | views | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['localizer']} | {r['views']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
