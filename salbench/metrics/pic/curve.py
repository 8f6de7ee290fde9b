"""PIC curve maths: the curve of one image from its levels and predictions, and aggregation.

Steps 4 and 5 of the protocol in :mod:`salbench.metrics.pic` (skips, normalisation, running
maximum, interpolation, AUC) and PAIR's dataset aggregation; NumPy only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_THRESHOLDS: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75,
)
#: pic_blur: fractions j / 24 of revealed pixels, j = 1..23 (j = 0 is the base, 24 the original).
PIC_BLUR_STEPS = 24
PIC_BLUR_THRESHOLDS: tuple[float, ...] = tuple(j / PIC_BLUR_STEPS for j in range(1, PIC_BLUR_STEPS))
KINDS = ("sic", "aic")
STATUS_OK = "ok"
SKIP_STATUSES = ("skip_min_pred", "skip_blurred_info", "skip_blurred_pred")
ERROR_STATUS = "invalid_input"


@dataclass(frozen=True)
class PicCurve:
    """One image's PIC curve (see :mod:`salbench.metrics.pic`).

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


def curve_grid(num_points: int) -> np.ndarray:
    """The curve's x: k / (num_points - 1) for k < num_points - 1, then 1.0; float64."""
    return np.append(np.linspace(0.0, 1.0, num_points - 1, endpoint=False), 1.0)


def invalid_curve(message: str, thresholds: tuple[float, ...], num_points: int) -> PicCurve:
    """The ``invalid_input`` curve (NaN y, levels and predictions) with the reason."""
    grid = curve_grid(num_points)
    n = len(thresholds)
    return PicCurve(ERROR_STATUS, grid, np.full_like(grid, np.nan), float("nan"), message,
                    thresholds, np.full(n, np.nan), np.full(n, np.nan))


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
    grid = curve_grid(num_points)
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
