"""Benchmark latent variable models on Fashion-MNIST: train on the train split, measure on test.

    .venv/bin/python bench/bench_vae.py --epochs 6 --threads 1 --channels 16,32 --out runs/bench_vae

For each model (VAE, beta-VAE beta=4, WAE-MMD) and latent size (16, 32) it records: reconstruction
MSE per pixel (0-1), active units, kNN (k=5) class accuracy of latent means (test vs train) next to
raw pixels, interpolation smoothness next to a pixel cross-fade, and MIG on synthetic factors
(rotation, scale, shift, brightness applied to test images). Results: OUT/results.json and a Markdown
table OUT/results.md. Models already trained in OUT are reused (delete OUT/<name> to retrain).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from lookalike.checkpoint import load_checkpoint
from lookalike.datasets.fashion_mnist import load_split
from lookalike.train.vae import VAETrainConfig, build_model, train_vae
from lookalike.train.vae.metrics import (
    active_units,
    dci,
    encode_means,
    interpolation_smoothness,
    knn_accuracy,
    mean_kl_per_dim,
    mutual_information_gap,
    reconstruction_mse,
    synthetic_factor_images,
)

MODELS = {
    "vae": {"model": "vae"},
    "beta4": {"model": "beta-vae", "beta": 4.0},
    "wae": {"model": "wae-mmd"},
    "beta-c": {"model": "beta-vae", "capacity": 25.0, "gamma": 100.0, "capacity_steps": 1000},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_vae")
    ap.add_argument("--models", default="vae,beta4,wae")
    ap.add_argument("--latents", default="16,32")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--channels", default="16,32", help="conv widths, one stride-2 layer each")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--train-limit", type=int, default=None, help="use only the first N train images")
    ap.add_argument("--factor-samples", type=int, default=5000)
    ap.add_argument("--table-only", action="store_true", help="only rewrite OUT/results.md from results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    x_train, y_train = load_split("train")
    x_test, y_test = load_split("test")
    if args.train_limit:
        x_train, y_train = x_train[: args.train_limit], y_train[: args.train_limit]
    factor_images, factor_levels, factor_names = synthetic_factor_images(x_test, n=args.factor_samples)
    if args.table_only:
        fill_missing(results, out, x_train, x_test, factor_images, factor_levels)
        results_path.write_text(json.dumps(results, indent=1))
        (out / "results.md").write_text(markdown_table(results))
        print(markdown_table(results))
        return

    if "pixels" not in results:
        t0 = time.monotonic()
        flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
        results["pixels"] = {
            "knn5": knn_accuracy(flat(x_train), y_train, flat(x_test), y_test),
            "seconds": round(time.monotonic() - t0, 1),
        }
        results_path.write_text(json.dumps(results, indent=1))
    print("pixels kNN", results["pixels"])

    fill_missing(results, out, x_train, x_test, factor_images, factor_levels)
    results_path.write_text(json.dumps(results, indent=1))

    for latent in [int(v) for v in args.latents.split(",")]:
        for key in args.models.split(","):
            name = f"{key}-z{latent}"
            run_dir = out / name
            ckpt = run_dir / "model.pt"
            if not ckpt.exists():
                config = VAETrainConfig(
                    latent_dim=latent,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    threads=args.threads,
                    channels=tuple(int(c) for c in args.channels.split(",")),
                    hidden=args.hidden,
                    data="fashion-mnist:train",
                    **MODELS[key],
                )
                t0 = time.monotonic()
                train_vae(
                    x_train, run_dir, config, progress=False, log=lambda s, n=name: print(n, s, flush=True)
                )
                train_seconds = time.monotonic() - t0
            else:
                train_seconds = load_checkpoint(ckpt)["metrics"].get("train_seconds")
            payload = load_checkpoint(ckpt, kind="vae")
            model = build_model(payload["arch"])
            model.load_state_dict(payload["state_dict"])
            model.eval()
            t0 = time.monotonic()
            mu_train = encode_means(model, x_train)
            mu_test = encode_means(model, x_test)
            kl = mean_kl_per_dim(model, x_test)
            row = {
                "model": MODELS[key],
                "latent_dim": latent,
                "epochs": payload["recipe"].get("epochs"),
                "train_seconds": round(float(train_seconds or 0), 1),
                "test_mse": reconstruction_mse(model, x_test),
                "active_units": active_units(mu_test),
                "knn5": knn_accuracy(mu_train, y_train, mu_test, y_test),
                "kl_total": None if kl is None else float(kl.sum()),
                "kl_per_dim": None if kl is None else [round(float(v), 5) for v in kl],
                "interpolation": interpolation_smoothness(model, x_test),
                "mig": mutual_information_gap(
                    factor_codes := encode_means(model, factor_images), factor_levels
                ),
                "dci": dci(factor_codes, factor_levels),
            }
            row["eval_seconds"] = round(time.monotonic() - t0, 1)
            results[name] = row
            results_path.write_text(json.dumps(results, indent=1))
            print(name, json.dumps(row), flush=True)

    results["_meta"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "factors": factor_names,
    }
    results_path.write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown_table(results))
    print(markdown_table(results))


def fill_missing(results: dict, out: Path, x_train, x_test, factor_images, factor_levels) -> None:
    """Add measurements introduced after some rows were recorded (KL per dimension, DCI) and the
    PCA-16 reference for the disentanglement scores."""
    if "pca16" not in results or "dci" not in results["pca16"]:
        from sklearn.decomposition import PCA

        sub = x_train[:20000]
        pca = PCA(16, random_state=0).fit(sub.reshape(len(sub), -1) / 255.0)
        codes = pca.transform(factor_images.reshape(len(factor_images), -1) / 255.0)
        results["pca16"] = mutual_information_gap(codes, factor_levels) | {"dci": dci(codes, factor_levels)}
    for name, row in results.items():
        if not isinstance(row, dict) or "latent_dim" not in row or ("kl_per_dim" in row and "dci" in row):
            continue
        payload = load_checkpoint(out / name / "model.pt", kind="vae")
        model = build_model(payload["arch"])
        model.load_state_dict(payload["state_dict"])
        model.eval()
        if "kl_per_dim" not in row:
            kl = mean_kl_per_dim(model, x_test)
            row["kl_per_dim"] = None if kl is None else [round(float(v), 5) for v in kl]
        if "dci" not in row:
            row["dci"] = dci(encode_means(model, factor_images), factor_levels)


def markdown_table(results: dict) -> str:
    lines = [
        "| model | z | epochs | train s | test MSE/pixel | active units | dims with KL > 0.1 | kNN@5 acc "
        "| KL (nats) | interp. mean step (max/mean) | MIG | DCI D / C / I |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fade = None
    for name, row in results.items():
        if not isinstance(row, dict) or "latent_dim" not in row:
            continue
        interp = row["interpolation"]
        fade = interp
        kl = "—" if row["kl_total"] is None else f"{row['kl_total']:.1f}"
        per_dim = row.get("kl_per_dim")
        informative = "—" if per_dim is None else f"{sum(v > 0.1 for v in per_dim)}/{row['latent_dim']}"
        lines.append(
            f"| {name.rsplit('-z', 1)[0]} | {row['latent_dim']} | {row['epochs']} "
            f"| {row['train_seconds']:.0f} "
            f"| {row['test_mse']:.4f} | {row['active_units']}/{row['latent_dim']} | {informative} "
            f"| {row['knn5']:.3f} | {kl} "
            f"| {interp['model_mean_step']:.4f} ({interp['model_max_over_mean']:.2f}) "
            f"| {row['mig']['mig']:.3f} | {_dci(row.get('dci'))} |"
        )
    if "pixels" in results:
        px = results["pixels"]["knn5"]
        step = f"{fade['crossfade_mean_step']:.4f} ({fade['crossfade_max_over_mean']:.2f})" if fade else "—"
        pca = results.get("pca16", {})
        mig = f"{pca['mig']:.3f} (PCA-16)" if "mig" in pca else "—"
        ref = f"{_dci(pca.get('dci'))} (PCA-16)"
        lines.append(
            f"| raw pixels / cross-fade | 784 | — | — | 0 | — | — | {px:.3f} | — | {step} | {mig} | {ref} |"
        )
    return "\n".join(lines) + "\n"


def _dci(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{d['disentanglement']:.3f} / {d['completeness']:.3f} / {d['informativeness']:.2f}"


if __name__ == "__main__":
    main()
