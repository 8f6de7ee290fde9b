"""WSOL, concentration, pixel flipping, paper presets, Sensitivity-N: hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import salbench
from salbench.metrics.concentration import concentration_scores
from salbench.metrics.localization import box_mask, roc_auc, wsol_scores
from salbench.metrics.perturbation import perturbation_curves, trapezoid_auc
from salbench.metrics.sensitivity import pearson, subset_sizes
from salbench.models.base import Classifier


def test_box_mask_pixel_centres():
    m = box_mask(np.array([[1, 0, 3, 2]]), (3, 4))
    assert m.tolist() == [[False, True, True, False], [False, True, True, False],
                          [False, False, False, False]]


def test_roc_auc_hand_and_sklearn():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.ones(4), np.array([0, 1, 0, 1])) == 0.5  # ties count one half
    assert math.isnan(roc_auc(np.ones(3), np.zeros(3)))
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=200).round(1), rng.random(200) < 0.3
    assert roc_auc(s, y) == pytest.approx(sklearn.roc_auc_score(y, s))


def test_wsol_perfect_and_hand_computed():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True
    perfect = wsol_scores(gt.astype(float), gt)
    assert perfect == {"wsol_f1": 1.0, "wsol_iou": 1.0, "wsol_mae": 0.0, "wsol_roc_auc": 1.0}
    m = np.zeros((4, 4))
    m[0, :] = 1.0  # covers 2 of the 4 box pixels plus 2 outside
    s = wsol_scores(m, gt)
    assert s["wsol_f1"] == pytest.approx(0.5) and s["wsol_iou"] == pytest.approx(1 / 3)
    assert s["wsol_mae"] == pytest.approx(4 / 16)  # best threshold: 2 FP + 2 FN
    const = wsol_scores(np.ones((4, 4)), gt)  # constant map: nothing above any threshold
    assert const["wsol_f1"] == 0.0 and const["wsol_roc_auc"] == 0.5
    assert math.isnan(wsol_scores(m, np.zeros((4, 4), bool))["wsol_f1"])
    with pytest.raises(ValueError, match="NaN"):
        wsol_scores(np.full((4, 4), np.nan), gt)


def test_concentration_hand_computed():
    m = np.zeros((10, 10))
    m[0, 0] = 1.0
    s = concentration_scores(m)
    assert s["concentration_top1"] == 1.0 and s["concentration_gini"] == pytest.approx(0.99)
    u = concentration_scores(np.ones((10, 10)))
    assert u["concentration_top10"] == pytest.approx(0.1) and u["concentration_gini"] == 0
    assert math.isnan(concentration_scores(np.zeros((3, 3)))["concentration_gini"])


class Linear(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, -s], 1)


def linear_classifier(w):
    return Classifier(Linear(w), name="lin", input_size=tuple(w.shape[-2:]), num_classes=2,
                      mean=(0, 0, 0), std=(1, 1, 1), crop_fraction=1.0)


def test_pixel_flip_is_deletion_in_both_orders(smooth_model, images32):
    t = torch.zeros(4, dtype=torch.long)
    maps = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0))
    spec = salbench.metrics.get("pixel_flip")
    out = spec.fn(smooth_model, images32, t, maps, **spec.params(steps=8))
    morf = perturbation_curves(smooth_model, images32, t, maps, mode="deletion", steps=8)
    lerf = perturbation_curves(smooth_model, images32, t, -maps, mode="deletion", steps=8)
    np.testing.assert_allclose(np.stack(out["pixel_flip_morf_curve"]), morf.numpy())
    np.testing.assert_allclose(out["pixel_flip_lerf_auc"], trapezoid_auc(lerf.numpy()))


def test_paper_presets():
    assert salbench.metrics.get("insertion_igos").defaults["baseline"] == "blur"
    assert salbench.metrics.get("insertion_igos").defaults["blur_sigma"] == 50.0
    samp = salbench.metrics.get("deletion_samp").defaults
    assert samp["score"] == "logit" and samp["normalize"] == "peak" and samp["steps"] == 28
    w = torch.ones(1, 3, 4, 4)
    model = linear_classifier(w)
    x = torch.full((1, 3, 4, 4), 0.5)
    maps = torch.arange(16.0).view(1, 4, 4)
    spec = salbench.metrics.get("deletion_samp")
    out = spec.fn(model, x, torch.tensor([0]), maps, **spec.params(steps=4))
    # logit falls linearly 24 -> 0 in 4 steps; peak-normalised: 1, .75, .5, .25, 0
    np.testing.assert_allclose(out["deletion_samp_curve"][0], [1, 0.75, 0.5, 0.25, 0])
    assert out["deletion_samp_auc"][0] == pytest.approx(0.5)


def test_sensitivity_n_is_one_for_gxi_on_a_linear_model():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 3, 8, 8, generator=g)
    model = linear_classifier(w)
    x = torch.rand(2, 3, 8, 8, generator=g)
    t = torch.zeros(2, dtype=torch.long)
    attr = salbench.methods.attribute("gxi", model, x, t)
    spec = salbench.metrics.get("sensitivity_n")
    out = spec.fn(model, x, t, attr.sum(1), attr=attr, **spec.params(sizes=4, samples=10))
    np.testing.assert_allclose(out["sensitivity_n"], 1.0, atol=1e-5)
    # a map unrelated to the model correlates much less
    noise = torch.rand(2, 3, 8, 8, generator=g)
    bad = spec.fn(model, x, t, noise.sum(1), attr=noise, **spec.params(sizes=4, samples=10))
    assert (np.asarray(bad["sensitivity_n"]) < 0.9).all()
    again = spec.fn(model, x, t, attr.sum(1), attr=attr, **spec.params(sizes=4, samples=10))
    np.testing.assert_array_equal(np.stack(again["sensitivity_n_curve"]),
                                  np.stack(out["sensitivity_n_curve"]))


def test_sensitivity_helpers():
    assert subset_sizes(100, 3).tolist() == [1, 9, 80]
    np.testing.assert_allclose(pearson(np.array([[1.0, 2, 3]]), np.array([[2.0, 4, 6]])), [1])
    assert np.isnan(pearson(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])))


def test_completeness_metric_hand_and_ig(smooth_model, images32):
    w = torch.ones(1, 3, 2, 2)
    model = linear_classifier(w)
    x = torch.full((1, 3, 2, 2), 0.5)
    spec = salbench.metrics.get("completeness")
    attr = torch.full((1, 3, 2, 2), 0.25)  # sums to 3, the logit change is 6
    out = spec.fn(model, x, torch.tensor([0]), attr.sum(1), attr=attr, **spec.params())
    assert out["completeness"][0] == pytest.approx(3.0)
    assert out["completeness_relative"][0] == pytest.approx(0.5)
    t = smooth_model(images32).argmax(1)
    res = salbench.methods.attribute_with_info("idgi_ig", smooth_model, images32, t,
                                               score="logit", steps=16)
    out = spec.fn(smooth_model, images32, t, res.attr.sum(1), attr=res.attr, **spec.params())
    np.testing.assert_allclose(out["completeness"], res.info["completeness_error"].numpy(),
                               atol=1e-4)
    assert np.all(out["completeness"] < 1e-3)


def test_wsol_equals_the_threshold_by_threshold_definition():
    rng = np.random.default_rng(3)
    m = rng.random((40, 50)).round(2)  # ties at many levels
    gt = np.zeros((40, 50), bool)
    gt[5:25, 10:30] = True
    s = wsol_scores(m, gt, thresholds=37)
    norm = (m - m.min()) / (m.max() - m.min())
    f1, iou, mae = [], [], []
    for level in np.arange(37) / 37:
        p = norm > level
        tp, fp, fn = (p & gt).sum(), (p & ~gt).sum(), (~p & gt).sum()
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
        iou.append(tp / max(tp + fp + fn, 1))
        mae.append((fp + fn) / gt.size)
    assert s["wsol_f1"] == pytest.approx(max(f1)) and s["wsol_iou"] == pytest.approx(max(iou))
    assert s["wsol_mae"] == pytest.approx(min(mae))
