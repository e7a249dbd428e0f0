"""How to weigh the re-ranking signals: R@1 / R@20 over a grid of weights and depths, per verifier.

    .venv/bin/python bench/bench_rerank_weights.py --queries 1000 --seed 1 \
        --verifiers default,runs/verifier3k/verifier.pt

Street-to-shop queries (``--seed`` picks the items and renders their views; seed 0 is the
benchmark's own sample, so tune on another) against all 70k shop images. Each query's first
``max(--depths)`` results are scored once by alignment and by every verifier; each cell of the
grid then re-orders them as the product does (cosine + alignment weight × R² + verifier weight ×
logit, over the first ``depth`` results) and is scored on the same queries. Writes Markdown to
stdout and, with ``--json``, every cell to a file.
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
from tqdm import tqdm

from lookalike.embedders import load_embedder
from lookalike.evaluation.datasets import street_to_shop
from lookalike.evaluation.metrics import nearest_neighbours
from lookalike.rerank import Reranker
from lookalike.verifier import catalog_inputs, load_verifier, photo_inputs


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="default")
    ap.add_argument("--verifiers", default="default", help="comma-separated: 'default' or checkpoint paths")
    ap.add_argument("--precisions", default="fp32", help="verifier precisions, comma-separated: fp32, bf16")
    ap.add_argument("--depths", default="100,200")
    ap.add_argument(
        "--align-depths",
        default="0",
        help="comma-separated: align this many first results, then verify the best DEPTH of them "
        "(0: align only the DEPTH the verifier sees, as the product does)",
    )
    ap.add_argument("--align-weights", default="0,0.5,1,2")
    ap.add_argument(
        "--background",
        type=int,
        default=Reranker.background,
        help="degree of the smooth field alignment takes out",
    )
    ap.add_argument("--verifier-weights", default="0.01,0.02,0.03,0.05,0.1")
    ap.add_argument("--distractors", type=int, default=None, help="limit the gallery (smoke runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write every cell here")
    ap.add_argument(
        "--dump",
        default=None,
        help="also save every signal (cosine, alignment, verifier logits, truth) to this .npz, "
        "for fitting how to combine them offline",
    )
    ap.add_argument(
        "--verify-all",
        action="store_true",
        help="verify every candidate within the reach, not just the cells' own",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    depths = sorted(int(d) for d in args.depths.split(","))
    depth = depths[-1]
    align_depths = sorted(int(a) for a in args.align_depths.split(","))
    wa_grid, wv_grid = _floats(args.align_weights), _floats(args.verifier_weights)
    t_start = time.time()

    q, g = street_to_shop(args.queries, seed=args.seed, distractors=args.distractors)
    emb = load_embedder(args.model)
    t0 = time.time()
    gv = np.concatenate(
        [emb.embed_images(list(g.images[s : s + 4096]), progress=False) for s in range(0, len(g), 4096)]
    )
    photos = [_rgb(q.image(i)) for i in range(len(q))]
    qv, boxes = emb.embed_and_locate(photos)
    print(
        f"embedded {len(g):,} shop images and {len(q):,} street views in {time.time() - t0:.0f} s", flush=True
    )
    reach = max([depth, *align_depths])
    top = nearest_neighbours(qv, gv, reach)
    sims = np.einsum("qd,qkd->qk", qv, gv[top])
    truth = g.ids[top] == q.ids[:, None]  # (Q, reach)
    ceilings = ", ".join(f"R@{k} {truth[:, :k].any(1).mean():.3f}" for k in sorted({*depths, reach}))
    print(f"plain R@1 {truth[:, 0].mean():.3f}; the ceilings: {ceilings}", flush=True)

    # alignment once per (query, candidate) over the whole reach
    align = Reranker(depth=min(reach, 1000), verifier=None, background=args.background)
    uniq, inv = np.unique(top, return_inverse=True)
    inv = inv.reshape(top.shape)
    shop = [g.images[int(j)] for j in uniq]
    templates = align.templates(shop)
    alignment = np.zeros(top.shape, np.float32)
    t0 = time.time()
    for i in tqdm(range(len(q)), desc="alignment", unit="query"):
        alignment[i] = align.alignment(align.views(photos[i], boxes[i]), templates[torch.from_numpy(inv[i])])
    print(f"aligned {top.size:,} pairs in {time.time() - t0:.0f} s", flush=True)

    def heads(a: int, d: int, wa: float) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1 over the first ``a`` results (cosine + wa × R²) and its first ``d`` columns."""
        a = max(a, d)
        stage1 = sims[:, :a] + wa * alignment[:, :a]
        order = np.argsort(-stage1, axis=1, kind="stable")
        return stage1, order

    # the verifier only where some cell needs it: each cell's first `depth` after stage 1
    need = np.full(top.shape, args.verify_all, dtype=bool)
    for a in align_depths:
        for d in depths:
            for wa in wa_grid:
                _, order = heads(a, d, wa)
                np.put_along_axis(need, order[:, :d], True, axis=1)
    precisions = args.precisions.split(",")
    verifiers = {
        v if p == "fp32" else f"{v}@{p}": load_verifier(None if v == "default" else v, precision=p)
        for v in args.verifiers.split(",")
        for p in precisions
    }
    cat_in = catalog_inputs(shop)
    ver = {v: np.full(top.shape, np.nan, np.float32) for v in verifiers}
    t0 = time.time()
    for i in tqdm(range(len(q)), desc="verifiers", unit="query"):
        cols = np.flatnonzero(need[i])
        p_in = photo_inputs([photos[i]], np.asarray([boxes[i]]))
        for name, v in verifiers.items():
            ver[name][i, cols] = v.scores(p_in, cat_in[torch.from_numpy(inv[i, cols])])
    print(f"verified {need.sum():,} pairs per verifier in {time.time() - t0:.0f} s", flush=True)

    cells = []
    for vname in verifiers:
        for a in align_depths:
            for d in depths:
                for wa in wa_grid:
                    stage1, order = heads(a, d, wa)
                    head = order[:, :d]
                    s1 = np.take_along_axis(stage1, head, axis=1)
                    v = np.take_along_axis(ver[vname], head, axis=1)
                    for wv in wv_grid:
                        final = np.take_along_axis(
                            head, np.argsort(-(s1 + wv * v), axis=1, kind="stable"), axis=1
                        )
                        ranked = np.concatenate([final, order[:, d:]], axis=1)
                        hit = np.take_along_axis(truth[:, : ranked.shape[1]], ranked, axis=1)
                        cells.append(
                            {
                                "verifier": vname,
                                "align_depth": max(a, d),
                                "depth": d,
                                "align_weight": wa,
                                "verifier_weight": wv,
                                "R@1": float(hit[:, 0].mean()),
                                "R@20": float(hit[:, :20].any(1).mean()),
                            }
                        )
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}; "
        f"{len(q)} queries (seed {args.seed}); plain R@1 {truth[:, 0].mean():.3f}; "
        f"wall {time.time() - t_start:.0f} s"
    )
    for vname in verifiers:
        for a in align_depths:
            for d in depths:
                print(f"\nverifier {vname}, alignment over {max(a, d)}, verifier over {d}: R@1 (R@20)\n")
                print("| alignment weight | " + " | ".join(f"verifier {wv:g}" for wv in wv_grid) + " |")
                print("|---" * (len(wv_grid) + 1) + "|")
                for wa in wa_grid:
                    row = [
                        c
                        for c in cells
                        if c["verifier"] == vname
                        and c["align_depth"] == max(a, d)
                        and c["depth"] == d
                        and c["align_weight"] == wa
                    ]
                    print(
                        f"| {wa:g} | " + " | ".join(f"{c['R@1']:.3f} ({c['R@20']:.3f})" for c in row) + " |"
                    )
    best = max(cells, key=lambda c: c["R@1"])
    print(f"\nbest: {best}")
    if args.dump:
        np.savez_compressed(
            args.dump,
            ids=q.ids,
            top=top,
            cosine=sims,
            alignment=alignment,
            truth=truth,
            **{f"verifier_{name}": v for name, v in ver.items()},
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"queries": len(q), "seed": args.seed, "cells": cells}, indent=1)
        )


def _rgb(image) -> Image.Image:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    return img.convert("RGB")


if __name__ == "__main__":
    main()
