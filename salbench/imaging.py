"""Resize-shorter-side + centre crop of images and their boxes (NumPy and Pillow only).

The models' preprocessing (``Classifier.preprocess``) and the datasets' shard decoding both
use these, so this module sits below both packages (neither imports the other for it) and a
read task crops images without importing torch.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


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
