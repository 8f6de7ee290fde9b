"""Sensitivity-N (Ancona et al. 2018), as used in paper 004 (SAMP) to check completeness.

For each subset size n on a log grid, ``samples`` random pixel subsets S of size n are
removed (set to the baseline, all channels); the metric is the Pearson correlation, over
the subsets, between the attribution summed over S (signed, all channels) and the drop of
the target score f(x) - f(x_S). ``sensitivity_n_curve`` holds one correlation per n;
``sensitivity_n`` is their mean. Subsets come from a per-image generator (``seed``), so
batching does not change results; all B x len(ns) x samples perturbed images go through
one chunked forward pass. Score: the target logit (the network output, as in Ancona).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_scores
from salbench.methods.seeding import image_generators
from salbench.metrics.registry import register
from salbench.models.base import Classifier


def subset_sizes(num_pixels: int, count: int, max_fraction: float = 0.8) -> np.ndarray:
    """``count`` subset sizes log-spaced in [1, max_fraction * num_pixels], unique, int64."""
    top = max(1.0, max_fraction * num_pixels)
    return np.unique(np.round(np.logspace(0, np.log10(top), count)).astype(np.int64))


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of a, b [..., K]; NaN where either row is constant."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), np.nan)


@register("sensitivity_n", stage="model", fast={"sizes": 4, "samples": 8},
          columns={"sensitivity_n": "float", "sensitivity_n_curve": "curve"})
def sensitivity_n(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    attr: torch.Tensor | None = None,
    sizes: int = 10,
    samples: int = 100,
    baseline: str | float = "black",
    score: str = "logit",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Sensitivity-N: Pearson(sum of attribution over a removed subset, score drop) per n."""
    b, _, h, w = x.shape
    a = (attr if attr is not None else maps.unsqueeze(1)).sum(1).flatten(1)  # [B, HW]
    ns = subset_sizes(h * w, sizes)
    per = len(ns) * samples
    gens = image_generators(x, seed)
    masks = torch.zeros(b, per, h * w, dtype=torch.bool)
    for i, g in enumerate(gens):
        for j, n in enumerate(ns):
            for k in range(samples):
                masks[i, j * samples + k, torch.randperm(h * w, generator=g)[:n]] = True
    masks = masks.to(x.device)
    base = make_baseline(x, baseline)

    def points(idx: torch.Tensor) -> torch.Tensor:
        i, j = idx // per, idx % per
        m = masks[i, j].view(-1, 1, h, w)
        return torch.where(m, base[i], x[i])

    with torch.no_grad():
        full = batched_scores(model, b, lambda i: x[i], target, score=score,
                              internal_batch_size=internal_batch_size)
    removed = batched_scores(model, b * per, points, target.repeat_interleave(per),
                             internal_batch_size=internal_batch_size, score=score).view(b, per)
    drop = (full[:, None] - removed).cpu().numpy().astype(np.float64)
    summed = torch.stack([masks[i].float() @ a[i].float() for i in range(b)]).cpu().numpy()
    corr = pearson(summed.reshape(b, len(ns), samples), drop.reshape(b, len(ns), samples))
    with np.errstate(invalid="ignore"):
        mean = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in corr])
    return {"sensitivity_n": mean, "sensitivity_n_curve": list(corr.astype(np.float32))}
