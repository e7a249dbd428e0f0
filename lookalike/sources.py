"""Catalog sources: a folder of images, a CSV/JSONL table, or the built-in Fashion-MNIST catalog.

A source yields :class:`SourceProduct` items, one per product with all its images, so a batch
never splits a product (a crash never leaves half a product).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from lookalike.errors import SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
#: files a folder source passes over without a word: operating-system clutter, not catalog content
IGNORED_FILES = {"thumbs.db", "desktop.ini"}
RESERVED_COLUMNS = {"product_id", "image", "title", "category", "url"}


@dataclass
class SourceProduct:
    product_id: str
    #: each image is a path or URL string, raw bytes, or a PIL image
    images: list[Any]
    title: str | None = None
    category: str | None = None
    attributes: dict = field(default_factory=dict)
    url: str | None = None
    #: where each image came from (for reports); defaults to str(image)
    image_uris: list[str] = field(default_factory=list)
    #: problems found while reading the source row(s), reported as bad items
    problems: list[str] = field(default_factory=list)

    def uri(self, i: int) -> str:
        if i < len(self.image_uris):
            return self.image_uris[i]
        img = self.images[i]
        return img if isinstance(img, str) else f"{self.product_id}#{i}"


class Source:
    """Base class: iterable of SourceProduct with a name and (when known) a length."""

    name: str = "source"

    def __iter__(self) -> Iterator[SourceProduct]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise TypeError("length unknown")


class ListSource(Source):
    def __init__(self, products: Iterable[SourceProduct], name: str = "list"):
        self.products = list(products)
        self.name = name

    def __iter__(self) -> Iterator[SourceProduct]:
        return iter(self.products)

    def __len__(self) -> int:
        return len(self.products)


class FolderSource(Source):
    """Every image under ``root``: product id = file stem, category = its subfolder (relative path).

    Several files with one stem in one folder (``a.jpg``, ``a.png``) are one product's images. The
    same stem in two folders is a conflict: that product gets no images and a problem naming the
    files, so it is reported as skipped instead of one category's product taking another's photos.
    Files that are not in a supported image format (``.heic``, ``.txt``, ...) are not products:
    they are listed in :attr:`skipped` (hidden files and folders, and OS clutter such as ``Thumbs.db``,
    are not).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.name = str(self.root)
        if not self.root.is_dir():
            raise SourceError(f"{self.root}: not a folder")
        self._products: dict[str, SourceProduct] | None = None
        #: files under ``root`` that were not read because they are not supported images
        self.skipped: list[str] = []

    def _scan(self) -> dict[str, SourceProduct]:
        if self._products is None:
            products: dict[str, SourceProduct] = {}
            conflicts: dict[str, list[Path]] = {}
            skipped: list[str] = []
            for path in sorted(self.root.rglob("*")):
                hidden = any(part.startswith(".") for part in path.relative_to(self.root).parts)
                if not path.is_file() or hidden or path.name.lower() in IGNORED_FILES:
                    continue  # .git/, .DS_Store, Thumbs.db: not catalog content
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.append(str(path))
                    continue
                category = self._category(path)
                p = products.setdefault(path.stem, SourceProduct(path.stem, [], category=category))
                if p.category != category or path.stem in conflicts:
                    conflicts.setdefault(path.stem, [Path(u) for u in p.image_uris]).append(path)
                p.images.append(str(path))
                p.image_uris.append(str(path))
            for stem, paths in conflicts.items():
                p = products[stem]
                shown = ", ".join(
                    f"{path.relative_to(self.root).as_posix()} ({self._category(path) or 'no category'})"
                    for path in paths
                )
                p.problems.append(
                    f"product id {stem!r} is the name of files in different folders: {shown}; "
                    "rename one of them (nothing was indexed for it)"
                )
                p.images, p.image_uris = [], []
            self.skipped = skipped
            self._products = products
        return self._products

    def _category(self, path: Path) -> str | None:
        rel = path.parent.relative_to(self.root)
        return None if str(rel) == "." else rel.as_posix()

    def __iter__(self) -> Iterator[SourceProduct]:
        return iter(self._scan().values())

    def __len__(self) -> int:
        return len(self._scan())


