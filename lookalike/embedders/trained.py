"""The ``trained`` family: a metric-learning checkpoint (``trained:PATH``) as an Embedder.

The checkpoint carries its own preprocessing (input size, grey/RGB, normalisation), so street photos
of any size and catalog images go through exactly the pipeline the model was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.checkpoint import load_checkpoint
from lookalike.embedders.base import Embedder, l2_normalise
from lookalike.errors import ModelError


class TrainedEmbedder(Embedder):
    """Runs a network trained by ``lookalike train metric`` on ``device`` (see :mod:`lookalike.devices`)."""

    batch_size = 512

    def __init__(self, path: str | Path, payload: dict, device: str | None = None):
        import torch

        from lookalike.devices import resolve_device
        from lookalike.embedders._metric_net import build_model

        self.path = Path(path)
        self.name = f"trained:{path}"
        self.arch = payload["arch"]
        self.preprocess = payload["preprocess"]
        self.recipe = payload.get("recipe", {})
        self.metrics = payload.get("metrics", {})
        self.model = build_model(self.arch)
        try:
            self.model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise ModelError(f"checkpoint {path} does not match its architecture: {exc}") from None
        self.device = resolve_device(device)
        self.model.eval().to(self.device)
        loc = (payload.get("extra") or {}).get("localizer")
        self.localizer = self.refiner = None
        self.refine = {}
        if loc:
            from lookalike.embedders._localizer import build_localizer

            try:
                self.localizer = build_localizer(loc["arch"], loc["state_dict"])
                ref = loc.get("refiner")
                if ref:
                    self.refiner = build_localizer(ref["arch"], ref["state_dict"])
                    self.refine = {"passes": int(ref["passes"]), "margin": float(ref["margin"])}
            except (KeyError, RuntimeError, TypeError, ValueError) as exc:
                raise ModelError(f"checkpoint {path} has a broken localizer: {exc}") from None
            self.localizer.to(self.device)
            if self.refiner is not None:
                self.refiner.to(self.device)
        self.dim = int(self.arch.get("dim", 128))
        self._torch = torch

    def locate(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The localizer's boxes (clean catalog shots: the whole frame); NaN rows without one."""
        if self.localizer is None or not len(images):
            return super().locate(images)
        from lookalike.embedders._localizer import find_items

        with self._torch.inference_mode():
            return find_items(self.localizer, _pil(images), self.refiner, **self.refine, clean_shots=True)

    def embed_and_locate(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        if self.localizer is None:
            return super().embed_and_locate(images)
        vecs, boxes = self._embed_located(images)
        return l2_normalise(vecs), boxes

    def _embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self._embed_located(images)[0]

    def _embed_located(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        from lookalike.embedders._metric_net import preprocess_images

        boxes = np.full((len(images), 4), np.nan)
        if self.localizer is not None:
            # cut the item out of each photo, upright, before embedding; a clean catalog shot (the
            # product centred on a plain background) is its own box and skips the localizer
            from lookalike.embedders._localizer import crop_items

            images = _pil(images)
            boxes = self.locate(images)
            images = crop_items(images, boxes, int(self.preprocess.get("size", 32)))
        x = preprocess_images(images, self.preprocess).to(self.device)
        with self._torch.inference_mode():
            return self.model(x).cpu().numpy(), boxes


def _pil(images: Sequence) -> list[Image.Image]:
    return [img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img)) for img in images]


def load(spec: str, device: str | None = None) -> Embedder:
    if not spec:
        raise ModelError("trained model needs a checkpoint path: trained:PATH")
    payload = load_checkpoint(spec, kind="metric")
    return TrainedEmbedder(spec, payload, device)
