"""Localisation against a ground-truth region (Quantus 0.6's localisation family).

Model-free CPU metrics on one map: float [H, W] and a bool [H, W] ground truth, the sample's
``mask`` when it has one, else its boxes' pixels (:func:`~salbench.metrics.preprocess.
ground_truth_mask`). Without ground truth (no box, or an empty mask) each score is NaN, as
the pointing game's is; the summary leaves NaN out of ``n``.

- ``topk_intersection`` (Theiner et al. 2021): share of the k highest-ranked pixels that lie
  in the ground truth (``concept_influence``: divided by the ground truth's share of the
  image).
- ``relevance_rank_accuracy`` (Arras et al. 2022): with K = |GT|, share of the K highest-
  ranked pixels that lie in the ground truth.
- ``relevance_mass_accuracy`` (Arras et al. 2022): relevance inside the ground truth over
  the total relevance.
- ``attribution_localisation`` (Kohlbrenner et al. 2020): positive relevance inside the
  ground truth over the total positive relevance (``weighted``: times S_tot / S_in).

Ties in the ranking metrics: the pixels tied at the cut-off value share the remaining places
evenly (the expected score over random orders of the tied pixels), so a constant map scores
the ground truth's share of the image, by chance level, on any machine. Quantus orders ties
by ``np.argsort`` (platform-dependent); on maps without ties both agree exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from salbench.metrics.preprocess import ground_truth_mask, prepare_map
from salbench.metrics.registry import register


def topk_hits(values: np.ndarray, gt: np.ndarray, k: int) -> float:
    """Expected number of ground-truth pixels among the ``k`` largest ``values`` (float
    [H, W], gt bool [H, W], 1 <= k <= values.size): the values above the k-th largest count
    fully, those tied with it share the remaining places evenly."""
    v, g = values.ravel(), gt.ravel()
    cut = np.partition(v, v.size - k)[v.size - k]  # the k-th largest value
    above, tied = v > cut, v == cut
    n_tied = int(tied.sum())
    return float((g & above).sum() + (k - int(above.sum())) * (g & tied).sum() / n_tied)


def topk_intersection_score(saliency_map: np.ndarray, gt: np.ndarray, k: int = 1000,
                            concept_influence: bool = False, abs: bool = False,
                            normalise: bool = True) -> float:
    """Top-k intersection of a map (float [H, W]) with a ground truth (bool [H, W]): the
    share of the k highest pixels inside it, in [0, 1] (``concept_influence``: times
    H*W / |GT|). NaN without ground truth; ValueError unless 1 <= k <= H*W."""
    a = prepare_map(saliency_map, abs=abs, normalise=normalise)
    g = np.asarray(gt, bool)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= a.size:
        raise ValueError(f"k={k!r}: expected an integer between 1 and the map's {a.size} "
                         "pixels")
    if not g.any():
        return float("nan")
    score = topk_hits(a, g, int(k)) / k
    return score * a.size / g.sum() if concept_influence else score


def relevance_rank_accuracy_score(saliency_map: np.ndarray, gt: np.ndarray,
                                  abs: bool = False, normalise: bool = True) -> float:
    """Relevance rank accuracy (Arras 2022): with K = |GT|, the share of the K highest pixels
    of the map (float [H, W]) inside the ground truth (bool [H, W]), in [0, 1]. NaN without
    ground truth."""
    a = prepare_map(saliency_map, abs=abs, normalise=normalise)
    g = np.asarray(gt, bool)
    n = int(g.sum())
    return float("nan") if n == 0 else topk_hits(a, g, n) / n


def relevance_mass_accuracy_score(saliency_map: np.ndarray, gt: np.ndarray,
                                  abs: bool = False, normalise: bool = True) -> float:
    """Relevance mass accuracy (Arras 2022): sum of the map (float [H, W]) inside the ground
    truth (bool [H, W]) over its total sum; in [0, 1] for a non-negative map. NaN without
    ground truth or when the total is 0."""
    a = prepare_map(saliency_map, abs=abs, normalise=normalise)
    g = np.asarray(gt, bool)
    total = a.sum()
    if not g.any() or total == 0:
        return float("nan")
    return float(a[g].sum() / total)


def attribution_localisation_score(saliency_map: np.ndarray, gt: np.ndarray,
                                   weighted: bool = False, max_size: float = 1.0,
                                   positive_attributions: bool = True, abs: bool = False,
                                   normalise: bool = True) -> float:
    """Kohlbrenner et al. (2020)'s inside-total relevance ratio mu = R_in / R_tot of a map
    (float [H, W]) and a ground truth (bool [H, W]); ``positive_attributions``: only the
    positive relevance counts (the paper's definition; mu in [0, 1]); ``weighted``: mu_w =
    mu * S_tot / S_in (S: pixel counts of the image and the ground truth).

    NaN without ground truth, when the ground truth covers more than ``max_size`` of the
    image (the paper evaluates small objects only), or when R_tot is 0 (no positive
    relevance).
    """
    a = prepare_map(saliency_map, abs=abs, normalise=normalise)
    if positive_attributions:
        a = np.maximum(a, 0.0)
    g = np.asarray(gt, bool)
    s_in, s_tot = int(g.sum()), g.size
    total = a.sum()
    if s_in == 0 or s_in / s_tot > max_size or total == 0:
        return float("nan")
    mu = float(a[g].sum() / total)
    return mu * s_tot / s_in if weighted else mu


@register("topk_intersection", stage="cpu", columns={"topk_intersection": "float"},
          directions={"topk_intersection": "higher"})
def topk_intersection(sample: dict[str, Any], *, k: int = 1000,
                      concept_influence: bool = False, abs: bool = False,
                      normalise: bool = True) -> dict[str, float]:
    """Top-k intersection (Theiner 2021): share of the k highest pixels in the ground truth."""
    return {"topk_intersection": topk_intersection_score(
        sample["map"], ground_truth_mask(sample), k, concept_influence, abs, normalise)}


@register("relevance_rank_accuracy", stage="cpu",
          columns={"relevance_rank_accuracy": "float"},
          directions={"relevance_rank_accuracy": "higher"})
def relevance_rank_accuracy(sample: dict[str, Any], *, abs: bool = False,
                            normalise: bool = True) -> dict[str, float]:
    """Relevance rank accuracy (Arras 2022): share of the |GT| highest pixels in the GT."""
    return {"relevance_rank_accuracy": relevance_rank_accuracy_score(
        sample["map"], ground_truth_mask(sample), abs, normalise)}


@register("relevance_mass_accuracy", stage="cpu",
          columns={"relevance_mass_accuracy": "float"},
          directions={"relevance_mass_accuracy": "higher"})
def relevance_mass_accuracy(sample: dict[str, Any], *, abs: bool = False,
                            normalise: bool = True) -> dict[str, float]:
    """Relevance mass accuracy (Arras 2022): relevance inside the GT over the total."""
    return {"relevance_mass_accuracy": relevance_mass_accuracy_score(
        sample["map"], ground_truth_mask(sample), abs, normalise)}


@register("attribution_localisation", stage="cpu",
          columns={"attribution_localisation": "float"},
          directions={"attribution_localisation": "higher"})
def attribution_localisation(sample: dict[str, Any], *, weighted: bool = False,
                             max_size: float = 1.0, positive_attributions: bool = True,
                             abs: bool = False, normalise: bool = True) -> dict[str, float]:
    """Attribution localisation (Kohlbrenner 2020): positive relevance inside the GT / total."""
    return {"attribution_localisation": attribution_localisation_score(
        sample["map"], ground_truth_mask(sample), weighted, max_size, positive_attributions,
        abs, normalise)}
