"""Integrated Gradients (Sundararajan 2017) on the batched path engine."""

from __future__ import annotations

from collections.abc import Callable

import torch

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_gradients, batched_scores, quadrature
from salbench.methods.registry import Attribution, register
from salbench.models.base import Classifier


def straight_path(
    x: torch.Tensor, baseline: torch.Tensor, alphas: torch.Tensor
) -> tuple[int, Callable[[torch.Tensor], torch.Tensor]]:
    """Points x' + alpha_s (x - x') for every image b and step s, indexed by b * S + s.

    x, baseline: float [B, 3, H, W]; alphas: float [S]. Returns (B * S, points(idx)).
    """
    steps = len(alphas)
    delta = x - baseline

    def points(idx: torch.Tensor) -> torch.Tensor:
        b, s = idx // steps, idx % steps
        return baseline[b] + alphas[s].view(-1, 1, 1, 1) * delta[b]

    return len(x) * steps, points


def path_gradient_sum(
    model: Classifier,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
    *,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """sum_s weights_s * grad f(x' + alpha_s (x - x')) per image: float32 [B, 3, H, W]."""
    steps = len(alphas)
    n, points = straight_path(x, baseline, alphas)
    total = torch.zeros_like(x, dtype=torch.float32)

    def consume(idx: torch.Tensor, grad: torch.Tensor, _s: torch.Tensor) -> None:
        w = weights[idx % steps].view(-1, 1, 1, 1)
        total.index_add_(0, idx // steps, grad * w)

    batched_gradients(
        model, n, points, target.repeat_interleave(steps), consume,
        internal_batch_size=internal_batch_size, score=score,
    )
    return total


def endpoint_scores(
    model: Classifier, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor, score: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target scores float32 [B] at x and at the baseline (one batched forward pass)."""
    both = torch.cat([x, baseline])
    s = batched_scores(model, len(both), lambda i: both[i], target.repeat(2), score=score,
                       internal_batch_size=len(both))
    return s[: len(x)], s[len(x):]


@register(
    "ig",
    fast={"steps": 16},
    info_columns=("completeness_error", "score_delta"),
)
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
    :func:`make_baseline`. Reports ``completeness_error`` = |sum(attr) - (f(x) - f(x'))| and
    ``score_delta`` = f(x) - f(x'), per image.
    """
    base = make_baseline(x, baseline)
    a, w = quadrature(rule, steps)
    alphas = torch.as_tensor(a, dtype=torch.float32, device=x.device)
    weights = torch.as_tensor(w, dtype=torch.float32, device=x.device)
    total = path_gradient_sum(
        model, x, base, target, alphas, weights, score=score,
        internal_batch_size=internal_batch_size,
    )
    attr = (x - base) * total
    fx, fb = endpoint_scores(model, x, base, target, score)
    delta = fx - fb
    err = (attr.flatten(1).double().sum(1) - delta.double()).abs().float()
    return Attribution(attr, {"completeness_error": err, "score_delta": delta})
