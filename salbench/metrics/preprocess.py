"""Quantus-style preparation of one saliency map, and ground truth from boxes or a mask.

Quantus metrics take ``normalise`` (divide by the largest |value|; an all-zero map is left as
it is) and then ``abs``. Here they apply to one map at a time: Quantus 0.6.0 divides a whole
batch by the batch's largest |value| (``normalise_by_max`` over every axis), so its scores
of a scale-dependent metric depend on the other maps in the batch; salbench's do not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from salbench.errors import BadInputError
from salbench.metrics.localization import box_mask


def prepare_map(saliency_map: np.ndarray, *, abs: bool, normalise: bool) -> np.ndarray:
    """float64 [H, W]: the map divided by its largest |value| (``normalise``; an all-zero map
    stays zero), then its absolute value (``abs``). ValueError for NaN or inf."""
    a = np.asarray(saliency_map, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("saliency map contains NaN or inf")
    if normalise:
        peak = np.abs(a).max() if a.size else 0.0
        if peak > 0:
            a = a / peak
    return np.abs(a) if abs else a


def ground_truth_mask(sample: dict[str, Any]) -> np.ndarray:
    """bool [H, W] of the map's shape: ``sample["mask"]`` when the sample has one (True on
    the object), else the pixels whose centre lies in any of ``sample["boxes"]`` (float
    [N, 4], x0, y0, x1, y1 in map pixels; no box: all False)."""
    shape = np.shape(sample["map"])
    mask = sample.get("mask")
    if mask is None:
        return box_mask(np.asarray(sample.get("boxes", ()), np.float64).reshape(-1, 4), shape)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise BadInputError(f"ground-truth mask has shape {mask.shape}; the map has {shape}")
    return mask
