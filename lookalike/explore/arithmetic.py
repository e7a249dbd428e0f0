"""Latent arithmetic: "A + B - C" on encoder means, decoded, with the nearest real products."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.errors import InvalidRequest
from lookalike.explore.draw import grid
from lookalike.explore.space import LatentSpace, Match

# operators need spaces around them: product ids themselves may contain '-' (fmnist-train-12)
_OP = re.compile(r"\s+([+-])\s+")


def parse_expression(expression: str) -> list[tuple[int, str]]:
    """``"A + B - C"`` -> ``[(+1, "A"), (+1, "B"), (-1, "C")]``. Operators must be surrounded by spaces."""
    text = expression.strip()
    if not text:
        raise InvalidRequest("empty expression: write product ids joined by ' + ' and ' - '")
    sign = 1
    if text[:2] in ("- ", "+ "):
        sign, text = (-1 if text[0] == "-" else 1), text[2:].strip()
    parts = _OP.split(text)
    terms = [(sign, parts[0].strip())]
    for op, pid in zip(parts[1::2], parts[2::2], strict=True):
        terms.append((1 if op == "+" else -1, pid.strip()))
    for _, pid in terms:
        if not pid or " " in pid:
            raise InvalidRequest(
                f"cannot read {expression!r}: write product ids joined by ' + ' and ' - ' "
                "(spaces around operators)"
            )
    return terms


@dataclass
class ArithmeticResult:
    expression: str
    terms: list[tuple[int, str]]
    latent: np.ndarray
    decoded: Image.Image = field(repr=False)
    nearest: list[Match]

    def to_dict(self) -> dict:
        return {
            "expression": self.expression,
            "terms": [{"sign": "+" if s > 0 else "-", "product_id": p} for s, p in self.terms],
            "nearest": [m.to_dict() for m in self.nearest],
        }


def latent_arithmetic(space: LatentSpace, expression: str, *, k: int = 5) -> ArithmeticResult:
    """Sum the signed latents of the products in ``expression``, decode, and find the ``k`` nearest real
    products (the operands themselves excluded)."""
    vae = space.require_decoder("arithmetic")
    if not 1 <= k <= 100:
        raise InvalidRequest(f"k must be between 1 and 100, got {k}")
    terms = parse_expression(expression)
    z = space.latents([pid for _, pid in terms])
    result = (np.array([s for s, _ in terms], dtype=np.float32)[:, None] * z).sum(axis=0)
    decoded = vae.decode(result[None])[0]
    nearest = space.nearest(result[None], k=k, exclude={pid for _, pid in terms})[0]
    return ArithmeticResult(expression, terms, result, decoded, nearest)


def render_arithmetic(space: LatentSpace, r: ArithmeticResult, *, cell: int = 64) -> Image.Image:
    operands = [space.product_image(pid) for _, pid in r.terms]
    top_caps = [
        ("" if i == 0 and s > 0 else ("+ " if s > 0 else "- ")) + pid.rsplit("-", 1)[-1]
        for i, (s, pid) in enumerate(r.terms)
    ] + ["= decoded"]
    near = [space.product_image(m.product_id) for m in r.nearest]
    rows = [operands + [r.decoded], near]
    captions = [top_caps, [m.product_id.rsplit("-", 1)[-1] for m in r.nearest]]
    return grid(rows, cell=cell, captions=captions, row_labels=["expression", "nearest"], title=r.expression)


def save_arithmetic(space: LatentSpace, r: ArithmeticResult, out: str | Path) -> tuple[Path, Path]:
    import json

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png, js = out.with_suffix(".png"), out.with_suffix(".json")
    render_arithmetic(space, r).save(png, optimize=True)
    js.write_text(json.dumps({"model": space.model} | r.to_dict(), indent=2))
    return png, js
