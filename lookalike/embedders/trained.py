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
    """Runs a network trained by ``lookalike train metric`` on ``device`` (see :mod:`lookalike.devices`).

    With a localizer, a photo's vector is the mean of its crops at :attr:`views` around the box found
    (:data:`~lookalike.embedders._localizer.PHOTO_VIEWS`); a clean catalog shot is its own box and is
    embedded once. Set ``views`` to one view, ``PHOTO_VIEWS[:1]``, for the box alone.
    """

    batch_size = 512
    #: images per forward pass (a batch of photos has ``len(views)`` crops each)
    forward_batch = 1024

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
        from lookalike.embedders._localizer import PHOTO_VIEWS

        self.views: tuple[tuple[float, float, float, float], ...] = PHOTO_VIEWS

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

        if self.localizer is None:
            return self._forward(preprocess_images(images, self.preprocess)), np.full(
                (len(images), 4), np.nan
            )
        # cut the item out of each photo, upright, at each view around its box, and average the
        # views; a clean catalog shot (the product centred on a plain background) is its own box,
        # skips the localizer and is cut once
        from lookalike.embedders._localizer import crop_views, locate_items

        images = _pil(images)
        with self._torch.inference_mode():
            boxes, clean = locate_items(self.localizer, images, self.refiner, **self.refine, clean_shots=True)
        size = int(self.preprocess.get("size", 32))
        box_alone = ((0.0, 0.0, 1.0, 0.0),)
        views = tuple(self.views) or box_alone
        crops: list[Image.Image] = []
        counts = np.empty(len(images), dtype=np.int64)
        for i, (img, box) in enumerate(zip(images, boxes, strict=True)):
            chosen = box_alone if clean[i] else views
            crops += crop_views(img, box, chosen, size)
            counts[i] = len(chosen)
        vecs = self._forward(preprocess_images(crops, self.preprocess))
        if len(crops) == len(images):
            return vecs, boxes
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return np.add.reduceat(vecs, starts, axis=0) / counts[:, None], boxes

    def _forward(self, x) -> np.ndarray:
        out = []
        with self._torch.inference_mode():
            for start in range(0, len(x), self.forward_batch):
                out.append(self.model(x[start : start + self.forward_batch].to(self.device)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)


def _pil(images: Sequence) -> list[Image.Image]:
    return [img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img)) for img in images]


def load(spec: str, device: str | None = None) -> Embedder:
    if not spec:
        raise ModelError("trained model needs a checkpoint path: trained:PATH")
    payload = load_checkpoint(spec, kind="metric")
    return TrainedEmbedder(spec, payload, device)
