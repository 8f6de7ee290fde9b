"""SmoothGrad, Grad-CAM, RISE, XRAI and the Captum adapter: contracts, references, semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import salbench
from salbench.methods.rise import RiseMasks
from salbench.methods.xrai import segment_masks, xrai_regions

FAST = ["smoothgrad", "smoothgrad_sq", "gradcam", "rise", "xrai"]


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("name", FAST)
def test_contract_determinism_and_batch_equals_loop(name, smooth_model, images32):
    x = images32
    t = _targets(smooth_model, x)
    params = {"xrai": {"min_pixel_diff": 5}}.get(name, {})
    a = salbench.methods.attribute(name, smooth_model, x, t, profile="fast", **params)
    assert a.shape == x.shape and a.dtype == torch.float32 and torch.isfinite(a).all()
    b = salbench.methods.attribute(name, smooth_model, x, t, profile="fast", **params)
    assert torch.equal(a, b)
    singles = torch.cat([
        salbench.methods.attribute(name, smooth_model, x[i:i + 1], t[i:i + 1], profile="fast",
                                   **params) for i in range(len(x))
    ])
    torch.testing.assert_close(a, singles, atol=1e-5, rtol=1e-4)


def test_smoothgrad_without_noise_is_the_gradient(smooth_model, images32):
    t = _targets(smooth_model, images32)
    vg = salbench.methods.attribute("vg", smooth_model, images32, t)
    sg = salbench.methods.attribute("smoothgrad", smooth_model, images32, t, noise=0.0,
                                    samples=3)
    torch.testing.assert_close(sg, vg, atol=1e-6, rtol=1e-5)
    sq = salbench.methods.attribute("smoothgrad_sq", smooth_model, images32, t, noise=0.0,
                                    samples=3)
    torch.testing.assert_close(sq, vg * vg, atol=1e-7, rtol=1e-5)


def test_smoothgrad_seed_and_noise_level(smooth_model, images32):
    t = _targets(smooth_model, images32)
    a = salbench.methods.attribute("smoothgrad", smooth_model, images32, t, samples=4, seed=1)
    b = salbench.methods.attribute("smoothgrad", smooth_model, images32, t, samples=4, seed=2)
    assert not torch.equal(a, b)


def test_smoothgrad_on_a_quadratic_is_exact_in_expectation():
    """f(x) = sum(w * x^2): grad = 2 w x is linear, so noise averages out exactly in the mean
    of many samples: SmoothGrad -> 2 w x (tolerance from 400 samples)."""
    from salbench.models.base import Classifier

    class Quad(torch.nn.Module):
        def forward(self, z):
            return torch.stack([(z ** 2).flatten(1).sum(1), torch.zeros(len(z))], 1)

    model = Classifier(Quad(), name="quad", input_size=(4, 4), num_classes=2, mean=(0, 0, 0),
                       std=(1, 1, 1), crop_fraction=1.0)
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    sg = salbench.methods.attribute("smoothgrad", model, x, 0, samples=400, noise=0.15)
    span = (x.max() - x.min()).item()
    assert (sg - 2 * x).abs().max() < 4 * 2 * 0.15 * span / np.sqrt(400)


def test_gradcam_matches_captum_layer_gradcam(smooth_model, images32):
    captum_attr = pytest.importorskip("captum.attr")
    from salbench.methods.gradcam import find_target_layer

    t = _targets(smooth_model, images32)
    layer_name = find_target_layer(smooth_model)
    ours = salbench.methods.attribute("gradcam", smooth_model, images32, t).sum(1)
    layer = smooth_model.get_submodule(layer_name)
    ref = captum_attr.LayerGradCam(smooth_model, layer).attribute(images32, target=t,
                                                                  relu_attributions=True)
    ref = F.interpolate(ref, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    assert (ours >= 0).all()


def test_gradcam_layer_table_and_errors(lite0):
    from salbench.methods.gradcam import find_target_layer

    assert find_target_layer(lite0) == "net.bn2"
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    cam = salbench.methods.attribute("gradcam", lite0, x, [967])
    assert cam.shape == x.shape and cam.sum() > 0
    with pytest.raises(ValueError, match="not found"):
        salbench.methods.attribute("gradcam", lite0, x, [967], layer="net.nope")


def test_rise_masks_properties():
    masks = RiseMasks(200, (32, 32), grid=7, p=0.5, seed=0, device=torch.device("cpu"))
    m = masks(torch.arange(200))
    assert m.shape == (200, 32, 32) and m.min() >= 0 and m.max() <= 1
    assert abs(m.mean().item() - 0.5) < 0.05
    again = RiseMasks(200, (32, 32), grid=7, p=0.5, seed=0, device=torch.device("cpu"))
    assert torch.equal(again(torch.tensor([5, 17])), m[[5, 17]])


def test_rise_matches_unbatched_formula(smooth_model, images32):
    x, t = images32[:2], _targets(smooth_model, images32[:2])
    n, p = 30, 0.5
    ours = salbench.methods.attribute("rise", smooth_model, x, t, masks=n, p=p, seed=3,
                                      internal_batch_size=7).sum(1)
    masks = RiseMasks(n, (32, 32), grid=7, p=p, seed=3, device=torch.device("cpu"))
    for i in range(2):
        ref = torch.zeros(32, 32)
        for k in range(n):
            mk = masks(torch.tensor([k]))[0]
            with torch.no_grad():
                prob = torch.softmax(smooth_model((x[i] * mk).unsqueeze(0)), 1)[0, t[i]]
            ref += prob * mk
        torch.testing.assert_close(ours[i], ref / (n * p), atol=1e-5, rtol=1e-4)


def test_xrai_matches_pair_reference():
    saliency = pytest.importorskip("saliency.core")
    from saliency.core import xrai as pair_xrai

    rng = np.random.default_rng(0)
    img = rng.random((48, 40, 3))
    img[10:30, 5:25] = [0.9, 0.1, 0.1]  # a region Felzenszwalb will find
    ours = segment_masks(img)
    ref = np.stack(pair_xrai._get_segments_felzenszwalb(img))
    np.testing.assert_array_equal(ours, ref)
    attr = rng.normal(size=(48, 40)).astype(np.float32)
    mine = xrai_regions(attr, ours, min_pixel_diff=50)
    theirs, _ = saliency.XRAI._xrai(attr=attr, segs=list(ref), min_pixel_diff=50)
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_xrai_greedy_hand_computed():
    attr = np.array([[4.0, 0.0], [1.0, 1.0]])
    masks = np.array([
        [[True, True], [False, False]],   # mean 2
        [[False, False], [True, True]],   # mean 1
        [[True, False], [True, False]],   # mean 2.5: chosen first
    ])
    out = xrai_regions(attr, masks, min_pixel_diff=1)
    # then mask 0 adds pixel (0,1): gain 0; mask 1 adds pixel (1,1): gain 1 -> mask 1 first
    np.testing.assert_allclose(out, [[2.5, 0.0], [2.5, 1.0]])


@pytest.mark.parametrize("cls,ours", [("InputXGradient", "gxi"), ("Saliency", "vg")])
def test_captum_adapter(cls, ours, smooth_model, images32):
    pytest.importorskip("captum")
    t = _targets(smooth_model, images32)
    a = salbench.methods.attribute(f"captum:{cls}", smooth_model, images32, t)
    b = salbench.methods.attribute(ours, smooth_model, images32, t)
    torch.testing.assert_close(a, b.abs() if cls == "Saliency" else b, atol=1e-6, rtol=1e-5)


def test_captum_adapter_errors(smooth_model, images32):
    pytest.importorskip("captum")
    from salbench.errors import ConfigError, UnknownNameError

    with pytest.raises(UnknownNameError, match="Captum attribution classes: .*DeepLift"):
        salbench.methods.get("captum:DeepLeft")
    with pytest.raises(ConfigError, match="no parameter"):
        salbench.methods.attribute("captum:Occlusion", smooth_model, images32, 0, windows=3)
    occ = salbench.methods.attribute("captum:Occlusion", smooth_model, images32, 0,
                                     sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8))
    assert occ.shape == images32.shape
