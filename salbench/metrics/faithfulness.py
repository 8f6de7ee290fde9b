"""Pixel-removal faithfulness metrics of Quantus 0.6 / LATEC, batched on the model stage.

A *feature* is a pixel (all three channels; the map is [H, W]). Removing a pixel sets it
to ``perturb_baseline`` (see :class:`salbench.metrics.removal.Fill`). ``f`` is the target's
``score`` ("logit", "prob" or "log_prob"). All perturbed images of a batch go through the
model in chunks of ``internal_batch_size``.

- ``faithfulness_correlation`` (Bhatt et al. 2020): ``nr_runs`` random subsets S of
  ``subset_size`` pixels; Pearson over the subsets of (sum of the attribution over S,
  f(x) - f(x with S removed)). In [-1, 1], higher is better. nr_runs + 1 passes.
- ``faithfulness_estimate`` (Alvarez-Melis & Jaakkola 2018): the pixels in steps of
  ``features_in_step``, most relevant first; each step removed alone; Pearson over the
  steps of (attribution of the step, f(x) - f(x without it)). In [-1, 1], higher is
  better. ceil(H W / features_in_step) + 1 passes.
- ``monotonicity`` (Arya et al. 2019): from the baseline image, the pixels are put back in
  steps, least |relevant| first; 1 when f never decreases, else 0. Higher is better.
  ceil(H W / features_in_step) passes.
- ``monotonicity_correlation`` (Nguyen & Rodriguez Martinez 2020): per step (least
  |relevant| first, each alone), the mean over ``nr_samples`` draws of
  (f(x) - f(x with the step removed))^2 / f(x)^2; Spearman over the steps of (|attribution|
  of the step, that variance). In [-1, 1], higher is better.
  ceil(H W / features_in_step) x nr_samples + 1 passes (x 1 for a non-random baseline,
  whose draws are all equal).

The correlation metrics read the method's signed attribution summed over its channels when
the pipeline passes it (``attr``; Quantus' ``abs=False``), else the map; the monotonicity
metrics read |map| (Quantus' ``abs=True``). Quantus' ``normalise`` only rescales the map,
which none of these scores depends on. Ties in the ordering keep raster order.
"""

from __future__ import annotations

import math
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
    pearson,
    positions,
    scores,
    spearman,
)
from salbench.models.base import Classifier


def _steps(n: int, features_in_step: int) -> int:
    if not 1 <= features_in_step <= n:
        raise BadInputError(f"features_in_step must be in [1, {n}] (pixels of the map), "
                            f"got {features_in_step}")
    return math.ceil(n / features_in_step)


def _step_of_pixel(a: torch.Tensor, features_in_step: int, *, descending: bool
                   ) -> torch.Tensor:
    """Step index int64 [B, N] of each pixel when a [B, N] is ordered (ties: raster)."""
    return torch.div(positions(order(a, descending=descending)), features_in_step,
                     rounding_mode="floor")


@register("faithfulness_correlation", stage="model", fast={"nr_runs": 20},
          columns={"faithfulness_correlation": "float"},
          directions={"faithfulness_correlation": "higher"})
