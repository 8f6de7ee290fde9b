"""Performance Information Curves: SIC and AIC (Kapishnikov et al. 2019, XRAI), as in paper 001.

Protocol (SPEC 5), the PAIR ``saliency`` package's ``compute_pic_metric`` (0.2.1), which
:func:`pic_curve` reproduces (tested: AUC within 1e-3, same samples skipped):

1. Bokeh images. For each threshold t of :data:`DEFAULT_THRESHOLDS` (.005 ... .75) keep the
   pixels whose saliency is >= the (1 - t)-quantile of the map (``np.quantile``, linear; ties
   are all kept, so a constant map keeps every pixel), plus the random mask (1% of the pixels,
   :func:`generate_random_mask`) and the four image corners; every other pixel is filled by
   linear interpolation (Delaunay triangulation of the kept pixels, ``LinearNDInterpolator``
   as in ``scipy.interpolate.griddata``), pixels outside the hull with the image's mean
   colour, then rounded to uint8 (through float32, as PAIR). If every pixel is kept the image
   is the original. The *fully blurred* image keeps only the random mask and the corners.
2. Information level: the lossless WebP size in bytes (Pillow, ``lossless=True,
   quality=100``; PAIR's ``estimate_image_entropy``) normalised as
   (s - s_blurred) / (s_original - s_blurred) and clipped to [0, 1]
   (``info="webp"``); or MS-SSIM(bokeh, original) (``info="msssim"``, paper 001, see below).
3. Prediction ``predict`` on uint8 images: the softmax probability of the original class
   (SIC) or 1.0/0.0 "the original class is still top-1" (AIC), normalised as
   (p - p_blurred) / (p_original - p_blurred) and clipped to [0, 1]; with
   ``keep_monotonous`` the running maximum in threshold order.
4. Skipping (a status, never an exception), checked in PAIR's order:
   ``skip_min_pred`` (p_original < min_pred), ``skip_blurred_info`` (the fully blurred
   image is at least as informative as the original), ``skip_blurred_pred`` (it is at least
   as predictive). A non-finite map or image of the wrong type gives ``invalid_input``.
5. The curve: the points (level, prediction) plus (0, 0) and (1, 1), sorted by level (stable),
   interpolated linearly (``interp1d``, i.e. ``np.interp`` with scipy 1.17: at a level shared
   by several points the value of the last) at x = k / (num_points - 1), k < num_points - 1,
   and y = 1 at x = 1; AUC by the trapezoid rule. Aggregation over images
   (:func:`aggregate`): the median curve (SIC) or the mean curve (AIC) of the "ok" curves,
   and its AUC.

Deviations from PAIR, each one noted where it happens:
- ``interpolate_curve`` follows PAIR on the installed scipy (1.17, whose ``interp1d``
  delegates float64 data to ``np.interp``). scipy's generic linear code
  (``interp1d._call_linear``: other dtypes, older releases) takes the *first* of tied levels
  and returns NaN at x = 0 when a bokeh level clips to 0 (0 / 0 against the (0, 0) anchor),
  which would make PAIR's AUC NaN; that is not reproduced.
- ``num_points`` counts every point (PAIR's ``num_data_points`` + 1); min_pred defaults to 0.
- ``info="msssim"`` (paper 001, Sec. 4.5): the level is MS-SSIM(bokeh, original) itself
  (5 scales, window 11, sigma 1.5; :mod:`salbench.metrics.msssim`, small images upsampled),
  not normalised by the fully blurred image's MS-SSIM (the paper uses it as the level
  directly); the original's level is 1, and the blurred-information skip fires only when
  MS-SSIM(blurred, original) >= 1.
- Speed, not results: one triangulation per bokeh image (PAIR triangulates once per colour
  channel; the barycentric weights do not depend on the values, so the results are equal bit
  for bit), bokeh images and WebP sizes in a thread pool (both release the GIL), predictions
  batched, and an LRU cache (:data:`BOKEH_CACHE`) of bokeh images and levels keyed by content
  hashes, so ``sic`` and ``aic`` (or several methods' fully blurred images) share the work.

``pic_blur`` (paper 001, Sec. 4.4, the IDGI replication preset): the base is the image
blurred by Pillow's ``GaussianBlur(radius=20)``; 25 bokeh images reveal the top
round(j / 24 * H * W) pixels, j = 0..24 (evenly spaced pixel counts, ranking by saliency,
ties in raster order) and take every other pixel from the base; j = 0 is the base itself
(the "fully blurred" image) and j = 24 the original. Levels, normalisation, skips, curve and
AUC are as above (no random mask). The paper then bins the (level, value) pairs of all images
into 100 bins (SIC: median of p / p_original, AIC: mean top-1 accuracy); the per-sample
points are returned for that (:func:`aggregate_binned`).

Cost (no ``fast`` profile: fewer thresholds would change the protocol). Measured on the
shared 2-core dev machine, one 224 x 224 image and map, torch/BLAS 1 thread, median of 3:
PAIR ``compute_pic_metric`` 25.5 s as installed (threaded OpenBLAS, see
:func:`single_threaded_blas`), 5.4 s with one BLAS thread; :func:`pic_curve` 2.25 s
(~1.2 s triangulations, ~1.0 s for 15 WebP encodings), the MS-SSIM level ~0.08 s per bokeh
image (float64), pic_blur ~2.8 s (25 WebP encodings). A second metric on the same images
and maps (``aic`` after ``sic``) is served from the cache. The thread pool scales with free
cores (it did not help on that saturated machine).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from salbench.methods.engine import for_chunks
from salbench.metrics.msssim import ms_ssim
from salbench.metrics.registry import register
from salbench.models.base import to_uint8

DEFAULT_THRESHOLDS: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75,
)
#: pic_blur: fractions j / 24 of revealed pixels, j = 1..23 (j = 0 is the base, 24 the original).
PIC_BLUR_STEPS = 24
PIC_BLUR_THRESHOLDS: tuple[float, ...] = tuple(j / PIC_BLUR_STEPS for j in range(1, PIC_BLUR_STEPS))
INFOS = ("webp", "msssim")
BOKEHS = ("interp", "blur")
KINDS = ("sic", "aic")
STATUS_OK = "ok"
SKIP_STATUSES = ("skip_min_pred", "skip_blurred_info", "skip_blurred_pred")
ERROR_STATUS = "invalid_input"


@dataclass(frozen=True)
class PicCurve:
    """One image's PIC curve (see the module docstring).

    Attributes:
        status: "ok", a skip reason (``skip_min_pred``, ``skip_blurred_info``,
            ``skip_blurred_pred``) or ``invalid_input``.
        x, y: the curve, float64 [num_points] (y is NaN unless status is "ok").
        auc: area under the curve (NaN unless "ok").
        message: why the sample was skipped, in words ("" when ok).
        thresholds: the thresholds used, ascending.
        levels: raw information level (WebP bytes, or MS-SSIM) of each bokeh image
            [len(thresholds)] (NaN where not computed).
        preds: raw prediction of each bokeh image [len(thresholds)] (NaN where not computed).
        level_original, level_blurred: raw information levels (bytes, or MS-SSIM).
        pred_original, pred_blurred: raw predictions.
    """

    status: str
    x: np.ndarray
    y: np.ndarray
    auc: float
    message: str = ""
    thresholds: tuple[float, ...] = ()
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    preds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    level_original: float = float("nan")
    level_blurred: float = float("nan")
    pred_original: float = float("nan")
    pred_blurred: float = float("nan")

    @property
    def ok(self) -> bool:
        """True when the curve is valid (status "ok")."""
        return self.status == STATUS_OK


# --------------------------------------------------------------------------- building blocks


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
    OpenBLAS each call synchronises its threads, which on a busy machine made a 64 x 64
    bokeh image take ~1 s instead of ~5 ms. One thread gives the same numbers. No-op
    without ``threadpoolctl``.
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
    known = np.argwhere(mask).astype(np.float64)
    unknown_idx = np.nonzero(~mask)
    unknown = np.stack(unknown_idx, axis=1).astype(np.float64)
    values = img3[mask].astype(np.float64)  # [n, C], raster order as argwhere
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


def webp_size(image: np.ndarray) -> int:
    """Lossless WebP size in bytes (PAIR's ``estimate_image_entropy``: quality 100)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="webp", lossless=True, quality=100)
    return buffer.tell()


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


# --------------------------------------------------------------------------- the curve


def interpolate_curve(
    levels: Sequence[float], values: Sequence[float], num_points: int = 1001
) -> tuple[np.ndarray, np.ndarray]:
    """The PIC curve through (levels, values) plus (0, 0) and (1, 1), float64 [num_points].

    PAIR's construction: the points sorted by level (stable mergesort, as ``interp1d``),
    linear interpolation at x = k / (num_points - 1) for k < num_points - 1, then (1, 1).
    ``interp1d`` (scipy 1.17, installed) delegates float64 data to ``np.interp``, used here on
    all x at once (same operations): at a level shared by several points the value of the
    last of them in sorted order, so at x = 0 the (0, 0) anchor's (it comes after the bokeh
    points).
    """
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    px = np.asarray([*map(float, levels), 0.0, 1.0], dtype=np.float64)
    py = np.asarray([*map(float, values), 0.0, 1.0], dtype=np.float64)
    order = np.argsort(px, kind="mergesort")
    xs = np.linspace(0.0, 1.0, num_points - 1, endpoint=False)
    ys = np.interp(xs, px[order], py[order])
    return np.append(xs, 1.0), np.append(ys, 1.0)


def skip_status(
    level_original: float, level_blurred: float, pred_original: float, pred_blurred: float,
    min_pred: float = 0.0,
) -> tuple[str, str]:
    """PAIR's skipping rules in PAIR's order: (status, message); ("ok", "") if none applies."""
    if pred_original < min_pred:
        return "skip_min_pred", (f"prediction on the original image {pred_original:.6g} "
                                 f"< min_pred {min_pred:.6g}")
    if level_blurred >= level_original:
        return "skip_blurred_info", (f"fully blurred image's information level "
                                     f"{level_blurred:.6g} >= the original's {level_original:.6g}")
    if pred_blurred >= pred_original:
        return "skip_blurred_pred", (f"prediction on the fully blurred image {pred_blurred:.6g}"
                                     f" >= on the original {pred_original:.6g}")
    return STATUS_OK, ""


def curve_from_levels(
    level_original: float,
    level_blurred: float,
    levels: Sequence[float],
    pred_original: float,
    pred_blurred: float,
    preds: Sequence[float],
    *,
    min_pred: float = 0.0,
    keep_monotonous: bool = True,
    num_points: int = 1001,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    normalize_levels: bool = True,
) -> PicCurve:
    """Post-processing of PIC: skips, normalisation, running max, interpolation, AUC.

    ``levels`` / ``preds``: raw information level and prediction of each bokeh image, in
    threshold order (may be empty when the sample is skipped; they are kept in the result
    when given). With ``normalize_levels`` the levels are (l - l_blurred) /
    (l_original - l_blurred) (WebP), else used as they are (MS-SSIM); both clipped to [0, 1].
    """
    thresholds = tuple(float(t) for t in thresholds)
    grid = np.append(np.linspace(0.0, 1.0, num_points - 1, endpoint=False), 1.0)
    n = len(thresholds)
    raw_levels = np.asarray(levels, dtype=np.float64)
    raw_preds = np.asarray(preds, dtype=np.float64)
    if raw_levels.size == 0:
        raw_levels = np.full(n, np.nan)
    if raw_preds.size == 0:
        raw_preds = np.full(n, np.nan)
    if raw_levels.shape != (n,) or raw_preds.shape != (n,):
        raise ValueError(f"expected {n} levels and predictions, got {raw_levels.shape} and "
                         f"{raw_preds.shape}")
    common = dict(thresholds=thresholds, levels=raw_levels, preds=raw_preds,
                  level_original=float(level_original), level_blurred=float(level_blurred),
                  pred_original=float(pred_original), pred_blurred=float(pred_blurred))
    status, message = skip_status(level_original, level_blurred, pred_original, pred_blurred,
                                  min_pred)
    if status != STATUS_OK:
        return PicCurve(status, grid, np.full_like(grid, np.nan), float("nan"), message,
                        **common)  # type: ignore[arg-type]
    if not (np.isfinite(raw_levels).all() and np.isfinite(raw_preds).all()
            and np.isfinite([level_original, level_blurred, pred_original, pred_blurred]).all()):
        return PicCurve(ERROR_STATUS, grid, np.full_like(grid, np.nan), float("nan"),
                        "non-finite information level or prediction", **common)  # type: ignore[arg-type]
    if normalize_levels:
        x = (raw_levels - level_blurred) / (level_original - level_blurred)
    else:
        x = raw_levels
    x = np.clip(x, 0.0, 1.0)
    y = np.clip((raw_preds - pred_blurred) / (pred_original - pred_blurred), 0.0, 1.0)
    if keep_monotonous:
        y = np.maximum.accumulate(y)
    cx, cy = interpolate_curve(x, y, num_points)
    auc = float(np.trapezoid(cy, cx))
    return PicCurve(STATUS_OK, cx, cy, auc, "", **common)  # type: ignore[arg-type]


def aggregate(
    curves: Iterable[PicCurve], kind: str = "sic"
) -> tuple[np.ndarray, np.ndarray, float]:
    """PAIR's ``aggregate_individual_pic_results`` over the "ok" curves: (x, y, auc).

    kind "sic": the median curve; "aic": the mean curve; auc by the trapezoid rule.
    Raises ValueError if no curve is "ok" or their x grids differ.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    ok = [c for c in curves if c.status == STATUS_OK]
    if not ok:
        raise ValueError("aggregate: no curve with status 'ok'")
    xs = np.asarray([c.x for c in ok], dtype=np.float64)
    if not (xs == xs[0]).all():
        raise ValueError("aggregate: the curves have different x grids")
    ys = np.asarray([c.y for c in ok], dtype=np.float64)
    y = np.median(ys, axis=0) if kind == "sic" else np.mean(ys, axis=0)
    return xs[0], y, float(np.trapezoid(y, xs[0]))


def aggregate_binned(
    levels: np.ndarray, values: np.ndarray, *, kind: str = "sic", bins: int = 100
) -> tuple[np.ndarray, np.ndarray, float]:
    """Paper 001's dataset-level PIC (pic_blur): bin all (level, value) pairs by level.

    levels, values: float [N, K] (or flat), NaN pairs ignored. Bins: ``bins`` equal bins on
    [0, 1] (level 1 in the last). Per bin the median (SIC, values p / p_original) or the mean
    (AIC, top-1 accuracy); empty bins are filled by linear interpolation between the
    neighbouring non-empty bins (constant beyond the ends). Returns the bin centres, the
    binned curve and its AUC (mean over bins, i.e. width 1 / bins each).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    lv = np.asarray(levels, np.float64).ravel()
    vv = np.asarray(values, np.float64).ravel()
    keep = np.isfinite(lv) & np.isfinite(vv)
    lv, vv = np.clip(lv[keep], 0.0, 1.0), vv[keep]
    if lv.size == 0:
        raise ValueError("aggregate_binned: no finite (level, value) pair")
    idx = np.minimum((lv * bins).astype(np.int64), bins - 1)
    centres = (np.arange(bins) + 0.5) / bins
    agg = np.full(bins, np.nan)
    for b in np.unique(idx):
        sel = vv[idx == b]
        agg[b] = np.median(sel) if kind == "sic" else np.mean(sel)
    have = np.isfinite(agg)
    curve = np.interp(centres, centres[have], agg[have])
    return centres, curve, float(curve.mean())


# --------------------------------------------------------------------------- cache


class _LRU:
    """Thread-safe LRU of computed bokeh images / levels, bounded by a byte budget."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[tuple[Any, ...], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: tuple[Any, ...], value: Any, nbytes: int) -> None:
        with self._lock:
            if nbytes > self.max_bytes:
                return
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._data[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and self._data:
                _, (_, nb) = self._data.popitem(last=False)
                self._bytes -= nb

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._data.clear()
            self._bytes = 0


#: Bokeh images and information levels, keyed by content hashes (results never change; set
#: ``BOKEH_CACHE.max_bytes = 0`` to disable, ``BOKEH_CACHE.clear()`` to free).
BOKEH_CACHE = _LRU(int(os.environ.get("SALBENCH_PIC_CACHE_MB", "256")) * 2**20)


def default_workers() -> int:
    """Threads for bokeh images / WebP sizes: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _run(fn: Callable[[Any], Any], items: Sequence[Any], workers: int) -> list[Any]:
    with single_threaded_blas():
        if workers <= 1 or len(items) <= 1:
            return [fn(it) for it in items]
        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(fn, items))


