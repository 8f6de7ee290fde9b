"""Path methods: Guided IG, Blur IG and IDGI on IG / GIG / BlurIG (SPEC 4, paper 001).

Reference agreement with PAIR's ``saliency`` package (GuidedIG, BlurIG) on the smooth model;
IDGI checked against a plain, unbatched transcription of paper 001's Algorithm 1 on PAIR's
paths; hand-computable cases on linear and quadratic models.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import salbench
from salbench.methods.blur_ig import blur_sigmas, gaussian_blur, gaussian_blur_difference
from salbench.methods.paths import RuleAccumulator, integrate, straight_path

PATH_METHODS = ["gig", "blurig", "idgi_ig", "idgi_gig", "idgi_blurig"]
IDGI = ["idgi_ig", "idgi_gig", "idgi_blurig"]


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _scores(model, x, t, score):
    with torch.no_grad():
        out = model(x)
        if score == "prob":
            out = torch.softmax(out, 1)
        return out.gather(1, t.view(-1, 1)).squeeze(1).double()


class Linear(nn.Module):
    """logits = W vec(x) + b: gradient of class k is W[k] everywhere."""

    def __init__(self, shape=(3, 8, 8), k=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(k, int(np.prod(shape)), generator=g)
        self.b = torch.randn(k, generator=g)
        self.num_classes = k

    def forward(self, x):
        return x.flatten(1) @ self.w.T + self.b


class Quadratic(nn.Module):
    """logit 0 = sum(a x²), logit 1 = 0."""

    num_classes = 2

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, x):
        s = (self.a * x.square()).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


@pytest.fixture()
def images8():
    return torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))


# --- contract, determinism, batching ----------------------------------------------------------


@pytest.mark.parametrize("name", PATH_METHODS)
def test_contract_and_info(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    spec = salbench.methods.get(name)
    assert spec.info_columns == ("completeness_error", "score_delta")
    res = salbench.methods.attribute_with_info(name, smooth_model, images32, t, profile="fast")
    a = res.attr
    assert a.shape == images32.shape and a.dtype == torch.float32 and a.device == images32.device
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    for col in spec.info_columns:
        v = res.info[col]
        assert v.shape == (4,) and v.dtype == torch.float32 and torch.isfinite(v).all()
    assert salbench.methods.to_map(a).shape == (4, 32, 32)


@pytest.mark.parametrize("name", PATH_METHODS)
def test_batch_equals_loop_and_deterministic(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    # internal_batch_size 7 makes chunks straddle images (IDGI's pending gradients)
    batch = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast",
                                       internal_batch_size=7)
    again = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast",
                                       internal_batch_size=7)
    assert torch.equal(batch, again)
    singles = torch.cat([
        salbench.methods.attribute(name, smooth_model, images32[i:i + 1], t[i:i + 1],
                                   profile="fast", internal_batch_size=64)
        for i in range(len(t))
    ])
    torch.testing.assert_close(batch, singles, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", ["blurig", "idgi_ig", "idgi_blurig"])
def test_internal_batch_size_does_not_change_result(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    ref = salbench.methods.attribute(name, smooth_model, images32, t, steps=9,
                                     internal_batch_size=100)
    for ibs in (1, 4):
        got = salbench.methods.attribute(name, smooth_model, images32, t, steps=9,
                                         internal_batch_size=ibs)
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name,steps", [("gig", 6), ("idgi_gig", 6), ("blurig", 6),
                                        ("idgi_ig", 6), ("idgi_blurig", 6)])
def test_cost_is_steps_gradients_plus_one_forward(name, steps, smooth_model, images32):
    calls = {"grad": 0, "fwd": 0}

    def counting(x):
        calls["grad" if torch.is_grad_enabled() and x.requires_grad else "fwd"] += len(x)
        return smooth_model(x)

    counting.num_classes = 10
    t = _targets(smooth_model, images32)
    salbench.methods.attribute(name, counting, images32, t, steps=steps)
    assert calls == {"grad": 4 * steps, "fwd": 4}


# --- IDGI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["prob", "logit"])
@pytest.mark.parametrize("name", IDGI)
def test_idgi_completeness_is_exact(name, score, smooth_model, images32):
    t = _targets(smooth_model, images32)
    res = salbench.methods.attribute_with_info(name, smooth_model, images32, t, steps=12,
                                               score=score)
    if name == "idgi_blurig":
        ref_x = gaussian_blur(images32, torch.full((4,), 50.0))
    else:
        ref_x = torch.zeros_like(images32)
    delta = _scores(smooth_model, images32, t, score) - _scores(smooth_model, ref_x, t, score)
    torch.testing.assert_close(res.info["score_delta"].double(), delta, atol=1e-6, rtol=1e-5)
    total = res.attr.double().flatten(1).sum(1)
    scale = delta.abs().clamp_min(1e-3)
    assert ((total - delta).abs() <= 1e-5 * scale).all(), (total, delta)
    assert (res.info["completeness_error"] <= 1e-5 * scale).all()


def test_idgi_is_not_ig_on_a_nonlinear_model(smooth_model, images32):
    t = _targets(smooth_model, images32)
    idgi = salbench.methods.attribute("idgi_ig", smooth_model, images32, t, steps=32,
                                      score="logit")
    ig = salbench.methods.attribute("ig", smooth_model, images32, t, steps=32,
                                    rule="riemann_left")
    rel = (idgi - ig).flatten(1).norm(dim=1) / ig.flatten(1).norm(dim=1)
    assert (rel > 0.2).all(), rel


def test_linear_model_idgi_is_ig_projected_on_the_gradient(images8):
    """Linear f = w·x + b (logit): IG = w ⊙ Δ; IDGI = w ⊙ w (w·Δ) / |w|² on any path.

    Derivation: every gradient is w, every segment's score change is w·(x_{j+1} - x_j), so
    IDGI = Σ_j w² w·(x_{j+1} - x_j) / |w|² = w² (w·Δ) / |w|², independent of the path and
    of S. Both sum to w·Δ; they coincide exactly when Δ is parallel to w.
    """
    model = Linear()
    t = torch.tensor([0, 1, 2])
    w = model.w[t].view_as(images8).double()
    x = images8.double()
    proj = w * w * ((w * x).flatten(1).sum(1) / w.square().flatten(1).sum(1)).view(-1, 1, 1, 1)
    assert not torch.allclose(proj, w * x, atol=1e-2)  # IDGI and IG differ here
    for name, steps in [("idgi_ig", 3), ("idgi_ig", 40), ("idgi_gig", 10)]:
        a = salbench.methods.attribute(name, model, images8, t, steps=steps, score="logit")
        torch.testing.assert_close(a.double(), proj, atol=1e-6, rtol=1e-4)
    for name in ("ig", "gig"):  # Riemann sums are exact on a linear model, whatever the path
        a = salbench.methods.attribute(name, model, images8, t, steps=10)
        torch.testing.assert_close(a.double(), w * x, atol=1e-6, rtol=1e-4)
    # Blur IG path: reference L(x, max_sigma), same formula with Δ = x - L(x, max_sigma)
    d = x - gaussian_blur(images8, torch.full((3,), 4.0)).double()
    proj_b = w * w * ((w * d).flatten(1).sum(1) / w.square().flatten(1).sum(1)).view(-1, 1, 1, 1)
    a = salbench.methods.attribute("idgi_blurig", model, images8, t, steps=7, max_sigma=4.0,
                                   score="logit")
    torch.testing.assert_close(a.double(), proj_b, atol=1e-6, rtol=1e-4)
    # Δ parallel to w: IDGI equals IG
    model.w[0] = images8[0].flatten() + 0.1
    xp = (model.w[0] / model.w[0].max()).view(1, 3, 8, 8)
    idgi = salbench.methods.attribute("idgi_ig", model, xp, 0, steps=5, score="logit")
    ig = salbench.methods.attribute("ig", model, xp, 0, steps=5)
    torch.testing.assert_close(idgi, ig, atol=1e-6, rtol=1e-4)


def test_idgi_quadratic_by_hand_and_zero_gradient_guard(images8):
    """f = Σ a x², black baseline, S steps: g_j = 2 a (j/S) x, so g_j² ∝ a² x² for j >= 1
    and IDGI = a² x² / Σ a² x² · (f(x) - f(x_1)); the first segment (g_0 = 0) adds nothing,
    which leaves completeness_error = f(x_1) - f(x_0) = Σ a x² / S²."""
    a = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2)) + 0.5
    model = Quadratic(a)
    x = images8.double()
    steps = 5
    res = salbench.methods.attribute_with_info("idgi_ig", model, images8, 0, steps=steps,
                                               score="logit")
    fx = (a * x.square()).flatten(1).sum(1)
    wgt = (a * a * x.square())
    expected = wgt / wgt.flatten(1).sum(1).view(-1, 1, 1, 1) * (fx * (1 - 1 / steps**2)).view(
        -1, 1, 1, 1)
    torch.testing.assert_close(res.attr.double(), expected, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(res.info["completeness_error"].double(), fx / steps**2,
                               atol=1e-6, rtol=1e-4)


def test_idgi_rule_is_order_checked(images8):
    acc = RuleAccumulator("idgi", images8, 4)
    b = torch.tensor([0])
    g = torch.ones(1, 3, 8, 8)
    acc.add_gradients(b, torch.tensor([0]), g, torch.tensor([0.1]))
    with pytest.raises(RuntimeError, match="increasing order"):
        acc.add_gradients(b, torch.tensor([2]), g, torch.tensor([0.3]))
    with pytest.raises(ValueError, match="unknown path rule"):
        RuleAccumulator("simpson", images8, 4)


# --- Guided IG ----------------------------------------------------------------------------------


def test_gig_with_zero_max_dist_is_ig(smooth_model, images32):
    t = _targets(smooth_model, images32)
    gig = salbench.methods.attribute("gig", smooth_model, images32, t, steps=10, max_dist=0.0)
    ig = salbench.methods.attribute("ig", smooth_model, images32, t, steps=10,
                                    rule="riemann_left")
    torch.testing.assert_close(gig, ig, atol=1e-6, rtol=1e-4)
    idgi_gig = salbench.methods.attribute("idgi_gig", smooth_model, images32, t, steps=10,
                                          max_dist=0.0)
    idgi_ig = salbench.methods.attribute("idgi_ig", smooth_model, images32, t, steps=10)
    torch.testing.assert_close(idgi_gig, idgi_ig, atol=1e-7, rtol=1e-4)
    # and the straight path under the riemann rule is IG's left Riemann sum
    res = integrate(smooth_model, straight_path(images32, torch.zeros_like(images32), 10), t)
    torch.testing.assert_close(res.attr, ig, atol=1e-6, rtol=1e-4)


def test_gig_preset(smooth_model, images32):
    t = _targets(smooth_model, images32)[:2]
    x = images32[:2]
    a = salbench.methods.attribute("gig", smooth_model, x, t, preset="idgi", steps=3)
    b = salbench.methods.attribute("gig", smooth_model, x, t, steps=25, fraction=0.5,
                                   max_dist=1.0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown Guided IG preset"):
        salbench.methods.attribute("gig", smooth_model, x, t, preset="nope")


def test_gig_input_equal_to_baseline_gives_zero(smooth_model):
    x = torch.zeros(2, 3, 32, 32)
    x[1] = 0.5
    res = salbench.methods.attribute_with_info("gig", smooth_model, x, torch.tensor([1, 2]),
                                               steps=4)
    assert (res.attr[0] == 0).all() and res.attr[1].abs().sum() > 0
    assert res.info["score_delta"][0].abs() < 1e-6


# --- Blur IG ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.12, 0.3, 1.7, 6.0, 50.0])
def test_gaussian_blur_is_scipys_constant_mode_filter(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 13, 21, generator=torch.Generator().manual_seed(3)).double()
    ours = gaussian_blur(x, torch.full((2,), sigma))
    ref = x.numpy() if sigma == 0 else ndimage.gaussian_filter(
        x.numpy(), sigma=[0, 0, sigma, sigma], mode="constant")
    np.testing.assert_allclose(ours.numpy(), ref, atol=2e-7, rtol=1e-5)
    step = 0.01
    ref_d = (ndimage.gaussian_filter(x.numpy(), [0, 0, sigma + step, sigma + step],
                                     mode="constant") - ref) / step
    np.testing.assert_allclose(gaussian_blur_difference(x, torch.full((2,), sigma), step).numpy(),
                               ref_d, atol=2e-5, rtol=1e-4)


def test_blur_sigma_schedule():
    assert blur_sigmas(50, 4) == [0.0, 12.5, 25.0, 37.5, 50.0]
    assert blur_sigmas(8, 2, sqrt=True) == pytest.approx([0.0, 2.0, 8**0.5])


def test_blurig_completeness_error_shrinks_with_steps(smooth_model, images32):
    t = _targets(smooth_model, images32)
    errs = [salbench.methods.attribute_with_info("blurig", smooth_model, images32, t,
                                                 steps=n, max_sigma=8.0).info[
        "completeness_error"].mean().item() for n in (4, 64)]
    assert errs[1] < 0.5 * errs[0]


# --- reference agreement with PAIR saliency -------------------------------------------------


class _NumpyForPair:
    """numpy, with ``quantile(..., interpolation=)`` (removed in NumPy 2.4) mapped to
    ``method=``; installed in PAIR's guided_ig module only."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation=None, **kw):
        if interpolation is not None:
            kw["method"] = interpolation
        return np.quantile(a, q, **kw)


