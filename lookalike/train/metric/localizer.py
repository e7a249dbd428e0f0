"""Train the :class:`~lookalike.embedders._localizer.Localizer` on synthetic street views.

Every street view the augmentation renders comes with the ground truth of where the item is (its
centre, side and rotation), so the localizer learns by plain regression (smooth L1), without any
labelling. A share of the training thumbnails are clean catalog images, whose box is the whole
frame, so shop images go through the localizer unchanged. The views are rendered once, in parallel
processes, keyed by (seed, index), so a run is deterministic.

The refiner (``refine=True``) is trained the same way on a second kind of input: a crop around a box
that is off by about the localizer's own error (the true box, jittered), enlarged by the refine
margin and turned upright; its target is the true box in that crop's pixels.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from lookalike.devices import module_device
from lookalike.embedders._localizer import (
    INPUT_SIZE,
    REFINE_MARGIN,
    Localizer,
    boxes_in_frame,
    decode_boxes,
    encode_boxes,
    predict_boxes,
    refine_boxes,
    refine_crop,
    thumbnail,
    thumbnails_to_tensor,
)
from lookalike.progress import progress_bar
from lookalike.train.metric.augment import StreetViewAugment


@dataclass
class LocalizerRecipe:
    views: int = 48000  # training thumbnails (street views + shop images)
    shop_fraction: float = 0.15
    steps: int = 2400
    batch: int = 128
    lr: float = 2e-3
    widths: tuple[int, ...] = (16, 32, 64, 128, 128)
    aug_size: tuple[int, int] = (48, 192)
    val_views: int = 1000
    seed: int = 0
    workers: int = 2
    refine: bool = True  # also train a refiner that looks again around the first box
    refine_steps: int = 2400
    refine_views: int = 48000
    refine_margin: float = REFINE_MARGIN
    refine_passes: int = 2
    #: arithmetic of the training passes: "fp32", or "bf16" (bfloat16 autocast, channels-last; the
    #: weights, optimiser and loss stay float32): about half the time a step on CPUs with native
    #: bfloat16 (BENCHMARKS.md, "A better localizer for the same minutes")
    precision: str = "fp32"


#: offsets on the recipe's seed that seed torch before the localizer's and the refiner's first weights
LOCALIZER_SEED, REFINER_SEED = 11, 13


def _as_image(item) -> Image.Image:
    return item if isinstance(item, Image.Image) else Image.fromarray(np.asarray(item, dtype=np.uint8))


_WORK: dict = {}


def _view(images, item: int, is_shop: bool, aug: StreetViewAugment, rng: np.random.Generator):
    """A street view of ``item`` (or its shop image) with the item's true box."""
    img = _as_image(images[int(item)])
    if is_shop:
        w, h = img.size
        return img, (w / 2, h / 2, float(max(w, h)), 0.0)
    photo = aug(img, rng)
    return photo, aug.last_params["box"]


def jitter_box(box, rng: np.random.Generator) -> tuple:
    """A box off by about the localizer's error (or less: the error left after a refinement pass)."""
    cx, cy, side, angle = box
    j = rng.uniform(0.3, 1.3)
    return (
        cx + rng.normal(0, 0.09 * j) * side,
        cy + rng.normal(0, 0.09 * j) * side,
        side * float(np.exp(rng.normal(0, 0.13 * j))),
        angle + rng.normal(0, 6.0 * j),
    )


