"""95% intervals that respect what a metric can take.

The summary's interval is Student t of the mean, which for a bounded metric can reach past
its bounds (a pointing-game rate of 0.9 from 10 images: t gives [0.67, 1.13]). The report
uses instead:

- hit rates (values 0 or 1, e.g. ``pointing_game_hit``): the Wilson score interval;
- other metrics with a known range (AUCs of probabilities, F1, Gini, correlations, ...):
  the Student t interval clipped to the range;
- everything else: the Student t interval unchanged.

:func:`bounded_summary` rewrites a summary's ``ci95_low`` / ``ci95_high`` accordingly and
names the method in a column ``interval`` (``wilson``, ``t, clipped to [lo, hi]``, ``t``).
Curve bands use the same rules per point (:func:`curve_band`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

Z95 = float(stats.norm.ppf(0.975))

#: Hit-rate columns: 0 / 1 per sample.
RATE_COLUMNS = frozenset({"pointing_game_hit"})
#: Curve columns whose points are 0 / 1 per sample (top-1 still correct).
RATE_CURVES = frozenset({"aic_curve", "aic_msssim_curve", "pic_blur_aic_curve"})

_UNIT = (0.0, 1.0)
_SIGNED = (-1.0, 1.0)
#: Column -> (lowest, highest) value it can take.
BOUNDS: dict[str, tuple[float, float]] = {
    **{c: _UNIT for c in (
        "insertion_auc", "deletion_auc", "insertion_igos_auc", "deletion_igos_auc",
        "pixel_flip_lerf_auc", "pixel_flip_morf_auc", "sic_auc", "aic_auc", "sic_msssim_auc",
        "aic_msssim_auc", "pic_blur_sic_auc", "pic_blur_aic_auc", "pointing_game_hit",
        "wsol_f1", "wsol_iou", "wsol_mae", "wsol_roc_auc", "concentration_top1",
        "concentration_top5", "concentration_top10", "concentration_gini",
        "similarity_wjaccard",
        "insertion_curve", "deletion_curve", "insertion_igos_curve", "deletion_igos_curve",
        "pixel_flip_lerf_curve", "pixel_flip_morf_curve", "sic_curve", "aic_curve",
        "sic_msssim_curve", "aic_msssim_curve", "pic_blur_sic_curve", "pic_blur_aic_curve")},
    **{c: _SIGNED for c in (
        "similarity_pearson", "similarity_spearman", "similarity_ssim", "mprt_spearman",
        "mprt_ssim", "sensitivity_n", "sensitivity_n_curve", "mprt_spearman_curve",
        "mprt_ssim_curve")},
}


def wilson(hits: float, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a rate ``hits / n``; (nan, nan) when n == 0."""
    if n <= 0:
        return math.nan, math.nan
    p = hits / n
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """Student t 95% interval of the mean of ``values`` (1-D); (nan, nan) when n < 2."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(values.mean())
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def kind(column: str) -> str:
    """Which interval :func:`interval` uses for ``column`` (shown in the report)."""
    if column in RATE_COLUMNS:
        return "wilson"
    if column in BOUNDS:
        lo, hi = BOUNDS[column]
        return f"t, clipped to [{lo:g}, {hi:g}]"
    return "t"


def interval(values: np.ndarray, column: str) -> tuple[float, float]:
    """The 95% interval of the mean of ``values`` (finite, 1-D) for ``column``."""
    if column in RATE_COLUMNS:
        return wilson(float(np.sum(values)), len(values))
    low, high = t_interval(values)
    if column in BOUNDS and math.isfinite(low):
        lo, hi = BOUNDS[column]
        low, high = max(lo, low), min(hi, high)
    return low, high


def bounded_summary(summary: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with the intervals of bounded columns recomputed from ``samples`` (ok
    rows, finite values, as the summary's ``n``) and a column ``interval`` naming the kind.

    Rows of dataset-level figures (no per-sample column) keep their interval (none).
    """
    out = summary.copy()
    out["interval"] = [kind(m) if m in samples.columns else "" for m in out["metric"]]
    ok = samples[samples["status"] == "ok"]
    groups = dict(list(ok.groupby(["model", "method"], sort=False))) if len(ok) else {}
    for i, row in out.iterrows():
        metric = row["metric"]
        if metric not in BOUNDS or metric not in samples.columns:
            continue
        g = groups.get((row["model"], row["method"]))
        if g is None:
            continue
        v = g[metric].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v) == 0 or (len(v) < 2 and metric not in RATE_COLUMNS):
            continue
        out.loc[i, ["ci95_low", "ci95_high"]] = interval(v, metric)
    return out


def curve_band(curves: np.ndarray, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) per point of ``curves`` [n, points]: Wilson for 0 / 1 curves (AIC),
    the t interval clipped to the column's range when it has one, else plain t; low = high
    = mean for one curve."""
    mean = curves.mean(axis=0)
    n = len(curves)
    if column in RATE_CURVES:
        bands = [wilson(float(k), n) for k in curves.sum(axis=0)]
        return mean, np.array([b[0] for b in bands]), np.array([b[1] for b in bands])
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, n - 1) * curves.std(axis=0, ddof=1) / math.sqrt(n)
    low, high = mean - half, mean + half
    if column in BOUNDS:
        lo, hi = BOUNDS[column]
        low, high = np.clip(low, lo, hi), np.clip(high, lo, hi)
    return mean, low, high


def band_kind(column: str) -> str:
    """What :func:`curve_band` draws for ``column``."""
    if column in RATE_CURVES:
        return "95% Wilson interval of the rate"
    if column in BOUNDS:
        lo, hi = BOUNDS[column]
        return f"95% CI of the mean (Student t, clipped to [{lo:g}, {hi:g}])"
    return "95% CI of the mean (Student t)"
