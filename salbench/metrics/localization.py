"""Localization metrics that need no model: the pointing game (Zhang et al. 2016)."""

from __future__ import annotations

from typing import Any

import numpy as np

from salbench.metrics.registry import register


def pointing_game_hit(
    saliency_map: np.ndarray, boxes: np.ndarray, tolerance: float = 15.0
) -> float:
    """1.0 if the map's maximum lies within ``tolerance`` px of a ground-truth box, else 0.0.

    saliency_map float [H, W]; boxes float [N, 4] (x0, y0, x1, y1; pixel (r, c) covers
    [c, c+1) x [r, r+1)). Distance is from the pixel centre to the nearest box point. Ties:
    a hit only if every maximal pixel is a hit, so a constant map cannot score by luck.
    Returns NaN when there is no box (the sample has no ground truth).
    """
    m = np.asarray(saliency_map, dtype=np.float64)
    if not np.isfinite(m).all():
        raise ValueError("saliency map contains NaN or inf")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return float("nan")
    rows, cols = np.nonzero(m == m.max())
    cy, cx = rows + 0.5, cols + 0.5
    dx = np.maximum(np.maximum(b[None, :, 0] - cx[:, None], 0), cx[:, None] - b[None, :, 2])
    dy = np.maximum(np.maximum(b[None, :, 1] - cy[:, None], 0), cy[:, None] - b[None, :, 3])
    dist = np.hypot(dx, dy).min(axis=1)
    return float(np.all(dist <= tolerance))


def pointing_game_class_mean(rows: Any) -> dict[str, tuple[float, int]]:
    """The pointing game's dataset figure as Zhang et al. (2016) report it: the hit rate of
    each class (the ground-truth label, else the target), then the mean over classes.

    rows: one model x method's rows with a map (a DataFrame with ``pointing_game_hit``,
    ``label``, ``target``); samples without a box (NaN hit) are left out. Returns
    ``{"pointing_game_class_mean_hit": (value, samples used)}``.
    """
    hits = np.asarray(rows["pointing_game_hit"], np.float64)
    keep = np.isfinite(hits)
    if not keep.any():
        return {"pointing_game_class_mean_hit": (float("nan"), 0)}
    label = np.asarray(rows["label"], np.int64)
    cls = np.where(label >= 0, label, np.asarray(rows["target"], np.int64))[keep]
    classes, inverse = np.unique(cls, return_inverse=True)
    per_class = np.bincount(inverse, weights=hits[keep]) / np.bincount(inverse)
    return {"pointing_game_class_mean_hit": (float(per_class.mean()), int(keep.sum()))}


@register("pointing_game", stage="cpu", columns={"pointing_game_hit": "float"},
          summary=pointing_game_class_mean)
def pointing_game(sample: dict[str, Any], *, tolerance: float = 15.0) -> dict[str, float]:
    """Pointing game (Zhang 2016): is the map's maximum within 15 px of a ground-truth box?"""
    return {"pointing_game_hit": pointing_game_hit(sample["map"], sample["boxes"], tolerance)}


def box_mask(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: pixels whose centre lies inside any box (x0, y0, x1, y1)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    mask = np.zeros(shape, bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float64).reshape(-1, 4):
        mask |= (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
    return mask


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC of ``scores`` for binary ``labels`` (Mann-Whitney U, ties count one half)."""
    from scipy.stats import rankdata

    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def wsol_scores(
    saliency_map: np.ndarray, gt: np.ndarray, thresholds: int = 100
) -> dict[str, float]:
    """WSOL scores of a map against a ground-truth mask (IDGI paper, Sec. 5 / Table 4).

    The map is min-max normalised to [0, 1] (a constant map becomes all zeros) and binarised
    at ``thresholds`` evenly spaced levels in [0, 1); F1 and IoU are maximised and MAE
    (mean |binary map - mask|) minimised over the levels; ROC-AUC ranks the raw map.
    NaN for every score when the mask is empty or covers the whole image.
    """
    m = np.asarray(saliency_map, np.float64)
    if not np.isfinite(m).all():
        raise ValueError("saliency map contains NaN or inf")
    y = np.asarray(gt, bool)
    if not y.any() or y.all():
        nan = float("nan")
        return {"wsol_f1": nan, "wsol_iou": nan, "wsol_mae": nan, "wsol_roc_auc": nan}
    lo, hi = m.min(), m.max()
    norm = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    levels = np.arange(thresholds) / thresholds
    flat, yv = norm.ravel(), y.ravel()
    pos, neg = np.sort(flat[yv]), np.sort(flat[~yv])
    # pixels above each level, counted by binary search in the sorted values: O(n log n)
    tp = len(pos) - np.searchsorted(pos, levels, side="right")
    fp = len(neg) - np.searchsorted(neg, levels, side="right")
    fn = len(pos) - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    iou = tp / np.maximum(tp + fp + fn, 1)
    mae = (fp + fn) / y.size
    return {"wsol_f1": float(f1.max()), "wsol_iou": float(iou.max()),
            "wsol_mae": float(mae.min()), "wsol_roc_auc": roc_auc(m, y)}


@register("wsol", stage="cpu", columns={c: "float" for c in
                                        ("wsol_f1", "wsol_iou", "wsol_mae", "wsol_roc_auc")})
def wsol(sample: dict[str, Any], *, thresholds: int = 100) -> dict[str, float]:
    """Weakly supervised localization against the box masks: best F1 / IoU / MAE, ROC-AUC."""
    gt = box_mask(sample["boxes"], sample["map"].shape)
    return wsol_scores(sample["map"], gt, thresholds)
