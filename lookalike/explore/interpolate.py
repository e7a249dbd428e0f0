"""Walk the latent path between two products, decode each point and match it to the nearest real product."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.errors import InvalidRequest, ModelError
from lookalike.explore.draw import grid
from lookalike.explore.space import LatentSpace, Match

METHODS = ("linear", "spherical")


def lerp(a: np.ndarray, b: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return (1 - ts)[:, None] * a[None] + ts[:, None] * b[None]


def slerp(a: np.ndarray, b: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Spherical interpolation (White 2016): keeps points at a typical norm for a Gaussian prior, where a
    straight line would pass through the unlikely region near the origin."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return lerp(a, b, ts)
    omega = np.arccos(np.clip(np.dot(a / na, b / nb), -1.0, 1.0))
    if omega < 1e-6:
        return lerp(a, b, ts)
    so = np.sin(omega)
    return (np.sin((1 - ts) * omega) / so)[:, None] * a[None] + (np.sin(ts * omega) / so)[:, None] * b[None]


@dataclass
class Interpolation:
    a: str
    b: str
    method: str
    ts: list[float]
    latents: np.ndarray
    decoded: list[Image.Image] = field(repr=False)
    nearest: list[Match]

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "method": self.method,
            "points": [
                {"t": round(t, 4), "nearest": m.to_dict()} for t, m in zip(self.ts, self.nearest, strict=True)
            ],
        }


def interpolate(
    space: LatentSpace, a: str, b: str, *, steps: int = 8, method: str = "linear"
) -> Interpolation:
    """Decode ``steps`` points from product ``a`` to product ``b`` (both included) and find the nearest
    real product to each point."""
    vae = space.require_decoder("interpolate")
    if steps < 2:
        raise InvalidRequest(f"steps must be at least 2, got {steps}")
    if method not in METHODS:
        raise InvalidRequest(f"unknown interpolation {method!r} (linear or spherical)")
    if method == "spherical" and not vae.gaussian_prior:
        raise ModelError(f"spherical interpolation needs a Gaussian prior; {space.model} has none")
    za, zb = space.latents([a, b])
    ts = np.linspace(0.0, 1.0, steps)
    path = (slerp if method == "spherical" else lerp)(za, zb, ts).astype(np.float32)
    decoded = vae.decode(path)
    nearest = [m[0] for m in space.nearest(path, k=1)]
    return Interpolation(a, b, method, [float(t) for t in ts], path, decoded, nearest)


def render_strip(space: LatentSpace, results: list[Interpolation], *, cell: int = 56) -> Image.Image:
    """For each interpolation: a row of decoded points over a row of the nearest real products."""
    rows, labels, captions = [], [], []
    for r in results:
        rows.append(r.decoded)
        labels.append(f"{r.method} decoded")
        captions.append([f"t={t:.2f}" for t in r.ts])
        rows.append([space.product_image(m.product_id) for m in r.nearest])
        labels.append("nearest product")
        captions.append([m.product_id.rsplit("-", 1)[-1] for m in r.nearest])
    title = f"{results[0].a}  ->  {results[0].b}   ({space.short_name})"
    return grid(rows, cell=cell, row_labels=labels, captions=captions, title=title)


def save_interpolation(
    space: LatentSpace, results: list[Interpolation], out: str | Path
) -> tuple[Path, Path]:
    """Write OUT.png (the strip) and OUT.json (the nearest products per point)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png, js = out.with_suffix(".png"), out.with_suffix(".json")
    render_strip(space, results).save(png, optimize=True)
    js.write_text(json.dumps({"model": space.model, "paths": [r.to_dict() for r in results]}, indent=2))
    return png, js
