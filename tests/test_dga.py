"""DGA (paper 003 supplement): pseudo-code reference, hand-computed case, masks, batching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import salbench
from salbench.errors import BadInputError, ConfigError, UnknownNameError
from salbench.methods.dga import distillation_mask
from salbench.models.base import Classifier

try:
    from fullgrad_reference import authors_fullgrad
except ImportError:  # imported as tests.test_dga
    from tests.fullgrad_reference import authors_fullgrad


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _grad(model, x1, t1):
    xv = x1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xv)[0, int(t1)], xv)
    return g


def _reference_dga(model, inputs, target, local="gxi", epc_ratio=0.9, n_steps=30):
    """The supplement's pseudo-code (Sec. F) for one image, with torch.quantile."""

    def local_attribution(cur):
        g = _grad(model, cur, target)
        return g * cur if local == "gxi" else g

    attribution = 0
    cur_input = inputs.clone()
    for _step in range(n_steps):
        local_attr = local_attribution(cur_input)
        thres = local_attr.abs().flatten(1).quantile((_step + 1) / n_steps, dim=-1,
                                                     keepdim=True)
        thres = thres.unflatten(-1, [1, 1, 1])
        wc_mask = 1 - (local_attr.abs() <= thres).float()
        thres = local_attr.flatten(1).quantile(epc_ratio, dim=-1, keepdim=True)
        thres = thres.unflatten(-1, [1, 1, 1])
        epc_mask = 1 - (local_attr >= thres).float()
        final_mask = ((_step + 1) / n_steps) * wc_mask + (1 - (_step + 1) / n_steps) * epc_mask
        attribution += torch.relu(local_attr)
        cur_input = torch.mul(inputs, final_mask)
    return 1 / n_steps * attribution


@pytest.mark.parametrize("local,steps", [("gxi", 30), ("vg", 7)])
def test_dga_equals_supplement_pseudocode(local, steps, smooth_model, images32):
    t = _targets(smooth_model, images32)
    out = salbench.methods.attribute("dga", smooth_model, images32, t, steps=steps,
                                     local=local, internal_batch_size=3)
    for i in range(len(images32)):
        ref = _reference_dga(smooth_model, images32[i:i + 1], t[i], local=local, n_steps=steps)
        torch.testing.assert_close(out[i:i + 1], ref, atol=1e-6, rtol=1e-5)


def _reference_dga_fullgrad(model, inputs, target, epc_ratio=0.9, n_steps=30, use_wc=True,
                            use_epc=True):
    """The pseudo-code (Sec. F) with the authors' FullGrad as ``local_attribution``: a
    one-channel map [1, 1, H, W] whose masks broadcast over the colour channels. ``use_wc`` /
    ``use_epc`` False replace that mask by ones (DGA_E / DGA_W)."""
    attribution = 0
    cur_input = inputs.clone()
    for _step in range(n_steps):
        local_attr, _ = authors_fullgrad(model, cur_input, target.view(1))
        thres = local_attr.abs().flatten(1).quantile((_step + 1) / n_steps, dim=-1,
                                                     keepdim=True)
        thres = thres.unflatten(-1, [1, 1, 1])
        wc_mask = 1 - (local_attr.abs() <= thres).float() if use_wc else 1.0
        thres = local_attr.flatten(1).quantile(epc_ratio, dim=-1, keepdim=True)
        thres = thres.unflatten(-1, [1, 1, 1])
        epc_mask = 1 - (local_attr >= thres).float() if use_epc else 1.0
        final_mask = ((_step + 1) / n_steps) * wc_mask + (1 - (_step + 1) / n_steps) * epc_mask
        attribution += torch.relu(local_attr)
        cur_input = torch.mul(inputs, final_mask)
    return 1 / n_steps * attribution


