"""G3, GGIG and GEG (paper 000, Algorithms 1-3): closed forms on a quadratic / linear model,
the paper's pseudo-code written unbatched here vs the batched implementation, GEG's
acceptance rules, determinism, batch == loop, contract."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import salbench
from salbench.methods import geometric
from salbench.methods.geometric import geg_accept, ggig_points, perturbation_scales
from salbench.models.base import Classifier

NAMES = ["g3", "ggig", "geg"]


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _grad(model, x, t):
    """Unbatched reference: gradient of the target logit of one image x [1, 3, H, W]."""
    x = x.detach().clone().requires_grad_(True)
    model(x)[0, t].backward()
    return x.grad.detach()


# ----------------------------------------------------------------------------- models


class Quadratic(nn.Module):
    """logit_0 = -a/2 ||z - c||^2, logit_1 = 0: grad_z logit_0 = -a (z - c)."""

    def __init__(self, c: torch.Tensor, a: float) -> None:
        super().__init__()
        self.register_buffer("c", c)
        self.a = a

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        f0 = -0.5 * self.a * (z - self.c).pow(2).flatten(1).sum(1)
        return torch.stack([f0, torch.zeros_like(f0)], 1)


def _plain(net: nn.Module, hw: int = 4, k: int = 2, mean=(0.0,) * 3, std=(1.0,) * 3):
    return Classifier(net, name="test", input_size=(hw, hw), num_classes=k, mean=mean, std=std)


class SqueezedParam(nn.Module):
    """logit_0 = w.z - theta^2 (w a buffer, theta = 0 the only parameter), logit_1 = 0.

    Every perturbation of theta lowers the class-0 logit and probability: GEG must reject all.
    """

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("w", w)
        self.theta = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        f0 = (z * self.w).flatten(1).sum(1) - self.theta ** 2
        return torch.stack([f0, torch.zeros_like(f0)], 1)


def _bn_model() -> Classifier:
    """Smooth CNN with BatchNorm in eval mode (non-trivial running statistics)."""
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.GELU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        bn = net[1]
        bn.running_mean.copy_(torch.randn(6, generator=g) * 0.2)
        bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    return _plain(net.eval(), hw=8, k=5, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", NAMES)
def test_contract_and_profiles(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    res = salbench.methods.attribute_with_info(name, smooth_model, images32, t, profile="fast")
    a = res.attr
    assert a.shape == images32.shape and a.dtype == torch.float32 and a.device == images32.device
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    spec = salbench.methods.get(name)
    assert set(res.info) == set(spec.info_columns)
    for v in res.info.values():
        assert v.shape == (len(t),) and v.dtype == torch.float32
    # paper defaults, and a fast profile of <= 25 forward+backward passes per image
    paper = spec.params("paper")
    fast = spec.params("fast")
    if name == "g3":
        assert (paper["iterations"], paper["lr"], paper["score"]) == (200, 1e-4, "logit")
        assert fast["iterations"] <= 25
    elif name == "ggig":
        assert (paper["steps"], paper["iterations"], paper["lr"]) == (50, 200, 1e-4)
        assert paper["baseline"] == "black"
        assert (fast["steps"] + 1) * fast["iterations"] <= 25
    else:
        assert paper["samples"] == 200 and fast["samples"] <= 24
        assert paper["sigma_mode"] == "relative"


# ----------------------------------------------------------------------------- G3 / GGIG


def _quadratic_trajectory_grads(x0, c, a, lr, n):
    """Closed form of Algorithm 1 on logit -a/2 ||x - c||^2: x_k - c = (1 - lr a)^k (x0 - c),
    e_k = -a (1 - lr a)^k (x0 - c), k = 0 .. n-1: float64 [n, ...]."""
    r = 1.0 - lr * a
    return torch.stack([-a * r ** k * (x0 - c) for k in range(n)])


def test_g3_quadratic_closed_form():
    g = torch.Generator().manual_seed(1)
    c = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    a, lr, n = 2.0, 0.1, 7
    model = _plain(Quadratic(c.float(), a))
    t = torch.zeros(2, dtype=torch.long)
    res = salbench.methods.attribute_with_info("g3", model, x.float(), t, iterations=n, lr=lr)
    grads = _quadratic_trajectory_grads(x, c, a, lr, n)
    expected = grads.max(0).values
    # the signed max picks e_0 where x0 < c (positive, shrinking) and e_{n-1} where x0 > c
    above = x > c
    torch.testing.assert_close(expected[above], grads[-1][above])
    torch.testing.assert_close(expected[~above], grads[0][~above])
    torch.testing.assert_close(res.attr, expected.float(), atol=1e-6, rtol=1e-5)
    # f(x_{n-1}) - f(x_0) = -a/2 (r^{2(n-1)} - 1) ||x0 - c||^2 > 0
    d2 = (x - c).pow(2).flatten(1).sum(1)
    gain = -0.5 * a * ((1 - lr * a) ** (2 * (n - 1)) - 1) * d2
    torch.testing.assert_close(res.info["ascent_gain"], gain.float(), atol=1e-5, rtol=1e-4)
    assert (res.info["ascent_gain"] > 0).all()
    # not the max of |grad|, not the first gradient, not one iteration more or less
    assert not torch.allclose(res.attr, grads.abs().max(0).values.float())
    for m in (n - 1, n + 1):
        assert not torch.allclose(res.attr, _quadratic_trajectory_grads(x, c, a, lr, m)
                                  .max(0).values.float(), atol=1e-4)


def test_ggig_quadratic_closed_form():
    g = torch.Generator().manual_seed(2)
    c = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64)
    x = torch.rand(3, 3, 4, 4, generator=g, dtype=torch.float64)
    a, lr, n_iter, steps = 3.0, 0.05, 4, 5
    model = _plain(Quadratic(c.float(), a))
    t = torch.zeros(3, dtype=torch.long)
    got = salbench.methods.attribute("ggig", model, x.float(), t, steps=steps,
                                     iterations=n_iter, lr=lr, internal_batch_size=4)
    # points x' + k (x - x') / n with x' = 0, each a closed-form G3 trajectory
    all_grads = torch.cat([_quadratic_trajectory_grads(x * k / steps, c, a, lr, n_iter)
                           for k in range(steps + 1)])
    torch.testing.assert_close(got, all_grads.max(0).values.float(), atol=1e-6, rtol=1e-5)
    # no (x - x') scaling: the result is not x * max
    assert not torch.allclose(got, (x * all_grads.max(0).values).float(), atol=1e-3)


def _g3_pseudocode(model, x, t, n, lr):
    """Algorithm 1, one image, as written: returns (e, the stacked trajectory G)."""
    G = []
    for _ in range(n):
        e = _grad(model, x, t)
        G.append(e)
        x = x + lr * e
    G = torch.stack(G)
    return G.max(0).values, G


def test_g3_equals_unbatched_pseudocode(smooth_model, images32):
    t = _targets(smooth_model, images32)
    n, lr = 6, 20.0  # a large step so the trajectory moves (gradients here are ~1e-2)
    got = salbench.methods.attribute("g3", smooth_model, images32, t, iterations=n, lr=lr,
                                     internal_batch_size=3)
    for i in range(len(t)):
        ref, G = _g3_pseudocode(smooth_model, images32[i:i + 1], t[i], n, lr)
        torch.testing.assert_close(got[i:i + 1], ref, atol=1e-6, rtol=1e-4)
        # pixel-wise max semantics: every pixel is some trajectory gradient, each iterate
        # contributes, and it is neither the first gradient nor the max of |gradient|
        assert ((G - got[i:i + 1]).abs().amin(0) <= 1e-6).all()
        assert set(G.argmax(0).unique().tolist()) == set(range(n))
        assert not torch.allclose(got[i:i + 1], G[0], atol=1e-6)
        assert not torch.allclose(got[i:i + 1], G.abs().max(0).values, atol=1e-6)


def _ggig_pseudocode(model, x, t, steps, n_iter, lr, baseline):
    """Algorithm 2, one image, as written (each point's G3 maxed, then the max of those)."""
    alpha = (x - baseline) / steps
    G = [_g3_pseudocode(model, baseline + k * alpha, t, n_iter, lr)[0]
         for k in range(steps + 1)]
    return torch.stack(G).max(0).values


@pytest.mark.parametrize("baseline", ["black", 0.5])
def test_ggig_equals_unbatched_pseudocode(baseline, smooth_model, images32):
    x = images32[:3]
    t = _targets(smooth_model, x)
    steps, n_iter, lr = 3, 4, 20.0
    got = salbench.methods.attribute("ggig", smooth_model, x, t, steps=steps,
                                     iterations=n_iter, lr=lr, baseline=baseline,
                                     internal_batch_size=5)  # chunks straddle images
    for i in range(len(t)):
        base = torch.full_like(x[i:i + 1], 0.0 if baseline == "black" else baseline)
        ref = _ggig_pseudocode(smooth_model, x[i:i + 1], t[i], steps, n_iter, lr, base)
        torch.testing.assert_close(got[i:i + 1], ref, atol=1e-6, rtol=1e-4)


def test_ggig_points_span_baseline_to_x(images32):
    base = torch.full_like(images32, 0.25)
    pts = ggig_points(images32, base, 4).view(4, 5, 3, 32, 32)
    torch.testing.assert_close(pts[:, 0], base)
    torch.testing.assert_close(pts[:, -1], images32)
    torch.testing.assert_close(pts[:, 2], (base + images32) / 2)


def test_grad_mode_and_validation(smooth_model, images32):
    t = _targets(smooth_model, images32)
    with torch.no_grad():  # pipeline callers may be in no-grad mode
        for name in NAMES:
            a = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast")
            assert a.abs().sum() > 0, name
    with pytest.raises(ValueError, match="vectorize"):
        salbench.methods.attribute("geg", smooth_model, images32, t, vectorize="jit")
    with pytest.raises(ValueError, match="iterations"):
        salbench.methods.attribute("g3", smooth_model, images32, t, iterations=0)
    with pytest.raises(ValueError, match="steps"):
        salbench.methods.attribute("ggig", smooth_model, images32, t, steps=0)


# ----------------------------------------------------------------------------- GEG


def _noise_stream(model, samples, sigma, sigma_mode, seed):
    """The documented draw order: draw j, then each named parameter in order."""
    params = dict(model.named_parameters())
    scales = perturbation_scales(params, sigma, sigma_mode)
    g = torch.Generator().manual_seed(seed)
    for _ in range(samples):
        yield {n: p.detach() + torch.randn(p.shape, generator=g, dtype=p.dtype) * scales[n]
               for n, p in params.items()}


def _geg_pseudocode(model, x, t, samples, sigma, sigma_mode, seed, accept_score):
    """Algorithm 3, one image, with a deep copy per draw (fine in a test, not in the method)."""
    with torch.no_grad():
        logits = model(x)
    p = logits.argmax(1).item()
    s = salbench.methods.engine.target_scores(logits, t.view(1), accept_score).item()
    G = []
    for perturbed in _noise_stream(model, samples, sigma, sigma_mode, seed):
        m2 = copy.deepcopy(model)
        with torch.no_grad():
            for n, q in m2.named_parameters():
                q.copy_(perturbed[n])
            lg = m2(x)
        s2 = salbench.methods.engine.target_scores(lg, t.view(1), accept_score).item()
        if s2 >= s and lg.argmax(1).item() == p:
            G.append(_grad(m2, x, t))
    if not G:
        return _grad(model, x, t), 0
    return torch.stack(G).max(0).values, len(G)


@pytest.mark.parametrize("vectorize", ["vmap", "loop"])
def test_geg_equals_unbatched_pseudocode(vectorize, smooth_model, images32):
    t = _targets(smooth_model, images32)
    t[0] = (t[0] + 1) % 10  # one target that is not the prediction
    kw = dict(samples=10, sigma=0.1, sigma_mode="relative", seed=5)
    res = salbench.methods.attribute_with_info("geg", smooth_model, images32, t,
                                               vectorize=vectorize, internal_batch_size=9,
                                               **kw)
    counts = []
    for i in range(len(t)):
        ref, n_acc = _geg_pseudocode(smooth_model, images32[i:i + 1], t[i],
                                     accept_score="prob", **kw)
        counts.append(n_acc)
        torch.testing.assert_close(res.attr[i:i + 1], ref, atol=1e-6, rtol=1e-4)
    assert res.info["geg_accepted"].tolist() == counts
    assert any(0 < c < 10 for c in counts), counts  # some draws rejected, some kept


def test_geg_vmap_equals_loop_with_batchnorm():
    model = _bn_model()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    t = _targets(model, x)
    kw = dict(samples=12, sigma=0.05, seed=1, internal_batch_size=8)
    a = salbench.methods.attribute_with_info("geg", model, x, t, vectorize="vmap", **kw)
    b = salbench.methods.attribute_with_info("geg", model, x, t, vectorize="loop", **kw)
    assert torch.equal(a.info["geg_accepted"], b.info["geg_accepted"])
    assert (a.info["geg_accepted"] > 0).all()
    torch.testing.assert_close(a.attr, b.attr, atol=1e-6, rtol=1e-4)
    for i in range(len(t)):  # and both equal the deep-copy pseudo-code (BN stats untouched)
        ref, n_acc = _geg_pseudocode(model, x[i:i + 1], t[i], samples=12, sigma=0.05,
                                     sigma_mode="relative", seed=1, accept_score="prob")
        assert n_acc == a.info["geg_accepted"][i].item()
        torch.testing.assert_close(a.attr[i:i + 1], ref, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("accept_score", ["prob", "logit"])
def test_geg_linear_model_by_hand(accept_score):
    """Linear 2-class model: the input gradient of a perturbed model is its (perturbed)
    weight row over std, so the expected map and the kept draws follow from the noise alone.
    Target 1 is not the top-1 class and the margin is small: many draws raise the target's
    score but flip the top-1 to class 1, and those must be rejected."""
    hw, std = 2, 0.5
    lin = nn.Linear(3 * hw * hw, 2)
    x = torch.rand(1, 3, hw, hw, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 12, generator=torch.Generator().manual_seed(8)) * 0.1)
        z = (x / std).flatten(1)
        gap = (z @ lin.weight.T).squeeze(0)
        lin.bias.copy_(torch.tensor([0.3, 0.0]) - gap)  # logits [0.3, 0]: class 0 on top
    model = _plain(nn.Sequential(nn.Flatten(), lin), hw=hw, mean=(0.0,) * 3, std=(std,) * 3)
    t = torch.tensor([1])
    samples, sigma = 40, 0.05
    res = salbench.methods.attribute_with_info(
        "geg", model, x, t, samples=samples, sigma=sigma, sigma_mode="absolute",
        accept_score=accept_score, seed=11)
    base = model(x).detach()
    base_s = base[0, 1] if accept_score == "logit" else torch.softmax(base, 1)[0, 1]
    kept, flipped_up = [], 0
    for p in _noise_stream(model, samples, sigma, "absolute", 11):
        lg = z @ p["net.1.weight"].T + p["net.1.bias"]
        s = lg[0, 1] if accept_score == "logit" else torch.softmax(lg, 1)[0, 1]
        if s >= base_s and lg.argmax(1).item() == 0:
            kept.append(p["net.1.weight"][1].view(1, 3, hw, hw) / std)
        elif s >= base_s:
            flipped_up += 1
    assert kept and flipped_up > 0  # the constructed case exercises both rules
    assert res.info["geg_accepted"].item() == len(kept)
    torch.testing.assert_close(res.attr, torch.stack(kept).max(0).values, atol=1e-6,
                               rtol=1e-5)


def test_geg_accept_rules():
    top1 = torch.tensor([0, 0, 0, 0, 2])
    target = torch.tensor([1, 1, 0, 0, 2])
    base = torch.tensor([[2.0, 1.0, 0.0]] * 4 + [[0.0, 0.0, 3.0]])
    ref = salbench.methods.engine.target_scores(base, target, "prob")
    pert = torch.tensor([
        [2.0, 2.5, 0.0],   # target 1 up, but top-1 flips to 1 -> rejected
        [2.0, 1.5, 0.0],   # target 1 up, top-1 still 0 -> kept
        [2.0, 1.0, 0.0],   # unchanged (tie) -> kept
        [1.9, 1.0, 0.0],   # target 0 logit and prob down -> rejected
        [-1.0, -1.0, 2.9],  # target 2's logit down, prob up -> kept by prob, not by logit
    ])
    keep = geg_accept(pert, target, top1, ref, "prob")
    assert keep.tolist() == [False, True, True, False, True]
    ref_logit = salbench.methods.engine.target_scores(base, target, "logit")
    keep = geg_accept(pert, target, top1, ref_logit, "logit")
    assert keep.tolist() == [False, True, True, False, False]
    # stacked [k, N, K] logits (k perturbed models on N images)
    keep = geg_accept(torch.stack([pert, base]), target, top1, ref, "prob")
    assert keep.shape == (2, 5) and keep[1].all()


def test_geg_zero_accepted_falls_back_to_vanilla_gradient():
    """Only theta (= 0) is a parameter and the class-0 logit is w.z - theta^2: every draw
    lowers the score, so nothing is kept and the result is the unperturbed gradient w / std
    (w, mean, std are buffers and must not be perturbed)."""
    w = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    model = _plain(SqueezedParam(w), mean=(0.3, 0.4, 0.5), std=(0.5, 0.25, 2.0))
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(10))
    t = torch.zeros(2, dtype=torch.long)
    res = salbench.methods.attribute_with_info("geg", model, x, t, samples=6, sigma=0.1)
    assert res.info["geg_accepted"].tolist() == [0.0, 0.0]
    expected = (w / model.std).expand_as(x)
    torch.testing.assert_close(res.attr, expected)
    # samples=0 is the same fallback
    res0 = salbench.methods.attribute_with_info("geg", model, x, t, samples=0)
    torch.testing.assert_close(res0.attr, expected)
    assert res0.info["geg_accepted"].tolist() == [0.0, 0.0]