def describe_skipped(paths: Sequence[str]) -> str:
    """``3 files that are not images (.heic 2, .txt 1)``: how many of each kind a source passed over."""
    counts = Counter(Path(p).suffix.lower() or "no extension" for p in paths)
    kinds = ", ".join(f"{suffix} {n}" for suffix, n in counts.most_common())
    return f"{len(paths)} file(s) that are not images in a supported format ({kinds})"


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


class TableSource(Source):
    """CSV or JSONL with columns product_id, image (path or URL), title, category, url; more columns
    become attributes. Several rows per product add several images. Relative paths resolve
    against the table's folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: file not found")
        self._products: dict[str, SourceProduct] | None = None

    def _rows(self) -> Iterator[tuple[int, dict]]:
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as f:
                if self.path.suffix.lower() == ".csv":
                    reader = csv.DictReader(f)
                    missing = {"product_id", "image"} - set(reader.fieldnames or [])
                    if missing:
                        raise SourceError(f"{self.path}: missing column(s) {', '.join(sorted(missing))}")
                    for n, row in enumerate(reader, start=2):
                        yield n, row
                else:
                    for n, line in enumerate(f, start=1):
                        if not line.strip():
                            continue
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as exc:
                            yield n, {"__error__": f"invalid JSON ({exc.msg})"}
                            continue
                        yield n, row if isinstance(row, dict) else {"__error__": "not a JSON object"}
        except UnicodeDecodeError:
            raise SourceError(f"{self.path}: not UTF-8 text") from None

    def _scan(self) -> dict[str, SourceProduct]:
        if self._products is not None:
            return self._products
        products: dict[str, SourceProduct] = {}
        base = self.path.parent
        for n, row in self._rows():
            where = f"{self.path.name}:{n}"
            if "__error__" in row:
                products.setdefault(f"<{where}>", SourceProduct(f"<{where}>", [])).problems.append(
                    f"{where}: {row['__error__']}"
                )
                continue
            pid = _clean(row.get("product_id"))
            image = _clean(row.get("image"))
            if pid is None or image is None:
                key = str(pid) if pid is not None else f"<{where}>"
                products.setdefault(key, SourceProduct(key, [])).problems.append(
                    f"{where}: missing {'product_id' if pid is None else 'image'}"
                )
                continue
            pid = str(pid)
            p = products.setdefault(pid, SourceProduct(pid, []))
            image = str(image)
            if not image.startswith(("http://", "https://")) and not Path(image).is_absolute():
                image = str(base / image)
            p.images.append(image)
            p.image_uris.append(image)
            for name in ("title", "category", "url"):
                value = _clean(row.get(name))
                if value is not None:
                    setattr(p, name, str(value))
            for key, value in row.items():
                if key not in RESERVED_COLUMNS and key is not None and _clean(value) is not None:
                    p.attributes[key] = _clean(value)
        self._products = products
        return products

    def __iter__(self) -> Iterator[SourceProduct]:
        return iter(self._scan().values())

    def __len__(self) -> int:
        return len(self._scan())


class FashionMNISTSource(Source):
    """The built-in demo catalog: ids fmnist-train-N / fmnist-test-N, category = class name."""

    def __init__(self, splits: tuple[str, ...] = ("train", "test")):
        from lookalike.datasets import fashion_mnist

        self.splits = splits
        self.name = "fashion-mnist" + ("" if len(splits) == 2 else ":" + ",".join(splits))
        self._data = {s: fashion_mnist.load_split(s) for s in splits}
        self._classes = fashion_mnist.CLASSES

    def __iter__(self) -> Iterator[SourceProduct]:
        for split, (images, labels) in self._data.items():
            for i in range(len(images)):
                yield SourceProduct(
                    product_id=f"fmnist-{split}-{i}",
                    images=[Image.fromarray(images[i], mode="L")],
                    title=f"{self._classes[labels[i]]} #{i} ({split})",
                    category=self._classes[labels[i]],
                    attributes={"split": split},
                    image_uris=[f"fashion-mnist:{split}/{i}"],
                )

    def __len__(self) -> int:
        return sum(len(images) for images, _ in self._data.values())


class LimitedSource(Source):
    def __init__(self, source: Source, limit: int):
        self.source, self.limit = source, limit
        self.name = f"{source.name}[:{limit}]"

    def __iter__(self) -> Iterator[SourceProduct]:
        for n, p in enumerate(self.source):
            if n >= self.limit:
                return
            yield p

    def __len__(self) -> int:
        try:
            return min(self.limit, len(self.source))
        except TypeError:
            return self.limit


def open_source(spec: str | Path | Source, *, limit: int | None = None) -> Source:
    """Turn a source spec into a Source: a folder, a .csv/.jsonl file, or ``fashion-mnist[:split]``."""
    if isinstance(spec, Source):
        source = spec
    else:
        text = str(spec)
        if text == "fashion-mnist" or text.startswith("fashion-mnist:"):
            split = text.partition(":")[2]
            splits = tuple(s for s in split.split(",") if s) or ("train", "test")
            source = FashionMNISTSource(splits)
        else:
            path = Path(text)
            if path.is_dir():
                source = FolderSource(path)
            elif path.suffix.lower() in {".csv", ".jsonl", ".ndjson"}:
                source = TableSource(path)
            elif not path.exists():
                raise SourceError(
                    f"source {text!r} not found (a folder, a .csv/.jsonl file or fashion-mnist)"
                )
            else:
                raise SourceError(f"source {text!r}: expected a folder, a .csv or .jsonl file")
    return LimitedSource(source, limit) if limit is not None else source


def check_source_within(spec: str, roots: Sequence[Path]) -> None:
    """Refuse a source that would read files outside ``roots``: the source itself and every local
    image it lists (symlinks resolved). For sources named by untrusted callers, such as the HTTP API;
    the built-in datasets are always allowed, image URLs are checked later by the fetcher."""
    text = str(spec)
    if text == "fashion-mnist" or text.startswith("fashion-mnist:"):
        return
    if not roots:
        raise SourceError(
            f"source {text!r}: this server indexes only the built-in datasets; set "
            "LOOKALIKE_INDEX_ROOTS to the folders it may read"
        )
    resolved = [Path(r).resolve() for r in roots]
    shown = ", ".join(str(r) for r in resolved)

    def inside(path: Path) -> bool:
        real = path.resolve()
        return any(real.is_relative_to(r) for r in resolved)

    if not inside(Path(text)):
        raise SourceError(f"source {text!r} is outside the folders this server may index ({shown})")
    for product in open_source(text):
        for image in product.images:
            if isinstance(image, (str, Path)) and not str(image).startswith(("http://", "https://")):
                if not inside(Path(image)):
                    raise SourceError(
                        f"source {text!r}: product {product.product_id!r} lists image {str(image)!r}, "
                        f"which is outside the folders this server may index ({shown})"
                    )


def street_photo_rows(path: str | Path) -> Iterator[tuple[int, str, Path, dict]]:
    """The rows of a street photo CSV (customer photos of catalog products): ``(line, product_id,
    photo path, row)``. Columns: ``product_id`` and ``path`` (or ``image``, as in a catalog CSV),
    relative paths from the CSV's folder; a missing photo is an error naming its line."""
    from lookalike.errors import ImageError

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"street photo CSV {path} not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or ())
        column = "path" if "path" in fields else "image"
        if "product_id" not in fields or column not in fields:
            raise SourceError(f"{path}: needs product_id and path (or image) columns")
        for n, row in enumerate(reader, 2):
            photo = Path(row[column] or "")
            photo = photo if photo.is_absolute() else path.parent / photo
            if not photo.is_file():
                raise ImageError(str(photo), f"street photo listed on line {n} does not exist", kind="empty")
            yield n, row["product_id"], photo, row
