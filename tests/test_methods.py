"""Methods: contract, completeness, quadrature rules, Captum agreement, determinism, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salbench
from salbench.errors import BadInputError, ConfigError, UnknownNameError
from salbench.methods.engine import quadrature

RULES = ["riemann_left", "riemann_right", "riemann_middle", "trapezoid", "gausslegendre"]
CAPTUM_RULES = {
    "riemann_left": "riemann_left",
    "riemann_right": "riemann_right",
    "riemann_middle": "riemann_middle",
    "gausslegendre": "gausslegendre",
}


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("name", ["vg", "gxi", "ig"])
def test_contract_shape_dtype_device(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    a = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast")
    assert a.shape == images32.shape and a.dtype == torch.float32 and a.device == images32.device
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    m = salbench.methods.to_map(a)
    assert m.shape == (4, 32, 32) and m.dtype == torch.float32 and (m >= 0).all()
    assert torch.allclose(salbench.methods.to_map(a, "sum"), a.sum(1))
    assert torch.allclose(salbench.methods.to_map(a, "max_abs"), a.abs().amax(1))


def test_vg_is_the_autograd_gradient(smooth_model, images32):
    x = images32.clone().requires_grad_(True)
    t = torch.tensor([1, 2, 3, 4])
    smooth_model(x).gather(1, t.view(-1, 1)).sum().backward()
    a = salbench.methods.attribute("vg", smooth_model, images32, t)
    torch.testing.assert_close(a, x.grad)
    gxi = salbench.methods.attribute("gxi", smooth_model, images32, t)
    torch.testing.assert_close(gxi, x.grad * images32)


@pytest.mark.parametrize("rule", RULES)
def test_quadrature_rules_integrate_polynomials(rule):
    a, w = quadrature(rule, 64)
    assert np.all((a >= 0) & (a <= 1))
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    # integral of 3a^2 on [0, 1] is 1; error bounds per rule with n = 64
    tol = {"riemann_left": 0.03, "riemann_right": 0.03, "riemann_middle": 1e-3,
           "trapezoid": 1e-3, "gausslegendre": 1e-12}[rule]
    assert (w * 3 * a**2).sum() == pytest.approx(1.0, abs=tol)


def test_trapezoid_is_the_textbook_rule_not_captums():
    a, w = quadrature("trapezoid", 5)
    np.testing.assert_allclose(a, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(w, [0.125, 0.25, 0.25, 0.25, 0.125])
    captum = pytest.importorskip("captum.attr._utils.approximation_methods")
    step_fn, alpha_fn = captum.approximation_parameters("riemann_trapezoid")
    assert sum(step_fn(5)) == pytest.approx(0.8)  # (n-1)/n: why Captum's differs from ours


@pytest.mark.parametrize("rule", RULES)
def test_ig_completeness(rule, smooth_model, images32):
    t = _targets(smooth_model, images32)
    res = salbench.methods.attribute_with_info("ig", smooth_model, images32, t, steps=128,
                                               rule=rule)
    delta = res.info["score_delta"]
    err = res.info["completeness_error"]
    torch.testing.assert_close(err, (res.attr.flatten(1).sum(1) - delta).abs(), atol=1e-4,
                               rtol=1e-4)
    tol = 1e-4 if rule == "gausslegendre" else 5e-2
    assert (err <= tol * delta.abs().clamp_min(1)).all(), (rule, err, delta)


def test_ig_completeness_error_shrinks_with_steps(relu_model, images32):
    t = _targets(relu_model, images32)
    errs = [salbench.methods.attribute_with_info("ig", relu_model, images32, t, steps=n,
                                                 rule="riemann_middle").info[
        "completeness_error"].mean().item() for n in (4, 64)]
    assert errs[1] < errs[0]


@pytest.mark.parametrize("rule", sorted(CAPTUM_RULES))
def test_ig_agrees_with_captum(rule, smooth_model, images32):
    captum_attr = pytest.importorskip("captum.attr")
    t = _targets(smooth_model, images32)
    ours = salbench.methods.attribute("ig", smooth_model, images32, t, steps=32, rule=rule,
                                      internal_batch_size=50)
    ig = captum_attr.IntegratedGradients(smooth_model)
    ref = ig.attribute(images32, baselines=torch.zeros_like(images32), target=t, n_steps=32,
                       method=CAPTUM_RULES[rule], internal_batch_size=64)
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-4)


def test_ig_nonblack_baseline_and_prob_score(smooth_model, images32):
    t = _targets(smooth_model, images32)
    res = salbench.methods.attribute_with_info("ig", smooth_model, images32, t, steps=64,
                                               rule="gausslegendre", baseline=0.5,
                                               score="prob")
    with torch.no_grad():
        p = torch.softmax(smooth_model(images32), 1).gather(1, t.view(-1, 1)).squeeze(1)
        p0 = torch.softmax(smooth_model(torch.full_like(images32, 0.5)), 1)
        p0 = p0.gather(1, t.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(res.attr.flatten(1).sum(1), p - p0, atol=1e-5, rtol=1e-3)


def test_ig_sensitivity_zero_where_input_equals_baseline(smooth_model, images32):
    x = images32.clone()
    x[:, :, :8, :] = 0.0  # equal to the black baseline: IG must give exactly zero there
    a = salbench.methods.attribute("ig", smooth_model, x, _targets(smooth_model, x), steps=8)
    assert (a[:, :, :8, :] == 0).all() and a[:, :, 8:, :].abs().sum() > 0


@pytest.mark.parametrize("name", ["vg", "gxi", "ig"])
def test_batch_equals_loop_and_deterministic(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    batch = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast",
                                       internal_batch_size=7)
    again = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast",
                                       internal_batch_size=7)
    assert torch.equal(batch, again)
    singles = torch.cat([
        salbench.methods.attribute(name, smooth_model, images32[i:i + 1], t[i:i + 1],
                                   profile="fast", internal_batch_size=16)
        for i in range(len(t))
    ])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=1e-4)


def test_internal_batch_size_does_not_change_ig(smooth_model, images32):
    t = _targets(smooth_model, images32)
    a = salbench.methods.attribute("ig", smooth_model, images32, t, steps=20,
                                   internal_batch_size=3)
    b = salbench.methods.attribute("ig", smooth_model, images32, t, steps=20,
                                   internal_batch_size=80)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_engine_halves_chunk_on_out_of_memory(smooth_model, images32):
    from salbench.methods.engine import batched_gradients

    sizes = []

    def flaky_model(x):
        sizes.append(len(x))
        if len(x) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return smooth_model(x)

    got = torch.zeros(len(images32))
    t = torch.zeros(len(images32), dtype=torch.long)

    def consume(idx, grad, score):
        got[idx] += 1

    batched_gradients(flaky_model, len(images32), lambda i: images32[i], t, consume,
                      internal_batch_size=8)
    assert sizes == [4, 4, 2, 2]  # 8 -> 4 points fail, 4 fail, halved to 2 twice
    assert (got == 1).all()


def test_clear_errors(smooth_model, images32):
    with pytest.raises(UnknownNameError, match="valid methods: .*ig"):
        salbench.methods.attribute("nope", smooth_model, images32, 0)
    with pytest.raises(ConfigError, match="no parameter.*stpes"):
        salbench.methods.attribute("ig", smooth_model, images32, 0, stpes=3)
    with pytest.raises(BadInputError, match="target classes"):
        salbench.methods.attribute("vg", smooth_model, images32, 10)
    with pytest.raises(BadInputError, match=r"\[B, 3, H, W\]"):
        salbench.methods.attribute("vg", smooth_model, images32[0], 0)
    with pytest.raises(ValueError, match="unknown rule"):
        salbench.methods.attribute("ig", smooth_model, images32, 0, rule="simpson")


def test_plugin_method_is_checked(smooth_model, images32):
    @salbench.methods.register("test_bad_shape", replace=True)
    def bad(model, x, target):
        return x[:, :1]

    with pytest.raises(BadInputError, match="returned"):
        salbench.methods.attribute("test_bad_shape", smooth_model, images32, 0)

    @salbench.methods.register("test_nan", replace=True)
    def nan(model, x, target):
        return torch.full_like(x, float("nan"))

    with pytest.raises(BadInputError, match="NaN"):
        salbench.methods.attribute("test_nan", smooth_model, images32, 0)


def test_cpu_internal_batch_size_default(smooth_model, images32):
    """On CPU, attribute() chunks at 16 unless the caller sets a size; a method's own
    smaller default is kept, and a non-integer default is left alone."""
    seen = []

    def probe(default):
        def fn(model, x, target, *, internal_batch_size=default):
            seen.append(internal_batch_size)
            return torch.zeros_like(x)
        return fn

    salbench.methods.register("test_ibs_64", replace=True)(probe(64))
    salbench.methods.register("test_ibs_8", replace=True)(probe(8))
    salbench.methods.register("test_ibs_none", replace=True)(probe(None))
    for name, params in (("test_ibs_64", {}), ("test_ibs_64", {"internal_batch_size": 64}),
                         ("test_ibs_64", {"internal_batch_size": 5}), ("test_ibs_8", {}),
                         ("test_ibs_none", {})):
        salbench.methods.attribute(name, smooth_model, images32, 0, **params)
    assert seen == [16, 64, 5, 8, None]
    # a real method: the chunk size changes nothing beyond float rounding
    a16 = salbench.methods.attribute("ig", smooth_model, images32, 0, steps=24)
    a64 = salbench.methods.attribute("ig", smooth_model, images32, 0, steps=24,
                                     internal_batch_size=64)
    torch.testing.assert_close(a16, a64, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ig_on_cuda_matches_cpu(smooth_model, images32):
    t = _targets(smooth_model, images32)
    cpu = salbench.methods.attribute("ig", smooth_model, images32, t, steps=16)
    gpu_model = salbench.models.load("tiny_smooth", device="cuda")
    gpu = salbench.methods.attribute("ig", gpu_model, images32.cuda(), t.cuda(), steps=16)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
