"""How much smooth field alignment should take out (``Reranker.background``), and the alignment
weight that goes with it: R@1 / R@20 per depth, from a saved set of signals.

    .venv/bin/python bench/bench_rerank_weights.py --queries 2000 --seed 1 --depths 500 \
        --align-depths 1000 --align-weights 1,2 --verifier-weights 0.05 --verify-all \
        --dump runs/signals_seed1.npz
    .venv/bin/python bench/bench_rerank_background.py --dump runs/signals_seed1.npz \
        --queries 2000 --seed 1 --backgrounds 0,2,3,4,5

The first command embeds the street views, finds each one's first 1,000 results among the 70k shop
images and scores every one of them with the verifier (the slow part: about 20 minutes for 2,000
queries on 2 cores). This script re-computes only the alignment, for each background degree, with
the product's :class:`~lookalike.rerank.Reranker`, and re-orders each query's results as the
product does for each depth (alignment over the first 3 × depth, at most 1,000; the verifier over
the best ``depth`` of them; final order by cosine + weight × R² + verifier weight × logit). Writes
Markdown to stdout.
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
from tqdm import tqdm

from lookalike.embedders import load_embedder
from lookalike.evaluation.datasets import street_to_shop
from lookalike.rerank import MAX_DEPTH, SHORTLIST_FACTOR, Reranker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dump", required=True, help="signals saved by bench_rerank_weights.py --dump --verify-all"
    )
    ap.add_argument("--queries", type=int, required=True, help="the --queries the dump was made with")
    ap.add_argument("--seed", type=int, required=True, help="the --seed the dump was made with")
    ap.add_argument("--model", default="default")
    ap.add_argument("--backgrounds", default="0,2,4")
    ap.add_argument("--align-weights", default="0.5,0.75,1,1.5,2")
    ap.add_argument("--verifier-weights", default="0.05", help="comma-separated")
    ap.add_argument("--depths", default="100,300,500")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()

    d = np.load(args.dump)
    top, cos, truth = d["top"], d["cosine"], d["truth"]
    ver = d["verifier_default"]
    q, g = street_to_shop(args.queries, seed=args.seed)
    if not np.array_equal(q.ids, d["ids"]):
        raise SystemExit(f"{args.dump} was not made from --queries {args.queries} --seed {args.seed}")
    depths = [int(v) for v in args.depths.split(",")]
    reach = {dep: max(dep, min(MAX_DEPTH, SHORTLIST_FACTOR * dep)) for dep in depths}
    if max(reach.values()) > top.shape[1]:
        raise SystemExit(f"{args.dump} holds {top.shape[1]} results a query; depth {max(depths)} needs more")
    if np.isnan(ver[:, : max(reach.values())]).any():
        raise SystemExit(f"{args.dump} lacks verifier scores: make it with --verify-all")

    photos = [_rgb(q.image(i)) for i in range(len(q))]
    _, boxes = load_embedder(args.model).embed_and_locate(photos)
    uniq, inv = np.unique(top, return_inverse=True)
    inv = inv.reshape(top.shape)
    shop = [g.images[int(j)] for j in uniq]

    weights = [float(v) for v in args.align_weights.split(",")]
    vweights = [float(v) for v in args.verifier_weights.split(",")]
    rows = []
    for deg in (int(v) for v in args.backgrounds.split(",")):
        rr = Reranker(depth=MAX_DEPTH, verifier=None, background=deg)
        templates = rr.templates(shop)
        align = np.zeros(top.shape, np.float32)
        t0 = time.time()
        for i in tqdm(range(len(q)), desc=f"alignment, background {deg}", unit="query"):
            align[i] = rr.alignment(rr.views(photos[i], boxes[i]), templates[torch.from_numpy(inv[i])])
        took = time.time() - t0
        only = truth[np.arange(len(q)), np.argmax(cos + align, axis=1)].mean()
        for wa, wv in ((wa, wv) for wa in weights for wv in vweights):
            cells = []
            for dep in depths:
                a = reach[dep]
                stage1 = cos[:, :a] + wa * align[:, :a]
                head = np.argsort(-stage1, axis=1, kind="stable")[:, :dep]
                final = np.take_along_axis(stage1, head, 1)
                final = final + wv * np.take_along_axis(ver, head, 1)
                ranked = np.take_along_axis(head, np.argsort(-final, axis=1, kind="stable"), 1)
                hit = np.take_along_axis(truth, ranked, 1)
                cells.append(f"{hit[:, 0].mean():.3f} ({hit[:, :20].any(1).mean():.3f})")
            cells += [f"{only:.3f}", f"{took:.0f} s"]
            rows.append(f"| {deg} | {wa:g} | {wv:g} | " + " | ".join(cells) + " |")

    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}; "
        f"{len(q)} queries (seed {args.seed}); plain R@1 {truth[:, 0].mean():.3f}; "
        f"wall {time.time() - t_start:.0f} s\n"
    )
    print(
        "| background | alignment weight | verifier weight | "
        + " | ".join(f"`rerank={dep}` R@1 (R@20)" for dep in depths)
        + " | alignment alone over 1,000, weight 1: R@1 | alignment time |"
    )
    print("|---" * (len(depths) + 5) + "|")
    print("\n".join(rows))


def _rgb(image) -> Image.Image:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    return img.convert("RGB")


if __name__ == "__main__":
    main()
