"""Similarity metrics (paper 000) and the cascading model randomisation test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import salbench
from salbench.metrics.similarity import map_similarity, rescale


def test_identical_and_inverted_maps():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16))
    same = map_similarity(a, 3 * a + 1)  # rescaling makes affine copies identical
    for k, v in same.items():
        assert v == pytest.approx(1.0), k
    inv = map_similarity(a, -a)
    assert inv["pearson"] == pytest.approx(-1) and inv["spearman"] == pytest.approx(-1)
    assert inv["nrmse"] < same["nrmse"] and inv["wjaccard"] < 0.5


def test_similarity_hand_computed():
    a = np.array([[0.0, 1.0, 0.0, 0.5]] * 4)
    b = np.array([[0.0, 1.0, 1.0, 0.5]] * 4)
    s = map_similarity(a, b)
    assert s["nrmse"] == pytest.approx(1 - 0.25)  # one column of four differs by 1
    assert s["wjaccard"] == pytest.approx((1 + 0.5) / (1 + 1 + 0.5))
    assert math.isnan(map_similarity(np.ones((4, 4)), a)["pearson"])  # constant map
    assert rescale(np.ones((2, 2))).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="NaN"):
        map_similarity(np.full((4, 4), np.nan), a)


def test_similarity_metric_compares_map_with_the_input():
    img = np.zeros((8, 8, 3), np.uint8)
    img[2:6, 2:6] = 255
    spec = salbench.metrics.get("similarity")
    good = spec.fn({"map": img[..., 0].astype(float), "image": img})
    bad = spec.fn({"map": 255.0 - img[..., 0], "image": img})
    assert good["similarity_pearson"] == pytest.approx(1.0) and bad["similarity_pearson"] < 0


@pytest.fixture(scope="module")
def digits_batch():
    from salbench.models.digits import digits_images

    model = salbench.models.load("digits_cnn")
    images, labels = digits_images()
    x = torch.as_tensor(images[:4]).permute(0, 3, 1, 2).float() / 255
    return model, x, torch.as_tensor(labels[:4]).long()


def _mprt(model, x, t, method_name):
    def method(m):
        return salbench.methods.to_map(salbench.methods.attribute(method_name, m, x, t))

    spec = salbench.metrics.get("mprt")
    return spec.fn(model, x, t, method(model), method=method, **spec.params(steps=3))


def test_mprt_gradient_is_sensitive_to_the_model(digits_batch):
    model, x, t = digits_batch
    before = [p.clone() for p in model.parameters()]
    out = _mprt(model, x, t, "vg")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert len(out["mprt_spearman_curve"][0]) == 3
    assert np.all(np.asarray(out["mprt_spearman"]) < 0.8)


def test_mprt_flags_a_model_independent_method(digits_batch):
    @salbench.methods.register("test_edges", replace=True)
    def edges(model, x, target):
        return x.clone()  # ignores the model: must fail the randomisation test

    model, x, t = digits_batch
    out = _mprt(model, x, t, "test_edges")
    np.testing.assert_allclose(out["mprt_spearman"], 1.0)
    np.testing.assert_allclose(out["mprt_ssim"], 1.0, atol=1e-6)
