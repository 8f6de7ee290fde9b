"""SmoothGrad (Smilkov et al. 2017) and its squared variant.

Gradients are averaged over ``samples`` noisy copies x + N(0, sigma^2), sigma = ``noise`` x
(max(x) - min(x)) per image (the paper's noise level, 0.15 by default). The squared variant
averages squared gradients (SmoothGrad-SQ, Hooker et al. 2019). Noise comes from a per-image
generator seeded by ``seed`` and the image, so batching does not change results. All
B x samples noisy points go through the batched engine.
"""

from __future__ import annotations

import torch

from salbench.methods.engine import batched_gradients
from salbench.methods.registry import register
from salbench.methods.seeding import image_generators
from salbench.models.base import Classifier


def smooth_gradients(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    samples: int,
    noise: float,
    squared: bool,
    seed: int,
    score: str,
    internal_batch_size: int,
) -> torch.Tensor:
    """Mean of grad (or grad^2) over noisy copies of x: float32 [B, 3, H, W]."""
    b = len(x)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    eps = torch.stack([
        torch.randn((samples, *x.shape[1:]), generator=g) for g in image_generators(x, seed)
    ]).to(x.device)  # [B, samples, 3, H, W]
    eps = eps * (noise * span).unsqueeze(1)
    total = torch.zeros_like(x, dtype=torch.float32)

    def points(idx: torch.Tensor) -> torch.Tensor:
        return x[idx // samples] + eps[idx // samples, idx % samples]

    def consume(idx: torch.Tensor, grad: torch.Tensor, _s: torch.Tensor) -> None:
        total.index_add_(0, idx // samples, grad * grad if squared else grad)

    batched_gradients(model, b * samples, points, target.repeat_interleave(samples), consume,
                      internal_batch_size=internal_batch_size, score=score)
    return total / samples


@register("smoothgrad", fast={"samples": 10})
def smoothgrad(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    samples: int = 50,
    noise: float = 0.15,
    squared: bool = False,
    seed: int = 0,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """SmoothGrad: mean gradient over ``samples`` noisy copies (noise 0.15 of the range)."""
    return smooth_gradients(model, x, target, samples=samples, noise=noise, squared=squared,
                            seed=seed, score=score, internal_batch_size=internal_batch_size)


@register("smoothgrad_sq", fast={"samples": 10})
def smoothgrad_sq(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    samples: int = 50,
    noise: float = 0.15,
    seed: int = 0,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """SmoothGrad-SQ: mean squared gradient over ``samples`` noisy copies."""
    return smooth_gradients(model, x, target, samples=samples, noise=noise, squared=True,
                            seed=seed, score=score, internal_batch_size=internal_batch_size)
