"""Metric-learning networks: a backbone, then the FC512-ELU-FC128-L2 embedding head.

It lives with the embedders (not in ``lookalike.train``) because the ``trained`` embedder rebuilds
these networks from checkpoints, and the search path never imports the training code.

The default backbone is a small CNN that trains on CPU; any torchvision model can be named
("resnet18", ...). ``preprocess_images`` is the one input pipeline used both in training and by the
``trained`` embedder, so street photos and catalog images are seen the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lookalike.errors import ModelError

DEFAULT_PREPROCESS = {"size": 32, "channels": 1, "normalise": "per_image"}


def preprocess_images(images: Sequence[Image.Image | np.ndarray], preprocess: dict) -> torch.Tensor:
    """Images of any size/mode -> float tensor (n, C, S, S): grey (or RGB), resized, standardised.

    Per-image standardisation removes the overall brightness and contrast of a photo, so a light
    product on black and a tinted product on a coloured background land on a comparable scale.
    """
    size = int(preprocess.get("size", 32))
    channels = int(preprocess.get("channels", 1))
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(images), size, size, channels), dtype=np.float32)
    for i, img in enumerate(images):
        if isinstance(img, np.ndarray):
            img = Image.fromarray(np.asarray(img, dtype=np.uint8))
        img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img, dtype=np.float32).reshape(size, size, channels) / 255.0
    if preprocess.get("polarity") == "auto":
        # a product darker than its surroundings is flipped to light-on-dark, like catalog images
        # (a light product on black): compare the border ring of the (cropped) photo to the whole
        ring = max(1, size // 10)
        border = np.concatenate(
            [
                out[:, :ring].reshape(len(out), -1),
                out[:, -ring:].reshape(len(out), -1),
                out[:, :, :ring].reshape(len(out), -1),
                out[:, :, -ring:].reshape(len(out), -1),
            ],
            axis=1,
        ).mean(axis=1)
        flip = border > out.reshape(len(out), -1).mean(axis=1)
        out[flip] = 1.0 - out[flip]
    t = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    if preprocess.get("normalise", "per_image") == "per_image":
        mean = t.mean(dim=(1, 2, 3), keepdim=True)
        std = t.std(dim=(1, 2, 3), keepdim=True).clamp_min(0.02)
        t = (t - mean) / std
    return t


#: how SmallCNN turns its last feature map into a vector
POOLS = ("avgmax", "grid")


class SmallCNN(nn.Module):
    """Four conv stages (two 3x3 convs + BN + ReLU each), then pooling.

    ``pool="avgmax"`` concatenates global average and max pooling (where a feature fires does not
    count); ``pool="grid"`` average-pools to a ``grid`` x ``grid`` map and flattens it, so the head
    sees where each feature fires (the layout of the item, as AlexNet's fc6 sees pool5).
    """

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256),
        pool: str = "avgmax",
        grid: int = 4,
    ):
        super().__init__()
        if pool not in POOLS:
            raise ModelError(f"unknown pooling {pool!r} (choose from {', '.join(POOLS)})")
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [
                nn.Conv2d(c, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.pool, self.grid = pool, int(grid)
        self.out_dim = 2 * c if pool == "avgmax" else c * self.grid**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.pool == "grid":
            return F.adaptive_avg_pool2d(f, self.grid).flatten(1)
        return torch.cat([F.adaptive_avg_pool2d(f, 1), F.adaptive_max_pool2d(f, 1)], dim=1).flatten(1)


class TorchvisionBackbone(nn.Module):
    """A torchvision classification model with its classifier removed (features only)."""

    def __init__(self, name: str, in_channels: int = 1, weights: str | None = None):
        super().__init__()
        import torchvision

        try:
            ctor = torchvision.models.get_model_builder(name)
        except ValueError:
            raise ModelError(f"unknown torchvision model {name!r}") from None
        net = ctor(weights=weights)
        self.in_channels = in_channels
        # strip the classifier: the last Linear becomes the identity
        if hasattr(net, "fc") and isinstance(net.fc, nn.Linear):
            self.out_dim = net.fc.in_features
            net.fc = nn.Identity()
        elif hasattr(net, "classifier"):
            cls = net.classifier
            linears = (
                [m for m in cls.modules() if isinstance(m, nn.Linear)] if isinstance(cls, nn.Module) else []
            )
            if not linears:
                raise ModelError(f"cannot find the classifier of torchvision model {name!r}")
            self.out_dim = linears[0].in_features
            net.classifier = nn.Identity()
        elif hasattr(net, "heads"):
            self.out_dim = net.heads[-1].in_features
            net.heads = nn.Identity()
        else:
            raise ModelError(f"cannot find the classifier of torchvision model {name!r}")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x).flatten(1)


class EmbeddingNet(nn.Module):
    """backbone -> FC 512 -> ELU -> FC ``dim`` -> L2 normalisation."""

    def __init__(self, backbone: nn.Module, in_dim: int, dim: int = 128, hidden: int = 512):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(in_dim, hidden), nn.ELU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)


def build_model(arch: dict, pretrained: str | None = None) -> EmbeddingNet:
    """Rebuild a network from its checkpoint ``arch`` dict (also used to create it for training).

    ``pretrained`` (training only) initialises a torchvision backbone: ``"imagenet"`` downloads
    torchvision's default weights, anything else is a local state-dict file.
    """
    name = arch.get("backbone", "smallcnn")
    in_channels = int(arch.get("in_channels", 1))
    if name == "smallcnn":
        if pretrained:
            raise ModelError("the smallcnn backbone has no pretrained weights")
        backbone = SmallCNN(
            in_channels,
            tuple(arch.get("widths", (32, 64, 128, 256))),
            pool=arch.get("pool", "avgmax"),
            grid=int(arch.get("grid", 4)),
        )
        in_dim = backbone.out_dim
    else:
        backbone = TorchvisionBackbone(
            name, in_channels, weights="DEFAULT" if pretrained == "imagenet" else None
        )
        if pretrained and pretrained != "imagenet":
            load_backbone_weights(backbone, pretrained, name)
        in_dim = backbone.out_dim
    return EmbeddingNet(backbone, in_dim, dim=int(arch.get("dim", 128)), hidden=int(arch.get("hidden", 512)))


def load_backbone_weights(backbone: TorchvisionBackbone, path: str, name: str) -> None:
    """Load a local torchvision state dict (classifier weights are ignored) into ``backbone``."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} for torchvision:{name} not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        from lookalike.checkpoint import unreadable_reason

        raise ModelError(f"weights file {p} cannot be read ({unreadable_reason(p, exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"weights file {p} is not a state dict")
    missing, _unexpected = backbone.net.load_state_dict(state, strict=False)
    if missing:
        raise ModelError(
            f"weights file {p} does not fit torchvision:{name} (missing {', '.join(missing[:3])} ...)"
        )