def test_geg_perturbs_parameters_only_and_leaves_state_alone(smooth_model, images32):
    model = _bn_model()
    names = set(perturbation_scales(dict(model.named_parameters()), 0.1))
    assert "net.1.weight" in names and "net.1.bias" in names  # BN affine: perturbed
    assert not names & {"mean", "std", "net.1.running_mean", "net.1.running_var",
                        "net.1.num_batches_tracked"}
    before = {k: v.clone() for k, v in smooth_model.state_dict().items()}
    rng = torch.get_rng_state()
    t = _targets(smooth_model, images32)
    salbench.methods.attribute("geg", smooth_model, images32, t, samples=4, sigma=0.1)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG is never used
    for k, v in smooth_model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_perturbation_scales_relative_and_absolute():
    params = {
        "w": torch.tensor([1.0, 3.0]),        # population std 1
        "const": torch.full((3,), 2.0),       # std 0 -> RMS 2
        "scalar": torch.tensor([-4.0]),       # one element -> RMS 4
        "zero": torch.zeros(5),               # all zeros -> 1
    }
    rel = perturbation_scales(params, 0.1, "relative")
    assert rel == pytest.approx({"w": 0.1, "const": 0.2, "scalar": 0.4, "zero": 0.1})
    assert perturbation_scales(params, 0.1, "absolute") == pytest.approx(dict.fromkeys(params,
                                                                                       0.1))
    with pytest.raises(ValueError, match="sigma_mode"):
        perturbation_scales(params, 0.1, "per_channel")