@pytest.mark.parametrize("mask,steps", [("both", 12), ("wc", 7), ("epc", 7)])
def test_dga_fullgrad_equals_pseudocode_with_the_authors_fullgrad(mask, steps, relu_model,
                                                                  images32):
    """``dga`` (local FullGrad) and its DGA_W / DGA_E masks against the supplement's loop
    around an independent transcription of the FullGrad authors' code."""
    images32 = images32[:3]
    t = _targets(relu_model, images32)
    out = salbench.methods.attribute("dga", relu_model, images32, t, steps=steps, mask=mask,
                                     internal_batch_size=2)
    assert out.shape == images32.shape and (out >= 0).all()
    ours = salbench.methods.to_map(out, "abs_sum")
    for i in range(len(images32)):
        ref = _reference_dga_fullgrad(relu_model, images32[i:i + 1], t[i], n_steps=steps,
                                      use_wc=mask != "epc", use_epc=mask != "wc")
        torch.testing.assert_close(ours[i], ref[0, 0], atol=1e-5, rtol=1e-5)


def test_dga_default_is_fullgrad_and_refuses_what_fullgrad_refuses(relu_model, smooth_model,
                                                                   images32):
    t = _targets(relu_model, images32)
    default = salbench.methods.attribute("dga", relu_model, images32, t, steps=4)
    explicit = salbench.methods.attribute("dga_gxi", relu_model, images32, t, steps=4,
                                          local="fullgrad")
    gxi = salbench.methods.attribute("dga_gxi", relu_model, images32, t, steps=4)
    assert torch.equal(default, explicit) and not torch.allclose(default, gxi)
    with pytest.raises(BadInputError, match="gelu"):
        salbench.methods.attribute("dga", smooth_model, images32, 0, steps=2)


