"""Patch-removal faithfulness metrics of Quantus 0.6 / LATEC, batched on the model stage.

The map is cut into Quantus' grid of ``patch_size`` squares (padded to a multiple of the
patch size, half the padding before; border patches hold fewer pixels); each patch's
relevance is the sum of the map over it (ties keep raster order). Removed patches are
set to ``perturb_baseline`` (:class:`salbench.metrics.removal.Fill`); removal is
cumulative. ``f`` is the target's ``score`` (softmax probability by default, as Quantus).

- ``selectivity`` (Montavon et al. 2018): patches removed most relevant first; the curve
  holds f after each removal (P points for P patches) and ``selectivity`` is its area by
  the trapezoid rule with unit spacing (Quantus' ``get_auc_score``). Lower is better.
  P passes.
- ``region_perturbation`` (Samek et al. 2017): the AOPC, 1/(L+1) sum_{k=0..L}
  (f(x) - f(x_k)) with x_k the image after k removals (the k = 0 term is 0), over the first
  L = min(``regions_evaluation``, P) patches, most relevant first (MoRF,
  ``region_perturbation``, higher is better) and least relevant first (LeRF,
  ``region_perturbation_lerf``, lower is better). Removed patches take uniform noise
  (Samek's choice; Quantus' default is black). 2 L + 1 passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salbench.errors import BadInputError
from salbench.methods.seeding import image_generators
from salbench.metrics.registry import register
from salbench.metrics.removal import (
    Fill,
    feature_values,
    group_sums,
    order,
    patch_ids,
    positions,
    scores,
)
from salbench.models.base import Classifier


def patch_rank(maps: torch.Tensor, patch_size: int, *, descending: bool
               ) -> tuple[torch.Tensor, int]:
    """(rank int64 [B, H*W] of each pixel's patch in the removal order, patches P).

    maps float [B, H, W]; patches ordered by the sum of the map over them."""
    _, h, w = maps.shape
    ids, n = patch_ids(h, w, patch_size, maps.device)
    sums = group_sums(feature_values(maps, None), ids, n)
    pos = positions(order(sums, descending=descending))
    return pos.gather(1, ids.expand(len(maps), -1)), n


def removal_curves(model: Classifier, x: torch.Tensor, target: torch.Tensor,
                   rank: torch.Tensor, steps: int, fill: Fill, score: str,
                   internal_batch_size: int) -> torch.Tensor:
    """f after k = 1..steps cumulative removals, float64 [B, steps]: removal k takes the
    pixels whose rank (int64 [B, H*W]) is below k."""
    b, _, h, w = x.shape

    def points(j: torch.Tensor) -> torch.Tensor:
        i, k = j // steps, j % steps
        removed = rank[i] <= k[:, None]
        return torch.where(removed.view(-1, 1, h, w), fill(i), x[i])

    return scores(model, b * steps, points, target.repeat_interleave(steps), score,
                  internal_batch_size).view(b, steps)


@register("selectivity", stage="model", fast={"patch_size": 16},
          columns={"selectivity": "float", "selectivity_curve": "curve"},
          directions={"selectivity": "lower"})
def selectivity(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    patch_size: int = 8,
    perturb_baseline: str | float = "black",
    score: str = "prob",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Selectivity (Montavon et al. 2018): area under f as patches are removed, most
    relevant first (unit spacing)."""
    rank, n = patch_rank(maps, patch_size, descending=True)
    fill = Fill(x, perturb_baseline, image_generators(x, seed))
    curve = removal_curves(model, x, target, rank, n, fill, score,
                           internal_batch_size).cpu().numpy()
    auc = (curve[:, 1:] + curve[:, :-1]).sum(1) / 2
    return {"selectivity": auc, "selectivity_curve": list(curve.astype(np.float32))}


@register("region_perturbation", stage="model", fast={"regions_evaluation": 20},
          columns={"region_perturbation": "float", "region_perturbation_lerf": "float",
                   "region_perturbation_morf_curve": "curve",
                   "region_perturbation_lerf_curve": "curve"},
          directions={"region_perturbation": "higher", "region_perturbation_lerf": "lower"})
def region_perturbation(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    patch_size: int = 8,
    regions_evaluation: int = 100,
    perturb_baseline: str | float = "uniform",
    score: str = "prob",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Region perturbation (Samek et al. 2017): AOPC of MoRF and LeRF patch removal
    (curves: f(x) - f(x_k), k = 1..L)."""
    if regions_evaluation < 1:
        raise BadInputError(f"regions_evaluation must be at least 1, got {regions_evaluation}")
    fill = Fill(x, perturb_baseline, image_generators(x, seed))
    f0 = scores(model, len(x), lambda i: x[i], target, score, internal_batch_size)
    out: dict[str, Any] = {}
    for key, descending in (("morf", True), ("lerf", False)):
        rank, n = patch_rank(maps, patch_size, descending=descending)
        steps = min(int(regions_evaluation), n)
        curve = (f0[:, None] - removal_curves(model, x, target, rank, steps, fill, score,
                                              internal_batch_size)).cpu().numpy()
        name = "region_perturbation" if key == "morf" else "region_perturbation_lerf"
        out[name] = curve.sum(1) / (steps + 1)
        out[f"region_perturbation_{key}_curve"] = list(curve.astype(np.float32))
    return out
