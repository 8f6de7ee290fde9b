"""Sufficiency (Dasgupta et al. 2022), as Quantus 0.6 computes it, on the model stage.

Local sufficiency of an explanation: among the *other* images whose explanations are close
to it, the share that the model gives the same top-1 class. Closeness as Quantus: the
maps' absolute values, flattened, compared by ``distance_func`` (SciPy ``cdist``; default
"seuclidean", each pixel scaled by its variance over the images compared), the distance
matrix divided by its largest value, and "close" when at most ``threshold``. The images
compared are those of one model-stage batch (Quantus compares those of the batch it is
given): the score depends on ``resources.batch_size`` and on which images share a batch,
not on randomness. Pixels that do not vary over the batch are left out of "seuclidean"
(Quantus divides by their zero variance and then finds no image close). 0 when no other
image is close (as Quantus; the share is undefined there): ``sufficiency_neighbours`` counts
the close images, so such rows can be told apart. With 2 images in a batch the other one is
never close (the distances are divided by the largest). In [0, 1], higher is better; 1 pass
per map.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salbench.errors import BadInputError
from salbench.metrics.registry import register
from salbench.metrics.removal import feature_values, predictions
from salbench.models.base import Classifier


def local_sufficiency(a: np.ndarray, classes: np.ndarray, threshold: float = 0.6,
                      distance_func: str = "seuclidean") -> tuple[np.ndarray, np.ndarray]:
    """a float [B, N] (|map| flattened), classes int [B] -> (sufficiency float64 [B] in
    [0, 1], number of other images close to each float64 [B])."""
    b = len(a)
    if distance_func == "seuclidean":
        a = a[:, a.var(0) > 0] if b > 1 else a[:, :0]
    if a.shape[1] == 0:  # no pixel varies over the batch: the maps are all equal
        dist = np.zeros((b, b))
    else:
        from scipy.spatial.distance import cdist  # 0.2 s: not at every model actor's start

        try:
            dist = cdist(a, a, distance_func)
        except ValueError as exc:
            raise BadInputError(f"distance_func {distance_func!r}: {exc}") from None
        peak = np.nanmax(np.abs(dist)) if np.isfinite(dist).any() else 0.0
        if peak > 0:
            dist = dist / peak
    close = (dist <= threshold) & ~np.eye(b, dtype=bool)
    same = classes[None, :] == classes[:, None]
    n = close.sum(1)
    share = (close & same).sum(1) / np.maximum(n, 1)
    return share.astype(np.float64), n.astype(np.float64)


@register("sufficiency", stage="model",
          columns={"sufficiency": "float", "sufficiency_neighbours": "float"},
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
    share, n = local_sufficiency(a, classes, threshold, distance_func)
    return {"sufficiency": share, "sufficiency_neighbours": n}
