"""Latent traversals: vary one latent dimension at a time around a product and see what it controls."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.errors import InvalidRequest
from lookalike.explore.draw import grid
from lookalike.explore.space import LatentSpace


@dataclass
class DimensionRank:
    dim: int
    #: mean absolute pixel change (0-1) between the decodes at the two ends of the range
    effect: float
    #: variance of the encoder mean over the catalog sample; > 0.01 = an active unit
    variance: float
    active: bool
    #: KL(q(z_d|x) || N(0,1)) averaged over validation images at training time (None for WAE)
    kl: float | None

    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "effect": round(self.effect, 5),
            "variance": round(self.variance, 5),
            "active": self.active,
            "kl": None if self.kl is None else round(self.kl, 4),
        }


@dataclass
class Traversal:
    product_id: str
    values: list[float]
    ranks: list[DimensionRank]  # in display order
    rows: list[list[Image.Image]] = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "product_id": self.product_id,
            "values": self.values,
            "dims": [r.to_dict() for r in self.ranks],
        }


def rank_dimensions(
    space: LatentSpace, z: np.ndarray, *, low: float = -3.0, high: float = 3.0, sample: int = 500
) -> list[DimensionRank]:
    """Every dimension ranked by how much it changes the decoded image around ``z`` (largest first)."""
    vae = space.require_decoder("traverse")
    d = vae.dim
    ends = np.repeat(z[None], 2 * d, axis=0).astype(np.float32)
    ends[np.arange(d) * 2, np.arange(d)] = low
    ends[np.arange(d) * 2 + 1, np.arange(d)] = high
    decoded = vae.decode_array(ends).reshape(d, 2, -1)
    effect = np.abs(decoded[:, 0] - decoded[:, 1]).mean(axis=1)
    ids = space.product_ids()
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ids), size=min(sample, len(ids)), replace=False)
    variance = space.latents([ids[i] for i in pick]).var(axis=0) if len(pick) > 1 else np.zeros(d)
    kl = vae.kl_per_dim()
    ranks = [
        DimensionRank(
            j,
            float(effect[j]),
            float(variance[j]),
            bool(variance[j] > 0.01),
            None if kl is None else float(kl[j]),
        )
        for j in range(d)
    ]
    return sorted(ranks, key=lambda r: -r.effect)


def traverse(
    space: LatentSpace,
    product_id: str,
    *,
    dims: list[int] | None = None,
    low: float = -3.0,
    high: float = 3.0,
    steps: int = 9,
    top: int = 8,
) -> Traversal:
    """Decode a grid: one row per dimension, the dimension swept from ``low`` to ``high`` with every other
    coordinate kept at the product's latent. Without ``dims``, the ``top`` most influential dimensions."""
    vae = space.require_decoder("traverse")
    if steps < 2:
        raise InvalidRequest(f"steps must be at least 2, got {steps}")
    if not low < high:
        raise InvalidRequest(f"range must go from low to high, got {low} {high}")
    z = space.latents([product_id])[0]
    ranks = rank_dimensions(space, z, low=low, high=high)
    if dims:
        bad = [d for d in dims if not 0 <= d < vae.dim]
        if bad:
            raise InvalidRequest(
                f"dimension(s) {bad} out of range: the model has {vae.dim} (0-{vae.dim - 1})"
            )
        by_dim = {r.dim: r for r in ranks}
        ranks = [by_dim[d] for d in dims]
    else:
        ranks = ranks[:top]
    values = np.linspace(low, high, steps)
    rows = []
    for r in ranks:
        zs = np.repeat(z[None], steps, axis=0).astype(np.float32)
        zs[:, r.dim] = values
        rows.append(vae.decode(zs))
    return Traversal(product_id, [round(float(v), 3) for v in values], ranks, rows)


def render_traversal(space: LatentSpace, t: Traversal, *, cell: int = 48) -> Image.Image:
    original = space.product_image(t.product_id)
    labels = []
    for r in t.ranks:
        kl = "" if r.kl is None else f" KL {r.kl:.2f}"
        labels.append(f"z{r.dim}{kl}{'' if r.active else ' (inactive)'}")
    rows = [[original if i == 0 else None] + row for i, row in enumerate(t.rows)]
    col_labels = ["product"] + [f"{v:+.1f}" for v in t.values]
    title = f"traversal around {t.product_id} ({space.short_name})"
    return grid(rows, cell=cell, row_labels=labels, col_labels=col_labels, title=title)


def save_traversal(space: LatentSpace, t: Traversal, out: str | Path) -> tuple[Path, Path]:
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png, js = out.with_suffix(".png"), out.with_suffix(".json")
    render_traversal(space, t).save(png, optimize=True)
    js.write_text(json.dumps({"model": space.model} | t.to_dict(), indent=2))
    return png, js
