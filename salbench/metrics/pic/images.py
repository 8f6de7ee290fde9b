"""PIC's images: random masks, bokeh images (PAIR's interpolation, pic_blur's blurred base).

Step 1 of the protocol in :mod:`salbench.metrics.pic`, and the input checks; NumPy, Pillow and
scipy (imported when a bokeh image is built).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image, ImageFilter


def generate_random_mask(
    height: int, width: int, fraction: float = 0.01, seed: int | np.random.Generator = 0
) -> np.ndarray:
    """bool [H, W] with exactly int(H * W * fraction) pixels set, drawn without replacement.

    PAIR's ``generate_random_mask`` draws from the global NumPy RNG; this takes a seed or a
    ``np.random.Generator`` (same distribution, reproducible).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    size = height * width
    mask = np.zeros(size, dtype=bool)
    mask[rng.choice(size, size=int(size * fraction), replace=False)] = True
    return mask.reshape(height, width)


def content_hash(*arrays: np.ndarray) -> bytes:
    """16-byte BLAKE2b digest of the arrays' dtypes, shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def image_mask(image: np.ndarray, fraction: float = 0.01, seed: int = 0) -> np.ndarray:
    """The random mask of ``image``: seeded by (seed, hash of the image's content).

    The same image gets the same mask whatever the batch it comes in and whichever method's
    map is scored (as PAIR recommends for comparing methods); different images get
    different masks.
    """
    digest = int.from_bytes(content_hash(np.asarray(image))[:8], "little")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, digest])
    return generate_random_mask(image.shape[0], image.shape[1], fraction, rng)


_BLAS_LOCK = threading.Lock()
_BLAS_STATE: dict[str, Any] = {"depth": 0, "limiter": None}


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS/LAPACK to one thread while inside (re-entrant, thread-safe, process-wide).

    scipy's Delaunay computes one tiny LAPACK factorisation per triangle; with a threaded
    OpenBLAS each call synchronises its threads, which on a busy machine makes a bokeh image
    orders of magnitude slower (docs/PERFORMANCE.md, "PIC"). One thread gives the same
    numbers. No-op without ``threadpoolctl``.
    """
    with _BLAS_LOCK:
        if _BLAS_STATE["depth"] == 0:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
                _BLAS_STATE["limiter"] = None
            else:
                _BLAS_STATE["limiter"] = threadpool_limits(1, user_api="blas")
        _BLAS_STATE["depth"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_STATE["depth"] -= 1
            if _BLAS_STATE["depth"] == 0 and _BLAS_STATE["limiter"] is not None:
                _BLAS_STATE["limiter"].restore_original_limits()
                _BLAS_STATE["limiter"] = None


def bokeh_image(image: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """PAIR's ``create_blurred_image`` (linear): keep the masked pixels and the 4 corners,
    interpolate the rest; uint8 image [H, W] or [H, W, C] -> same shape and dtype.

    One Delaunay triangulation serves all channels (PAIR builds one per channel; the results
    are identical). Pixels outside the hull get the image's mean colour; values are cast to
    float32 and rounded half to even, as PAIR does.
    """
    return _interpolated(image, pixel_mask, boundary_only=False)


def fast_bokeh_image(image: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """``bokeh="fast"``: :func:`bokeh_image` with only the *boundary* of the kept pixels
    triangulated (kept pixels with a hidden 8-neighbour, and kept pixels on the image's edge);
    same shapes and dtype.

    Every Delaunay triangle of all kept pixels that covers a hidden pixel has only boundary
    vertices (an interior kept pixel has a kept neighbour strictly inside the circumcircle of
    any triangle large enough to contain another grid point), and such a triangle is a
    Delaunay triangle of the boundary too; so the hidden pixels get the same linear
    interpolation, except where cocircular kept pixels (frequent on a pixel grid, e.g. the
    four neighbours of a lone hidden pixel) allow several Delaunay triangulations and Qhull,
    given another point set, picks another one. The exact mode's choice there is just as
    arbitrary. Saves the most where the kept pixels form regions (smooth maps), little
    where they are speckled (gradient maps at high thresholds).
    """
    return _interpolated(image, pixel_mask, boundary_only=True)


def _interpolated(image: np.ndarray, pixel_mask: np.ndarray, boundary_only: bool) -> np.ndarray:
    from scipy.interpolate import LinearNDInterpolator  # imported when used: 0.3 s
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"bokeh_image: image must be uint8, got {img.dtype}")
    img3 = img if img.ndim == 3 else img[:, :, None]
    h, w = img3.shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"bokeh_image: image must be at least 2x2, got {h}x{w}")
    mask = np.array(pixel_mask, dtype=bool, copy=True)
    if mask.shape != (h, w):
        raise ValueError(f"bokeh_image: mask shape {mask.shape} != image shape {(h, w)}")
    mask[[0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]] = True
    if mask.all():
        return img.copy()
    support = _boundary(mask) if boundary_only else mask
    known = np.argwhere(support).astype(np.float64)
    unknown_idx = np.nonzero(~mask)
    unknown = np.stack(unknown_idx, axis=1).astype(np.float64)
    values = img3[support].astype(np.float64)  # [n, C], raster order as argwhere
    with single_threaded_blas():
        interp = LinearNDInterpolator(known, values, fill_value=np.nan)
        filled = interp(unknown)  # [m, C]
    outside = np.isnan(filled)
    if outside.any():
        mean = img3.mean(axis=(0, 1))
        filled = np.where(outside, mean[None, :], filled)
    out = img3.astype(np.float32)
    out[unknown_idx] = filled  # float64 -> float32, as PAIR's assignment
    out = np.round(out).astype(np.uint8)
    return out if img.ndim == 3 else out[:, :, 0]


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Kept pixels (``mask`` bool [H, W]) with a hidden 8-neighbour, or on the image's edge."""
    hidden = np.pad(~mask, 1, constant_values=False)
    near = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            near |= hidden[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    near[[0, -1], :] = True
    near[:, [0, -1]] = True
    return mask & near


def threshold_masks(
    saliency_map: np.ndarray, random_mask: np.ndarray, thresholds: Sequence[float]
) -> list[np.ndarray]:
    """PAIR's pixel masks: map >= quantile(map, 1 - t) (linear), OR the random mask."""
    return [
        np.logical_or(saliency_map >= np.quantile(saliency_map, 1 - t), random_mask)
        for t in thresholds
    ]


def blur_base(image: np.ndarray, radius: float = 20.0) -> np.ndarray:
    """Pillow ``GaussianBlur(radius)`` of a uint8 image (pic_blur's base)."""
    return np.asarray(Image.fromarray(np.asarray(image)).filter(ImageFilter.GaussianBlur(radius)))


def count_masks(saliency_map: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    """Masks of the top round(f * H * W) pixels (descending saliency, ties in raster order)."""
    flat = np.asarray(saliency_map).ravel()
    order = np.argsort(-flat, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(flat.size)
    return [(rank < round(f * flat.size)).reshape(saliency_map.shape) for f in fractions]


def expand_mask(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """bool [H, W] -> [H, W, 1] for an [H, W, C] image, so that it broadcasts over channels."""
    return mask[:, :, None] if image.ndim == 3 else mask


def check_inputs(image: np.ndarray, saliency_map: np.ndarray,
                 random_mask: np.ndarray | None, bokeh: str) -> str:
    """"" if the inputs are usable, else why not."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        return f"image must be a uint8 array, got {getattr(image, 'dtype', type(image))}"
    if image.ndim not in (2, 3) or image.shape[0] < 2 or image.shape[1] < 2:
        return f"image must be [H, W] or [H, W, C] with H, W >= 2, got {image.shape}"
    m = np.asarray(saliency_map)
    if m.shape != image.shape[:2]:
        return f"saliency map shape {m.shape} != image shape {image.shape[:2]}"
    if not np.issubdtype(m.dtype, np.number) or not np.isfinite(m).all():
        return "saliency map contains NaN or inf"
    if bokeh in ("interp", "fast"):
        if random_mask is None or np.asarray(random_mask).shape != image.shape[:2]:
            return "random_mask must be a bool array of the image's [H, W]"
    return ""
