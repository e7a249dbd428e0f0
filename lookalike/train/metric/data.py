"""Training data for metric learning: shop images with identities, plus optional real street photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.errors import ImageError, SourceError
from lookalike.train.metric.trainer import TrainData, fashion_mnist_data

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("L").copy()
    except Exception as exc:  # noqa: BLE001
        raise ImageError(str(path), f"cannot be read as an image ({exc})") from None


def load_train_data(
    source: str, street_csv: str | Path | None = None, *, limit: int | None = None
) -> TrainData:
    """``fashion-mnist[:train]`` or a folder of product images (the file stem is the product id and
    a sub-folder name, if any, the category). ``street_csv`` adds real customer photos: a CSV with
    ``product_id,path`` columns, paths relative to the CSV."""
    if source in {"fashion-mnist", "fashion-mnist:train"}:
        data = fashion_mnist_data(limit)
        ids = [f"fmnist-train-{i}" for i in range(len(data))]
    elif source == "fashion-mnist:test":
        raise SourceError("the Fashion-MNIST test split is for evaluation only; train on fashion-mnist:train")
    else:
        root = Path(source)
        if not root.is_dir():
            raise SourceError(f"training source {source!r} is neither fashion-mnist nor a folder")
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise SourceError(f"{root}: no images found")
        ids = [p.stem for p in files]
        cats = [p.parent.name if p.parent != root else "" for p in files]
        classes = None
        if any(cats):
            names = sorted(set(cats))
            classes = np.array([names.index(c) for c in cats])
        _, identity = np.unique(ids, return_inverse=True)
        data = TrainData([_open(p) for p in files], identity, classes)
    if street_csv is not None:
        data.street_photos = _street_photos(Path(street_csv), ids)
    return data


def _street_photos(path: Path, ids: list[str]) -> dict[int, list]:
    if not path.is_file():
        raise SourceError(f"street photo CSV {path} not found")
    index = {pid: i for i, pid in enumerate(ids)}
    out: dict[int, list] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"product_id", "path"} <= set(reader.fieldnames):
            raise SourceError(f"{path}: needs product_id and path columns")
        for n, row in enumerate(reader, 2):
            item = index.get(row["product_id"])
            if item is None:
                raise SourceError(f"{path} line {n}: unknown product {row['product_id']!r}")
            photo = Path(row["path"])
            photo = photo if photo.is_absolute() else path.parent / photo
            with Image.open(photo) if photo.is_file() else _missing(photo, n) as img:
                out.setdefault(item, []).append(img.convert("RGB").copy())
    return out


def _missing(photo: Path, line: int):
    raise ImageError(str(photo), f"street photo listed on line {line} does not exist", kind="empty")