@pytest.fixture()
def pair(monkeypatch):
    sal = pytest.importorskip("saliency.core")
    from saliency.core import guided_ig as pair_gig

    monkeypatch.setattr(pair_gig, "np", _NumpyForPair())
    return sal


def _pair_model_fn(sal, model, cls, score="logit", record=None):
    """PAIR call_model_function: HxWxC float batches -> gradients of the target score."""

    def call(xb, call_model_args=None, expected_keys=None):
        xb = np.asarray(xb)
        if record is not None:
            record.extend(np.array(v, dtype=np.float64) for v in xb)
        xt = torch.as_tensor(xb, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()
        xt.requires_grad_(True)
        out = model(xt)
        if score == "prob":
            out = torch.softmax(out, 1)
        (g,) = torch.autograd.grad(out[:, cls].sum(), xt)
        return {sal.INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}

    return call


def _hwc(a):
    return a.permute(1, 2, 0).double().numpy()


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("steps,fraction,max_dist", [(200, 0.25, 0.02), (25, 0.5, 1.0)])
def test_gig_agrees_with_pair(pair, steps, fraction, max_dist, smooth_model, images32):
    n = 1 if steps > 100 else 2  # PAIR's unbatched loop is slow on a shared CPU
    x, t = images32[:n], _targets(smooth_model, images32[:n])
    ours = salbench.methods.attribute("gig", smooth_model, x, t, steps=steps, fraction=fraction,
                                      max_dist=max_dist)
    for i in range(n):
        xi = _hwc(x[i])
        ref = pair.GuidedIG().GetMask(xi, _pair_model_fn(pair, smooth_model, int(t[i])), None,
                                      x_baseline=np.zeros_like(xi), x_steps=steps,
                                      fraction=fraction, max_dist=max_dist)
        assert _rel(_hwc(ours[i]), ref) < 1e-3


@pytest.mark.parametrize("steps,max_sigma,sqrt", [(100, 50, False), (20, 10, True)])
def test_blurig_agrees_with_pair(pair, steps, max_sigma, sqrt, smooth_model, images32):
    x, t = images32[:2], _targets(smooth_model, images32[:2])
    ours = salbench.methods.attribute("blurig", smooth_model, x, t, steps=steps,
                                      max_sigma=max_sigma, sqrt=sqrt)
    for i in range(2):
        ref = pair.BlurIG().GetMask(_hwc(x[i]), _pair_model_fn(pair, smooth_model, int(t[i])),
                                    None, max_sigma=max_sigma, steps=steps, grad_step=0.01,
                                    sqrt=sqrt)
        assert _rel(_hwc(ours[i]), ref) < 1e-3


def _algorithm1(model, cls, points, score):
    """Paper 001, Algorithm 1, one image, unbatched: points [x', ..., x] as HxWxC arrays."""
    attr = np.zeros_like(points[0])
    for j in range(len(points) - 1):
        xj = torch.as_tensor(points[j], dtype=torch.float32).permute(2, 0, 1)[None]
        xj.requires_grad_(True)
        fj = model(xj)
        if score == "prob":
            fj = torch.softmax(fj, 1)
        (g,) = torch.autograd.grad(fj[0, cls], xj)
        nxt = torch.as_tensor(points[j + 1], dtype=torch.float32).permute(2, 0, 1)[None]
        with torch.no_grad():
            fn = model(nxt)
            fn = torch.softmax(fn, 1) if score == "prob" else fn
        d = float(fn[0, cls]) - float(fj[0, cls].detach())
        g = g[0].permute(1, 2, 0).double().numpy()
        attr += g * g * d / np.sum(g * g)
    return attr


def test_idgi_agrees_with_algorithm_1_on_pair_paths(pair, smooth_model, images32):
    from saliency.core.blur_ig import gaussian_blur as pair_blur

    x, t = images32[:2], _targets(smooth_model, images32[:2])
    steps = 12
    gig = salbench.methods.attribute("idgi_gig", smooth_model, x, t, steps=steps,
                                     fraction=0.25, max_dist=0.1)
    blur = salbench.methods.attribute("idgi_blurig", smooth_model, x, t, steps=steps,
                                      max_sigma=20.0)
    ig = salbench.methods.attribute("idgi_ig", smooth_model, x, t, steps=steps)
    for i in range(2):
        xi, c = _hwc(x[i]), int(t[i])
        # Guided IG path as PAIR walks it (the points where it asks for gradients), then x
        visited = []
        pair.GuidedIG().GetMask(xi, _pair_model_fn(pair, smooth_model, c, "prob", visited),
                                None, x_baseline=np.zeros_like(xi), x_steps=steps,
                                fraction=0.25, max_dist=0.1)
        ref = _algorithm1(smooth_model, c, visited + [xi], "prob")
        assert _rel(_hwc(gig[i]), ref) < 1e-4
        sig = [20.0 * k / steps for k in range(steps, -1, -1)]
        ref = _algorithm1(smooth_model, c, [pair_blur(xi, s) for s in sig], "prob")
        assert _rel(_hwc(blur[i]), ref) < 1e-4
        ref = _algorithm1(smooth_model, c, [xi * k / steps for k in range(steps + 1)], "prob")
        assert _rel(_hwc(ig[i]), ref) < 1e-4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", PATH_METHODS)
def test_path_methods_on_cuda_match_cpu(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    cpu = salbench.methods.attribute(name, smooth_model, images32, t, steps=8)
    gpu_model = salbench.models.load("tiny_smooth", device="cuda")
    gpu = salbench.methods.attribute(name, gpu_model, images32.cuda(), t.cuda(), steps=8)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("shape,steps,max_sigma", [((2, 3, 40, 48), 10, 5.0),
                                                   ((2, 3, 32, 32), 100, 50.0)])
def test_blur_path_points_equal_the_reference_blur_bit_for_bit(shape, steps, max_sigma):
    """blur_path gathers matrices built once per path and reuses the last chunk's left
    products; each point and displacement equals gaussian_blur / gaussian_blur_difference
    (scipy's filter, tested above) exactly."""
    from salbench.methods.blur_ig import blur_path

    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    path = blur_path(x, steps=steps, max_sigma=max_sigma)
    sig = torch.tensor(blur_sigmas(max_sigma, steps), dtype=torch.float64)
    b = torch.tensor([0, 1, 1, 0])
    j = torch.tensor([0, 3, steps - 1, 5])
    assert torch.equal(path.point(b, j), gaussian_blur(x[b], sig[steps - j]))
    i = steps - j - 1
    ref = -(sig[i + 1] - sig[i]).float().view(-1, 1, 1, 1) * gaussian_blur_difference(
        x[b], sig[i], 0.01)
    assert torch.equal(path.displacement(b, j), ref)
    # as integrate calls them: the gradient points x_{j+1} of a chunk, then its segments,
    # which reuse the points' left products; a different chunk's must not be reused
    path.point(b, j + 1)
    assert torch.equal(path.displacement(b, j), ref)
    path.point(1 - b, j + 1)  # the same steps of the other images
    assert torch.equal(path.displacement(b, j), ref)
