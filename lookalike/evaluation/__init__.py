"""Retrieval evaluation: Recall@K and mAP@R at instance and class level, on any embedders."""

from lookalike.evaluation.metrics import map_at_r, nearest_neighbours, recall_at_k
from lookalike.evaluation.protocol import EvalResult, Gallery, QuerySet, evaluate, score

__all__ = [
    "EvalResult",
    "Gallery",
    "QuerySet",
    "evaluate",
    "map_at_r",
    "nearest_neighbours",
    "recall_at_k",
    "score",
]
