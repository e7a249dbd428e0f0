"""Re-rank the first results of a photo search: alignment with the photo, and a learned verifier.

Nearest-neighbour search over embeddings is fast but coarse: a 128-number vector keeps the kind of
product and its rough shape, not every stripe and seam, so near-identical catalog items crowd the
top of the list. Instance-retrieval systems therefore verify their short-list geometrically
(spatial verification). :class:`Reranker` does this for a product photo:

1. the item is cut out of the photo (the embedder's localizer box, or the whole frame) with a
   margin, upright;
2. for each of the first ``shortlist`` candidates (by default 3 × ``depth``), the catalog image
   (grey, ``size``×``size``, softened by a blur like a photo's) is compared with the crop under a
   small grid of shifts, scales and rotations around the box, which absorbs the localizer's error;
3. the comparison is a per-colour-channel regression of the crop on the catalog image (and on a
   saturated copy of it, since a photographed product's opacity clips): the share of the crop's
   variance it explains, R², in 0..1. It ignores the product's colour, its polarity (light on dark or
   dark on light) and the photo's brightness and contrast, as the street photos vary in all four.
   A smooth field across the crop (a polynomial in x and y of degree ``background``: uneven
   lighting, a gradient background) is first taken out of both the crop and the catalog image, so
   R² is the share of what is left that the product explains;
4. the short-list is ordered by ``similarity + weight × alignment``: alignment is cheap (about
   0.1 ms a candidate), so it screens a longer list than the verifier can afford and brings up
   products the embedding ranked low;
5. a learned pair verifier (:mod:`lookalike.verifier`, a small CNN that sees the cut-out item and
   the catalog image together, about 1 ms a candidate) scores the best ``depth`` of them, when one
   is given (the shipped one is, by default), and they are ordered by ``similarity + weight ×
   alignment + verifier_weight × verifier``: each signal catches mistakes the others make (see
   BENCHMARKS.md, "Re-ranking").

Only the order of the first ``shortlist`` results changes; each result keeps its cosine similarity
and gains its ``alignment`` (and, for the verified ones, ``verifier``) score.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lookalike.errors import InvalidRequest
from lookalike.verifier import (
    DEFAULT_PATH,
    PRECISIONS,
    Verifier,
    catalog_inputs,
    load_verifier,
    photo_inputs,
)

#: the most candidates one query may align (each costs about 0.1 ms on 2 cores: bench/bench_rerank.py)
MAX_DEPTH = 1000
#: by default alignment screens this many times ``depth`` candidates (at most MAX_DEPTH)
SHORTLIST_FACTOR = 3
#: the highest degree of the smooth field alignment takes out (``Reranker.background``)
MAX_BACKGROUND = 8


def _grey_array(image) -> np.ndarray:
    """A PIL image or array of any mode -> float32 grey in 0..1."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr.astype(np.uint8)).convert("L"))
    return arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 or arr.max() > 1.0 else 1.0)


def _grey_u8(image) -> object:
    """A PIL image -> its grey uint8 array (what both signals start from); anything else as is."""
    if isinstance(image, Image.Image):
        return np.asarray(image if image.mode == "L" else image.convert("L"))
    return image


@dataclass
class Candidates:
    """A short-list's catalog images, prepared once: alignment templates and verifier inputs."""

    templates: torch.Tensor  # (n, 2, size*size)
    verifier: torch.Tensor | None = None  # (n, 1, 32, 32)

    def __len__(self) -> int:
        return len(self.templates)

    def __getitem__(self, rows) -> Candidates:
        return Candidates(self.templates[rows], None if self.verifier is None else self.verifier[rows])


