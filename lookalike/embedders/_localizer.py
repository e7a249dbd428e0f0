"""Find the product in a photo, then cut it out upright: the first stage of street-to-shop search.

A customer photo shows the item small, off-centre, rotated and on a busy background; squeezing the
whole photo into the embedding network's 32×32 input would throw away most of the item's pixels.
Like the detect-then-retrieve pipelines of the street-to-shop literature, a small CNN
(:class:`Localizer`) looks at a 64×64 thumbnail of the photo and regresses where the item is: the
centre, side and rotation of the square the product occupies. :func:`crop_items` then cuts that
square out of the full-resolution photo, rotated back upright, and only the crop is embedded.
A clean catalog image (the product filling the frame) maps to the whole frame, so shop and street
images pass through the same pipeline.

It lives with the embedders because the ``trained`` embedder rebuilds it from a checkpoint; the
training code is ``lookalike.train.metric.localizer``.

An optional second stage, the *refiner* (the same network, trained on other inputs), looks again at
a crop around the first box, enlarged by :data:`REFINE_MARGIN` and turned upright, and predicts the
box inside that crop: at the larger scale it sees the item's edges sharper, and each pass corrects
the last one's error (:func:`find_items`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from lookalike.devices import module_device

#: input side of the localizer, in pixels
INPUT_SIZE = 64
#: rotations are regressed as angle / ANGLE_SCALE (degrees)
ANGLE_SCALE = 25.0
#: the refiner looks at the first box enlarged by this factor (room for the first stage's error)
REFINE_MARGIN = 1.5
#: a clean catalog shot (see :func:`clean_shot_boxes`), on 0..1 pixel values: at least
#: CLEAN_RING_SHARE of the border ring lies within CLEAN_TOLERANCE of the ring's median colour (the
#: background), 90% of those within CLEAN_SPREAD (flat: no noise, texture or uneven light); the
#: pixels further than 2 × CLEAN_TOLERANCE from it (the product) span at least CLEAN_EXTENT of the
#: frame, centred within CLEAN_OFFSET of the middle
CLEAN_TOLERANCE = 0.06
CLEAN_SPREAD = 0.015
CLEAN_RING_SHARE = 0.6
CLEAN_EXTENT = 0.7
CLEAN_OFFSET = 0.1
#: test-time views of a located item: the embedding of a photo is the mean of its crops at these
#: boxes around the one found, ``(dx, dy, scale, turn)``: shifts along the box's axes in units of its
#: side, a factor on the side, and degrees. They span about the localizer's error (centre 0.07 of the
#: side, side 8%, angle 3.4°), so the mean does not hang on where exactly the box landed; see
#: BENCHMARKS.md, "Averaging crops around the box". The first is the box itself.
PHOTO_VIEWS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 1.0, 0.0),
    (0.06, 0.0, 1.0, 0.0),
    (-0.06, 0.0, 1.0, 0.0),
    (0.0, 0.06, 1.0, 0.0),
    (0.0, -0.06, 1.0, 0.0),
    (0.0, 0.0, 1.08, 0.0),
    (0.0, 0.0, 0.92, 0.0),
    (0.0, 0.0, 1.0, 4.0),
    (0.0, 0.0, 1.0, -4.0),
)


class Localizer(nn.Module):
    """A light CNN on a 64×64 RGB thumbnail (strided stem, one 3×3 conv per stage) -> FC -> 5 numbers.

    The outputs are ``(cx/w - 0.5, cy/h - 0.5, log(side/w), log(side/h), angle/25)``: the item's
    centre and side relative to the photo's width and height, and its rotation in degrees / 25.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128, 128)):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]

        layers = block(3, widths[0], stride=2)  # 64 -> 32
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=False):
            layers += block(c_in, c_out)
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = INPUT_SIZE // 2 ** len(widths)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(widths[-1] * side * side, 256), nn.ReLU(inplace=True), nn.Linear(256, 5)
        )
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def thumbnail(image: Image.Image) -> np.ndarray:
    """The localizer's view of a photo: RGB, squeezed to 64×64, uint8 (64, 64, 3)."""
    img = image.convert("RGB")
    if img.size != (INPUT_SIZE, INPUT_SIZE):
        img = img.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(img, dtype=np.uint8)


