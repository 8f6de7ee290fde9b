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


@register("pointing_game", stage="cpu", columns={"pointing_game_hit": "float"})
def pointing_game(sample: dict[str, Any], *, tolerance: float = 15.0) -> dict[str, float]:
    """Pointing game (Zhang 2016): is the map's maximum within 15 px of a ground-truth box?"""
    return {"pointing_game_hit": pointing_game_hit(sample["map"], sample["boxes"], tolerance)}
