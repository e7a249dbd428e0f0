"""Authenticity checks on Fashion-MNIST: genuine claims against impostor claims.

    python bench/bench_authenticity.py --items 10000 --photos 200 --out runs/bench_authenticity

Indexes ``--items`` test items into a fresh SQLite catalog per model. For ``--photos`` of them, a
street view (the street-to-shop protocol's rendering, 64-320 px) is checked three ways:

- genuine: against its own product; a "match" is a true accept;
- impostor: against the catalog product most like its own (``similar(k=1)``: the lookalike a
  counterfeiter would pass off); a "match" is a false accept;
- copy: the product's own photo, enlarged and re-encoded as PNG, against its product; "copy" is right.

Each model runs with ``rerank`` 0 and, for the default model, the ``--rerank`` depth too.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.catalog import Catalog
from lookalike.datasets.fashion_mnist import load_split
from lookalike.train.metric.augment import StreetViewAugment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--photos", type=int, default=200)
    ap.add_argument("--models", default="pixels,default")
    ap.add_argument("--rerank", type=int, default=100, help="the re-ranked run's depth (default model)")
    ap.add_argument("--out", default="runs/bench_authenticity")
    args = ap.parse_args()
    x, _ = load_split("test")
    aug = StreetViewAugment()
    picks = np.random.default_rng(0).choice(args.items, size=args.photos, replace=False)
    street = [aug(x[i], np.random.default_rng([7, int(i)])) for i in picks]
    copies = []
    for i in picks:
        buf = io.BytesIO()
        Image.fromarray(x[i]).resize((112, 112)).save(buf, format="PNG")
        copies.append(buf.getvalue())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            with Catalog.open(str(Path(tmp) / f"{model}.db")) as cat:
                cat.index("fashion-mnist:test", model=model, limit=args.items, progress=False)
                twins = [cat.similar(f"fmnist-test-{i}", k=1)[0].product_id for i in picks]
                for depth in [0, args.rerank] if model == "default" else [0]:
                    t0 = time.perf_counter()
                    genuine = impostor = copy_right = 0
                    for i, photo, twin, data in zip(picks, street, twins, copies, strict=True):
                        pid = f"fmnist-test-{i}"
                        genuine += cat.check_authenticity(pid, photo, rerank=depth).verdict == "match"
                        impostor += cat.check_authenticity(twin, photo, rerank=depth).verdict == "match"
                        copy_right += cat.check_authenticity(pid, data, rerank=depth).verdict == "copy"
                    n = len(picks)
                    row = {
                        "model": model,
                        "rerank": depth,
                        "true_accept": genuine / n,
                        "false_accept": impostor / n,
                        "copy_found": copy_right / n,
                        "ms_per_check": 1000 * (time.perf_counter() - t0) / (3 * n),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()}-core {platform.machine()}"
    print(when)
    print(
        "| model | rerank | genuine street photos accepted | impostor claims accepted | copies found |",
        end="",
    )
    print(" ms per check |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['rerank']} | {r['true_accept']:.3f} | {r['false_accept']:.3f} | "
            f"{r['copy_found']:.3f} | {r['ms_per_check']:.0f} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"when": when, "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
