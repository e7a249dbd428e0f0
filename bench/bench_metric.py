"""Benchmark street-to-shop retrieval on Fashion-MNIST: pixels against trained metric models.

    .venv/bin/python bench/bench_metric.py --models pixels,default --out runs/bench_metric
    .venv/bin/python bench/bench_metric.py --models pixels,default --rerank 100 --out runs/bench_rerank

``--rerank N`` also scores every model with its first N results re-ranked by alignment
(:mod:`lookalike.rerank`), as ``"<model> +rerank"``.

Tables:
* class level: the 10k clean test images as queries against the 60k train gallery (R@1, mAP@R);
* street-to-shop: street views of the 10k test items against all 70k shop images (train + test):
  instance R@1/5/10/20 and mAP@R, class-level R@1, for the clean subset and the full set.

``--ablation`` instead trains short runs that differ in one setting (semi-hard / hard / random
triplets, online / offline mining, cross-domain / mixed sampling) and scores each on street-to-shop;
see ABLATIONS below. Results: OUT/results.json and OUT/results.md (plus per-protocol reports).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from lookalike.evaluation import evaluate
from lookalike.evaluation.datasets import class_level, street_to_shop
from lookalike.evaluation.report import markdown_table, write_report

#: name -> settings that differ from the ablation base recipe
ABLATIONS = {
    "semihard-online-xdomain": {},
    "hard-online-xdomain": {"mining": "hard"},
    "random-triplets-xdomain": {"mining": "random"},
    "offline-hard-xdomain": {"mining": "none", "offline_every": 50, "offline_fraction": 1.0},
    "offline+semihard-xdomain": {"offline_every": 50, "offline_fraction": 0.5},
    "semihard-online-mixed": {"cross_domain": False, "symmetric": False},
}
#: short runs on the full street views (difficulty 1, as in the protocol), on the current base: the
#: localizer, polarity and the 24-48-96-192 grid-pooled network of the default model, with smaller
#: batches
ABLATION_DIFFICULTY = 1.0
ABLATION_BASE = dict(
    widths=(24, 48, 96, 192),
    pool="grid",
    aug_size=(48, 192),
    difficulty=ABLATION_DIFFICULTY,
    val_difficulty=ABLATION_DIFFICULTY,
    identities_per_batch=64,
    street_per_identity=1,
    class_weight=0.0,
    val_every=10_000,
    val_items=500,
    val_distractors=1000,
    offline_pool=2048,
    localize=True,
    localizer_steps=1200,  # the localizer the recorded ablation table was measured with (the
    localizer_views=24000,  # recipe's default before session 14: half the default model's)
    polarity=True,
)


def machine() -> str:
    return os.environ.get("LOOKALIKE_BENCH_MACHINE", f"{os.cpu_count()}-core {platform.machine()} VM, no GPU")


def run_protocols(
    models: list[str],
    queries: int | None,
    out: Path,
    seed: int,
    command: str,
    distractors: int | None = None,
    rerank: int = 0,
    verifiers: tuple[str, ...] = ("default",),
    protocols: tuple[str, ...] = ("class-level", "street-to-shop"),
    views: tuple[int, ...] = (),
) -> dict:
    from lookalike.rerank import Reranker

    doc: dict = {}
    embedders = with_views(models, views)
    reranker = None
    if rerank:  # "+rerank": alignment and the verifier; "+align": alignment only
        reranker = {
            ("align" if v == "none" else "rerank" if v == "default" else f"rerank-{Path(v).stem}"): Reranker(
                depth=rerank, verifier=None if v == "none" else v
            )
            for v in verifiers
        }
    builders = {"class-level": class_level, "street-to-shop": street_to_shop}
    unknown = set(protocols) - set(builders)
    if unknown:
        raise SystemExit(f"unknown protocol(s) {sorted(unknown)}: choose from {sorted(builders)}")
    for name, build in ((p, builders[p]) for p in protocols):
        t0 = time.time()
        q, g = build(queries, seed, distractors)
        res = evaluate(embedders, q, g, protocol=name, rerank=reranker)
        write_report(res, out, q, g, title=f"{name} evaluation", command=command, seed=seed)
        doc[name] = res.to_dict() | {"wall_seconds": round(time.time() - t0, 1)}
        if name == "street-to-shop":
            _localizer_figures(models, q, g, out, seed)
        print(f"\n## {name} ({len(q)} queries vs {len(g)} gallery, {time.time() - t0:.0f} s)\n")
        print(markdown_table(res), flush=True)
    return doc


def with_views(models: list[str], views: tuple[int, ...]) -> list:
    """``models``, each model with a localizer once per entry of ``views``: its first N
    :data:`~lookalike.embedders._localizer.PHOTO_VIEWS` averaged per photo, named "<model> (N views)"."""
    from lookalike.embedders import load_embedder
    from lookalike.embedders._localizer import PHOTO_VIEWS

    if not views:
        return list(models)
    out: list = []
    for name in models:
        if getattr(load_embedder(name), "localizer", None) is None:
            out.append(name)
            continue
        for n in views:
            if not 1 <= n <= len(PHOTO_VIEWS):
                raise SystemExit(f"--views: {n} is not between 1 and {len(PHOTO_VIEWS)}")
            emb = load_embedder(name, cache=False)
            emb.views = PHOTO_VIEWS[:n]
            emb.name = f"{name} ({n} view{'s' if n > 1 else ''})"
            out.append(emb)
    return out


def _localizer_figures(models: list[str], q, g, out: Path, seed: int) -> None:
    """OUT/localizer-<model>.png for every model that finds the item before embedding it."""
    from lookalike.embedders import load_embedder
    from lookalike.evaluation.report import localizer_png

    row = {str(pid): i for i, pid in enumerate(g.ids)}
    for name in models:
        emb = load_embedder(name)
        path = out / f"localizer-{name.replace('/', '_').replace(':', '_')}.png"
        if localizer_png(emb, q, lambda pid: g.images[row[pid]], path, seed=seed):
            print(f"localizer picture: {path}")


def run_ablation(
    steps: int,
    queries: int,
    out: Path,
    seed: int,
    threads: int,
    only: list[str] | None,
    distractors: int | None = None,
) -> dict:
    from lookalike.train.metric import MetricRecipe, train_metric

    doc: dict = {}
    shared_localizer = out / "localizer.pt"
    q, g = street_to_shop(queries, seed, distractors, difficulty=ABLATION_DIFFICULTY)
    for name, change in ABLATIONS.items():
        if only and name not in only:
            continue
        recipe = MetricRecipe(**(ABLATION_BASE | change), steps=steps, seed=seed, threads=threads)
        t0 = time.time()
        run_dir = out / name
        ckpt = run_dir / "model.pt"
        # the localizer depends only on the seed and its own settings, which no variant changes, so
        # it is trained once (by the first variant) and reused: the same weights a retrain would give
        if shared_localizer.exists() and not (run_dir / "localizer.pt").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared_localizer, run_dir / "localizer.pt")
        if not ckpt.exists():
            train_metric(recipe=recipe, run_dir=run_dir, out=ckpt, progress=False)
        if not shared_localizer.exists() and (run_dir / "localizer.pt").exists():
            shutil.copy(run_dir / "localizer.pt", shared_localizer)
        train_s = time.time() - t0
        res = evaluate([f"trained:{ckpt}"], q, g, protocol="street-to-shop")
        r = next(iter(res.results.values()))
        doc[name] = {"change": change, "train_seconds": round(train_s, 1), "results": r}
        full = r["full"]
        print(
            f"{name}: R@1 {full['instance']['R@1']:.3f} R@20 {full['instance']['R@20']:.3f} "
            f"class R@1 {full['class']['R@1']:.3f} ({train_s:.0f} s training)",
            flush=True,
        )
    return doc


def ablation_table(doc: dict) -> str:
    lines = [
        "| variant | change | R@1 | R@5 | R@10 | R@20 | mAP@R | class R@1 | clean R@1 | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, d in doc.items():
        f, c = d["results"]["full"], d["results"]["clean"]
        i = f["instance"]
        change = ", ".join(f"{k}={v}" for k, v in d["change"].items()) or "(base)"
        lines.append(
            f"| {name} | {change} | {i['R@1']:.3f} | {i['R@5']:.3f} | {i['R@10']:.3f} | {i['R@20']:.3f} | "
            f"{i['mAP@R']:.3f} | {f['class']['R@1']:.3f} | {c['instance']['R@1']:.3f} | "
            f"{d['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="pixels,default")
    ap.add_argument("--queries", type=int, default=None, help="sample N queries (default: all 10k)")
    ap.add_argument("--out", default="runs/bench_metric")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ablation", action="store_true", help="train and compare the ablation variants")
    ap.add_argument("--steps", type=int, default=400, help="ablation: training steps per variant")
    ap.add_argument("--only", default="", help="ablation: comma-separated variant names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--distractors", type=int, default=None, help="smoke tests: sample N distractors only")
    ap.add_argument(
        "--rerank", type=int, default=0, help="also score every model with its first N results re-ranked"
    )
    ap.add_argument(
        "--verifier",
        default="default",
        help="with --rerank: comma-separated verifiers ('default', 'none' = alignment only, a path)",
    )
    ap.add_argument(
        "--views",
        default="",
        help="comma-separated crop counts per photo to compare (e.g. 1,9): each model with a localizer "
        "is scored once per count (default: the model's own setting)",
    )
    ap.add_argument(
        "--protocols", default="class-level,street-to-shop", help="comma-separated: which protocols to run"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(sys.argv)
    t0 = time.time()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.ablation:
        only = [x for x in args.only.split(",") if x] or None
        doc = run_ablation(
            args.steps, args.queries or 2000, out, args.seed, args.threads, only, args.distractors
        )
        table = ablation_table(doc)
    else:
        doc = run_protocols(
            args.models.split(","),
            args.queries,
            out,
            args.seed,
            command,
            args.distractors,
            args.rerank,
            tuple(args.verifier.split(",")),
            tuple(args.protocols.split(",")),
            tuple(int(v) for v in args.views.split(",") if v),
        )
        table = "\n\n".join(
            f"### {name}\n\n" + markdown_table(_as_result(d))
            for name, d in doc.items()
            if isinstance(d, dict)
        )
    wall = time.time() - t0
    meta = {"command": command, "date": started, "machine": machine(), "wall_seconds": round(wall, 1)}
    (out / "results.json").write_text(json.dumps(meta | {"results": doc}, indent=2))
    (out / "results.md").write_text(
        f"Command: `{command}`\n\nDate: {started}; machine: {meta['machine']}; "
        f"wall time {wall:.0f} s\n\n{table}\n"
    )
    print(f"\n{table}\n\nwall time {wall:.0f} s; results in {out}/results.md")


def _as_result(d: dict):
    from lookalike.evaluation.protocol import EvalResult

    r = EvalResult(d["protocol"], d["n_queries"], d["n_gallery"], d["n_clean"], tuple(d["ks"]))
    r.results = d["results"]
    return r


if __name__ == "__main__":
    main()