def test_geg_determinism_with_seed(smooth_model, images32):
    t = _targets(smooth_model, images32)
    kw = dict(samples=8, sigma=0.1)
    a = salbench.methods.attribute_with_info("geg", smooth_model, images32, t, seed=3, **kw)
    b = salbench.methods.attribute_with_info("geg", smooth_model, images32, t, seed=3, **kw)
    c = salbench.methods.attribute_with_info("geg", smooth_model, images32, t, seed=4, **kw)
    assert torch.equal(a.attr, b.attr) and torch.equal(a.info["geg_accepted"],
                                                       b.info["geg_accepted"])
    assert not torch.equal(a.attr, c.attr)


def test_geg_out_of_memory_splits_blocks(monkeypatch, smooth_model, images32):
    t = _targets(smooth_model, images32)
    kw = dict(samples=7, sigma=0.1, seed=2, internal_batch_size=32)
    want = salbench.methods.attribute_with_info("geg", smooth_model, images32, t, **kw)
    real = geometric._perturbed_forward_backward
    blocks = []

    def flaky(model, stacked, x, target, score, mode):
        k = next(iter(stacked.values())).shape[0]
        blocks.append((k, len(x)))
        if k * len(x) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, stacked, x, target, score, mode)

    monkeypatch.setattr(geometric, "_perturbed_forward_backward", flaky)
    got = salbench.methods.attribute_with_info("geg", smooth_model, images32, t, **kw)
    assert blocks[0] == (7, 4) and max(k * b for k, b in blocks[1:]) >= 4
    torch.testing.assert_close(got.attr, want.attr, atol=1e-6, rtol=1e-5)
    assert torch.equal(got.info["geg_accepted"], want.info["geg_accepted"])


