"""The Classifier contract every model in salbench follows (SPEC 2).

A Classifier takes float images in [0, 1] of shape [B, 3, H, W], normalises them inside, and
returns logits [B, K]. ``preprocess`` maps a PIL image or an HxWx3 uint8 array to the model's
input (resize of the shorter side to ``input_size / crop_fraction``, then a centre crop), and
``transform_boxes`` maps boxes of the original image into that crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from salbench.imaging import center_crop, crop_boxes
from salbench.models import numerics

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Classifier(nn.Module):
    """Wraps a network: [0,1] float input, normalisation inside, logits out.

    Attributes:
        name: registry name of the model.
        input_size: (H, W) the model expects.
        num_classes: K, the number of logits.
        crop_fraction: input_size / resized shorter side (0.875 for the ImageNet standard).
        grayscale: the network takes one channel (the mean of R, G, B) instead of three.
        numerics: the numeric settings of its passes (:mod:`salbench.models.numerics`), or
            None (torch's process-wide defaults).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        input_size: tuple[int, int] = (224, 224),
        num_classes: int = 1000,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        crop_fraction: float = 0.875,
        grayscale: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.num_classes = int(num_classes)
        self.crop_fraction = float(crop_fraction)
        self.grayscale = grayscale
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.numerics: numerics.Numerics | None = None
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, 3, H, W] in [0, 1] -> logits float32 [B, K], under the model's
        numeric settings (``numerics``, given by :func:`salbench.models.numerics.apply`;
        None: whatever precision torch's process-wide flags say)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected input [B, 3, H, W], got {tuple(x.shape)}")
        settings = getattr(self, "numerics", None)
        if settings is None:
            return self.logits(x)
        return numerics.forward(self, x, settings)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits [B, K] of x float [B, 3, H, W] in [0, 1] (normalised here),
        with no numeric settings applied: what :meth:`forward` runs."""
        if self.grayscale:
            x = x.mean(dim=1, keepdim=True)
        return self.net((x - self.mean) / self.std)

    def crop(self, img: Image.Image | np.ndarray) -> np.ndarray:
        """PIL image or HxWx3 uint8 -> the model's centre crop, uint8 [H, W, 3]."""
        return center_crop(img, self.input_size, self.crop_fraction)

    def preprocess(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """PIL image or HxWx3 uint8 -> float32 [3, H, W] in [0, 1] (resize + centre crop)."""
        return to_tensor(self.crop(img))

    def transform_boxes(self, boxes: np.ndarray, orig_hw: tuple[int, int]) -> np.ndarray:
        """Boxes [N, 4] (x0, y0, x1, y1) in original pixels -> float32 [M, 4] in the crop."""
        return crop_boxes(boxes, orig_hw, self.input_size, self.crop_fraction)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1]."""
    arr = np.ascontiguousarray(img)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [0, 1] -> uint8 [H, W, 3] (rounded, clipped)."""
    arr = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()