@dataclass
class _Job:
    """One (image, map) pair's CPU work; filled in stages by :class:`_PicEngine`."""

    image: np.ndarray
    saliency_map: np.ndarray | None
    random_mask: np.ndarray | None
    valid: bool = True
    message: str = ""
    image_key: bytes = b""
    base: np.ndarray | None = None
    level_original: float = float("nan")
    level_blurred: float = float("nan")
    bokeh: list[np.ndarray] = field(default_factory=list)
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0))


class _PicEngine:
    """Bokeh images and information levels for many (image, map) pairs, threaded + cached."""

    def __init__(self, *, info: str, bokeh: str, thresholds: Sequence[float],
                 blur_radius: float, num_workers: int | None) -> None:
        if info not in INFOS:
            raise ValueError(f"info must be one of {INFOS}, got {info!r}")
        if bokeh not in BOKEHS:
            raise ValueError(f"bokeh must be one of {BOKEHS}, got {bokeh!r}")
        self.info, self.bokeh = info, bokeh
        self.thresholds = tuple(float(t) for t in thresholds)
        if list(self.thresholds) != sorted(self.thresholds) or not all(
            0.0 <= t <= 1.0 for t in self.thresholds
        ):
            raise ValueError(f"thresholds must be ascending in [0, 1], got {self.thresholds}")
        self.blur_radius = float(blur_radius)
        self.workers = default_workers() if num_workers is None else max(1, int(num_workers))

    def _mode_key(self) -> tuple[Any, ...]:
        return ("interp",) if self.bokeh == "interp" else ("blur", self.blur_radius)

    def _levels(self, images: list[np.ndarray], original: np.ndarray) -> np.ndarray:
        if self.info == "webp":
            return np.asarray(_run(webp_size, images, self.workers), dtype=np.float64)
        return msssim_levels(images, original)

    def prepare(self, jobs: list[_Job]) -> None:
        """Base ("fully blurred") image and the original's and base's levels of each job."""
        todo = []
        for job in jobs:
            if not job.valid:
                continue
            mask_key = (content_hash(job.random_mask) if self.bokeh == "interp" else b"")
            job.image_key = content_hash(job.image) + mask_key
            hit = BOKEH_CACHE.get(("base", self._mode_key(), job.image_key, self.info))
            if hit is not None:
                job.base, job.level_original, job.level_blurred = hit
            else:
                todo.append(job)

        def base_of(job: _Job) -> np.ndarray:
            if self.bokeh == "interp":
                return bokeh_image(job.image, job.random_mask)
            return blur_base(job.image, self.blur_radius)

        bases = _run(base_of, todo, self.workers)
        for job, base in zip(todo, bases, strict=True):
            job.base = base
        if self.info == "webp":
            sizes = _run(webp_size, [im for j in todo for im in (j.image, j.base)], self.workers)
            pairs = [(sizes[2 * i], sizes[2 * i + 1]) for i in range(len(todo))]
        else:
            pairs = [(float(lv[0]), float(lv[1]))
                     for lv in (msssim_levels([j.image, j.base], j.image) for j in todo)]
        for job, (lo, lb) in zip(todo, pairs, strict=True):
            job.level_original, job.level_blurred = float(lo), float(lb)
            BOKEH_CACHE.put(("base", self._mode_key(), job.image_key, self.info),
                            (job.base, job.level_original, job.level_blurred),
                            job.base.nbytes + 16)

    def bokeh_images(self, jobs: list[_Job]) -> None:
        """The bokeh image and raw level of every threshold of every job."""
        todo: list[tuple[_Job, tuple[Any, ...]]] = []
        for job in jobs:
            key = (self._mode_key(), self.thresholds, job.image_key,
                   content_hash(np.asarray(job.saliency_map)))
            imgs = BOKEH_CACHE.get(("bokeh", *key))
            lv = BOKEH_CACHE.get(("levels", self.info, *key))
            if imgs is not None and lv is not None:
                job.bokeh, job.levels = imgs, lv
            else:
                todo.append((job, key))
        tasks: list[tuple[int, int, np.ndarray]] = []
        for i, (job, key) in enumerate(todo):
            cached = BOKEH_CACHE.get(("bokeh", *key))
            if cached is not None:
                job.bokeh = cached
                continue
            if self.bokeh == "interp":
                masks = threshold_masks(job.saliency_map, job.random_mask, self.thresholds)
            else:
                masks = count_masks(job.saliency_map, self.thresholds)
            job.bokeh = [None] * len(masks)  # type: ignore[list-item]
            tasks += [(i, k, m) for k, m in enumerate(masks)]
        # most revealed pixels first: those triangulations are the slowest (load balancing)
        tasks.sort(key=lambda t: -int(t[2].sum()) if self.bokeh == "interp" else 0)

        def build(task: tuple[int, int, np.ndarray]) -> tuple[int, int, np.ndarray, float]:
            i, k, mask = task
            job = todo[i][0]
            if self.bokeh == "interp":
                img = bokeh_image(job.image, mask)
            else:
                img = np.where(_expand(mask, job.image), job.image, job.base)
            return i, k, img, (float(webp_size(img)) if self.info == "webp" else np.nan)

        built = _run(build, tasks, self.workers)
        for i, k, img, _ in built:
            todo[i][0].bokeh[k] = img
        sizes: dict[tuple[int, int], float] = {(i, k): s for i, k, _, s in built}
        for i, (job, key) in enumerate(todo):
            BOKEH_CACHE.put(("bokeh", *key), job.bokeh, sum(im.nbytes for im in job.bokeh))
            if self.info == "webp":
                missing = [k for k in range(len(job.bokeh)) if (i, k) not in sizes]
                if missing:  # bokeh images came from the cache, their sizes did not
                    for k, s in zip(missing, _run(webp_size, [job.bokeh[k] for k in missing],
                                                  self.workers), strict=True):
                        sizes[(i, k)] = float(s)
                job.levels = np.asarray([sizes[(i, k)] for k in range(len(job.bokeh))])
            else:
                job.levels = msssim_levels(job.bokeh, job.image)
            BOKEH_CACHE.put(("levels", self.info, *key), job.levels, job.levels.nbytes)


