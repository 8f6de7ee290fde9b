"""Vanilla gradient and gradient x input."""

from __future__ import annotations

import torch

from salbench.methods.engine import batched_gradients
from salbench.methods.registry import register
from salbench.models.base import Classifier


def input_gradient(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Gradient of the target score w.r.t. x: float32 [B, 3, H, W] for x in [0, 1]."""
    out = torch.empty_like(x, dtype=torch.float32)

    def consume(idx: torch.Tensor, grad: torch.Tensor, _s: torch.Tensor) -> None:
        out[idx] = grad

    batched_gradients(
        model, len(x), lambda idx: x[idx], target, consume,
        internal_batch_size=internal_batch_size, score=score,
    )
    return out


@register("vg")
def vanilla_gradient(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Vanilla gradient of the target score (Simonyan 2014): float32 [B, 3, H, W]."""
    return input_gradient(model, x, target, score=score, internal_batch_size=internal_batch_size)


@register("gxi")
def gradient_x_input(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Gradient x input (Shrikumar 2016): float32 [B, 3, H, W]."""
    grad = input_gradient(model, x, target, score=score, internal_batch_size=internal_batch_size)
    return grad * x