@dataclass
class Reranker:
    """Re-rank a short-list by alignment with the photo and a learned verifier (see the module
    docstring).

    ``depth``: how many results the verifier checks; ``shortlist``: how many first results
    alignment screens before that (None: ``SHORTLIST_FACTOR`` × depth, at most ``MAX_DEPTH``; never
    fewer than ``depth``); ``weight``: the alignment's weight against the cosine similarity;
    ``verifier``: a verifier checkpoint path, ``"default"`` (the shipped one), a loaded
    :class:`~lookalike.verifier.Verifier`, or None (alignment only); ``verifier_weight``: the
    weight of its score (a logit); ``verifier_precision``: "fp32" or "bf16", for a verifier given
    by path or name; ``margin``: the crop around the item box, in box sides;
    ``size``: the side of the comparison grid in pixels; ``blur``: the gaussian sigma applied to
    catalog images, in grid pixels; ``saturation``: the gain of the clipped second regressor (0
    turns it off); ``background``: the degree of the smooth field (polynomial in x and y) taken out
    of the crop and the catalog image before comparing them (0: only their means); ``shifts``
    (fractions of the crop), ``scales`` and ``angles`` (degrees): the transforms tried.
    """

    depth: int = 100
    shortlist: int | None = None
    weight: float = 1.0
    verifier: str | Path | Verifier | None = "default"
    verifier_weight: float = 0.05
    verifier_precision: str = "fp32"
    margin: float = 1.15
    size: int = 28
    blur: float = 1.0
    saturation: float = 4.0
    background: int = 4
    shifts: Sequence[float] = (-0.12, -0.06, 0.0, 0.06, 0.12)
    scales: Sequence[float] = (0.9, 1.0, 1.1)
    angles: Sequence[float] = (-8.0, 0.0, 8.0)
    _grid: torch.Tensor | None = field(default=None, init=False, repr=False)
    _field: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= int(self.depth) <= MAX_DEPTH:
            raise InvalidRequest(f"rerank depth must be between 1 and {MAX_DEPTH}, got {self.depth}")
        if self.shortlist is not None and not int(self.depth) <= int(self.shortlist) <= MAX_DEPTH:
            raise InvalidRequest(
                f"rerank shortlist must be between depth ({self.depth}) and {MAX_DEPTH}, got {self.shortlist}"
            )
        if self.weight < 0 or not math.isfinite(self.weight):
            raise InvalidRequest(f"rerank weight must be a finite number >= 0, got {self.weight}")
        if not 8 <= int(self.size) <= 128:
            raise InvalidRequest(f"rerank size must be between 8 and 128 pixels, got {self.size}")
        if not 0 <= int(self.background) <= MAX_BACKGROUND:
            raise InvalidRequest(
                f"rerank background degree must be between 0 and {MAX_BACKGROUND}, got {self.background}"
            )
        if self.margin < 1.0:
            raise InvalidRequest(f"rerank margin must be at least 1.0, got {self.margin}")
        if self.verifier_weight < 0 or not math.isfinite(self.verifier_weight):
            raise InvalidRequest(f"verifier weight must be a finite number >= 0, got {self.verifier_weight}")
        if self.verifier_precision not in PRECISIONS:
            raise InvalidRequest(
                f"verifier precision must be one of {', '.join(PRECISIONS)}, got {self.verifier_precision!r}"
            )
        if self.verifier is not None and not isinstance(self.verifier, Verifier):
            path = DEFAULT_PATH if str(self.verifier) == "default" else Path(self.verifier)
            self.verifier = _cached_verifier(str(path), self.verifier_precision)

    @property
    def reach(self) -> int:
        """How many first results alignment screens (and :meth:`rerank` may re-order)."""
        if self.shortlist is not None:
            return int(self.shortlist)
        return max(int(self.depth), min(MAX_DEPTH, SHORTLIST_FACTOR * int(self.depth)))

    # -- both signals ---------------------------------------------------------------------------
    def prepare(self, images: Sequence) -> Candidates:
        """Catalog images -> what :meth:`rerank` compares the photo with. Each image is turned
        grey once, for both signals."""
        images = [_grey_u8(img) for img in images]
        templates = self.templates(images)
        ver = catalog_inputs(images) if self.verifier is not None else None
        return Candidates(templates, ver)

    def scores(self, photo: Image.Image, box, candidates: Candidates) -> dict[str, np.ndarray]:
        """``{"alignment": (n,), "verifier": (n,) or absent}`` for the photo against the candidates."""
        out = {"alignment": self.alignment(self.views(photo, box), candidates.templates)}
        if self.verifier is not None and candidates.verifier is not None:
            out["verifier"] = self.verifier.scores(
                photo_inputs([photo], np.asarray([box])), candidates.verifier
            )
        return out

    # -- the transforms -------------------------------------------------------------------------
    def grid(self) -> torch.Tensor:
        """Sampling grids (n_transforms, size, size, 2) over the margin crop, built once."""
        if self._grid is None:
            thetas = []
            for sc in self.scales:
                for deg in self.angles:
                    t = math.radians(deg)
                    c, s = math.cos(t) * sc / self.margin, math.sin(t) * sc / self.margin
                    for dx in self.shifts:
                        for dy in self.shifts:
                            thetas.append([[c, -s, dx], [s, c, dy]])
            theta = torch.tensor(thetas, dtype=torch.float32)
            self._grid = F.affine_grid(theta, [len(thetas), 3, self.size, self.size], align_corners=False)
        return self._grid

    def smooth_fields(self) -> torch.Tensor:
        """An orthonormal basis of the smooth fields alignment ignores: (m, size*size), the
        monomials x^i y^j with 0 < i + j <= ``background`` over the grid, made zero-mean; built
        once. Empty when ``background`` is 0."""
        if self._field is None:
            s, deg = int(self.size), int(self.background)
            yy, xx = torch.meshgrid(
                torch.linspace(-1, 1, s, dtype=torch.float64),
                torch.linspace(-1, 1, s, dtype=torch.float64),
                indexing="ij",
            )
            x, y = xx.reshape(-1), yy.reshape(-1)
            terms = [x**i * y**j for i in range(deg + 1) for j in range(deg + 1 - i) if i + j > 0]
            if terms:
                m = torch.stack(terms, dim=1)
                self._field = torch.linalg.qr(m - m.mean(dim=0))[0].T.float().contiguous()
            else:
                self._field = torch.zeros(0, s * s)
        return self._field

    def _without_field(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., size*size) less its projection on the smooth fields."""
        basis = self.smooth_fields()
        if not len(basis):
            return x
        return x - (x @ basis.T) @ basis

    # -- catalog side ---------------------------------------------------------------------------
    def templates(self, images: Sequence) -> torch.Tensor:
        """Catalog images -> (n, 2, size*size): zero-mean, unit-norm regressors (the grey image, and
        its saturated copy made orthogonal to it; zeros when ``saturation`` is 0), both without
        their smooth fields (``background``)."""
        n, s = len(images), int(self.size)
        grey = np.empty((n, s, s), dtype=np.float32)
        for i, img in enumerate(images):
            a = _grey_array(img)
            if a.shape != (s, s):
                a = np.asarray(
                    Image.fromarray(a, "F").resize((s, s), Image.Resampling.BILINEAR), dtype=np.float32
                )
            grey[i] = a
        t = torch.from_numpy(grey)
        if self.blur > 0 and n:
            from torchvision.transforms.functional import gaussian_blur

            radius = max(1, int(math.ceil(3 * self.blur)))
            t = gaussian_blur(t[:, None], kernel_size=2 * radius + 1, sigma=float(self.blur))[:, 0]
        t = t.reshape(n, s * s)
        base = _unit(self._without_field(t - t.mean(dim=1, keepdim=True)))
        if self.saturation > 0:
            sat = (t * self.saturation).clamp(max=1.0)
            sat = self._without_field(sat - sat.mean(dim=1, keepdim=True))
            sat = _unit(sat - (sat * base).sum(dim=1, keepdim=True) * base)
        else:
            sat = torch.zeros_like(base)
        return torch.stack([base, sat], dim=1)

    # -- photo side -----------------------------------------------------------------------------
    def views(self, photo: Image.Image, box: Sequence[float] | None = None) -> torch.Tensor:
        """The photo's item under every transform: (n_transforms, 3, size*size), zero-mean per
        channel and without its smooth field (``background``). ``box = (cx, cy, side, angle)`` in
        pixels; None = the whole frame."""
        from lookalike.embedders._localizer import crop_item

        photo = photo if photo.mode == "RGB" else photo.convert("RGB")
        if box is None or not np.all(np.isfinite(np.asarray(box, dtype=np.float64))):
            box = (photo.width / 2, photo.height / 2, float(max(photo.width, photo.height)), 0.0)
        cx, cy, side, angle = (float(v) for v in box)
        side_px = int(round(self.size * self.margin))
        crop = crop_item(photo, (cx, cy, side * self.margin, angle), side_px)
        x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        grid = self.grid()
        warped = F.grid_sample(
            x.expand(len(grid), -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        w = warped.reshape(len(grid), 3, -1)
        return self._without_field(w - w.mean(dim=2, keepdim=True))

    def alignment(self, views: torch.Tensor, templates: torch.Tensor) -> np.ndarray:
        """R² of the best transform for each template: (n_templates,) in 0..1."""
        if len(templates) == 0:
            return np.zeros(0, dtype=np.float32)
        var = (views**2).sum(dim=2)  # (T, 3)
        unit = views / var.sqrt().clamp_min(1e-6)[..., None]
        corr2 = torch.einsum("tcp,kp->tkc", unit, templates[:, 0]) ** 2
        if self.saturation > 0:
            corr2 = corr2 + torch.einsum("tcp,kp->tkc", unit, templates[:, 1]) ** 2
        r2 = (corr2 * var[:, None, :]).sum(dim=2) / var.sum(dim=1).clamp_min(1e-12)[:, None]
        return r2.max(dim=0).values.clamp(0.0, 1.0).numpy()

    def rerank(
        self,
        photo: Image.Image,
        candidates: Sequence,
        similarities: Sequence[float],
        box: Sequence[float] | None = None,
        prepared: Candidates | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Order of ``candidates`` (catalog images, best first by similarity) after verification,
        and each candidate's scores: ``(order, {"alignment": ..., "verifier": ...})``.

        The first :attr:`reach` candidates are aligned and ordered by similarity + alignment; the
        verifier re-orders the best ``depth`` of them, which come first. Scores are NaN where a
        stage did not look (past the short-list, or not among the verified); candidates past the
        short-list keep their places at the end. ``candidates`` (or ``prepared``) needs only the
        first :attr:`reach` images.
        """
        n = len(similarities)
        a = min(self.reach, n)
        d = min(int(self.depth), a)
        sims = np.asarray(similarities, dtype=np.float64)
        if prepared is None:
            prepared = self.prepare(list(candidates[:a]))
        if box is None:
            box = (np.nan,) * 4
        full = {"alignment": np.full(n, np.nan)}
        if self.verifier is not None:
            full["verifier"] = np.full(n, np.nan)
        if a == 0:
            return np.arange(n), full
        full["alignment"][:a] = self.alignment(self.views(photo, box), prepared.templates[:a])
        stage1 = sims[:a] + self.weight * full["alignment"][:a]
        order = np.argsort(-stage1, kind="stable")
        head = order[:d]
        if self.verifier is not None and prepared.verifier is not None:
            verified = self.verifier.scores(photo_inputs([photo], np.asarray([box])), prepared.verifier[head])
            full["verifier"][head] = verified
            head = head[np.argsort(-(stage1[head] + self.verifier_weight * verified), kind="stable")]
        return np.concatenate([head, order[d:], np.arange(a, n)]), full


@functools.lru_cache(maxsize=8)
def _cached_verifier(path: str, precision: str = "fp32") -> Verifier:
    return load_verifier(path, precision)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)