def faithfulness_correlation(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    attr: torch.Tensor | None = None,
    nr_runs: int = 100,
    subset_size: int = 224,
    perturb_baseline: str | float = "black",
    score: str = "logit",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Faithfulness correlation (Bhatt et al. 2020): Pearson over random pixel subsets of
    (attribution sum, score drop)."""
    b, _, h, w = x.shape
    n = h * w
    if not 1 <= subset_size <= n:
        raise BadInputError(f"subset_size must be in [1, {n}] (pixels of the map), "
                            f"got {subset_size}")
    if nr_runs < 2:
        raise BadInputError(f"nr_runs must be at least 2 for a correlation, got {nr_runs}")
    a = feature_values(maps, attr)
    gens = image_generators(x, seed)
    fill = Fill(x, perturb_baseline, gens)
    subsets = torch.stack([torch.stack([torch.randperm(n, generator=g)[:subset_size]
                                        for _ in range(nr_runs)]) for g in gens]
                          ).to(x.device)  # [B, R, S]

    def points(j: torch.Tensor) -> torch.Tensor:
        i, r = j // nr_runs, j % nr_runs
        mask = torch.zeros(len(j), n, dtype=torch.bool, device=x.device)
        mask.scatter_(1, subsets[i, r], True)
        return torch.where(mask.view(-1, 1, h, w), fill(i, r), x[i])

    f0 = scores(model, b, lambda i: x[i], target, score, internal_batch_size)
    fs = scores(model, b * nr_runs, points, target.repeat_interleave(nr_runs), score,
                internal_batch_size).view(b, nr_runs)
    att = a.gather(1, subsets.flatten(1)).view(b, nr_runs, subset_size).sum(-1)
    delta = f0[:, None] - fs
    return {"faithfulness_correlation": pearson(att.cpu().numpy(), delta.cpu().numpy())}


@register("faithfulness_estimate", stage="model", fast={"features_in_step": 256},
          columns={"faithfulness_estimate": "float"},
          directions={"faithfulness_estimate": "higher"})
def faithfulness_estimate(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    attr: torch.Tensor | None = None,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    score: str = "logit",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Faithfulness estimate (Alvarez-Melis & Jaakkola 2018): Pearson over steps of pixels
    (most relevant first, each removed alone) of (attribution sum, score drop)."""
    b, _, h, w = x.shape
    k = _steps(h * w, features_in_step)
    a = feature_values(maps, attr)
    step = _step_of_pixel(a, features_in_step, descending=True)
    fill = Fill(x, perturb_baseline, image_generators(x, seed))

    def points(j: torch.Tensor) -> torch.Tensor:
        i, s = j // k, j % k
        mask = step[i] == s[:, None]
        return torch.where(mask.view(-1, 1, h, w), fill(i, s), x[i])

    f0 = scores(model, b, lambda i: x[i], target, score, internal_batch_size)
    fs = scores(model, b * k, points, target.repeat_interleave(k), score,
                internal_batch_size).view(b, k)
    att = group_sums(a, step, k)
    delta = f0[:, None] - fs
    return {"faithfulness_estimate": pearson(att.cpu().numpy(), delta.cpu().numpy())}


@register("monotonicity", stage="model", fast={"features_in_step": 256},
          columns={"monotonicity": "float", "monotonicity_curve": "curve"},
          directions={"monotonicity": "higher"})
def monotonicity(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    features_in_step: int = 1,
    perturb_baseline: str | float = "black",
    score: str = "prob",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Monotonicity (Arya et al. 2019): 1 if the score never decreases as pixels are put
    back on the baseline, least |relevant| first (curve: the score after each step)."""
    b, _, h, w = x.shape
    k = _steps(h * w, features_in_step)
    step = _step_of_pixel(feature_values(maps, None).abs(), features_in_step,
                          descending=False)
    fill = Fill(x, perturb_baseline, image_generators(x, seed))

    def points(j: torch.Tensor) -> torch.Tensor:
        i, s = j // k, j % k
        shown = step[i] <= s[:, None]
        return torch.where(shown.view(-1, 1, h, w), x[i], fill(i))

    curve = scores(model, b * k, points, target.repeat_interleave(k), score,
                   internal_batch_size).view(b, k).cpu().numpy()
    mono = (np.diff(curve, axis=1) >= 0).all(axis=1).astype(np.float64)
    return {"monotonicity": mono, "monotonicity_curve": list(curve.astype(np.float32))}


@register("monotonicity_correlation", stage="model",
          fast={"features_in_step": 256, "nr_samples": 10},
          columns={"monotonicity_correlation": "float"},
          directions={"monotonicity_correlation": "higher"})
def monotonicity_correlation(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    nr_samples: int = 100,
    features_in_step: int = 1,
    eps: float = 1e-5,
    perturb_baseline: str | float = "uniform",
    score: str = "prob",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Monotonicity correlation (Nguyen & Rodriguez Martinez 2020): Spearman over steps
    (least |relevant| first, each removed alone) of (|attribution| sum, mean squared score
    change / f(x)^2)."""
    b, _, h, w = x.shape
    k = _steps(h * w, features_in_step)
    if nr_samples < 1:
        raise BadInputError(f"nr_samples must be at least 1, got {nr_samples}")
    a = feature_values(maps, None).abs()
    step = _step_of_pixel(a, features_in_step, descending=False)
    fill = Fill(x, perturb_baseline, image_generators(x, seed))
    draws = nr_samples if fill.random else 1
    per = k * draws

    def points(j: torch.Tensor) -> torch.Tensor:
        i, s = j // per, (j % per) // draws
        mask = step[i] == s[:, None]
        return torch.where(mask.view(-1, 1, h, w), fill(i, j % per), x[i])

    f0 = scores(model, b, lambda i: x[i], target, score, internal_batch_size)
    fs = scores(model, b * per, points, target.repeat_interleave(per), score,
                internal_batch_size).view(b, k, draws)
    inv = torch.where(f0.abs() >= eps, 1.0 / f0.abs(), torch.ones_like(f0)) ** 2
    var = ((fs - f0[:, None, None]) ** 2).mean(-1) * inv[:, None]
    att = group_sums(a, step, k)
    return {"monotonicity_correlation": spearman(att.cpu().numpy(), var.cpu().numpy())}
