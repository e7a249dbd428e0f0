"""Backbones and the FC512-ELU-FC128-L2 head used by metric learning (defined with the embedders,
which rebuild them from checkpoints; re-exported here for the trainer)."""

from lookalike.embedders._metric_net import (
    DEFAULT_PREPROCESS,
    POOLS,
    EmbeddingNet,
    SmallCNN,
    TorchvisionBackbone,
    build_model,
    preprocess_images,
)

__all__ = [
    "DEFAULT_PREPROCESS",
    "POOLS",
    "EmbeddingNet",
    "SmallCNN",
    "TorchvisionBackbone",
    "build_model",
    "preprocess_images",
]
