"""Integrated Gradients (Sundararajan 2017) on the path engine (:mod:`salbench.methods.paths`)."""

from __future__ import annotations

import torch

from salbench.methods.baselines import model_baseline
from salbench.methods.paths import INFO_COLUMNS, integrate, straight_path
from salbench.methods.registry import Attribution, register
from salbench.models.base import Classifier


@register("ig", fast={"steps": 16}, info_columns=INFO_COLUMNS)
def integrated_gradients(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 200,
    rule: str = "riemann_right",
    baseline: str | float = "black",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> Attribution:
    """Integrated Gradients: (x - x') * integral_0^1 grad f(x' + a (x - x')) da.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. ``rule``: riemann_left/right/middle,
    trapezoid (textbook) or gausslegendre, with ``steps`` points. ``baseline``: see
    :func:`model_baseline` ("black", "preprocessed_zero" = the model's mean colour, ...).
    Reports ``completeness_error`` = |sum(attr) - (f(x) - f(x'))| and ``score_delta`` =
    f(x) - f(x'), per image.
    """
    path = straight_path(x, model_baseline(model, x, baseline), steps, quadrature_rule=rule)
    return integrate(model, path, target, score=score,
                     internal_batch_size=internal_batch_size).attribution()
