"""Ready-made query sets and galleries on Fashion-MNIST (the demo catalog).

* ``class-level``: the 10k clean test images as queries against the 60k train gallery; only the
  category can match (the query's own product is not in the gallery).
* ``street-to-shop``: synthetic street photos of test items as queries against all 70k shop images
  (train + test): the query's own catalog image is in the gallery, every other image is a distractor.
  The clean subset holds the views whose item is whole, large and only mildly degraded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.datasets.fashion_mnist import load_split
from lookalike.errors import ImageError, SourceError
from lookalike.evaluation.protocol import Gallery, QuerySet
from lookalike.progress import progress_bar
from lookalike.sources import street_photo_rows
from lookalike.train.metric.augment import StreetViewAugment

PROTOCOLS = ("street-to-shop", "class-level")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class _ArrayImages:
    """A lazy sequence of PIL images over a uint8 (N, H, W) array."""

    def __init__(self, arr: np.ndarray):
        self.arr = arr

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [Image.fromarray(a, "L") for a in self.arr[i]]
        return Image.fromarray(self.arr[i], "L")


def _ids(split: str, n: int) -> np.ndarray:
    return np.array([f"fmnist-{split}-{i}" for i in range(n)])


def class_level(
    n_queries: int | None = None, seed: int = 0, distractors: int | None = None
) -> tuple[QuerySet, Gallery]:
    """``distractors`` limits the gallery to that many sampled train images (default: all 60k)."""
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    idx = _subset(len(xte), n_queries, seed)
    gidx = _subset(len(xtr), distractors, seed + 1)
    queries = QuerySet(
        _ArrayImages(xte[idx]),
        _ids("test", len(xte))[idx],
        yte[idx].astype(np.int64),
        name="fashion-mnist test (clean)",
    )
    gallery = Gallery(
        _ArrayImages(xtr[gidx]),
        _ids("train", len(xtr))[gidx],
        ytr[gidx].astype(np.int64),
        name=f"fashion-mnist train ({len(gidx)})",
    )
    return queries, gallery


def street_to_shop(
    n_queries: int | None = None,
    seed: int = 0,
    distractors: int | None = None,
    size: tuple[int, int] = (64, 320),
    difficulty: float = 1.0,
    progress: bool = True,
) -> tuple[QuerySet, Gallery]:
    """``distractors`` limits the gallery to the queries' own shop images plus that many others.
    Rendering the street views shows a progress bar on a terminal (``progress=False``: never)."""
    xtr, ytr = load_split("train")
    xte, yte = load_split("test")
    idx = _subset(len(xte), n_queries, seed)
    # views are rendered once and kept in memory (about 90 kB each at the default sizes)
    views, clean = [], np.zeros(len(idx), dtype=bool)
    aug = StreetViewAugment(size=size, difficulty=difficulty)
    with progress_bar("rendering street views", len(idx), enabled=progress) as advance:
        for j, i in enumerate(idx):
            views.append(aug(xte[i], np.random.default_rng([seed, 424242, int(i)])))
            clean[j] = StreetViewAugment.is_clean(aug.last_params)
            advance()
    queries = QuerySet(
        views,
        _ids("test", len(xte))[idx],
        yte[idx].astype(np.int64),
        clean,
        name="street views of fashion-mnist test",
    )
    x_all = np.concatenate([xtr, xte])
    ids_all = np.concatenate([_ids("train", len(xtr)), _ids("test", len(xte))])
    y_all = np.concatenate([ytr, yte]).astype(np.int64)
    if distractors is None:
        gidx = np.arange(len(x_all))
    else:
        own = len(xtr) + idx
        others = np.setdiff1d(np.arange(len(x_all)), own)
        pick = np.random.default_rng([seed, 23]).choice(
            len(others), size=min(distractors, len(others)), replace=False
        )
        gidx = np.sort(np.concatenate([own, others[pick]]))
    gallery = Gallery(
        _ArrayImages(x_all[gidx]), ids_all[gidx], y_all[gidx], name=f"fashion-mnist train+test ({len(gidx)})"
    )
    return queries, gallery


def _subset(n: int, k: int | None, seed: int) -> np.ndarray:
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, 17]).choice(n, size=k, replace=False))


def from_files(street_csv: str | Path, gallery_dir: str | Path) -> tuple[QuerySet, Gallery]:
    """Your own photos: a CSV of ``product_id,path[,clean]`` street photos (paths relative to the
    CSV) searched against a folder of shop images (the file stem is the product id, a sub-folder
    name the category). Products without a street photo act as distractors."""
    street_csv, gallery_dir = Path(street_csv), Path(gallery_dir)
    if not gallery_dir.is_dir():
        raise SourceError(f"gallery folder {gallery_dir} not found")
    files = sorted(p for p in gallery_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"{gallery_dir}: no images found")
    g_ids = np.array([p.stem for p in files])
    cats = [p.parent.name if p.parent != gallery_dir else "" for p in files]
    names = sorted(set(cats))
    g_cls = np.array([names.index(c) for c in cats]) if any(cats) else None
    cat_of = dict(
        zip(g_ids.tolist(), (g_cls if g_cls is not None else np.zeros(len(files))).tolist(), strict=True)
    )
    q_paths, q_ids, q_clean = [], [], []
    for n, product_id, path, row in street_photo_rows(street_csv):
        if product_id not in cat_of:
            raise SourceError(f"{street_csv} line {n}: product {product_id!r} is not in {gallery_dir}")
        q_paths.append(path)
        q_ids.append(product_id)
        q_clean.append(str(row.get("clean", "1")).strip().lower() not in {"0", "false", "no"})
    if not q_paths:
        raise SourceError(f"{street_csv}: no street photos")
    q_cls = np.array([cat_of[i] for i in q_ids]) if g_cls is not None else None
    queries = QuerySet(_FileImages(q_paths), np.array(q_ids), q_cls, np.array(q_clean), name=str(street_csv))
    gallery = Gallery(_FileImages(files), g_ids, g_cls, name=str(gallery_dir))
    return queries, gallery


class _FileImages:
    """A lazy sequence of images read from files (RGB)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, p: Path) -> Image.Image:
        try:
            with Image.open(p) as img:
                return img.convert("RGB")
        except Exception as exc:  # noqa: BLE001
            raise ImageError(str(p), f"cannot be read as an image ({exc})") from None

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._load(p) for p in self.paths[i]]
        return self._load(self.paths[i])