def _expand(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    return mask[:, :, None] if image.ndim == 3 else mask


def _check_inputs(image: np.ndarray, saliency_map: np.ndarray,
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
    if bokeh == "interp":
        if random_mask is None or np.asarray(random_mask).shape != image.shape[:2]:
            return "random_mask must be a bool array of the image's [H, W]"
    return ""


# --------------------------------------------------------------------------- public entry


def pic_curve(
    image: np.ndarray,
    saliency_map: np.ndarray,
    random_mask: np.ndarray | None,
    predict: Callable[[np.ndarray], Sequence[float] | np.ndarray],
    *,
    info: str = "webp",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_pred: float = 0.0,
    keep_monotonous: bool = True,
    num_points: int = 1001,
    bokeh: str = "interp",
    blur_radius: float = 20.0,
    num_workers: int | None = None,
) -> PicCurve:
    """One image's Performance Information Curve (SIC or AIC, by ``predict``).

    Args:
        image: uint8 [H, W, 3] (or [H, W] / [H, W, C]).
        saliency_map: float [H, W]; higher = more important (apply abs before if wanted).
        random_mask: bool [H, W], the pixels every bokeh image keeps (PAIR: 1%); unused (may
            be None) with ``bokeh="blur"``.
        predict: uint8 [N, H, W, 3] -> float [N]: softmax of the original class (SIC) or
            1.0/0.0 "still top-1" (AIC). Called twice: on [original, fully blurred], then
            (unless skipped) on all bokeh images at once.
        info: "webp" (normalised lossless WebP size) or "msssim" (MS-SSIM vs the original).
        thresholds: fractions of most salient pixels revealed, ascending.
        min_pred: skip the image if the original's prediction is below this.
        keep_monotonous: running maximum of the normalised predictions.
        num_points: points of the returned curve on [0, 1] (PAIR's num_data_points + 1).
        bokeh: "interp" (PAIR's interpolated images) or "blur" (pic_blur: Gaussian-blurred
            base of radius ``blur_radius``, thresholds = fractions of pixels revealed).
        num_workers: threads for bokeh images and WebP sizes (None: :func:`default_workers`).

    Returns:
        PicCurve; status "ok", a skip reason, or "invalid_input" (never raises on bad data).
    """
    engine = _PicEngine(info=info, bokeh=bokeh, thresholds=thresholds,
                        blur_radius=blur_radius, num_workers=num_workers)
    grid = np.append(np.linspace(0.0, 1.0, num_points - 1, endpoint=False), 1.0)
    problem = _check_inputs(image, saliency_map, random_mask, bokeh)
    if problem:
        n = len(engine.thresholds)
        return PicCurve(ERROR_STATUS, grid, np.full_like(grid, np.nan), float("nan"), problem,
                        engine.thresholds, np.full(n, np.nan), np.full(n, np.nan))
    mask = None if random_mask is None else np.asarray(random_mask, dtype=bool)
    job = _Job(image, np.asarray(saliency_map), mask)
    engine.prepare([job])
    assert job.base is not None
    p_orig, p_blur = np.asarray(predict(np.stack([image, job.base])), np.float64).ravel()[:2]
    post = dict(min_pred=min_pred, keep_monotonous=keep_monotonous, num_points=num_points,
                thresholds=engine.thresholds, normalize_levels=info == "webp")
    status, _ = skip_status(job.level_original, job.level_blurred, p_orig, p_blur, min_pred)
    if status in SKIP_STATUSES:
        return curve_from_levels(job.level_original, job.level_blurred, [], p_orig, p_blur, [],
                                 **post)  # type: ignore[arg-type]
    engine.bokeh_images([job])
    preds = np.asarray(predict(np.stack(job.bokeh)), np.float64).ravel()
    return curve_from_levels(job.level_original, job.level_blurred, job.levels, p_orig, p_blur,
                             preds, **post)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- model side


@torch.no_grad()
def model_scores(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    *,
    internal_batch_size: int = 64,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probability of the target and "target is top-1" (1.0/0.0), float64 [N] each.

    images: uint8 [H, W, 3] each (converted to float / 255 as :func:`to_tensor`); chunked by
    ``internal_batch_size``, halved on out-of-memory.
    """
    n = len(images)
    prob, top1 = np.empty(n), np.empty(n)
    if n == 0:
        return prob, top1
    if device is None:
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else "cpu"
    tgt = torch.as_tensor(np.asarray(targets, np.int64), device=device)

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = int(idx[0]), int(idx[-1]) + 1
        batch = torch.from_numpy(np.stack(images[start:stop])).to(device)
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        logits = model(x).float()
        t = tgt[start:stop].view(-1, 1)
        p = torch.softmax(logits, dim=1).gather(1, t).squeeze(1)
        return p, (logits.argmax(dim=1, keepdim=True) == t).squeeze(1)

    def done(idx: torch.Tensor, result: tuple[torch.Tensor, torch.Tensor]) -> None:
        start, stop = int(idx[0]), int(idx[-1]) + 1
        prob[start:stop] = result[0].double().cpu().numpy()
        top1[start:stop] = result[1].double().cpu().numpy()

    for_chunks(n, internal_batch_size, compute, done)
    return prob, top1


def predictor(
    model: Callable[[torch.Tensor], torch.Tensor], target: int, kind: str = "sic", *,
    internal_batch_size: int = 64,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``predict`` for :func:`pic_curve`: uint8 [N, H, W, 3] -> float [N] for one target.

    kind "sic": softmax probability of ``target``; "aic": 1.0 if ``target`` is top-1.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def predict(images: np.ndarray) -> np.ndarray:
        prob, top1 = model_scores(model, list(images), [target] * len(images),
                                  internal_batch_size=internal_batch_size)
        return prob if kind == "sic" else top1

    return predict


def pic_batch(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    kinds: Sequence[str] = ("sic",),
    info: str = "webp",
    bokeh: str = "interp",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    min_pred: float = 0.0,
    keep_monotonous: bool = True,
    num_points: int = 1001,
    mask_fraction: float = 0.01,
    blur_radius: float = 20.0,
    seed: int = 0,
    internal_batch_size: int = 64,
    num_workers: int | None = None,
) -> dict[str, list[PicCurve]]:
    """PIC curves of a batch: kind -> one PicCurve per sample (same as :func:`pic_curve`).

    x float [B, 3, H, W] in [0, 1] (rounded to uint8 first, as the protocol works on uint8
    images), target int64 [B], maps float [B, H, W]. The random mask of each image is
    :func:`image_mask` (seeded by ``seed`` and the image's content). Two chunked forward
    passes over the whole batch: [original, fully blurred] of every sample (decides the
    skips, so skipped samples cost no bokeh images), then every bokeh image of every sample
    that some kind still needs. One pass serves all ``kinds`` (softmax and top-1 together).
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kinds must be in {KINDS}, got {k!r}")
    engine = _PicEngine(info=info, bokeh=bokeh, thresholds=thresholds,
                        blur_radius=blur_radius, num_workers=num_workers)
    b = x.shape[0]
    maps_np = maps.detach().float().cpu().numpy()
    tgt = target.detach().cpu().numpy().astype(np.int64)
    jobs = []
    for i in range(b):
        img = to_uint8(x[i])
        problem = _check_inputs(img, maps_np[i], np.zeros(img.shape[:2], bool), "interp")
        mask = (image_mask(img, mask_fraction, seed) if bokeh == "interp" and not problem
                else None)
        jobs.append(_Job(img, maps_np[i], mask, valid=not problem, message=problem))
    valid = [j for j in jobs if j.valid]
    engine.prepare(valid)
    vt = [int(tgt[i]) for i, j in enumerate(jobs) if j.valid]
    pre_imgs = [im for j in valid for im in (j.image, j.base)]
    pre_prob, pre_top = model_scores(model, pre_imgs, np.repeat(vt, 2),
                                     internal_batch_size=internal_batch_size)
    pre = {"sic": pre_prob.reshape(-1, 2), "aic": pre_top.reshape(-1, 2)}
    post = dict(min_pred=min_pred, keep_monotonous=keep_monotonous, num_points=num_points,
                thresholds=engine.thresholds, normalize_levels=info == "webp")
    need = [v for v, j in enumerate(valid)
            if any(skip_status(j.level_original, j.level_blurred, *pre[k][v], min_pred)[0]
                   not in SKIP_STATUSES for k in kinds)]
    row = {v: r for r, v in enumerate(need)}
    engine.bokeh_images([valid[v] for v in need])
    imgs = [im for v in need for im in valid[v].bokeh]
    nt = len(engine.thresholds)
    prob, top = model_scores(model, imgs, np.repeat([vt[v] for v in need], nt),
                             internal_batch_size=internal_batch_size)
    preds = {"sic": prob.reshape(-1, nt), "aic": top.reshape(-1, nt)}
    grid = np.append(np.linspace(0.0, 1.0, num_points - 1, endpoint=False), 1.0)
    out: dict[str, list[PicCurve]] = {}
    for k in kinds:
        curves: list[PicCurve] = []
        v = 0
        for j in jobs:
            if not j.valid:
                curves.append(PicCurve(ERROR_STATUS, grid, np.full_like(grid, np.nan),
                                       float("nan"), j.message, engine.thresholds,
                                       np.full(nt, np.nan), np.full(nt, np.nan)))
                continue
            got = v in row
            curves.append(curve_from_levels(
                j.level_original, j.level_blurred, j.levels if got else [], *pre[k][v],
                preds[k][row[v]] if got else [], **post))  # type: ignore[arg-type]
            v += 1
        out[k] = curves
    return out


# --------------------------------------------------------------------------- split form


def pic_prepare(
    image: np.ndarray,
    saliency_map: np.ndarray,
    *,
    info: str = "webp",
    bokeh: str = "interp",
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    mask_fraction: float = 0.01,
    blur_radius: float = 20.0,
    seed: int = 0,
    num_workers: int | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """The CPU half of PIC before any prediction: bokeh images and information levels.

    image uint8 [H, W, 3], saliency_map float [H, W]. Returns (state, images): images uint8
    [2 + T, H, W, 3] = the original, the fully blurred image and the T bokeh images in
    threshold order (all of them: which samples are skipped is only known after the
    predictions); state holds the levels for :func:`pic_finalize` (or the reason the input
    is invalid, with no images). Same random mask and images as :func:`pic_batch`.
    """
    engine = _PicEngine(info=info, bokeh=bokeh, thresholds=thresholds,
                        blur_radius=blur_radius, num_workers=num_workers)
    state: dict[str, Any] = {"thresholds": engine.thresholds, "normalize": info == "webp",
                             "message": ""}
    problem = _check_inputs(image, saliency_map, np.zeros(np.shape(image)[:2], bool), "interp")
    if problem:
        state["message"] = problem
        return state, np.zeros((0, 1, 1, 3), np.uint8)
    mask = image_mask(image, mask_fraction, seed) if bokeh == "interp" else None
    job = _Job(image, np.asarray(saliency_map), mask)
    engine.prepare([job])
    engine.bokeh_images([job])
    assert job.base is not None
    state.update(level_original=job.level_original, level_blurred=job.level_blurred,
                 levels=np.asarray(job.levels, np.float64))
    return state, np.stack([image, job.base, *job.bokeh])


def pic_finalize(
    state: dict[str, Any],
    scores: np.ndarray,
    *,
    min_pred: float = 0.0,
    keep_monotonous: bool = True,
    num_points: int = 1001,
) -> PicCurve:
    """The CPU half of PIC after the predictions: the curve of one sample.

    scores float [2 + T]: the prediction (softmax of the target for SIC, top-1 hit for AIC)
    on the images of :func:`pic_prepare`, in the same order.
    """
    thresholds = state["thresholds"]
    if state["message"]:
        grid = np.append(np.linspace(0.0, 1.0, num_points - 1, endpoint=False), 1.0)
        nan = np.full(len(thresholds), np.nan)
        return PicCurve(ERROR_STATUS, grid, np.full_like(grid, np.nan), float("nan"),
                        state["message"], thresholds, nan, nan)
    s = np.asarray(scores, np.float64)
    return curve_from_levels(
        state["level_original"], state["level_blurred"], state["levels"], s[0], s[1], s[2:],
        min_pred=min_pred, keep_monotonous=keep_monotonous, num_points=num_points,
        thresholds=thresholds, normalize_levels=state["normalize"],
    )


# --------------------------------------------------------------------------- registry


def _coarse(curve: PicCurve, points: int) -> np.ndarray:
    """The curve's y at ``points`` evenly spaced x in [0, 1] (float32; NaN when not ok)."""
    n = len(curve.x)
    if (n - 1) % (points - 1) == 0:
        y = curve.y[:: (n - 1) // (points - 1)]
    else:
        y = np.interp(np.linspace(0.0, 1.0, points), curve.x, curve.y)
    return np.asarray(y, np.float32)


def _columns(name: str, curves: list[PicCurve], curve_points: int) -> dict[str, Any]:
    skipped = [1.0 if c.status in SKIP_STATUSES else (0.0 if c.ok else float("nan"))
               for c in curves]
    return {
        f"{name}_auc": np.asarray([c.auc for c in curves], np.float64),
        f"{name}_skipped": np.asarray(skipped, np.float64),
        f"{name}_curve": [_coarse(c, curve_points) for c in curves],
    }


def _pic_metric(kind: str, info: str) -> Callable[..., dict[str, Any]]:
    name = kind if info == "webp" else f"{kind}_msssim"

    def metric(
        model: Any,
        x: torch.Tensor,
        target: torch.Tensor,
        maps: torch.Tensor,
        *,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        min_pred: float = 0.0,
        keep_monotonous: bool = True,
        num_points: int = 1001,
        curve_points: int = 101,
        mask_fraction: float = 0.01,
        seed: int = 0,
        internal_batch_size: int = 64,
        num_workers: int | None = None,
    ) -> dict[str, Any]:
        curves = pic_batch(
            model, x, target, maps, kinds=(kind,), info=info, bokeh="interp",
            thresholds=tuple(thresholds), min_pred=min_pred, keep_monotonous=keep_monotonous,
            num_points=num_points, mask_fraction=mask_fraction, seed=seed,
            internal_batch_size=internal_batch_size, num_workers=num_workers,
        )[kind]
        return _columns(name, curves, curve_points)

    level = "normalised lossless-WebP size" if info == "webp" else "MS-SSIM vs the original"
    what = "softmax" if kind == "sic" else "accuracy"
    metric.__doc__ = (
        f"{kind.upper()} ({what} information curve, PAIR protocol) with the {level} as the "
        f"information level; per-sample AUC (NaN when skipped), {name}_skipped (1 skipped, "
        "0 ok, NaN invalid map) and the curve at curve_points evenly spaced levels."
    )
    metric.__name__ = name
    return metric


def _cols(name: str) -> dict[str, str]:
    return {f"{name}_auc": "float", f"{name}_skipped": "float", f"{name}_curve": "curve"}


def _first(columns: dict[str, Any]) -> dict[str, Any]:
    """Columns of a one-sample batch -> that sample's values."""
    return {k: v[0] for k, v in columns.items()}


def _split_parts(kind: str, info: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """prepare / finalize of the split form of sic, aic, sic_msssim, aic_msssim."""
    name = kind if info == "webp" else f"{kind}_msssim"

    def prepare(sample: dict[str, Any], *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                mask_fraction: float = 0.01, seed: int = 0, num_workers: int | None = None,
                **_: Any) -> tuple[Any, dict[str, Any], np.ndarray]:
        key = ("interp", info, tuple(thresholds), mask_fraction, seed)
        state, images = pic_prepare(sample["image"], sample["map"], info=info,
                                    thresholds=thresholds, mask_fraction=mask_fraction,
                                    seed=seed, num_workers=num_workers)
        return key, state, images

    def finalize(state: dict[str, Any], prob: np.ndarray, top1: np.ndarray, *,
                 min_pred: float = 0.0, keep_monotonous: bool = True, num_points: int = 1001,
                 curve_points: int = 101, **_: Any) -> dict[str, Any]:
        curve = pic_finalize(state, prob if kind == "sic" else top1, min_pred=min_pred,
                             keep_monotonous=keep_monotonous, num_points=num_points)
        return _first(_columns(name, [curve], curve_points))

    return prepare, finalize


def _summary(name: str, kind: str) -> Callable[[Any], dict[str, tuple[float, int]]]:
    """Dataset-level PIC of one model x method (PAIR's aggregation): the AUC of the median
    (SIC) or mean (AIC) of the samples' curves that were not skipped. The per-sample curves
    in the tables have ``curve_points`` (101) points, so this is the trapezoid AUC on that
    grid (the 1001-point curves are not stored)."""

    def summary(rows: Any) -> dict[str, tuple[float, int]]:
        ok = rows[rows[f"{name}_skipped"] == 0.0]
        if ok.empty:
            return {f"{name}_aggregate_auc": (float("nan"), 0)}
        ys = np.stack([np.asarray(c, np.float64) for c in ok[f"{name}_curve"]])
        y = np.median(ys, axis=0) if kind == "sic" else ys.mean(axis=0)
        x = np.linspace(0.0, 1.0, ys.shape[1])
        return {f"{name}_aggregate_auc": (float(np.trapezoid(y, x)), len(ok))}

    return summary


def _register_pic(kind: str, info: str) -> Callable[..., dict[str, Any]]:
    name = kind if info == "webp" else f"{kind}_msssim"
    prepare, finalize = _split_parts(kind, info)
    return register(name, _pic_metric(kind, info), stage="model", columns=_cols(name), fast={},
                    prepare=prepare, finalize=finalize, summary=_summary(name, kind))


sic = _register_pic("sic", "webp")
aic = _register_pic("aic", "webp")
sic_msssim = _register_pic("sic", "msssim")
aic_msssim = _register_pic("aic", "msssim")


def _pic_blur(
    model: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = PIC_BLUR_STEPS,
    blur_radius: float = 20.0,
    min_pred: float = 0.0,
    keep_monotonous: bool = True,
    num_points: int = 1001,
    curve_points: int = 101,
    internal_batch_size: int = 64,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """pic_blur (paper 001's IDGI replication): Gaussian-blur base (radius 20), 25 bokeh images
    at evenly spaced pixel counts; per-sample SIC and AIC AUCs, plus the raw points (levels,
    p / p_original, top-1) for the paper's 100-bin dataset aggregation (aggregate_binned)."""
    fractions = tuple(j / steps for j in range(1, steps))
    res = pic_batch(
        model, x, target, maps, kinds=KINDS, info="webp", bokeh="blur", thresholds=fractions,
        min_pred=min_pred, keep_monotonous=keep_monotonous, num_points=num_points,
        blur_radius=blur_radius, internal_batch_size=internal_batch_size,
        num_workers=num_workers,
    )
    out: dict[str, Any] = {}
    for kind in KINDS:
        out.update(_columns(f"pic_blur_{kind}", res[kind], curve_points))
    extras = [_pic_blur_points(c_sic, c_aic, steps)
              for c_sic, c_aic in zip(res["sic"], res["aic"], strict=True)]
    for i, key in enumerate(("pic_blur_levels", "pic_blur_prob_ratio", "pic_blur_top1")):
        out[key] = [e[i] for e in extras]
    return out


def _pic_blur_points(c_sic: PicCurve, c_aic: PicCurve,
                     steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample's (normalised levels, p / p_original, top-1) at the steps + 1 pixel counts
    for :func:`aggregate_binned`; NaN when the sample has no usable curve."""
    lo, lb = c_sic.level_original, c_sic.level_blurred
    skipped = c_sic.status in SKIP_STATUSES and c_aic.status in SKIP_STATUSES
    if skipped or not (np.isfinite(c_sic.levels).all() and np.isfinite(c_aic.preds).all()
            and np.isfinite(c_sic.preds).all() and lo > lb):
        nan = np.full(steps + 1, np.nan, np.float32)
        return nan, nan, nan
    lv = np.concatenate([[lb], c_sic.levels, [lo]])
    levels = np.clip((lv - lb) / (lo - lb), 0, 1).astype(np.float32)
    p = np.concatenate([[c_sic.pred_blurred], c_sic.preds, [c_sic.pred_original]])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (p / c_sic.pred_original).astype(np.float32)
    t = np.concatenate([[c_aic.pred_blurred], c_aic.preds, [c_aic.pred_original]])
    return levels, ratio, t.astype(np.float32)


def _pic_blur_prepare(sample: dict[str, Any], *, steps: int = PIC_BLUR_STEPS,
                      blur_radius: float = 20.0, num_workers: int | None = None,
                      **_: Any) -> tuple[Any, dict[str, Any], np.ndarray]:
    fractions = tuple(j / steps for j in range(1, steps))
    state, images = pic_prepare(sample["image"], sample["map"], info="webp", bokeh="blur",
                                thresholds=fractions, blur_radius=blur_radius,
                                num_workers=num_workers)
    return ("blur", blur_radius, fractions), state, images


def _pic_blur_finalize(state: dict[str, Any], prob: np.ndarray, top1: np.ndarray, *,
                       steps: int = PIC_BLUR_STEPS, min_pred: float = 0.0,
                       keep_monotonous: bool = True, num_points: int = 1001,
                       curve_points: int = 101, **_: Any) -> dict[str, Any]:
    post = dict(min_pred=min_pred, keep_monotonous=keep_monotonous, num_points=num_points)
    curves = {k: pic_finalize(state, prob if k == "sic" else top1, **post) for k in KINDS}
    out: dict[str, Any] = {}
    for kind in KINDS:
        out.update(_first(_columns(f"pic_blur_{kind}", [curves[kind]], curve_points)))
    levels, ratio, top = _pic_blur_points(curves["sic"], curves["aic"], steps)
    out.update(pic_blur_levels=levels, pic_blur_prob_ratio=ratio, pic_blur_top1=top)
    return out


pic_blur = register(
    "pic_blur", _pic_blur, stage="model",
    columns={**_cols("pic_blur_sic"), **_cols("pic_blur_aic"), "pic_blur_levels": "curve",
             "pic_blur_prob_ratio": "curve", "pic_blur_top1": "curve"},
    fast={}, prepare=_pic_blur_prepare, finalize=_pic_blur_finalize,
)
