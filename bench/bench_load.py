"""Load benchmark of the search service: N concurrent clients upload photos for D seconds.

The server is the real `lookalike serve` in its own process on 127.0.0.1; this process is the
load generator (asyncio + httpx, one connection per client). Photos are JPEGs of Fashion-MNIST
test items (enlarged 3x, re-encoded), so every request decodes, embeds and searches the whole
catalog. Reports requests/s, latency percentiles, errors (must be 0) and hit@1 (the photographed
item ranked first) as a sanity check.

    python bench/bench_load.py --db /tmp/lookalike-bench/bench.db --index --clients 32 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_photos(n: int) -> list[tuple[str, bytes]]:
    from lookalike.datasets.fashion_mnist import load_split

    images, _ = load_split("test")
    rng = np.random.default_rng(0)
    out = []
    for i in rng.choice(len(images), size=n, replace=False):
        buf = io.BytesIO()
        Image.fromarray(images[i]).resize((84, 84), Image.Resampling.BICUBIC).convert("RGB").save(
            buf, format="JPEG", quality=90
        )
        out.append((f"fmnist-test-{i}", buf.getvalue()))
    return out


def ensure_index(db: str, model: str) -> None:
    from lookalike.catalog import Catalog

    with Catalog.open(db) as cat:
        have = cat.stats()["models"].get(model, 0)
        if have >= 70_000:
            print(f"{db}: already indexed with {model} ({have} vectors)")
            return
        t0 = time.perf_counter()
        report = cat.index("fashion-mnist", model=model, progress=False)
        print(f"indexed {report.products_indexed} products with {model} in {time.perf_counter() - t0:.0f}s")


def start_server(db: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lookalike.cli", "serve", "--db", db, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{base}/readyz", timeout=60).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not become ready")


async def run_load(base: str, photos: list[tuple[str, bytes]], clients: int, duration: float, k: int) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    hits = 0
    stop_at = time.perf_counter() + duration

    async def client(c: int) -> None:
        nonlocal hits
        i = c
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            while time.perf_counter() < stop_at:
                pid, data = photos[i % len(photos)]
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await http.post(
                        "/v1/search", files={"image": (f"{pid}.jpg", data, "image/jpeg")}, data={"k": str(k)}
                    )
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    continue
                results = r.json()["results"]
                hits += bool(results) and results[0]["product_id"] == pid

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    ok = len(latencies) - sum(v for key, v in errors.items() if key.isdigit())
    return {
        "requests": len(latencies) + sum(v for key, v in errors.items() if not key.isdigit()),
        "ok": ok,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "wall_s": round(wall, 1),
        "req_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p90_ms": round(float(np.percentile(lat, 90)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "max_ms": round(float(lat.max()), 1) if len(lat) else None,
        "hit_at_1": round(hits / ok, 3) if ok else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", default="/tmp/lookalike-bench/bench.db")
    parser.add_argument(
        "--model", default="default", help="model to index with when --index (default: default)"
    )
    parser.add_argument(
        "--index", action="store_true", help="index the 70k Fashion-MNIST catalog first if needed"
    )
    parser.add_argument("--url", help="benchmark a server that is already running instead of starting one")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--json", help="also write the result to this JSON file")
    args = parser.parse_args()

    if args.index:
        ensure_index(args.db, args.model)
    photos = make_photos(args.photos)
    proc = None
    base = args.url
    if base is None:
        port = free_port()
        proc = start_server(args.db, port)
        base = f"http://127.0.0.1:{port}"
    try:
        stats = httpx.get(f"{base}/v1/stats", timeout=60).json()
        # warm up: model loaded, vector index built
        for _pid, data in photos[:5]:
            httpx.post(f"{base}/v1/search", files={"image": ("w.jpg", data, "image/jpeg")}, timeout=120)
        load_before = os.getloadavg()[0]
        result = asyncio.run(run_load(base, photos, args.clients, args.duration, args.k))
        result["load_average_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    result.update(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        catalog_products=stats["products"],
        model=stats["model"],
        clients=args.clients,
        duration_s=args.duration,
        k=args.k,
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    )
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
