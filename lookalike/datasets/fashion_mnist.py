"""Fashion-MNIST: the demo catalog (70,000 28x28 grey product images, 10 categories).

Files are looked up in order: ``LOOKALIKE_FASHION_MNIST_DIR``, the Debian package
``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), the cache dir, and finally
downloaded from the dataset's official URLs into the cache.
"""

from __future__ import annotations

import gzip
import os
import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from lookalike.errors import SourceError

CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def candidate_dirs() -> list[Path]:
    from lookalike.config import get_settings

    dirs = []
    env = os.environ.get("LOOKALIKE_FASHION_MNIST_DIR")
    if env:
        dirs.append(Path(env))
    dirs.append(DEBIAN_DIR)
    dirs.append(get_settings().cache_dir / "fashion-mnist")
    return dirs


def _find(filename: str) -> Path | None:
    for d in candidate_dirs():
        for name in (filename, filename.removesuffix(".gz")):
            p = d / name
            if p.exists():
                return p
    return None


def _download(filename: str) -> Path:
    import httpx

    from lookalike.config import get_settings

    target = get_settings().cache_dir / "fashion-mnist" / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.stream("GET", BASE_URL + filename, timeout=60, follow_redirects=True) as r:
            r.raise_for_status()
            tmp = target.with_suffix(".part")
            with open(tmp, "wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        tmp.replace(target)
    except Exception as exc:  # noqa: BLE001 - turn any network failure into one clear error
        raise SourceError(
            f"Fashion-MNIST file {filename} not found locally and download failed ({exc}); "
            "install the Debian package dataset-fashion-mnist or set LOOKALIKE_FASHION_MNIST_DIR"
        ) from None
    return target


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise SourceError(f"{path}: not an idx file")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise SourceError(f"{path}: not an unsigned-byte idx file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise SourceError(f"{path}: truncated idx file")
    return arr.reshape(shape)


@lru_cache(maxsize=2)
def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N, 28, 28], labels uint8 [N]) for ``train`` or ``test``."""
    if split not in FILES:
        raise SourceError(f"unknown Fashion-MNIST split {split!r} (train or test)")
    out = []
    for filename in FILES[split]:
        path = _find(filename) or _download(filename)
        out.append(_read_idx(path))
    images, labels = out
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def product_id(split: str, index: int) -> str:
    return f"fmnist-{split}-{index}"
