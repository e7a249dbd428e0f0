"""k-means clusters of the catalog for bulk annotation: export a CSV and a contact sheet per cluster,
let people fill in a ``label`` column, then import the file to write the labels back as attributes."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.errors import InvalidRequest, SourceError
from lookalike.explore.draw import grid
from lookalike.explore.space import LatentSpace

CSV_FIELDS = ("cluster", "product_id", "distance", "category", "label")


@dataclass
class Clustering:
    model: str
    k: int
    product_ids: list[str]
    labels: np.ndarray  # cluster of each product
    distances: np.ndarray  # distance of each product to its cluster centre
    categories: list[str | None]

    def members(self, cluster: int) -> list[int]:
        """Positions of the cluster's products, closest to the centre first."""
        idx = np.flatnonzero(self.labels == cluster)
        return idx[np.argsort(self.distances[idx])].tolist()

    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.k).tolist()


def cluster_catalog(space: LatentSpace, k: int, *, seed: int = 0) -> Clustering:
    """k-means on the product vectors (any embedder)."""
    from sklearn.cluster import KMeans

    ids, vecs = space.vectors()
    if not 2 <= k <= len(ids):
        raise InvalidRequest(f"k must be between 2 and the number of products ({len(ids)}), got {k}")
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(vecs)
    dist = np.linalg.norm(vecs - km.cluster_centers_[km.labels_], axis=1)
    records = space.catalog.get_products(ids)
    cats = [records[p].category if p in records else None for p in ids]
    return Clustering(space.model, k, list(ids), km.labels_.astype(int), dist.astype(np.float32), cats)


def export_csv(c: Clustering, path: str | Path) -> Path:
    """Rows sorted by cluster, then distance to the centre; an empty ``label`` column to fill in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for cl in range(c.k):
            for i in c.members(cl):
                w.writerow([cl, c.product_ids[i], f"{c.distances[i]:.6f}", c.categories[i] or "", ""])
    return path


def contact_sheets(
    space: LatentSpace,
    c: Clustering,
    out_dir: str | Path,
    *,
    per_sheet: int = 48,
    cols: int = 12,
    cell: int = 48,
) -> list[Path]:
    """One PNG per cluster: its products closest to the centre first."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for cl in range(c.k):
        members = c.members(cl)
        shown = members[:per_sheet]
        images = [space.product_image(c.product_ids[i]) for i in shown]
        rows = [images[i : i + cols] for i in range(0, len(images), cols)] or [[]]
        title = f"cluster {cl}: {len(members)} products (closest {len(shown)} to the centre)"
        p = out_dir / f"cluster-{cl:03d}.png"
        grid(rows, cell=cell, title=title).save(p, optimize=True)
        paths.append(p)
    return paths


@dataclass
class ImportReport:
    rows: int
    labelled_rows: int
    propagated: int
    updated: int
    unknown_products: list[str]

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def read_labels(path: str | Path, *, propagate: bool = True) -> tuple[dict[str, str], int, int, int]:
    """Read an annotated cluster CSV -> ({product_id: label}, rows, labelled rows, propagated).

    A row's own ``label`` wins. With ``propagate``, a cluster whose labelled rows all agree gives that
    label to its unlabelled rows too (annotate a cluster once, on any of its rows)."""
    path = Path(path)
    if path.is_dir():
        raise SourceError(f"{path}: is a folder, not the annotated clusters CSV")
    if not path.is_file():
        raise SourceError(f"{path}: annotation file not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"product_id", "label"} - set(reader.fieldnames or [])
        if missing:
            raise SourceError(
                f"{path}: missing column(s) {', '.join(sorted(missing))} (expected {', '.join(CSV_FIELDS)})"
            )
        rows = list(reader)
    labels: dict[str, str] = {}
    cluster_labels: dict[str, set[str]] = {}
    for n, row in enumerate(rows, start=2):
        pid = (row.get("product_id") or "").strip()
        if not pid:
            raise SourceError(f"{path}:{n}: empty product_id")
        label = (row.get("label") or "").strip()
        if label:
            labels[pid] = label
            cluster_labels.setdefault((row.get("cluster") or "").strip(), set()).add(label)
    labelled = len(labels)
    propagated = 0
    if propagate:
        for row in rows:
            pid, cl = row["product_id"].strip(), (row.get("cluster") or "").strip()
            agreed = cluster_labels.get(cl)
            if cl and pid not in labels and agreed and len(agreed) == 1:
                labels[pid] = next(iter(agreed))
                propagated += 1
    return labels, len(rows), labelled, propagated


def import_labels(
    catalog, path: str | Path, *, attribute: str = "cluster_label", propagate: bool = True
) -> ImportReport:
    """Write the labels of an annotated cluster CSV back as product attribute ``attribute``."""
    if not attribute or attribute == "category":
        raise InvalidRequest("the attribute to write must be a non-empty name other than 'category'")
    labels, n_rows, labelled, propagated = read_labels(path, propagate=propagate)
    known = catalog.get_products(labels.keys())
    unknown = sorted(set(labels) - set(known))
    updated = catalog.set_attributes({pid: {attribute: lab} for pid, lab in labels.items() if pid in known})
    return ImportReport(n_rows, labelled, propagated, updated, unknown)
