"""Map similarity (paper 000, Sec. 4 "Quantitative Evaluation on MNIST").

Paper 000 scores a saliency map by its similarity to the input image it explains: both are
rescaled to [0, 1] (min-max; the image is first averaged over its colour channels), then
Pearson correlation, Spearman rank correlation, weighted Jaccard similarity
(sum min / sum max), SSIM (scikit-image, data range 1, 7 x 7 window) and the normalised
reverse MSE (1 - MSE; SSIM's window shrinks to the largest odd size <= the map side for
maps under 7 px; both maps lie in [0, 1], so it lies in [0, 1]); the larger, the better
for all five. ``map_similarity`` compares any two maps the same way (used by ``mprt``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from salbench.metrics.registry import register

KEYS = ("pearson", "spearman", "wjaccard", "ssim", "nrmse")


def rescale(a: np.ndarray) -> np.ndarray:
    """Min-max rescale to [0, 1]; a constant array becomes zeros."""
    a = np.asarray(a, np.float64)
    if not np.isfinite(a).all():
        raise ValueError("map contains NaN or inf")
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def map_similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The five similarity scores of two maps float [H, W] (each rescaled to [0, 1])."""
    from scipy.stats import rankdata  # imported when used: scipy.stats takes 0.25 s
    from skimage.metrics import structural_similarity
    a, b = rescale(a), rescale(b)
    union = np.maximum(a, b).sum()
    side = min(7, *a.shape)
    win = side - (side % 2 == 0) if side >= 3 else None
    return {
        "pearson": _pearson(a, b),
        "spearman": _pearson(rankdata(a.ravel()), rankdata(b.ravel())),
        "wjaccard": float(np.minimum(a, b).sum() / union) if union > 0 else float("nan"),
        "ssim": float(structural_similarity(a, b, data_range=1.0, win_size=win))
        if win else float("nan"),
        "nrmse": float(1.0 - np.mean((a - b) ** 2)),
    }


@register("similarity", stage="cpu", columns={f"similarity_{k}": "float" for k in KEYS})
def similarity(sample: dict[str, Any]) -> dict[str, float]:
    """Similarity of the map to the input image (paper 000): Pearson, Spearman, weighted
    Jaccard, SSIM, normalised reverse MSE, both rescaled to [0, 1]."""
    gray = np.asarray(sample["image"], np.float64).mean(-1)
    return {f"similarity_{k}": v for k, v in map_similarity(sample["map"], gray).items()}