# ----------------------------------------------------------------------------- batching


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_loop_and_deterministic(name, smooth_model, images32):
    t = _targets(smooth_model, images32)
    kw = dict(profile="fast", internal_batch_size=7)
    if name == "geg":
        kw["sigma"] = 0.1
    batch = salbench.methods.attribute_with_info(name, smooth_model, images32, t, **kw)
    again = salbench.methods.attribute_with_info(name, smooth_model, images32, t, **kw)
    assert torch.equal(batch.attr, again.attr)
    singles = [salbench.methods.attribute_with_info(name, smooth_model, images32[i:i + 1],
                                                    t[i:i + 1], **kw) for i in range(len(t))]
    torch.testing.assert_close(batch.attr, torch.cat([s.attr for s in singles]), atol=1e-6,
                               rtol=1e-4)
    for col in batch.info:
        torch.testing.assert_close(batch.info[col], torch.cat([s.info[col] for s in singles]),
                                   atol=1e-5, rtol=1e-4)


def test_fast_profile_cost(smooth_model, images32):
    """Count forward passes (points) per image in the fast profiles: <= 25 (+1 for GEG)."""
    t = _targets(smooth_model, images32)
    seen = []

    class Counting(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            seen.append(z.shape[0])
            return self.inner(z)

    counting = Classifier(Counting(smooth_model.net), name="count", input_size=(32, 32),
                          num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3)
    for name, limit in (("g3", 25), ("ggig", 25), ("geg", 26)):
        seen.clear()
        salbench.methods.attribute(name, counting, images32, t, profile="fast")
        per_image = sum(seen) / len(t)
        assert math.isclose(per_image, round(per_image)) and per_image <= limit, (name, seen)
