"""Fill in a missing product attribute by a vote of the product's nearest neighbours (any embedder),
with the accuracy of the same vote on held-out products that do have the attribute."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.errors import InvalidRequest
from lookalike.explore.space import LatentSpace


@dataclass
class Prediction:
    product_id: str
    value: str
    confidence: float  # share of the k neighbours that voted for ``value``

    def to_dict(self) -> dict:
        return {"product_id": self.product_id, "value": self.value, "confidence": round(self.confidence, 3)}


@dataclass
class ImputeReport:
    attribute: str
    model: str
    k: int
    labelled: int
    missing: int
    holdout: int
    holdout_accuracy: float | None
    majority_baseline: float | None
    predictions: list[Prediction] = field(repr=False)
    written: int = 0

    def to_dict(self, with_predictions: bool = False) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "predictions"}
        if with_predictions:
            out["predictions"] = [p.to_dict() for p in self.predictions]
        return out


def attribute_value(record, attribute: str) -> str | None:
    value = record.category if attribute == "category" else record.attributes.get(attribute)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return str(value)


def knn_vote(
    train: np.ndarray, train_values: list[str], query: np.ndarray, k: int, chunk: int = 1024
) -> list[tuple[str, float]]:
    """Majority vote of the k most cosine-similar rows of ``train`` for each query row; ties go to the
    value with the larger summed similarity. Returns (value, vote share) per query."""
    k = min(k, len(train))
    values = np.array(train_values, dtype=object)
    out = []
    for start in range(0, len(query), chunk):
        sims = query[start : start + chunk] @ train.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, idx in enumerate(top):
            votes: Counter = Counter()
            weight: dict[str, float] = {}
            for j in idx:
                v = values[j]
                votes[v] += 1
                weight[v] = weight.get(v, 0.0) + float(sims[row, j])
            best = max(votes, key=lambda v: (votes[v], weight[v]))
            out.append((best, votes[best] / k))
    return out


def impute(
    space: LatentSpace,
    attribute: str,
    *,
    k: int = 5,
    holdout: float = 0.2,
    seed: int = 0,
    write: bool = False,
) -> ImputeReport:
    """Predict ``attribute`` (an attribute key, or ``category``) for products that lack it.

    Accuracy is measured first on ``holdout`` of the products that have the attribute, predicted from
    the rest. With ``write``, predictions are stored as attribute ``attribute`` (``predicted_category``
    for the category) plus ``<attribute>_imputed = "knn"`` so they can be told apart."""
    if not attribute.strip():
        raise InvalidRequest("name the attribute to impute")
    if not 1 <= k <= 100:
        raise InvalidRequest(f"k must be between 1 and 100, got {k}")
    if not 0.0 <= holdout < 1.0:
        raise InvalidRequest(f"holdout must be in [0, 1), got {holdout}")
    ids, vecs = space.vectors()
    records = space.catalog.get_products(ids)
    values = [attribute_value(records[p], attribute) if p in records else None for p in ids]
    labelled = np.array([i for i, v in enumerate(values) if v is not None], dtype=int)
    missing = np.array([i for i, v in enumerate(values) if v is None], dtype=int)
    if len(labelled) < 2:
        raise InvalidRequest(
            f"only {len(labelled)} product(s) have attribute {attribute!r}: need at least 2 to learn from"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(labelled)
    n_hold = int(round(len(perm) * holdout))
    n_hold = min(n_hold, len(perm) - 1)
    held, fit = perm[:n_hold], perm[n_hold:]
    accuracy = baseline = None
    if n_hold:
        fit_values = [values[i] for i in fit]
        guesses = knn_vote(vecs[fit], fit_values, vecs[held], k)
        truth = [values[i] for i in held]
        accuracy = float(np.mean([g == t for (g, _), t in zip(guesses, truth, strict=True)]))
        majority = Counter(fit_values).most_common(1)[0][0]
        baseline = float(np.mean([t == majority for t in truth]))
    predictions = []
    if len(missing):
        votes = knn_vote(vecs[labelled], [values[i] for i in labelled], vecs[missing], k)
        predictions = [Prediction(ids[i], v, share) for i, (v, share) in zip(missing, votes, strict=True)]
    report = ImputeReport(
        attribute, space.model, k, len(labelled), len(missing), int(n_hold), accuracy, baseline, predictions
    )
    if write and predictions:
        key = "predicted_category" if attribute == "category" else attribute
        report.written = space.catalog.set_attributes(
            {p.product_id: {key: p.value, f"{key}_imputed": "knn"} for p in predictions}
        )
    return report


def save_predictions(report: ImputeReport, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["product_id", report.attribute, "confidence"])
        for p in report.predictions:
            w.writerow([p.product_id, p.value, f"{p.confidence:.3f}"])
    return path
