"""Average Drop and Increase in Confidence (Chattopadhay et al. 2018, Grad-CAM++).

The explanation image is the input multiplied by the map min-max scaled to [0, 1]
(E ∘ I; the scaling of pytorch-grad-cam's CAMs). With Y = f(x) and O = f(x ∘ E), f the
target's softmax probability: ``average_drop`` = max(0, Y - O) / Y (per image; the paper's
Average Drop % is 100 x its mean; lower is better) and ``increase_in_confidence`` =
1 if O > Y else 0 (the paper's % is 100 x its mean; higher is better). A constant map has
no scaling: NaN. 2 passes per map (the original image's and the explanation image's).
"""

from __future__ import annotations

from typing import Any

import torch

from salbench.metrics.registry import register
from salbench.metrics.removal import feature_values, scores
from salbench.models.base import Classifier


def explanation_scores(model: Classifier, x: torch.Tensor, target: torch.Tensor,
                       maps: torch.Tensor, score: str, internal_batch_size: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Y, O float64 [B], valid bool [B]): the scores of x and of x times the scaled map
    (float [B, H, W]); ``valid`` is False for constant maps."""
    a = feature_values(maps, None)
    lo, hi = a.min(1, keepdim=True).values, a.max(1, keepdim=True).values
    valid = (hi > lo).squeeze(1)
    scaled = ((a - lo) / torch.where(hi > lo, hi - lo, 1)).to(x.dtype).view(maps.shape)
    both = torch.cat([x, x * scaled[:, None]])
    s = scores(model, len(both), lambda i: both[i], target.repeat(2), score,
               internal_batch_size)
    return s[: len(x)], s[len(x):], valid


@register("average_drop", stage="model", columns={"average_drop": "float"},
          directions={"average_drop": "lower"})
def average_drop(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    score: str = "prob",
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Average Drop (Chattopadhay et al. 2018): max(0, Y - O) / Y for the explanation image."""
    y, o, valid = explanation_scores(model, x, target, maps, score, internal_batch_size)
    drop = (y - o).clamp(min=0) / y
    return {"average_drop": torch.where(valid, drop, torch.nan).cpu().numpy()}


@register("increase_in_confidence", stage="model",
          columns={"increase_in_confidence": "float"},
          directions={"increase_in_confidence": "higher"})
def increase_in_confidence(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    score: str = "prob",
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Increase in Confidence (Chattopadhay et al. 2018): 1 if the explanation image's score
    exceeds the image's."""
    y, o, valid = explanation_scores(model, x, target, maps, score, internal_batch_size)
    return {"increase_in_confidence": torch.where(valid, (o > y).double(), torch.nan)
            .cpu().numpy()}
