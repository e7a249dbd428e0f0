"""Training data for metric learning: shop images with identities, plus optional real street photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.errors import ImageError, SourceError
from lookalike.sources import street_photo_rows
from lookalike.train.metric.trainer import TrainData, fashion_mnist_data


def load_train_data(
    source: str, street_csv: str | Path | None = None, *, limit: int | None = None
) -> TrainData:
    """``fashion-mnist[:train]`` or any catalog source (a folder of product images, a CSV/JSONL
    table; see :func:`lookalike.sources.open_source`). ``street_csv`` adds real customer photos: a
    CSV with ``product_id,path`` columns, paths relative to the CSV."""
    if source in {"fashion-mnist", "fashion-mnist:train"}:
        data = fashion_mnist_data(limit)
        ids = [f"fmnist-train-{i}" for i in range(len(data))]
    elif source.startswith("fashion-mnist"):
        raise SourceError("the Fashion-MNIST test split is for evaluation only; train on fashion-mnist:train")
    else:
        data, ids = _from_source(source, limit)
    if street_csv is not None:
        data.street_photos = _street_photos(Path(street_csv), ids)
    return data


def _from_source(spec: str, limit: int | None) -> tuple[TrainData, list[str]]:
    """Any catalog source (folder, CSV/JSONL): every image of a product is a shop image of its
    identity, its category the class label. Unreadable images are skipped (and counted)."""
    from lookalike.images import load_image
    from lookalike.sources import open_source

    images, identity, cats, ids = [], [], [], []
    skipped = 0
    for product in open_source(spec, limit=limit):
        loaded = []
        for img in product.images:
            try:
                loaded.append(load_image(img).image.convert("L"))
            except ImageError:
                skipped += 1
        if not loaded:
            continue
        ids.append(product.product_id)
        for img in loaded:
            images.append(img)
            identity.append(len(ids) - 1)
            cats.append(product.category or "")
    if len(ids) < 10:
        raise SourceError(f"training source {spec!r}: need at least 10 readable products, found {len(ids)}")
    names = sorted(set(cats))
    classes = np.array([names.index(c) for c in cats]) if any(cats) else None
    data = TrainData(images, np.array(identity), classes)
    data.skipped_images = skipped
    return data, ids


def _street_photos(path: Path, ids: list[str]) -> dict[int, list]:
    index = {pid: i for i, pid in enumerate(ids)}
    out: dict[int, list] = {}
    for n, product_id, photo, _ in street_photo_rows(path):
        item = index.get(product_id)
        if item is None:
            raise SourceError(f"{path} line {n}: unknown product {product_id!r}")
        with Image.open(photo) as img:
            out.setdefault(item, []).append(img.convert("RGB").copy())
    return out
