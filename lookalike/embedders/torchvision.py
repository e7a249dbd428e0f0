"""The ``torchvision`` family: an ImageNet backbone's pooled features as the embedding.

``torchvision:resnet50`` uses torchvision's default pretrained weights (downloaded once when online,
then cached by torch); ``torchvision:resnet18@/path/weights.pth`` loads a local state dict instead,
for machines without network access.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from lookalike.embedders.base import Embedder
from lookalike.errors import ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchvisionEmbedder(Embedder):
    batch_size = 64

    def __init__(
        self, arch: str, weights_file: str | None = None, size: int = 224, device: str | None = None
    ):
        import torch

        from lookalike.devices import resolve_device
        from lookalike.embedders._metric_net import TorchvisionBackbone, load_backbone_weights

        self.device = resolve_device(device)  # a device this machine lacks fails before a download
        self.name = f"torchvision:{arch}" + (f"@{weights_file}" if weights_file else "")
        self.size = size
        self._torch = torch
        if weights_file:
            backbone = TorchvisionBackbone(arch, in_channels=3, weights=None)
            load_backbone_weights(backbone, weights_file, arch)
        else:
            try:
                backbone = TorchvisionBackbone(arch, in_channels=3, weights="DEFAULT")
            except ModelError:
                raise
            except Exception as exc:  # noqa: BLE001 - download or cache failures
                raise ModelError(
                    f"cannot get pretrained weights for torchvision:{arch} ({exc}); "
                    "when offline, pass a local "
                    f"file: torchvision:{arch}@/path/to/weights.pth"
                ) from None
        self.model = backbone.eval().to(self.device)
        self.dim = int(backbone.out_dim)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def _embed_batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        torch = self._torch
        arr = np.stack(
            [
                np.asarray(
                    img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR), np.float32
                )
                for img in images
            ]
        )
        x = torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2) / 255.0
        x = (x - self._mean) / self._std
        with torch.inference_mode():
            return self.model(x).cpu().numpy()


def load(spec: str, device: str | None = None) -> Embedder:
    arch, _, weights = spec.partition("@")
    if not arch:
        raise ModelError("torchvision model needs a name: torchvision:resnet18[@weights.pth]")
    return TorchvisionEmbedder(arch, weights or None, device=device)
