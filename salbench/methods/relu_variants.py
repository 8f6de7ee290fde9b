"""The DGA supplement's ReLU variants of IG and Guided IG (paper 003, Sec. H, Table 2).

The supplement asks whether DGA's gain comes from its ReLU alone and compares two ways of
applying a ReLU to a path integral (its Eq. 1 and 2), with gamma the path and F the model:

- ``ig_p1`` = ReLU(integral_0^1 dF(gamma(a))/dgamma_i dgamma_i/da da): ReLU of IG's result;
- ``ig_p2`` = integral_0^1 ReLU(dF(gamma(a))/dgamma_i dgamma_i/da) da: ReLU of each point's
  contribution, then integrated;
- ``gig_p1`` / ``gig_p2``: the same on Guided IG's adaptive path ("given as the same").

How the discretised integrals read here: on IG's straight path dgamma/da = x - x' at every
point, so ``ig_p2`` = sum_k w_k ReLU(grad f(x' + a_k (x - x')) * (x - x')) over IG's
quadrature nodes a_k and weights w_k (the same rule and steps as ``ig``; the weights are
positive, so ReLU(w g d) = w ReLU(g d)). On Guided IG's path a step moves each feature by
its own amount, so ``gig_p2`` = sum_j ReLU(grad f(x_j) * (x_{j+1} - x_j)), the ReLU of each
Riemann term of ``gig``. The supplement gives no step counts for these columns; they use
``ig``'s and ``gig``'s paper defaults (200 steps each). All four are float32 [B, 3, H, W] >= 0.

Cost per image: as ``ig`` / ``gig`` (``steps`` forward+backward passes; ``*_p1`` also the one
or two forward passes of their endpoint scores).
"""

from __future__ import annotations

import torch

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_gradients, quadrature
from salbench.methods.guided_ig import guided_ig, guided_step, resolve_preset
from salbench.methods.ig import integrated_gradients
from salbench.methods.paths import gradients_at
from salbench.methods.registry import register
from salbench.models.base import Classifier


@register("ig_p1", fast={"steps": 16})
def ig_p1(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 200,
    rule: str = "riemann_right",
    baseline: str | float = "black",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """IG_p1 (DGA supplement Eq. 1), the ReLU of Integrated Gradients.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]; parameters as ``ig``. Returns float32
    [B, 3, H, W] >= 0."""
    out = integrated_gradients(model, x, target, steps=steps, rule=rule, baseline=baseline,
                               score=score, internal_batch_size=internal_batch_size)
    return torch.relu(out.attr)


@register("ig_p2", fast={"steps": 16})
def ig_p2(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 200,
    rule: str = "riemann_right",
    baseline: str | float = "black",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """IG_p2 (DGA supplement Eq. 2), the ReLU of each point's term on IG's path.

    sum_k w_k ReLU(grad f(x' + a_k (x - x')) * (x - x')). x: float [B, 3, H, W] in [0, 1];
    target int64 [B]. ``rule`` and ``steps`` as ``ig`` (its quadrature nodes a_k and weights
    w_k). Returns float32 [B, 3, H, W] >= 0.
    """
    base = make_baseline(x, baseline)
    delta = x - base
    a, w = quadrature(rule, steps)
    alphas = torch.as_tensor(a, dtype=torch.float32, device=x.device)
    weights = torch.as_tensor(w, dtype=torch.float32, device=x.device)
    k = len(alphas)
    total = torch.zeros_like(x, dtype=torch.float32)

    def points(idx: torch.Tensor) -> torch.Tensor:
        b = idx // k
        return base[b] + alphas[idx % k].view(-1, 1, 1, 1) * delta[b]

    def consume(idx: torch.Tensor, grad: torch.Tensor, _s: torch.Tensor) -> None:
        b = idx // k
        total.index_add_(0, b, weights[idx % k].view(-1, 1, 1, 1) * torch.relu(grad * delta[b]))

    batched_gradients(model, len(x) * k, points, target.repeat_interleave(k), consume,
                      internal_batch_size=internal_batch_size, score=score)
    return total


@register("gig_p1", fast={"steps": 16})
def gig_p1(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    preset: str | None = None,
    baseline: str | float = "black",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """GIG_p1 (DGA supplement Table 2), the ReLU of Guided IG.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]; parameters as ``gig``. Returns float32
    [B, 3, H, W] >= 0."""
    out = guided_ig(model, x, target, steps=steps, fraction=fraction, max_dist=max_dist,
                    preset=preset, baseline=baseline, score=score,
                    internal_batch_size=internal_batch_size)
    return torch.relu(out.attr)


@register("gig_p2", fast={"steps": 16})
def gig_p2(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 200,
    fraction: float = 0.25,
    max_dist: float = 0.02,
    preset: str | None = None,
    baseline: str | float = "black",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """GIG_p2 (DGA supplement Table 2), the ReLU of each step's term on Guided IG's path.

    sum_j ReLU(grad f(x_j) * (x_{j+1} - x_j)). x: float [B, 3, H, W] in [0, 1]; target int64
    [B]; parameters as ``gig`` (the path is :func:`salbench.methods.guided_ig.guided_step`'s).
    Returns float32 [B, 3, H, W] >= 0.
    """
    steps, fraction, max_dist = resolve_preset(preset, steps, fraction, max_dist)
    base = make_baseline(x, baseline)
    x64, base64 = x.double(), base.double()
    total = torch.zeros_like(x64)
    cur = base64
    for j in range(steps):
        grad, _f = gradients_at(model, cur.float(), target, score=score,
                                internal_batch_size=internal_batch_size)
        nxt = x64 if j == steps - 1 else guided_step(cur, x64, base64, grad, j, steps,
                                                     fraction, max_dist)
        total += torch.relu(grad.double() * (nxt - cur))
        cur = nxt
    return total.float()
