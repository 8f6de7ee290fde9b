"""PIC's information levels: lossless WebP size (PAIR) or MS-SSIM against the original.

Step 2 of the protocol in :mod:`salbench.metrics.pic`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from salbench.metrics.msssim import ms_ssim


def webp_bytes(image: np.ndarray, quality: int = 100, method: int = 4) -> bytes:
    """Lossless WebP of a uint8 image (Pillow; the defaults are PAIR's
    ``estimate_image_entropy``: quality 100, libwebp's default effort ``method=4``)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="webp", lossless=True,
                                            quality=quality, method=method)
    return buffer.getvalue()


def webp_size(image: np.ndarray) -> int:
    """Lossless WebP size in bytes (PAIR's ``estimate_image_entropy``: quality 100)."""
    return len(webp_bytes(image))


def msssim_levels(images: Sequence[np.ndarray], original: np.ndarray) -> np.ndarray:
    """MS-SSIM(image, original) of uint8 images (float64, data range 255), float64 [N]."""
    if len(images) == 0:
        return np.zeros(0)
    ref = _to_chw(original)
    out = []
    for start in range(0, len(images), 16):
        batch = torch.stack([_to_chw(im) for im in images[start:start + 16]])
        out.append(ms_ssim(batch, ref.expand_as(batch), data_range=255.0).numpy())
    return np.concatenate(out).astype(np.float64)


def _to_chw(image: np.ndarray) -> torch.Tensor:
    a = np.asarray(image)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(np.array(a, dtype=np.float64)).permute(2, 0, 1)
