"""Turning images into model input tensors and decoded tensors back into pictures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from lookalike.errors import ImageError, SourceError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def pil_to_array(images: Sequence[Image.Image], channels: int, resolution: int) -> np.ndarray:
    """PIL images of any size and mode -> uint8 (n, resolution, resolution[, 3])."""
    mode = "L" if channels == 1 else "RGB"
    out = []
    for img in images:
        img = img.convert(mode)
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.Resampling.BILINEAR)
        out.append(np.asarray(img, dtype=np.uint8))
    return np.stack(out) if out else np.zeros((0, resolution, resolution), dtype=np.uint8)


def to_tensor(images: np.ndarray | torch.Tensor, channels: int, resolution: int) -> torch.Tensor:
    """uint8 (n, h, w) or (n, h, w, c) -> float (n, channels, resolution, resolution) in [0, 1]."""
    arr = np.asarray(images)
    x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4:
        x = x.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected images of shape (n, h, w[, c]), got {tuple(x.shape)}")
    x = x.float() / 255.0
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True) if channels == 1 else x.expand(-1, channels, -1, -1)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.contiguous()


def pil_to_tensor(images: Sequence[Image.Image], channels: int, resolution: int) -> torch.Tensor:
    return to_tensor(pil_to_array(images, channels, resolution), channels, resolution)


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(n, c, h, w) in [0, 1] -> PIL images (L or RGB)."""
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    if arr.shape[1] == 1:
        return [Image.fromarray(a[0], "L") for a in arr]
    return [Image.fromarray(a.transpose(1, 2, 0), "RGB") for a in arr]


def grid_image(x: torch.Tensor, nrow: int, *, pad: int = 2, scale: int = 1) -> Image.Image:
    """Tile (n, c, h, w) images into one picture, ``nrow`` per row, white gutters."""
    from torchvision.utils import make_grid

    grid = make_grid(x.detach().clamp(0, 1), nrow=nrow, padding=pad, pad_value=1.0)
    img = tensor_to_pil(grid.unsqueeze(0))[0]
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def load_training_images(source: str, *, channels: int, resolution: int, limit: int | None = None):
    """Images to train on, as uint8 arrays: ``fashion-mnist[:train]`` or a folder.

    Returns ``(images, labels_or_None)``. Training needs no labels; they are only used for reports.
    """
    if source.startswith("fashion-mnist"):
        from lookalike.datasets.fashion_mnist import load_split

        split = source.partition(":")[2] or "train"
        if split != "train":  # as for the metric trainer: the latent explorer measures on test
            raise SourceError(
                "the Fashion-MNIST test split is for evaluation only; train on fashion-mnist:train"
            )
        images, labels = load_split(split)
        if limit:
            images, labels = images[:limit], labels[:limit]
        return images, labels
    folder = Path(source)
    if not folder.is_dir():
        raise SourceError(f"{source}: not a folder of images nor 'fashion-mnist[:split]'")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit:
        files = files[:limit]
    pics = []
    for p in files:
        try:
            with Image.open(p) as img:
                img.load()
                pics.append(img.copy())
        except Exception as exc:  # noqa: BLE001 - unreadable images are skipped, not fatal
            import logging

            logging.getLogger(__name__).warning("%s", ImageError(str(p), f"skipped: {exc}"))
    if not pics:
        raise SourceError(f"{source}: no readable images found")
    return pil_to_array(pics, channels, resolution), None
