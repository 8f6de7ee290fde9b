"""Concentration of a saliency map (paper 004's Concentration Principle, measured).

``concentration_top{k}``: share of the total (non-negative) map mass in the top k% of
pixels, for k = 1, 5, 10; ``concentration_gini``: the Gini coefficient of the pixel masses
(0 = uniform, -> 1 = all mass on one pixel). The map is taken as |map|. A map with zero
mass has NaN shares and Gini.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from salbench.metrics.registry import register

TOP_PERCENTS = (1, 5, 10)


def concentration_scores(saliency_map: np.ndarray) -> dict[str, float]:
    """Top-k% mass shares and the Gini coefficient of |map| (float [H, W])."""
    v = np.abs(np.asarray(saliency_map, np.float64)).ravel()
    if not np.isfinite(v).all():
        raise ValueError("saliency map contains NaN or inf")
    total = v.sum()
    out: dict[str, float] = {}
    s = np.sort(v)[::-1]
    for k in TOP_PERCENTS:
        n = max(1, int(np.ceil(len(v) * k / 100)))
        out[f"concentration_top{k}"] = float(s[:n].sum() / total) if total > 0 else float("nan")
    asc = s[::-1]
    n = len(asc)
    # np.sum's pairwise sum, not a BLAS dot: the same value whatever BLAS's thread count
    # (the in-process executor and a Ray CPU actor run BLAS with different threads)
    weighted = np.sum((2 * np.arange(1, n + 1) - n - 1) * asc)
    gini = weighted / (n * total) if total > 0 else float("nan")
    out["concentration_gini"] = float(gini)
    return out


@register("concentration", stage="cpu",
          columns={**{f"concentration_top{k}": "float" for k in TOP_PERCENTS},
                   "concentration_gini": "float"})
def concentration(sample: dict[str, Any]) -> dict[str, float]:
    """Top-1/5/10% mass shares and Gini coefficient of the saliency map."""
    return concentration_scores(sample["map"])
