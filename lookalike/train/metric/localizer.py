"""Train the :class:`~lookalike.embedders._localizer.Localizer` on synthetic street views.

Every street view the augmentation renders comes with the ground truth of where the item is (its
centre, side and rotation), so the localizer learns by plain regression (smooth L1), without any
labelling. A share of the training thumbnails are clean catalog images, whose box is the whole
frame, so shop images go through the localizer unchanged. The views are rendered once, in parallel
processes, keyed by (seed, index), so a run is deterministic.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lookalike.embedders._localizer import (
    Localizer,
    decode_boxes,
    encode_boxes,
    thumbnail,
    thumbnails_to_tensor,
)
from lookalike.progress import progress_bar
from lookalike.train.metric.augment import StreetViewAugment


@dataclass
class LocalizerRecipe:
    views: int = 24000  # training thumbnails (street views + shop images)
    shop_fraction: float = 0.15
    steps: int = 1200
    batch: int = 128
    lr: float = 2e-3
    widths: tuple[int, ...] = (16, 32, 64, 128, 128)
    aug_size: tuple[int, int] = (48, 192)
    val_views: int = 1000
    seed: int = 0
    workers: int = 2


def _as_image(item) -> Image.Image:
    return item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item, dtype=np.uint8))


_WORK: dict = {}


def _render_chunk(args) -> tuple[np.ndarray, np.ndarray]:
    """Render thumbnails and regression targets for ``(indices, items, seed, shop_flags)``."""
    indices, items, seed, shop, aug_size = args
    images = _WORK["images"]
    aug = StreetViewAugment(size=tuple(aug_size))
    thumbs = np.empty((len(indices), 64, 64, 3), dtype=np.uint8)
    targets = np.empty((len(indices), 5), dtype=np.float32)
    for j, (i, item, is_shop) in enumerate(zip(indices, items, shop, strict=True)):
        img = _as_image(images[int(item)])
        if is_shop:
            w, h = img.size
            box, size, photo = (w / 2, h / 2, float(max(w, h)), 0.0), (w, h), img
        else:
            photo = aug(img, np.random.default_rng([seed, 7, int(i)]))
            box, size = aug.last_params["box"], aug.last_params["size"]
        thumbs[j] = thumbnail(photo)
        targets[j] = encode_boxes(np.array(box), np.array(size))[0]
    return thumbs, targets


def render_views(
    images, items: np.ndarray, seed: int, shop_fraction: float, aug_size, workers: int, desc: str
) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails (n, 64, 64, 3) and targets (n, 5) for street views (or shop images) of ``items``."""
    rng = np.random.default_rng([seed, 8])
    shop = rng.random(len(items)) < shop_fraction
    idx = np.arange(len(items))
    chunks = [
        (idx[s : s + 500], items[s : s + 500], seed, shop[s : s + 500], tuple(aug_size))
        for s in range(0, len(items), 500)
    ]
    _WORK["images"] = images
    thumbs, targets = [], []
    with progress_bar(desc, total=len(items)) as advance:
        if workers > 1 and len(chunks) > 1 and "fork" in _start_methods():
            import multiprocessing

            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                for t, y in ex.map(_render_chunk, chunks):
                    thumbs.append(t)
                    targets.append(y)
                    advance(len(t))
        else:
            for c in chunks:
                t, y = _render_chunk(c)
                thumbs.append(t)
                targets.append(y)
                advance(len(t))
    _WORK.clear()
    return np.concatenate(thumbs), np.concatenate(targets)


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods() if os.name == "posix" else []


def box_errors(pred: np.ndarray, target: np.ndarray) -> dict:
    """Mean centre error and side error (both relative to the true side) and angle error (degrees)."""
    size = np.ones((len(pred), 2))  # errors are scale-free: decode both in a unit frame
    p, t = decode_boxes(pred, size), decode_boxes(target, size)
    centre = np.hypot(p[:, 0] - t[:, 0], p[:, 1] - t[:, 1]) / t[:, 2]
    side = np.abs(np.log(p[:, 2] / t[:, 2]))
    angle = np.abs(p[:, 3] - t[:, 3])
    return {
        "centre_err": float(centre.mean()),
        "side_err": float(side.mean()),
        "angle_err": float(angle.mean()),
    }


def train_localizer(
    images, train_items: np.ndarray, val_items: np.ndarray, recipe: LocalizerRecipe | None = None, log=None
) -> tuple[Localizer, dict]:
    """Train on views of ``train_items``; report box errors on views of ``val_items`` (never trained on)."""
    r = recipe or LocalizerRecipe()
    rng = np.random.default_rng([r.seed, 6])
    items = rng.choice(train_items, size=r.views, replace=len(train_items) < r.views)
    x, y = render_views(
        images, items, r.seed, r.shop_fraction, r.aug_size, r.workers, "localizer: rendering views"
    )
    vitems = np.random.default_rng([r.seed, 9]).choice(val_items, size=min(r.val_views, len(val_items)))
    vx, vy = render_views(
        images, vitems, r.seed + 10**6, 0.0, r.aug_size, r.workers, "localizer: validation views"
    )

    torch.manual_seed(r.seed)
    model = Localizer(r.widths)
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=1e-4)
    loss_fn = torch.nn.SmoothL1Loss(beta=0.05)
    vxt = thumbnails_to_tensor(vx)

    def validate() -> dict:
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(vxt[s : s + 512]) for s in range(0, len(vxt), 512)]).numpy()
        model.train()
        return box_errors(pred, vy)

    start = validate()
    model.train()
    with progress_bar("localizer: training", total=r.steps) as advance:
        for step in range(r.steps):
            lr = r.lr * 0.5 * (1 + math.cos(math.pi * step / r.steps)) * min(1.0, (step + 1) / 50)
            for g in opt.param_groups:
                g["lr"] = lr
            b = np.random.default_rng([r.seed, 11, step]).integers(0, len(x), size=r.batch)
            pred = model(thumbnails_to_tensor(x[b]))
            loss = loss_fn(pred, torch.from_numpy(y[b]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            advance(1, loss=float(loss.item()))
    metrics = validate()
    metrics.update({f"untrained_{k}": v for k, v in start.items()})
    if log:
        log(
            "localizer: centre error {centre_err:.3f} side, side error {side_err:.3f} (log), "
            "angle error {angle_err:.1f}° on held-out views".format(**metrics)
        )
    model.eval()
    return model, metrics
