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

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_geometry(
    orig_hw: tuple[int, int], input_size: tuple[int, int], crop_fraction: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resized (h, w) and crop offset (top, left) of resize-shorter-side + centre crop."""
    h, w = orig_hw
    out_h, out_w = input_size
    short = round(max(out_h, out_w) / crop_fraction)
    scale = short / min(h, w)
    rh, rw = max(out_h, round(h * scale)), max(out_w, round(w * scale))
    return (rh, rw), ((rh - out_h) // 2, (rw - out_w) // 2)


class Classifier(nn.Module):
    """Wraps a network: [0,1] float input, normalisation inside, logits out.

    Attributes:
        name: registry name of the model.
        input_size: (H, W) the model expects.
        num_classes: K, the number of logits.
        crop_fraction: input_size / resized shorter side (0.875 for the ImageNet standard).
        grayscale: the network takes one channel (the mean of R, G, B) instead of three.
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
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, 3, H, W] in [0, 1] -> logits float [B, K]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected input [B, 3, H, W], got {tuple(x.shape)}")
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


def center_crop(
    img: Image.Image | np.ndarray, input_size: tuple[int, int], crop_fraction: float
) -> np.ndarray:
    """Resize the shorter side to max(input_size) / crop_fraction (bilinear), centre crop.

    img: PIL image or uint8 [H, W, 3] -> uint8 [input_size[0], input_size[1], 3].
    """
    pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, np.uint8))
    pil = pil.convert("RGB")
    (rh, rw), (top, left) = crop_geometry((pil.height, pil.width), input_size, crop_fraction)
    resized = pil.resize((rw, rh), Image.BILINEAR, reducing_gap=None)
    h, w = input_size
    return np.asarray(resized.crop((left, top, left + w, top + h)), dtype=np.uint8).copy()


def crop_boxes(
    boxes: np.ndarray,
    orig_hw: tuple[int, int],
    input_size: tuple[int, int],
    crop_fraction: float,
) -> np.ndarray:
    """Boxes [N, 4] (x0, y0, x1, y1) in original pixels -> float32 [M, 4] in the crop.

    Boxes are clipped to the crop; boxes left with no area (outside the crop) are dropped.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    (rh, rw), (top, left) = crop_geometry(orig_hw, input_size, crop_fraction)
    sy, sx = rh / orig_hw[0], rw / orig_hw[1]
    h, w = input_size
    out = np.stack(
        [b[:, 0] * sx - left, b[:, 1] * sy - top, b[:, 2] * sx - left, b[:, 3] * sy - top],
        axis=1,
    )
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep].astype(np.float32)


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
