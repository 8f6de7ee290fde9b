"""Sufficiency (Dasgupta et al. 2022), as Quantus 0.6 computes it, on the model stage.

Local sufficiency of an explanation: among the *other* images whose explanations are close
to it, the share that the model gives the same top-1 class. Closeness as Quantus: the
maps' absolute values, flattened, compared by ``distance_func`` (SciPy ``cdist``; default
"seuclidean", each pixel scaled by its variance over the images compared), the distance
matrix divided by its largest value, and "close" when at most ``threshold``. The images
compared are those of one model-stage batch (Quantus compares those of the batch it is
given): the score depends on ``resources.batch_size`` and on which images share a batch,
not on randomness. Pixels that do not vary over the batch are left out of "seuclidean"
(Quantus divides by their zero variance and then finds no image close). NaN when no other
image is close (Quantus: 0). In [0, 1], higher is better; 1 pass per map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.spatial.distance import cdist

from salbench.errors import BadInputError
from salbench.metrics.registry import register
from salbench.metrics.removal import feature_values, predictions
from salbench.models.base import Classifier


def local_sufficiency(a: np.ndarray, classes: np.ndarray, threshold: float = 0.6,
                      distance_func: str = "seuclidean") -> np.ndarray:
    """a float [B, N] (|map| flattened), classes int [B] -> float64 [B] in [0, 1] or NaN."""
    if distance_func == "seuclidean":
        varying = a.var(0) > 0
        a = a[:, varying]
    if len(a) < 2 or a.shape[1] == 0:
        return np.full(len(a), np.nan)
    try:
        dist = cdist(a, a, distance_func)
    except ValueError as exc:
        raise BadInputError(f"distance_func {distance_func!r}: {exc}") from None
    peak = np.nanmax(np.abs(dist)) if np.isfinite(dist).any() else 0.0
    if peak > 0:
        dist = dist / peak
    close = (dist <= threshold) & ~np.eye(len(a), dtype=bool)
    same = classes[None, :] == classes[:, None]
    n = close.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (close & same).sum(1) / np.where(n > 0, n, 1), np.nan)


@register("sufficiency", stage="model", columns={"sufficiency": "float"},
          directions={"sufficiency": "higher"})
def sufficiency(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    threshold: float = 0.6,
    distance_func: str = "seuclidean",
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Sufficiency (Dasgupta et al. 2022): share of the batch's images with a close
    explanation that get the same top-1 class."""
    classes = predictions(model, len(x), lambda i: x[i], device=x.device,
                          internal_batch_size=internal_batch_size).cpu().numpy()
    a = feature_values(maps, None).abs().cpu().numpy()
    return {"sufficiency": local_sufficiency(a, classes, threshold, distance_func)}
