"""Insertion and deletion curves (Petsiuk 2018), with the IDGI paper's protocol as default.

Pixels are ranked by the saliency map (descending; ties broken by raster order, so the
ranking is deterministic). Insertion starts from the baseline and inserts the top-ranked
pixels of the image; deletion starts from the image and replaces them by the baseline.
Curve point k (k = 0..steps) has round(k / steps * H * W) pixels changed; the AUC is the
trapezoid rule on x in [0, 1]. IDGI protocol (paper 001): 5% steps (21 points), black
baseline, softmax probability of the target; also the probability-ratio curve (divided by
the probability on the original image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_scores
from salbench.metrics.registry import register
from salbench.models.base import Classifier


def pixel_ranking(maps: torch.Tensor) -> torch.Tensor:
    """maps float [B, H, W] -> flat pixel indices int64 [B, H*W], most salient first.

    Ties keep raster order (stable sort), NaNs are rejected by the caller.
    """
    flat = maps.flatten(1)
    return torch.sort(-flat, dim=1, stable=True).indices


def perturbation_curves(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    mode: str = "insertion",
    steps: int = 20,
    baseline: str | float = "black",
    blur_sigma: float = 5.0,
    score: str = "prob",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Target score after changing the top-k pixels, float32 [B, steps + 1].

    x float [B, 3, H, W] in [0, 1], target int64 [B], maps float [B, H, W].
    mode "insertion" (start from the baseline) or "deletion" (start from x).
    """
    if mode not in ("insertion", "deletion"):
        raise ValueError(f"mode must be 'insertion' or 'deletion', got {mode!r}")
    if not torch.isfinite(maps).all():
        raise ValueError("saliency map contains NaN or inf")
    b, _, h, w = x.shape
    base = make_baseline(x, baseline, blur_sigma=blur_sigma)
    start, end = (base, x) if mode == "insertion" else (x, base)
    rank = torch.empty_like(pixel_ranking(maps))
    rank.scatter_(1, pixel_ranking(maps), torch.arange(h * w, device=x.device).expand(b, -1))
    counts = torch.round(torch.arange(steps + 1, device=x.device) / steps * h * w).long()
    n_pts = steps + 1

    def points(idx: torch.Tensor) -> torch.Tensor:
        i, k = idx // n_pts, idx % n_pts
        changed = (rank[i] < counts[k].view(-1, 1)).view(-1, 1, h, w)
        return torch.where(changed, end[i], start[i])

    scores = batched_scores(
        model, b * n_pts, points, target.repeat_interleave(n_pts),
        internal_batch_size=internal_batch_size, score=score,
    )
    return scores.view(b, n_pts)


def trapezoid_auc(curve: np.ndarray) -> np.ndarray:
    """AUC of curves [..., n] sampled evenly on [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    return (c[..., 1:] + c[..., :-1]).sum(-1) / (2 * (c.shape[-1] - 1))


def _curve_metric(prefix: str, mode: str, protocol: str) -> Any:
    """A registered curve metric: ``mode`` insertion/deletion, pixels ranked by the map,
    columns ``<prefix>_auc``, ``<prefix>_ratio_auc``
    (curve / probability of the original image) and ``<prefix>_curve``. ``normalize="peak"``
    divides each curve by its maximum before the AUC (SAMP's peak normalisation)."""

    def metric(
        model: Classifier,
        x: torch.Tensor,
        target: torch.Tensor,
        maps: torch.Tensor,
        *,
        steps: int = 20,
        baseline: str | float = "black",
        blur_sigma: float = 5.0,
        score: str = "prob",
        normalize: str = "none",
        internal_batch_size: int = 64,
    ) -> dict[str, Any]:
        if normalize not in ("none", "peak"):
            raise ValueError(f"normalize must be 'none' or 'peak', got {normalize!r}")
        curves = perturbation_curves(
            model, x, target, maps, mode=mode, steps=steps,
            baseline=baseline, blur_sigma=blur_sigma, score=score,
            internal_batch_size=internal_batch_size,
        ).cpu().numpy().astype(np.float64)
        full = curves[:, -1] if mode == "insertion" else curves[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = curves / full[:, None]
            if normalize == "peak":
                curves = curves / np.abs(curves).max(1, keepdims=True)
        return {
            f"{prefix}_auc": trapezoid_auc(curves),
            f"{prefix}_ratio_auc": trapezoid_auc(ratio),
            f"{prefix}_curve": list(curves.astype(np.float32)),
        }

    metric.__doc__ = protocol
    return metric


def _register_curve(name: str, mode: str, protocol: str, *, defaults: dict[str, Any],
                    fast: dict[str, Any]) -> None:
    fn = _curve_metric(name, mode, protocol)
    params = {"steps": 20, "baseline": "black", "blur_sigma": 5.0, "score": "prob",
              "normalize": "none", "internal_batch_size": 64, **defaults}
    register(name, fn, stage="model", defaults=params, fast=fast,
             columns={f"{name}_auc": "float", f"{name}_ratio_auc": "float",
                      f"{name}_curve": "curve"})


for _mode in ("insertion", "deletion"):
    _register_curve(
        _mode, _mode,
        f"{_mode.capitalize()} (IDGI protocol: 5% steps, black baseline, softmax probability; "
        "ratio AUC divides by the original probability).",
        defaults={}, fast={"steps": 10},
    )
    _register_curve(
        f"{_mode}_igos", _mode,
        f"{_mode.capitalize()} (I-GOS protocol: a highly blurred image (sigma 50) as the "
        "base for both directions, softmax probability, 224 steps at 224 px).",
        defaults={"steps": 224, "baseline": "blur", "blur_sigma": 50.0}, fast={"steps": 20},
    )
_register_curve(
    "deletion_samp", "deletion",
    "Deletion (SAMP protocol: target logit, zero baseline, 224*8 pixels per step at 224 px "
    "(28 steps), curve peak-normalised).",
    defaults={"steps": 28, "score": "logit", "normalize": "peak"}, fast={"steps": 14},
)
_register_curve(
    "insertion_samp", "insertion",
    "Insertion (SAMP protocol: target logit, Gaussian blur kernel 31 sigma 5 as the base, "
    "224*8 pixels per step at 224 px (28 steps), curve peak-normalised).",
    defaults={"steps": 28, "score": "logit", "normalize": "peak", "baseline": "blur"},
    fast={"steps": 14},
)


@register(
    "pixel_flip", stage="model", fast={"steps": 10},
    columns={"pixel_flip_lerf_auc": "float", "pixel_flip_morf_auc": "float",
             "pixel_flip_lerf_curve": "curve", "pixel_flip_morf_curve": "curve"},
)
def pixel_flip(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = 20,
    baseline: str | float = "black",
    score: str = "prob",
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Pixel flipping LeRF / MoRF (paper 003): replace pixels by ``baseline`` least- / most-
    relevant first; AUC of the target probability (LeRF high and MoRF low are good)."""
    out: dict[str, Any] = {}
    for key, m in (("morf", maps), ("lerf", -maps)):
        c = perturbation_curves(model, x, target, m, mode="deletion", steps=steps,
                                baseline=baseline, score=score,
                                internal_batch_size=internal_batch_size).cpu().numpy()
        out[f"pixel_flip_{key}_auc"] = trapezoid_auc(c)
        out[f"pixel_flip_{key}_curve"] = list(c.astype(np.float32))
    return out