def _linear_classifier(w: torch.Tensor) -> Classifier:
    """logits = W flatten(x) on [B, 3, 2, 2] inputs, no normalisation."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    return Classifier(nn.Sequential(nn.Flatten(), lin), name="linear", input_size=(2, 2),
                      num_classes=w.shape[0], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


W0 = torch.tensor([0.6, -0.5, 0.4, -0.3, 0.2, -0.1, 0.05, 0.15, -0.25, 0.35, -0.45, 0.55])


def test_dga_linear_model_hand_computed():
    # f(x) = w . x, x = 1: G*I at step 0 is w. Step 1 (t = 1/2) mask, by hand:
    #   WC keeps |w| > median|w| = (0.30 + 0.35) / 2 = 0.325: 0.6 -0.5 0.4 0.35 -0.45 0.55
    #   EPC drops w >= q_0.9(w) = 0.4 + 0.9 (0.55 - 0.4) = 0.535: 0.6 and 0.55
    #   mask = WC/2 + EPC/2; x_1 = mask; G*I at step 1 is w * mask.
    model = _linear_classifier(torch.stack([W0, -W0]))
    x = torch.ones(1, 3, 2, 2)
    mask = torch.tensor([0.5, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 1, 1, 0.5])
    expected = (torch.relu(W0) + torch.relu(W0 * mask)) / 2
    out = salbench.methods.attribute("dga_gxi", model, x, torch.tensor([0]), steps=2)
    torch.testing.assert_close(out.flatten(), expected)
    # one step is ReLU(G*I); "vg" gives ReLU(gradient) = ReLU(w) whatever x is
    one = salbench.methods.attribute("dga_gxi", model, x * 0.5, torch.tensor([0]), steps=1)
    torch.testing.assert_close(one.flatten(), torch.relu(W0 * 0.5))
    vg = salbench.methods.attribute("dga_gxi", model, x * 0.5, torch.tensor([0]), steps=1,
                                    local="vg")
    torch.testing.assert_close(vg.flatten(), torch.relu(W0))


def test_mask_variants_by_hand():
    a = W0.view(1, 3, 2, 2)
    wc = (W0.abs() > 0.325).float()
    epc = (W0 < 0.535).float()
    for name, exp in [("both", wc / 2 + epc / 2), ("wc", wc / 2 + 0.5), ("epc", 0.5 + epc / 2)]:
        torch.testing.assert_close(distillation_mask(a, 0.5, 0.9, name).flatten(), exp)
    # t close to 1: the WC mask keeps only the top |a|; EPC weight vanishes
    m = distillation_mask(a, 11 / 12, 0.9, "both").flatten()
    assert m[0] == pytest.approx(11 / 12 * 1 + 1 / 12 * 0)  # |0.6| is the largest: kept by WC


def test_result_is_nonnegative_and_shrinks_toward_relu_mean(smooth_model, images32):
    t = _targets(smooth_model, images32)
    out = salbench.methods.attribute("dga_gxi", smooth_model, images32, t, profile="fast")
    assert out.shape == images32.shape and out.dtype == torch.float32
    assert out.device == images32.device
    assert (out >= 0).all() and out.max() > 0
    # first term of the mean is ReLU(G*I) of x itself: DGA >= ReLU(G*I) / N everywhere
    gxi = salbench.methods.attribute("gxi", smooth_model, images32, t)
    assert (out >= torch.relu(gxi) / 10 - 1e-7).all()
    for name, local in (("dga", "fullgrad"), ("dga_gxi", "gxi")):
        spec = salbench.methods.get(name)
        assert spec.defaults["steps"] == 30 and spec.defaults["epc_quantile"] == 0.9
        assert spec.defaults["local"] == local and spec.fast == {"steps": 10}


def test_local_methods_and_errors(smooth_model, images32):
    t = _targets(smooth_model, images32)
    a = salbench.methods.attribute("dga", smooth_model, images32, t, steps=4, local="vg")
    b = salbench.methods.attribute("dga", smooth_model, images32, t, steps=4, local="gxi")
    assert not torch.allclose(a, b)
    with pytest.raises(UnknownNameError, match="no_such_method"):
        salbench.methods.attribute("dga", smooth_model, images32, t, local="no_such_method")
    with pytest.raises(ConfigError, match="local"):
        salbench.methods.attribute("dga", smooth_model, images32, t, local="dga")
    with pytest.raises(ConfigError, match="mask"):
        salbench.methods.attribute("dga", smooth_model, images32, t, mask="xyz")
    with pytest.raises(ConfigError, match="epc_quantile"):
        salbench.methods.attribute("dga", smooth_model, images32, t, epc_quantile=1.5)


@pytest.mark.parametrize("mask", ["both", "wc", "epc"])
@pytest.mark.parametrize("name,model", [("dga_gxi", "smooth_model"), ("dga", "relu_model")])
def test_batch_equals_loop_and_deterministic(mask, name, model, images32, request):
    model = request.getfixturevalue(model)
    t = _targets(model, images32)
    batch = salbench.methods.attribute(name, model, images32, t, steps=6, mask=mask,
                                       internal_batch_size=3)
    again = salbench.methods.attribute(name, model, images32, t, steps=6, mask=mask,
                                       internal_batch_size=3)
    assert torch.equal(batch, again)
    assert batch.shape == images32.shape and batch.dtype == torch.float32
    assert (batch >= 0).all() and batch.max() > 0
    singles = torch.cat([
        salbench.methods.attribute(name, model, images32[i:i + 1], t[i:i + 1],
                                   steps=6, mask=mask)
        for i in range(4)
    ])
    torch.testing.assert_close(batch, singles, atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_dga_on_cuda(smooth_model, images32):
    t = _targets(smooth_model, images32)
    gpu_model = salbench.models.load("tiny_smooth", device="cuda")
    gpu = salbench.methods.attribute("dga_gxi", gpu_model, images32.cuda(), t.cuda(), steps=5)
    assert gpu.device.type == "cuda" and gpu.shape == images32.shape and (gpu >= 0).all()
    cpu = salbench.methods.attribute("dga_gxi", smooth_model, images32, t, steps=1)
    one = salbench.methods.attribute("dga_gxi", gpu_model, images32.cuda(), t.cuda(), steps=1)
    torch.testing.assert_close(one.cpu(), cpu, atol=1e-4, rtol=1e-3)
