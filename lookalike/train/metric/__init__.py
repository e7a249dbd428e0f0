"""Metric learning for street-to-shop retrieval: augmentation, cross-domain sampling, mining, training."""

from lookalike.train.metric.augment import StreetViewAugment
from lookalike.train.metric.offline_miner import OfflineHardMiner
from lookalike.train.metric.samplers import CrossDomainBatch, CrossDomainSampler
from lookalike.train.metric.trainer import MetricRecipe, TrainData, TrainResult, train_metric

__all__ = [
    "CrossDomainBatch",
    "CrossDomainSampler",
    "MetricRecipe",
    "OfflineHardMiner",
    "StreetViewAugment",
    "TrainData",
    "TrainResult",
    "train_metric",
]
