"""A learned pair verifier: does this catalog image show the product in this photo?

The embedding compares a photo and a catalog image through two separate 128-number summaries. A
*verifier* (a cross-encoder, in retrieval terms) looks at both at once: the item cut out of the
photo (RGB, upright, at the localizer's box with a small margin) and the catalog image (grey, with
the same margin) are stacked as four channels of one 32×32 input, and a small CNN scores the pair.
It can compare stripes, seams and prints where they are, which a pooled vector loses; it is too
slow to run over a whole catalog, so it re-scores a short-list (:mod:`lookalike.rerank`).

It is trained by ``lookalike train verifier`` (:mod:`lookalike.train.metric.verifier`): street
views of catalog products against their own catalog image and hard negatives from the embedding's
own short-list, a listwise cross-entropy. The shipped one (``lookalike/models/verifier.pt``) was
trained on Fashion-MNIST's train split for the default model; its exact command is in
BENCHMARKS.md.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lookalike.errors import ModelError

#: the pair's side in pixels, and the margin around the item box (a 28-px item in a 32-px frame)
SIZE = 32
MARGIN = SIZE / 28
#: how scores may be computed (:class:`Verifier`)
PRECISIONS = ("fp32", "bf16")
#: the shipped verifier (trained for the default model)
DEFAULT_PATH = Path(__file__).resolve().parent / "models" / "verifier.pt"


class PairVerifier(nn.Module):
    """(photo crop (n, 3, 32, 32), catalog image (n, 1, 32, 32)) -> match logit (n,)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), hidden: int = 256):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]

        layers: list[nn.Module] = []
        c = 4
        for w in widths:
            layers += block(c, w) + block(w, w) + [nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        side = SIZE // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )
        self.widths = tuple(widths)
        self.hidden = hidden

    def forward(self, photo: torch.Tensor, catalog: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(torch.cat([photo, catalog], dim=1)))[:, 0]


def _standardise(a: np.ndarray, axes: tuple) -> np.ndarray:
    return (a - a.mean(axis=axes, keepdims=True)) / (a.std(axis=axes, keepdims=True) + 0.02)


def photo_inputs(photos: Sequence[Image.Image], boxes: np.ndarray) -> torch.Tensor:
    """The item of each photo at its box ``(cx, cy, side, angle)`` (NaN: the whole frame), with the
    verifier's margin, upright, RGB, standardised per channel: (n, 3, 32, 32)."""
    from lookalike.embedders._localizer import crop_item

    out = np.empty((len(photos), 3, SIZE, SIZE), dtype=np.float32)
    for i, (photo, box) in enumerate(
        zip(photos, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), strict=True)
    ):
        photo = photo if photo.mode == "RGB" else photo.convert("RGB")
        if not np.isfinite(box).all():
            box = (photo.width / 2, photo.height / 2, float(max(photo.width, photo.height)), 0.0)
        cx, cy, side, angle = (float(v) for v in box)
        crop = np.asarray(crop_item(photo, (cx, cy, side * MARGIN, angle), SIZE), dtype=np.float32) / 255.0
        out[i] = crop.transpose(2, 0, 1)
    return torch.from_numpy(_standardise(out, (2, 3)))


def catalog_inputs(images: Sequence) -> torch.Tensor:
    """Catalog images (PIL or arrays, any size) -> grey, 28×28 inside a 32×32 black frame,
    standardised: (n, 1, 32, 32)."""
    inner = SIZE - 2 * round((SIZE - 28) / 2)
    pad = (SIZE - inner) // 2
    out = np.zeros((len(images), 1, SIZE, SIZE), dtype=np.float32)
    for i, img in enumerate(images):
        if not isinstance(img, Image.Image):
            arr = np.asarray(img, dtype=np.uint8)
            if arr.shape == (inner, inner):  # already grey at the right size: no PIL round trip
                out[i, 0, pad : pad + inner, pad : pad + inner] = arr / np.float32(255.0)
                continue
            img = Image.fromarray(arr)
        img = img.convert("L")
        if img.size != (inner, inner):
            img = img.resize((inner, inner), Image.Resampling.BILINEAR)
        out[i, 0, pad : pad + inner, pad : pad + inner] = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(_standardise(out, (2, 3)))


def inference_copy(model: PairVerifier) -> PairVerifier:
    """A copy of ``model`` for scoring only: each batch norm folded into the convolution before it
    (torch's ``fuse_conv_bn_eval``) and the weights in channels-last layout. It gives the same
    logits to float32 rounding (about 1e-5) in about half the time on CPU (BENCHMARKS.md)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fast = copy.deepcopy(model).eval()
    layers, fused = list(fast.features), []
    i = 0
    while i < len(layers):
        if (
            isinstance(layers[i], nn.Conv2d)
            and i + 1 < len(layers)
            and isinstance(layers[i + 1], nn.BatchNorm2d)
        ):
            fused.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
            i += 2
        else:
            fused.append(layers[i])
            i += 1
    fast.features = nn.Sequential(*fused)
    return fast.to(memory_format=torch.channels_last)


class Verifier:
    """A loaded verifier: ``scores(photo_input, catalog_inputs) -> logits``.

    ``model`` keeps the trained network as it is (it is what :meth:`save` writes); scoring runs on
    a folded, channels-last copy made when the verifier is built (:func:`inference_copy`), so
    change ``model``'s weights through a new ``Verifier``.

    ``precision="bf16"`` scores in bfloat16 autocast: about twice as fast again on CPUs with native
    bfloat16 (AVX512-BF16, AMX), possibly slower elsewhere; logits move by up to about 0.1
    (their spread is about 2).
    """

    def __init__(
        self,
        model: PairVerifier,
        path: str | Path = "",
        recipe: dict | None = None,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise ModelError(f"verifier precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.model = model.eval()
        self.path = str(path)
        self.recipe = recipe or {}
        self.precision = precision
        self._fast = inference_copy(self.model)

    @torch.inference_mode()
    def scores(self, photo: torch.Tensor, catalog: torch.Tensor, batch: int = 128) -> np.ndarray:
        """One photo input (1, 3, 32, 32) against n catalog inputs -> (n,) logits."""
        out = []
        cl = torch.channels_last
        photo = photo.contiguous(memory_format=cl)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for s in range(0, len(catalog), batch):
                c = catalog[s : s + batch].contiguous(memory_format=cl)
                out.append(self._fast(photo.expand(len(c), -1, -1, -1), c).float())
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    def save(self, path: str | Path, metrics: dict | None = None) -> Path:
        from lookalike.checkpoint import save_checkpoint

        return save_checkpoint(
            path,
            kind="verifier",
            state_dict=self.model.state_dict(),
            arch={"widths": list(self.model.widths), "hidden": self.model.hidden},
            preprocess={"size": SIZE, "margin": MARGIN},
            recipe=self.recipe,
            metrics=metrics,
            half=True,
        )


def load_verifier(path: str | Path | None = None, precision: str = "fp32") -> Verifier:
    """A verifier checkpoint (default: the shipped one), scoring in ``precision`` (:class:`Verifier`)."""
    from lookalike.checkpoint import load_checkpoint

    path = Path(path) if path else DEFAULT_PATH
    payload = load_checkpoint(path, kind="verifier")
    arch = payload.get("arch", {})
    model = PairVerifier(tuple(arch.get("widths", (32, 64, 128))), int(arch.get("hidden", 256)))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ModelError(f"verifier {path} does not match its architecture: {exc}") from None
    return Verifier(model, path, payload.get("recipe"), precision)
