"""95% intervals that respect what a metric can take.

A Student t interval of the mean can reach past a bounded metric's range (a pointing-game
rate of 0.9 from 10 images: t gives [0.67, 1.13]). The rule, for scalar columns the same as
the summary's (``salbench.results.summary.interval``, with the ranges and the 0 / 1 hit
columns of ``salbench.metrics.registry``):

- hit rates (values 0 or 1, e.g. ``pointing_game_hit``): the Wilson score interval;
- other columns with a known range (AUCs of probabilities, F1, ...): the Student t
  interval clipped to the range;
- everything else: the Student t interval.

:func:`bounded_summary` applies it to a summary written before summaries carried
``ci_method`` (a current summary is used as it is). Curve bands use the same rules per point
(:func:`curve_band`, :func:`moments_band`; the ranges of curve columns are in :data:`CURVE_BOUNDS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from salbench.metrics.registry import BINARY_COLUMNS, bounds
from salbench.results.samples import RunSamples
from salbench.results.summary import t_interval, wilson

#: Curve columns whose points are 0 / 1 per sample (top-1 still correct).
RATE_CURVES = frozenset({"aic_curve", "aic_msssim_curve", "pic_blur_aic_curve"})
#: Curve column -> (lowest, highest) value a point can take.
CURVE_BOUNDS: dict[str, tuple[float, float]] = {
    **{c: (0.0, 1.0) for c in (
        "insertion_curve", "deletion_curve", "insertion_igos_curve", "deletion_igos_curve",
        "pixel_flip_lerf_curve", "pixel_flip_morf_curve", "sic_curve", "aic_curve",
        "sic_msssim_curve", "aic_msssim_curve", "pic_blur_sic_curve", "pic_blur_aic_curve")},
    **{c: (-1.0, 1.0) for c in ("sensitivity_n_curve", "mprt_spearman_curve",
                                "mprt_ssim_curve")},
}


def _finite_bounds(column: str) -> tuple[float, float] | None:
    lo, hi = bounds(column)
    return (lo, hi) if math.isfinite(lo) or math.isfinite(hi) else None


def kind(column: str) -> str:
    """How the 95% interval of scalar ``column`` is computed: ``wilson``, ``t, clipped to
    [lo, hi]`` or ``t`` (for captions)."""
    if column in BINARY_COLUMNS:
        return "wilson"
    rng = _finite_bounds(column)
    if rng is not None:
        return f"t, clipped to [{rng[0]:g}, {rng[1]:g}]"
    return "t"


def interval(values: np.ndarray, column: str) -> tuple[float, float]:
    """The 95% interval of the mean of ``values`` (finite, 1-D) of scalar ``column``."""
    if column in BINARY_COLUMNS:
        return wilson(float(np.sum(values)), len(values))
    low, high = t_interval(values)
    rng = _finite_bounds(column)
    if rng is not None and math.isfinite(low):
        low, high = max(rng[0], low), min(rng[1], high)
    return low, high


def bounded_summary(summary: pd.DataFrame, samples: RunSamples) -> pd.DataFrame:
    """``summary`` with intervals that respect each column's range.

    A summary with ``ci_method`` (written by the current pipeline) already has them and is
    returned as it is. An older one gets the intervals of bounded columns recomputed from
    ``samples`` (ok rows, finite values, as its ``n``; one model x method read at a time)
    and ``ci_method`` added.
    """
    if "ci_method" in summary.columns:
        return summary
    out = summary.copy()
    have = set(samples.columns)
    out["ci_method"] = ["none" if m not in have else "wilson" if m in BINARY_COLUMNS
                        else "t" for m in out["metric"]]
    bounded = out["metric"].isin([m for m in have if kind(m) != "t"])
    for (model, method), rows in out[bounded].groupby(["model", "method"], sort=False):
        cols = sorted(set(rows["metric"]))
        g = samples.group(model, method, ["status", *cols])
        g = g[g["status"] == "ok"]
        for i, metric in zip(rows.index, rows["metric"], strict=True):
            v = g[metric].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            if len(v) < 2:
                continue
            low, high = interval(v, metric)
            if metric not in BINARY_COLUMNS and (low, high) != t_interval(v):
                out.loc[i, "ci_method"] = "t_clipped"
            out.loc[i, ["ci95_low", "ci95_high"]] = low, high
    return out


@dataclass
class CurveMoments:
    """Per-point count, mean and sum of squared deviations of curves added block by block
    (Chan et al.'s pairwise update, stable for any number of blocks): the mean curve and
    its band without holding the curves."""

    n: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    m2: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, block: np.ndarray) -> None:
        """Add float64 [k, points] curves (the same ``points`` as earlier blocks)."""
        k = len(block)
        if k == 0:
            return
        mean = block.mean(axis=0)
        m2 = ((block - mean) ** 2).sum(axis=0)
        if self.n == 0:
            self.n, self.mean, self.m2 = k, mean, m2
            return
        total = self.n + k
        delta = mean - self.mean
        self.mean = self.mean + delta * (k / total)
        self.m2 = self.m2 + m2 + delta ** 2 * (self.n * k / total)
        self.n = total


def curve_band(curves: np.ndarray, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) per point of ``curves`` [n, points] (:func:`moments_band`)."""
    acc = CurveMoments()
    acc.add(np.asarray(curves, np.float64))
    return moments_band(acc, column)


def moments_band(acc: CurveMoments, column: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) per point of the curves summed in ``acc``: Wilson for 0 / 1 curves
    (AIC), the t interval clipped to the column's range when it has one, else plain t;
    low = high = mean for one curve."""
    mean, n = acc.mean, acc.n
    if column in RATE_CURVES:
        bands = [wilson(float(k), n) for k in mean * n]
        return mean, np.array([b[0] for b in bands]), np.array([b[1] for b in bands])
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.975, n - 1) * np.sqrt(acc.m2 / (n - 1)) / math.sqrt(n)
    low, high = mean - half, mean + half
    if column in CURVE_BOUNDS:
        lo, hi = CURVE_BOUNDS[column]
        low, high = np.clip(low, lo, hi), np.clip(high, lo, hi)
    return mean, low, high


def band_kind(column: str) -> str:
    """What :func:`curve_band` draws for ``column``."""
    if column in RATE_CURVES:
        return "95% Wilson interval of the rate"
    if column in CURVE_BOUNDS:
        lo, hi = CURVE_BOUNDS[column]
        return f"95% CI of the mean (Student t, clipped to [{lo:g}, {hi:g}])"
    return "95% CI of the mean (Student t)"
