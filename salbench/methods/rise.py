"""RISE: Randomized Input Sampling for Explanation (Petsiuk et al. 2018).

N random masks: a ``grid`` x ``grid`` binary grid (each cell kept with probability ``p``),
upsampled bilinearly to (grid + 1) x cell size and cropped at a random shift in [0, cell),
so masks are smooth and not aligned to the grid. Saliency = sum_i P(target | x * M_i) M_i /
(N p), the softmax probability as in the paper. The masks depend only on ``seed``, N and the
input size (the same masks for every image, as in the paper), so results do not depend on
batching; they are built chunk by chunk and never all held in memory. All B x N masked
images go through the batched engine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from salbench.methods.engine import batched_scores
from salbench.methods.registry import register
from salbench.models.base import Classifier


class RiseMasks:
    """The N masks of one RISE call: ``masks(k)`` -> float32 [len(k), H, W] in [0, 1]."""

    def __init__(self, n: int, size: tuple[int, int], grid: int, p: float, seed: int,
                 device: torch.device) -> None:
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        self.grids = (torch.rand((n, 1, grid, grid), generator=g) < p).float()
        h, w = size
        self.cell = (math.ceil(h / grid), math.ceil(w / grid))
        self.shifts = torch.stack([
            torch.randint(0, self.cell[0], (n,), generator=g),
            torch.randint(0, self.cell[1], (n,), generator=g),
        ], 1)
        self.size, self.grid, self.device = size, grid, device

    def __call__(self, k: torch.Tensor) -> torch.Tensor:
        k = k.cpu()
        up = ((self.grid + 1) * self.cell[0], (self.grid + 1) * self.cell[1])
        big = F.interpolate(self.grids[k], size=up, mode="bilinear", align_corners=False)
        h, w = self.size
        out = torch.stack([
            big[i, 0, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(self.shifts[k].tolist())
        ])
        return out.to(self.device)


@register("rise", fast={"masks": 64}, map_reduce="sum")
def rise(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    masks: int = 4000,
    grid: int = 7,
    p: float = 0.5,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """RISE saliency (softmax probability), float32 [B, 3, H, W]; each channel holds map / 3."""
    b, _, h, w = x.shape
    make = RiseMasks(masks, (h, w), grid, p, seed, x.device)

    def points(idx: torch.Tensor) -> torch.Tensor:
        return x[idx // masks] * make(idx % masks).unsqueeze(1)

    scores = batched_scores(model, b * masks, points, target.repeat_interleave(masks),
                            internal_batch_size=internal_batch_size, score="prob")
    scores = scores.view(b, masks)
    sal = torch.zeros(b, h * w, device=x.device)
    for start in range(0, masks, max(1, internal_batch_size)):
        k = torch.arange(start, min(masks, start + internal_batch_size))
        sal += scores[:, k.to(x.device)] @ make(k).view(len(k), -1)
    sal = sal.view(b, 1, h, w) / (masks * p)
    return (sal / 3).expand(-1, 3, -1, -1).contiguous()
