"""Metrics: insertion/deletion on hand-computable models, pointing game cases, registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import salbench
from salbench.metrics.localization import pointing_game_hit
from salbench.metrics.perturbation import perturbation_curves, pixel_ranking, trapezoid_auc
from salbench.models.base import Classifier


class MeanModel(nn.Module):
    """Logits [mean red value * 10, 0]: the class-0 score grows with the red pixels present."""

    def forward(self, x):
        s = x[:, 0].flatten(1).mean(1) * 10
        return torch.stack([s, torch.zeros_like(s)], 1)


def mean_classifier(h=2, w=2):
    return Classifier(MeanModel(), name="mean", input_size=(h, w), num_classes=2,
                      mean=(0, 0, 0), std=(1, 1, 1), crop_fraction=1.0)


def test_pixel_ranking_descending_with_stable_ties():
    maps = torch.tensor([[[0.5, 2.0], [0.5, 1.0]]])
    assert pixel_ranking(maps).tolist() == [[1, 3, 0, 2]]


def test_insertion_logit_curve_hand_computed():
    model = mean_classifier()
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 0.0], [0.5, 0.25]])  # red channel
    maps = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])  # order: (0,0), (1,0), (1,1), (0,1)
    t = torch.tensor([0])
    curve = perturbation_curves(model, x, t, maps, mode="insertion", steps=4, score="logit")
    # inserted red sums: 0, 1, 1.5, 1.75, 1.75 -> logits = sum / 4 * 10
    np.testing.assert_allclose(curve[0].numpy(), [0, 2.5, 3.75, 4.375, 4.375], atol=1e-6)
    dele = perturbation_curves(model, x, t, maps, mode="deletion", steps=4, score="logit")
    np.testing.assert_allclose(dele[0].numpy(), [4.375, 1.875, 0.625, 0, 0], atol=1e-6)


def test_trapezoid_auc_hand_computed():
    assert trapezoid_auc(np.array([0.0, 1.0, 1.0])) == pytest.approx(0.75)
    assert trapezoid_auc(np.ones((2, 5))).tolist() == [1.0, 1.0]


def test_insertion_metric_prob_and_ratio():
    model = mean_classifier()
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 0.0], [0.5, 0.25]])
    maps = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])
    spec = salbench.metrics.get("insertion")
    out = spec.fn(model, x, torch.tensor([0]), maps, **spec.params(steps=4))
    logits = np.array([0, 2.5, 3.75, 4.375, 4.375])
    probs = 1 / (1 + np.exp(-logits))  # softmax of [s, 0]
    np.testing.assert_allclose(out["insertion_curve"][0], probs, rtol=1e-6)
    assert out["insertion_auc"][0] == pytest.approx(trapezoid_auc(probs), rel=1e-6)
    assert out["insertion_ratio_auc"][0] == pytest.approx(trapezoid_auc(probs / probs[-1]),
                                                          rel=1e-6)


def test_good_map_beats_reversed_map(smooth_model, images32):
    """A map ranking pixels by their true effect must give a better deletion than its reverse."""
    t = torch.zeros(4, dtype=torch.long)
    ig = salbench.methods.attribute("ig", smooth_model, images32, t, steps=32).sum(1)
    spec = salbench.metrics.get("deletion")
    good = spec.fn(smooth_model, images32, t, ig, **spec.params(score="logit"))
    bad = spec.fn(smooth_model, images32, t, -ig, **spec.params(score="logit"))
    assert np.mean(good["deletion_auc"]) < np.mean(bad["deletion_auc"])


def test_constant_map_and_all_zero_image_are_defined():
    model = mean_classifier()
    x = torch.zeros(2, 3, 2, 2)
    maps = torch.zeros(2, 2, 2)
    out = perturbation_curves(model, x, torch.tensor([0, 1]), maps, steps=2)
    assert torch.allclose(out, torch.full_like(out, 0.5))


def test_nan_map_is_an_error():
    with pytest.raises(ValueError, match="NaN"):
        perturbation_curves(mean_classifier(), torch.zeros(1, 3, 2, 2), torch.tensor([0]),
                            torch.full((1, 2, 2), float("nan")))


def test_blur_baseline_insertion_ends_at_the_image(smooth_model, images32):
    t = torch.zeros(4, dtype=torch.long)
    maps = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(1))
    c = perturbation_curves(smooth_model, images32, t, maps, baseline="blur", blur_sigma=2.0,
                            steps=5)
    with torch.no_grad():
        p = torch.softmax(smooth_model(images32), 1)[:, 0]
    torch.testing.assert_close(c[:, -1], p)


def test_pointing_game_cases():
    m = np.zeros((100, 100))
    m[50, 50] = 1.0
    assert pointing_game_hit(m, np.array([[40, 40, 60, 60]])) == 1.0
    assert pointing_game_hit(m, np.array([[0, 0, 10, 10]])) == 0.0
    # 15 px tolerance: box ends at x=36, the max's centre is at x=50.5 (14.5 px away)
    assert pointing_game_hit(m, np.array([[0, 40, 36, 60]])) == 1.0
    assert pointing_game_hit(m, np.array([[0, 40, 35, 60]])) == 0.0
    assert pointing_game_hit(m, np.array([[0, 0, 10, 10], [45, 45, 55, 55]])) == 1.0
    assert math.isnan(pointing_game_hit(m, np.zeros((0, 4))))


def test_pointing_game_ties_and_constant_map():
    const = np.ones((50, 50))
    assert pointing_game_hit(const, np.array([[0, 0, 10, 10]])) == 0.0
    assert pointing_game_hit(const, np.array([[0, 0, 50, 50]])) == 1.0
    with pytest.raises(ValueError, match="NaN"):
        pointing_game_hit(np.full((5, 5), np.nan), np.array([[0, 0, 5, 5]]))


def test_metric_registry_errors():
    from salbench.errors import ConfigError, UnknownNameError

    with pytest.raises(UnknownNameError, match="valid metrics: .*insertion"):
        salbench.metrics.get("sick")
    with pytest.raises(ConfigError, match="no parameter"):
        salbench.metrics.get("insertion").params(stepz=3)
    assert salbench.metrics.get("pointing_game").stage == "cpu"
    assert salbench.metrics.get("insertion").stage == "model"


def test_gini_coefficients_do_not_depend_on_blas_threads():
    """Concentration's and sparseness's Gini sums are numpy's own pairwise sums, not BLAS
    dots, so the in-process executor and a Ray CPU actor (other BLAS thread counts) write
    equal values."""
    from threadpoolctl import threadpool_limits

    from salbench.metrics.complexity import gini_index
    from salbench.metrics.concentration import concentration_scores

    m = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    with threadpool_limits(1):
        one = (concentration_scores(m)["concentration_gini"], gini_index(m))
    with threadpool_limits(4):
        many = (concentration_scores(m)["concentration_gini"], gini_index(m))
    assert one == many
    v = np.sort(np.abs(m.astype(np.float64)).ravel())
    n = v.size
    hand = sum((2 * i - n - 1) * x for i, x in enumerate(v.tolist(), start=1)) / (n * v.sum())
    assert abs(one[0] - hand) < 1e-12