def _render_chunk(args) -> tuple[np.ndarray, np.ndarray]:
    """Render inputs and regression targets for ``(indices, items, seed, shop_flags, aug_size, margin)``:
    localizer thumbnails (``margin`` None) or refiner crops around jittered boxes."""
    indices, items, seed, shop, aug_size, margin = args
    images = _WORK["images"]
    aug = StreetViewAugment(size=tuple(aug_size))
    thumbs = np.empty((len(indices), INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    targets = np.empty((len(indices), 5), dtype=np.float32)
    for j, (i, item, is_shop) in enumerate(zip(indices, items, shop, strict=True)):
        rng = np.random.default_rng([seed, 7, int(i)])
        photo, box = _view(images, item, is_shop, aug, rng)
        if margin is None:
            thumbs[j] = thumbnail(photo)
            targets[j] = encode_boxes(np.array(box), np.array(photo.size))[0]
        else:
            frame = jitter_box(box, rng)
            thumbs[j] = np.asarray(refine_crop(photo, frame, margin))
            inside = boxes_in_frame(np.array(box), np.array(frame), margin, INPUT_SIZE)
            targets[j] = encode_boxes(inside, np.array([INPUT_SIZE, INPUT_SIZE]))[0]
    return thumbs, targets


def render_views(
    images,
    items: np.ndarray,
    seed: int,
    shop_fraction: float,
    aug_size,
    workers: int,
    desc: str,
    margin: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, 64, 64, 3) and targets (n, 5) for street views (or shop images) of ``items``: the
    localizer's thumbnails, or with ``margin`` the refiner's crops around jittered boxes."""
    rng = np.random.default_rng([seed, 8])
    shop = rng.random(len(items)) < shop_fraction
    idx = np.arange(len(items))
    chunks = [
        (idx[s : s + 500], items[s : s + 500], seed, shop[s : s + 500], tuple(aug_size), margin)
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


def photo_box_errors(pred: np.ndarray, true: np.ndarray) -> dict:
    """:func:`box_errors` for photo boxes ``(cx, cy, side, angle)`` in pixels."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return {
        "centre_err": float((np.hypot(p[:, 0] - t[:, 0], p[:, 1] - t[:, 1]) / t[:, 2]).mean()),
        "side_err": float(np.abs(np.log(p[:, 2] / t[:, 2])).mean()),
        "angle_err": float(np.abs(p[:, 3] - t[:, 3]).mean()),
    }


def _fit(
    x: np.ndarray, y: np.ndarray, r: LocalizerRecipe, steps: int, seed: tuple, desc: str, device=None
) -> Localizer:
    """Smooth-L1 regression of the box parameters, AdamW with warm-up and a cosine schedule."""
    if r.precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown localizer precision {r.precision!r} (choose from fp32, bf16)")
    torch.manual_seed(r.seed + seed[0])
    model = Localizer(r.widths).to(device or "cpu")
    fast = r.precision == "bf16"
    if fast:
        model = model.to(memory_format=torch.channels_last)
    dev_type = torch.device(device or "cpu").type
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=1e-4)
    loss_fn = torch.nn.SmoothL1Loss(beta=0.05)
    model.train()
    with progress_bar(desc, total=steps) as advance:
        for step in range(steps):
            lr = r.lr * 0.5 * (1 + math.cos(math.pi * step / steps)) * min(1.0, (step + 1) / 50)
            for g in opt.param_groups:
                g["lr"] = lr
            b = np.random.default_rng([r.seed, *seed, step]).integers(0, len(x), size=r.batch)
            inputs = thumbnails_to_tensor(x[b]).to(device or "cpu")
            if fast:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=fast):
                pred = model(inputs)
            loss = loss_fn(pred.float(), torch.from_numpy(y[b]).to(pred.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            advance(1, loss=float(loss.item()))
    model.eval()
    return model.to(memory_format=torch.contiguous_format)


def replay_rng(recipe: LocalizerRecipe) -> None:
    """Leave torch's global RNG where training the localizer (and its refiner) leaves it.

    Only :func:`_fit` draws from it: it seeds it and draws the network's first weights; the last
    network trained is the refiner's (or the localizer's, without one). A run that loads both from
    an interrupted run calls this, so the embedding network starts from the same weights as in a
    run that trained them.
    """
    torch.manual_seed(recipe.seed + (REFINER_SEED if recipe.refine else LOCALIZER_SEED))
    Localizer(recipe.widths)


def same_recipe(saved: dict, recipe: LocalizerRecipe) -> bool:
    """Whether a saved localizer's recipe (``asdict`` of :class:`LocalizerRecipe`) trains what
    ``recipe`` trains: every setting but the render processes (older files lack ``precision``)."""
    want = json.loads(json.dumps(asdict(recipe), default=list))
    have = {"precision": "fp32"} | dict(saved)
    return all(have.get(k) == v for k, v in want.items() if k != "workers")


def train_localizer(
    images,
    train_items: np.ndarray,
    val_items: np.ndarray,
    recipe: LocalizerRecipe | None = None,
    log=None,
    device=None,
) -> tuple[Localizer, dict]:
    """Train on views of ``train_items`` (on ``device``, default CPU); report box errors on views
    of ``val_items`` (never trained on)."""
    r = recipe or LocalizerRecipe()
    rng = np.random.default_rng([r.seed, 6])
    items = rng.choice(train_items, size=r.views, replace=len(train_items) < r.views)
    x, y = render_views(
        images, items, r.seed, r.shop_fraction, r.aug_size, r.workers, "localizer: rendering views"
    )
    vitems = _val_items(val_items, r)
    vx, vy = render_views(
        images, vitems, r.seed + 10**6, 0.0, r.aug_size, r.workers, "localizer: validation views"
    )
    vxt = thumbnails_to_tensor(vx)

    def validate(model: Localizer) -> dict:
        model.eval()
        dev = module_device(model)
        with torch.no_grad():
            pred = torch.cat([model(vxt[s : s + 512].to(dev)).cpu() for s in range(0, len(vxt), 512)]).numpy()
        return box_errors(pred, vy)

    torch.manual_seed(r.seed)
    start = validate(Localizer(r.widths))
    model = _fit(x, y, r, r.steps, (LOCALIZER_SEED,), "localizer: training", device)
    metrics = validate(model)
    metrics.update({f"untrained_{k}": v for k, v in start.items()})
    if log:
        log(
            "localizer: centre error {centre_err:.3f} side, side error {side_err:.3f} (log), "
            "angle error {angle_err:.1f}° on held-out views".format(**metrics)
        )
    return model, metrics


def _val_items(val_items: np.ndarray, r: LocalizerRecipe) -> np.ndarray:
    return np.random.default_rng([r.seed, 9]).choice(val_items, size=min(r.val_views, len(val_items)))


def train_refiner(
    images,
    train_items: np.ndarray,
    val_items: np.ndarray,
    localizer: Localizer,
    recipe: LocalizerRecipe | None = None,
    log=None,
    device=None,
) -> tuple[Localizer, dict]:
    """Train the refiner on crops around jittered true boxes of ``train_items``' views; report the
    box errors on held-out views before refinement (the localizer alone) and after each pass."""
    r = recipe or LocalizerRecipe()
    rng = np.random.default_rng([r.seed, 12])
    items = rng.choice(train_items, size=r.refine_views, replace=len(train_items) < r.refine_views)
    x, y = render_views(
        images,
        items,
        r.seed + 1,
        r.shop_fraction,
        r.aug_size,
        r.workers,
        "refiner: rendering crops",
        margin=r.refine_margin,
    )
    # held-out photos: the localizer's validation views, rendered whole
    aug = StreetViewAugment(size=tuple(r.aug_size))
    photos, truth = [], []
    for i, item in enumerate(_val_items(val_items, r)):
        photo, box = _view(images, item, False, aug, np.random.default_rng([r.seed + 10**6, 7, i]))
        photos.append(photo)
        truth.append(box)
    truth = np.array(truth, dtype=np.float64)
    model = _fit(x, y, r, r.refine_steps, (REFINER_SEED,), "refiner: training", device)
    boxes = predict_boxes(localizer, photos)
    metrics = {f"localizer_{k}": v for k, v in photo_box_errors(boxes, truth).items()}
    for p in range(r.refine_passes):
        boxes = refine_boxes(model, photos, boxes, r.refine_margin)
        metrics.update({f"pass{p + 1}_{k}": v for k, v in photo_box_errors(boxes, truth).items()})
    if log:
        last = f"pass{r.refine_passes}_"
        log(
            "refiner: centre error {a:.3f} -> {b:.3f} side, side error {c:.3f} -> {d:.3f} (log), angle error "
            "{e:.1f}° -> {f:.1f}° on held-out views after {n} passes".format(
                a=metrics["localizer_centre_err"],
                b=metrics[last + "centre_err"],
                c=metrics["localizer_side_err"],
                d=metrics[last + "side_err"],
                e=metrics["localizer_angle_err"],
                f=metrics[last + "angle_err"],
                n=r.refine_passes,
            )
        )
    return model, metrics
