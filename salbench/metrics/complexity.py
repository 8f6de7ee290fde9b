"""Complexity of a saliency map (Quantus 0.6's complexity family): model-free CPU metrics.

- ``sparseness`` (Chalasani et al. 2020): the Gini index of the map's values, in [0, 1)
  (0: uniform; -> 1: all mass on one pixel). Higher is better (a sparser explanation).
- ``complexity`` (Bhatt et al. 2020): the entropy -sum p_i log p_i of the fractional
  contributions p_i = |a_i| / sum_j |a_j|, in [0, log(H*W)]. Lower is better.
- ``effective_complexity`` (Nguyen & Rodriguez Martinez 2020): the number of pixels whose
  (normalised, absolute) value exceeds ``eps``, in [0, H*W]. Lower is better.

Each takes Quantus' ``abs`` and ``normalise`` (see :mod:`salbench.metrics.preprocess`);
sparseness and complexity are scale-free, so ``normalise`` does not change them. An all-zero
map has no distribution: NaN sparseness and complexity (Quantus 0.6.0 returns 0 and NaN),
effective complexity 0. Sparseness and complexity need non-negative values: with
``abs=False`` a map with negative values is an error (``metric_error`` on its row).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from salbench.metrics.preprocess import prepare_map
from salbench.metrics.registry import register


def _non_negative(a: np.ndarray, metric: str) -> np.ndarray:
    if (a < 0).any():
        raise ValueError(f"{metric} needs a non-negative map: with abs=False this map has "
                         "negative values (set abs: true, or reduce the map to |values|)")
    return a.ravel()


def gini_index(saliency_map: np.ndarray, abs: bool = True, normalise: bool = True) -> float:
    """Chalasani et al. (2020)'s sparseness: the Gini index of the map's values (float
    [H, W]), sum_i (2i - n - 1) a_(i) / (n sum_i a_(i)) over the values sorted ascending
    (i = 1..n). In [0, 1 - 1/n]; NaN for an all-zero map."""
    a = np.sort(_non_negative(prepare_map(saliency_map, abs=abs, normalise=normalise),
                              "sparseness"))
    n, total = a.size, a.sum()
    if total == 0:
        return float("nan")
    # np.sum's pairwise sum, not a BLAS dot: the same value whatever BLAS's thread count
    # (the in-process executor and a Ray CPU actor run BLAS with different threads)
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * total))


def entropy_complexity(saliency_map: np.ndarray, abs: bool = True,
                       normalise: bool = True) -> float:
    """Bhatt et al. (2020)'s complexity: the Shannon entropy (natural log) of the fractional
    contributions p_i = a_i / sum_j a_j of the map's values (float [H, W]), 0 log 0 = 0. In
    [0, log n]; NaN for an all-zero map."""
    a = _non_negative(prepare_map(saliency_map, abs=abs, normalise=normalise), "complexity")
    total = a.sum()
    if total == 0:
        return float("nan")
    p = a[a > 0] / total
    return float(-(p * np.log(p)).sum())


def effective_complexity_count(saliency_map: np.ndarray, eps: float = 1e-5, abs: bool = True,
                               normalise: bool = True) -> float:
    """Nguyen & Rodriguez Martinez (2020)'s effective complexity: the number of values of the
    (normalised, absolute) map (float [H, W]) above ``eps``."""
    a = prepare_map(saliency_map, abs=abs, normalise=normalise)
    return float((a > eps).sum())


@register("sparseness", stage="cpu", columns={"sparseness": "float"},
          directions={"sparseness": "higher"})
def sparseness(sample: dict[str, Any], *, abs: bool = True,
               normalise: bool = True) -> dict[str, float]:
    """Sparseness (Chalasani 2020): Gini index of the map; higher is sparser."""
    return {"sparseness": gini_index(sample["map"], abs, normalise)}


@register("complexity", stage="cpu", columns={"complexity": "float"},
          directions={"complexity": "lower"})
def complexity(sample: dict[str, Any], *, abs: bool = True,
               normalise: bool = True) -> dict[str, float]:
    """Complexity (Bhatt 2020): entropy of the map's fractional contributions; lower is better."""
    return {"complexity": entropy_complexity(sample["map"], abs, normalise)}


@register("effective_complexity", stage="cpu", columns={"effective_complexity": "float"},
          directions={"effective_complexity": "lower"})
def effective_complexity(sample: dict[str, Any], *, eps: float = 1e-5, abs: bool = True,
                         normalise: bool = True) -> dict[str, float]:
    """Effective complexity (Nguyen 2020): pixels whose |normalised value| exceeds eps."""
    return {"effective_complexity": effective_complexity_count(sample["map"], eps, abs,
                                                               normalise)}
