"""IDGI (Yang, Wang, Bilgic, "IDGI: A Framework to Eliminate Explanation Noise from Integrated
Gradients", CVPR 2023; paper 001) on the IG, Guided IG and Blur IG paths.

IDGI keeps a path method's points x_0 (reference) ... x_S (input) and its gradients, but
replaces each Riemann term g_j ⊙ (x_{j+1} - x_j) by the move along the gradient direction that
explains the same score change (Algorithm 1):

    attr += g_j² (f(x_{j+1}) - f(x_j)) / Σ g_j²,   g_j = grad f(x_j)

so every segment's contributions sum to f(x_{j+1}) - f(x_j) and the attribution sums to
f(x) - f(x_0) exactly (float tolerance; reported as ``completeness_error``). The rule lives
once in :mod:`salbench.methods.paths` (``rule="idgi"``); the three methods here only choose
the path:

- ``idgi_ig``: straight path from the baseline (black), points x' + (j / S)(x - x');
- ``idgi_gig``: the Guided IG path (:mod:`salbench.methods.guided_ig`);
- ``idgi_blurig``: the Blur IG path L(x, sigma_{S-j}) from L(x, max_sigma) to x
  (:mod:`salbench.methods.blur_ig`).

Score: the paper explains the softmax probability of the target (its f_c), so ``score`` is
"prob" by default; "logit" is available (then on a linear model idgi_ig equals
w ⊙ w (w · (x - x')) / |w|², the part of IG's attribution along w).

Choices where the paper is silent (documented deviations):

- The gradient of segment j is taken at x_j (Algorithm 1) for all three paths. For Blur IG
  this differs from Blur IG itself, whose gradient is at the segment's end nearer the input
  (PAIR); the IDGI path starts at L(x, max_sigma), which Blur IG never differentiates.
- ``steps`` = S = the number of segments = gradient evaluations (the authors' code, fed with
  PAIR's IG gradients at 200 points including both ends, drops the last and so has 199).
- Σ g_j² = 0 (a flat segment) contributes nothing (the paper divides by zero there).
- The baseline of ``idgi_ig`` / ``idgi_gig``: "black" (zeros in the [0, 1] input space, the
  default) or ``baseline: preprocessed_zero``, the input whose normalised value is zero (the
  model's mean colour; PAIR's examples call that "black"). The paper says neither.
- The channel reduction of the attribution to a map: the run's ``map_reduce`` (``abs_sum``)
  or a method entry's own (``{name: idgi_ig, map_reduce: sum}``). Both choices move the
  insertion results (docs/REPRODUCTION.md, IDGI).

Cost per image: S forward+backward passes and one forward pass (the score at x_S), the same
as the underlying method.
"""

from __future__ import annotations

import torch

from salbench.methods.baselines import model_baseline
from salbench.methods.blur_ig import blur_ig_path
from salbench.methods.guided_ig import guided_ig_path, resolve_preset
from salbench.methods.paths import INFO_COLUMNS, integrate, straight_path
from salbench.methods.registry import Attribution, register
from salbench.models.base import Classifier


@register("idgi_ig", fast={"steps": 16}, info_columns=INFO_COLUMNS)
def idgi_ig(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 200,
    baseline: str | float = "black",
    score: str = "prob",
    internal_batch_size: int = 64,
) -> Attribution:
    """IDGI on the straight IG path (paper 001): g_j² (f(x_{j+1}) - f(x_j)) / Σ g_j² summed.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]; ``steps`` segments; ``baseline`` as
    :func:`model_baseline` ("black" or "preprocessed_zero", the model's mean colour);
    ``score`` "prob" (paper) or "logit". Returns float32 [B, 3, H, W] summing to
    f(x) - f(x'), with ``completeness_error`` and ``score_delta``.
    """
    path = straight_path(x, model_baseline(model, x, baseline), steps)
    return integrate(model, path, target, rule="idgi", score=score,
                     internal_batch_size=internal_batch_size).attribution()


@register("idgi_gig", fast={"steps": 16}, info_columns=INFO_COLUMNS)
def idgi_gig(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    preset: str | None = None,
    baseline: str | float = "black",
    score: str = "prob",
    internal_batch_size: int = 64,
) -> Attribution:
    """IDGI on the Guided IG path (paper 001 + Kapishnikov 2021).

    Parameters as ``gig`` (``preset="idgi"``: 25 steps, fraction 0.5, max_dist 1.0), ``score``
    "prob" (paper) or "logit". Returns float32 [B, 3, H, W] summing to f(x) - f(x'), with
    ``completeness_error`` and ``score_delta`` per image.
    """
    steps, fraction, max_dist = resolve_preset(preset, steps, fraction, max_dist)
    return guided_ig_path(model, x, target, steps=steps, fraction=fraction, max_dist=max_dist,
                          baseline=baseline, rule="idgi", score=score,
                          internal_batch_size=internal_batch_size).attribution()


@register("idgi_blurig", fast={"steps": 16}, info_columns=INFO_COLUMNS)
def idgi_blurig(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    max_sigma: float = 50.0,
    steps: int = 100,
    sqrt: bool = False,
    score: str = "prob",
    internal_batch_size: int = 64,
) -> Attribution:
    """IDGI on the Blur IG path (paper 001 + Xu 2020), from L(x, max_sigma) to x.

    Parameters as ``blurig`` (no finite-difference step: IDGI needs no path derivative),
    ``score`` "prob" (paper) or "logit". Returns float32 [B, 3, H, W] summing to
    f(x) - f(L(x, max_sigma)), with ``completeness_error`` and ``score_delta`` per image.
    """
    return blur_ig_path(model, x, target, max_sigma=max_sigma, steps=steps, sqrt=sqrt,
                        rule="idgi", score=score,
                        internal_batch_size=internal_batch_size).attribution()