def thumbnails_to_tensor(thumbs: np.ndarray) -> torch.Tensor:
    """uint8 (n, 64, 64, 3) thumbnails -> (n, 3, 64, 64), each standardised over all its pixels."""
    t = torch.from_numpy(np.asarray(thumbs, dtype=np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    mean = t.mean(dim=(1, 2, 3), keepdim=True)
    std = t.std(dim=(1, 2, 3), keepdim=True).clamp_min(0.02)
    return (t - mean) / std


def localizer_input(images: Sequence[Image.Image]) -> torch.Tensor:
    """Photos of any size/mode -> (n, 3, 64, 64) network input."""
    if not len(images):
        return torch.zeros((0, 3, INPUT_SIZE, INPUT_SIZE))
    return thumbnails_to_tensor(np.stack([thumbnail(img) for img in images]))


def encode_boxes(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Pixel boxes ``(cx, cy, side, angle)`` of photos ``(w, h)`` -> regression targets."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = np.asarray(sizes, dtype=np.float64).reshape(-1, 2).T
    side = np.maximum(boxes[:, 2], 1.0)
    return np.stack(
        [
            boxes[:, 0] / w - 0.5,
            boxes[:, 1] / h - 0.5,
            np.log(side / w),
            np.log(side / h),
            boxes[:, 3] / ANGLE_SCALE,
        ],
        axis=1,
    ).astype(np.float32)


def decode_boxes(params: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Regression outputs -> pixel boxes ``(cx, cy, side, angle)`` (side: geometric mean of both)."""
    p = np.asarray(params, dtype=np.float64).reshape(-1, 5)
    w, h = np.asarray(sizes, dtype=np.float64).reshape(-1, 2).T
    side = np.exp((p[:, 2] + np.log(w) + p[:, 3] + np.log(h)) / 2)
    return np.stack([(p[:, 0] + 0.5) * w, (p[:, 1] + 0.5) * h, side, p[:, 4] * ANGLE_SCALE], axis=1)


@torch.no_grad()
def predict_boxes(model: Localizer, images: Sequence[Image.Image], batch_size: int = 256) -> np.ndarray:
    """Pixel boxes ``(cx, cy, side, angle)``, one per image."""
    was_training = model.training
    model.eval()
    dev = module_device(model)
    outs = [
        model(localizer_input(images[s : s + batch_size]).to(dev)).cpu().numpy()
        for s in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    sizes = np.array([img.size for img in images], dtype=np.float64)
    return decode_boxes(np.concatenate(outs) if outs else np.zeros((0, 5)), sizes)


def crop_item(image: Image.Image, box: Sequence[float], size: int) -> Image.Image:
    """Cut the square ``box = (cx, cy, side, angle)`` (pixels, degrees) out of ``image``, rotated back
    upright, as a ``size``×``size`` image; parts outside the photo are black (like the catalog's
    background). Large photos are first reduced so the crop is never more than 2× oversampled."""
    return crop_views(image, box, ((0.0, 0.0, 1.0, 0.0),), size)[0]


def view_boxes(box: Sequence[float], views: Sequence[Sequence[float]]) -> np.ndarray:
    """The boxes of ``views`` (see :data:`PHOTO_VIEWS`) around ``box``: (len(views), 4)."""
    cx, cy, side, angle = (float(v) for v in box)
    v = np.asarray(views, dtype=np.float64).reshape(-1, 4)
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    # the crop's x axis runs along (c, -s) in the photo, its y axis along (s, c) (see crop_views)
    return np.stack(
        [
            cx + side * (c * v[:, 0] + s * v[:, 1]),
            cy + side * (-s * v[:, 0] + c * v[:, 1]),
            side * v[:, 2],
            angle + v[:, 3],
        ],
        axis=1,
    )


def crop_views(
    image: Image.Image, box: Sequence[float], views: Sequence[Sequence[float]], size: int
) -> list[Image.Image]:
    """:func:`crop_item` at each of ``views`` around ``box`` (see :data:`PHOTO_VIEWS`); the photo is
    reduced once, for the box itself, so the first view ``(0, 0, 1, 0)`` is exactly ``crop_item``."""
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    side = max(float(box[2]), 1.0)
    f = min(1.0, 2 * size / side)
    if f < 0.99:
        image = image.resize(
            (max(1, round(image.width * f)), max(1, round(image.height * f))), Image.Resampling.BOX
        )
    else:
        f = 1.0
    fill = 0 if image.mode == "L" else (0, 0, 0)
    crops = []
    for cx, cy, s_, angle in view_boxes(box, views):
        cx, cy, s_ = cx * f, cy * f, max(s_, 1.0) * f
        t = math.radians(angle)
        c, s = math.cos(t), math.sin(t)
        k = s_ / size
        off = -s_ / 2 + 0.5 * k  # offset of the first output pixel centre from the box centre
        # output pixel (x, y) -> input (a x + b y + c0, d x + e y + f0): the box's rotation applied
        coeffs = (c * k, s * k, cx + (c + s) * off, -s * k, c * k, cy + (c - s) * off)
        crops.append(
            image.transform(
                (size, size),
                Image.Transform.AFFINE,
                coeffs,
                resample=Image.Resampling.BILINEAR,
                fillcolor=fill,
            )
        )
    return crops


def crop_items(images: Sequence[Image.Image], boxes: np.ndarray, size: int) -> list[Image.Image]:
    return [crop_item(img, box, size) for img, box in zip(images, boxes, strict=True)]


def _frame_geometry(frames: np.ndarray, margin: float, size: int):
    f = np.asarray(frames, dtype=np.float64).reshape(-1, 4)
    k = f[:, 2] * margin / size  # photo pixels per crop pixel
    t = np.radians(f[:, 3])
    return f, k, np.cos(t), np.sin(t)


def boxes_in_frame(boxes: np.ndarray, frames: np.ndarray, margin: float, size: int) -> np.ndarray:
    """Photo boxes -> the same boxes in the pixels of ``crop_item(photo, frame enlarged by margin, size)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    f, k, c, s = _frame_geometry(frames, margin, size)
    dx, dy = b[:, 0] - f[:, 0], b[:, 1] - f[:, 1]
    return np.stack(
        [size / 2 + (c * dx - s * dy) / k, size / 2 + (s * dx + c * dy) / k, b[:, 2] / k, b[:, 3] - f[:, 3]],
        axis=1,
    )


def boxes_from_frame(boxes: np.ndarray, frames: np.ndarray, margin: float, size: int) -> np.ndarray:
    """The inverse of :func:`boxes_in_frame`: boxes in crop pixels -> photo boxes."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    f, k, c, s = _frame_geometry(frames, margin, size)
    u, v = (b[:, 0] - size / 2) * k, (b[:, 1] - size / 2) * k
    return np.stack(
        [f[:, 0] + c * u + s * v, f[:, 1] - s * u + c * v, b[:, 2] * k, f[:, 3] + b[:, 3]], axis=1
    )


def refine_crop(image: Image.Image, frame: Sequence[float], margin: float = REFINE_MARGIN) -> Image.Image:
    """The refiner's view around ``frame``: the box enlarged by ``margin``, upright, 64×64 RGB."""
    cx, cy, side, angle = (float(v) for v in frame)
    return crop_item(image.convert("RGB"), (cx, cy, side * margin, angle), INPUT_SIZE)


@torch.no_grad()
def refine_boxes(
    refiner: Localizer,
    images: Sequence[Image.Image],
    boxes: np.ndarray,
    margin: float = REFINE_MARGIN,
    batch_size: int = 256,
) -> np.ndarray:
    """One refinement pass: look again around each box and return the corrected photo boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    was_training = refiner.training
    refiner.eval()
    dev = module_device(refiner)
    outs = []
    for s in range(0, len(images), batch_size):
        crops = [
            refine_crop(img, b, margin)
            for img, b in zip(images[s : s + batch_size], boxes[s : s + batch_size], strict=True)
        ]
        outs.append(refiner(localizer_input(crops).to(dev)).cpu().numpy())
    refiner.train(was_training)
    if not outs:
        return boxes
    sizes = np.full((len(boxes), 2), float(INPUT_SIZE))
    return boxes_from_frame(decode_boxes(np.concatenate(outs), sizes), boxes, margin, INPUT_SIZE)


def clean_shot_boxes(images: Sequence[Image.Image]) -> np.ndarray:
    """Whole-frame boxes ``(w/2, h/2, max(w, h), 0)`` for clean catalog shots, NaN rows otherwise.

    A clean shot is a product on a plain background, centred and filling the frame, as catalogs
    photograph them (and as Fashion-MNIST draws them): most of the border ring is one colour, and
    the pixels that differ from it span at least :data:`CLEAN_EXTENT` of the frame around its
    middle. Such an image needs no localizer: the item *is* the frame, which is also how the
    embedding network saw shop images in training. Customer photos almost never pass (their
    backgrounds are lit unevenly, textured or noisy); one that does shows the item filling the
    frame anyway.
    """
    boxes = np.full((len(images), 4), np.nan)
    clean = np.zeros(len(images), dtype=bool)
    for start in range(0, len(images), 256):  # chunks keep the pixel arrays in cache
        chunk = images[start : start + 256]
        clean[start : start + len(chunk)] = _clean_shots(np.stack([thumbnail(img) for img in chunk]))
    for i in np.flatnonzero(clean):
        w, h = images[i].size
        boxes[i] = (w / 2, h / 2, float(max(w, h)), 0.0)
    return boxes


def _clean_shots(thumbs: np.ndarray) -> np.ndarray:
    """uint8 (n, 64, 64, 3) thumbnails -> which are clean shots (see :func:`clean_shot_boxes`)."""
    n, s, r = len(thumbs), INPUT_SIZE, 2
    t = thumbs.astype(np.int16)
    ring = np.concatenate(
        [
            t[:, :r].reshape(n, -1, 3),
            t[:, -r:].reshape(n, -1, 3),
            t[:, r:-r, :r].reshape(n, -1, 3),
            t[:, r:-r, -r:].reshape(n, -1, 3),
        ],
        axis=1,
    )
    bg = np.median(ring, axis=1).astype(np.int16)  # (n, 3)
    dev = np.abs(ring - bg[:, None]).max(axis=2)  # (n, ring pixels), 0..255
    flat = dev <= CLEAN_TOLERANCE * 255
    n_flat = flat.sum(axis=1)
    # 90% of the flat ring pixels within CLEAN_SPREAD of the background colour
    steady = (dev <= CLEAN_SPREAD * 255).sum(axis=1) >= 0.9 * n_flat
    fg = np.abs(t - bg[:, None, None]).max(axis=3) > 2 * CLEAN_TOLERANCE * 255  # (n, 64, 64)
    rows, cols = fg.any(axis=2), fg.any(axis=1)  # (n, 64) each
    y0, y1 = rows.argmax(axis=1), s - rows[:, ::-1].argmax(axis=1)
    x0, x1 = cols.argmax(axis=1), s - cols[:, ::-1].argmax(axis=1)
    extent = np.maximum(x1 - x0, y1 - y0) / s
    off = np.maximum(np.abs((x0 + x1) / (2 * s) - 0.5), np.abs((y0 + y1) / (2 * s) - 0.5))
    return (
        (n_flat >= CLEAN_RING_SHARE * dev.shape[1])
        & steady
        & (fg.mean(axis=(1, 2)) >= 0.05)
        & (extent >= CLEAN_EXTENT)
        & (off <= CLEAN_OFFSET)
    )


def find_items(
    localizer: Localizer,
    images: Sequence[Image.Image],
    refiner: Localizer | None = None,
    passes: int = 2,
    margin: float = REFINE_MARGIN,
    clean_shots: bool = False,
) -> np.ndarray:
    """Where the item is in each photo: the localizer's box, then ``passes`` refinement passes.

    With ``clean_shots``, clean catalog shots (:func:`clean_shot_boxes`) take the whole frame and
    skip the networks.
    """
    return locate_items(localizer, images, refiner, passes, margin, clean_shots)[0]


def locate_items(
    localizer: Localizer,
    images: Sequence[Image.Image],
    refiner: Localizer | None = None,
    passes: int = 2,
    margin: float = REFINE_MARGIN,
    clean_shots: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`find_items`, and which images were clean shots (boxes = the whole frame)."""
    boxes = clean_shot_boxes(images) if clean_shots else np.full((len(images), 4), np.nan)
    clean = ~np.isnan(boxes[:, 0])
    todo = np.flatnonzero(~clean)
    if len(todo):
        rest = [images[i] for i in todo]
        found = predict_boxes(localizer, rest)
        if refiner is not None:
            for _ in range(passes):
                found = refine_boxes(refiner, rest, found, margin)
        boxes[todo] = found
    return boxes, clean


def build_localizer(arch: dict, state_dict: dict | None = None) -> Localizer:
    model = Localizer(tuple(arch.get("widths", (16, 32, 64, 128, 128))))
    if state_dict is not None:
        model.load_state_dict(state_dict)
    model.eval()
    return model
