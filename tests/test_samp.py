"""SAMP / SAMP++ (paper 004): hand-computed paths, an unbatched Algorithm 1, path structure,
completeness under the infinitesimal constraint, momentum, contract, batching, determinism."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import salbench
from salbench.methods.baselines import make_baseline
from salbench.methods.samp import PAPER_STEP, resolve_step_size, samp_path


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


class Quadratic(nn.Module):
    """logit 0 = 0.5 * sum(x^2), logit 1 = 0: grad = x, Hessian = I."""

    num_classes = 2

    def forward(self, x):
        q = 0.5 * (x * x).flatten(1).sum(1)
        return torch.stack([q, torch.zeros_like(q)], 1)


class Linear(nn.Module):
    """logit k = sum(w_k * x): constant gradient."""

    num_classes = 3

    def __init__(self, shape, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(3, *shape, generator=g), requires_grad=False)

    def forward(self, x):
        return torch.einsum("nchw,kchw->nk", x, self.w)


# ---------------------------------------------------------------- hand-computed cases


def test_quadratic_without_ic_is_x_squared_and_brightest_first():
    # Deletion x -> 0 on f = 0.5|x|^2: every pixel moves once, from x to 0, with the gradient
    # x still untouched at the segment start, so a = -(x * (0 - x)) = x^2 exactly, and the
    # left-Riemann error is 0.5 sum x^2. Selection key = sum_c x_c^2: brightest pixels first.
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 6, 6, generator=g)
    t = torch.zeros(2, dtype=torch.long)
    path = samp_path(Quadratic(), x, t, step_size=5, eta=None, momentum=0.0)
    torch.testing.assert_close(path.attr, x * x, atol=1e-7, rtol=1e-6)
    assert path.steps.tolist() == [8, 8]  # ceil(36 / 5)
    order = path.order()
    energy = (x * x).sum(1).flatten(1)
    for b in range(2):
        ranked = torch.argsort(energy[b], descending=True, stable=True)
        assert order[b, ranked].tolist() == [i // 5 for i in range(36)]
    res = salbench.methods.attribute_with_info("samp", Quadratic(), x, t, step_size=5)
    half = 0.5 * (x * x).flatten(1).sum(1)
    torch.testing.assert_close(res.info["score_delta"], half)
    torch.testing.assert_close(res.info["completeness_error"], half, rtol=1e-5, atol=1e-5)


def test_quadratic_with_ic_by_hand():
    # One 1x1 image, three features (0.9, 0.5, 0), s = 1 element, eta = 0.25 of ||x||_1 = 1.4,
    # i.e. at most 0.35 per segment. Worked by hand (deletion, key = x_i^2):
    #  k1: e0 0.9 -> 0.55 (capped)   a0 += 0.9 * 0.35
    #  k2: e0 0.55 -> 0.2 (capped)   a0 += 0.55 * 0.35
    #  k3: e1 0.5 -> 0.15 (capped)   a1 += 0.5 * 0.35      (0.25 > 0.2^2 = 0.04)
    #  k4: e0 0.2 -> 0               a0 += 0.2 * 0.2       (0.04 > 0.15^2)
    #  k5: e1 0.15 -> 0              a1 += 0.15 * 0.15
    x = torch.tensor([0.9, 0.5, 0.0]).view(1, 3, 1, 1)
    t = torch.zeros(1, dtype=torch.long)
    path = samp_path(Quadratic(), x, t, step_size=1, unit="element", eta=0.25, momentum=0.0)
    assert path.steps.tolist() == [5] and path.constrained.tolist() == [3]
    chosen = path.selected[:, 0].float().argmax(1).tolist()
    assert chosen == [0, 0, 1, 0, 1]
    assert (path.selected.sum(2) == 1).all()
    a0 = 0.9 * 0.35 + 0.55 * 0.35 + 0.2 * 0.2
    a1 = 0.5 * 0.35 + 0.15 * 0.15
    torch.testing.assert_close(path.attr.view(-1), torch.tensor([a0, a1, 0.0]), atol=1e-6,
                               rtol=1e-5)
    torch.testing.assert_close(path.scale[:, 0], torch.tensor(
        [0.35 / 0.9, 0.35 / 0.55, 0.35 / 0.5, 1.0, 1.0]), atol=1e-6, rtol=1e-5)
    res = salbench.methods.attribute_with_info("samp_pp", Quadratic(), x, t, step_size=1,
                                               unit="element", eta=0.25, momentum=0.0)
    # error of the left Riemann sum on f = 0.5|x|^2 is 0.5 * sum_k |dx_k|^2
    err = 0.5 * (3 * 0.35**2 + 0.2**2 + 0.15**2)
    assert res.info["completeness_error"].item() == pytest.approx(err, abs=1e-5)
    assert res.info["path_steps"].item() == 5 and res.info["constrained_steps"].item() == 3


@pytest.mark.parametrize("direction", ["deletion", "insertion"])
def test_linear_model_exact_and_momentum_free(direction):
    # Constant gradient w: any path gives a = w * (x - x') exactly, momentum changes nothing,
    # and the first segment holds the s pixels with the largest sum_c w (x - x').
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    model = Linear((3, 8, 8))
    t = torch.tensor([0, 2])
    base = torch.zeros_like(x) if direction == "deletion" else make_baseline(x, "blur")
    w = model.w[t]
    a = salbench.methods.attribute_with_info("samp", model, x, t, direction=direction,
                                             step_size=10)
    b = salbench.methods.attribute_with_info("samp_pp", model, x, t, direction=direction,
                                             step_size=10, eta=0.05)
    for res in (a, b):
        torch.testing.assert_close(res.attr, w * (x - base), atol=1e-5, rtol=1e-5)
        assert (res.info["completeness_error"] < 1e-3).all()
    p0 = samp_path(model, x, t, direction=direction, step_size=10, eta=None, momentum=0.0)
    p1 = samp_path(model, x, t, direction=direction, step_size=10, eta=None, momentum=0.9)
    assert torch.equal(p0.selected, p1.selected)
    gain = (w * (x - base)).sum(1).flatten(1)
    first = p0.order() == 0
    for i in range(2):
        assert set(first[i].nonzero().view(-1).tolist()) == set(
            torch.topk(gain[i], 10).indices.tolist())


# ---------------------------------------------------------------- Algorithm 1, unbatched


def reference_samp(model, x1, t, *, direction, s, eta, lam):
    """Algorithm 1 of paper 004 for ONE image, plain loops, pixel units.

    x1 float [3, H, W]. Returns (attribution [3, H, W], list of the chosen pixel lists).
    """
    c, h, w = x1.shape
    if direction == "deletion":
        xs, xe, sign = x1.clone(), torch.zeros_like(x1), -1.0
    else:
        xs, xe, sign = make_baseline(x1[None], "blur")[0], x1.clone(), 1.0
    bound = math.inf if eta is None else eta * x1.abs().double().sum().item()
    xk, a, mom, chosen_log = xs.clone(), torch.zeros_like(x1), None, []
    while not torch.equal(xk, xe):
        xg = xk.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(xg[None])[0, t], xg)
        mom = grad if mom is None else lam * mom + (1 - lam) * grad
        gamma = (sign * mom * (xe - xk)).sum(0).flatten().tolist()
        remaining = [i for i in range(h * w)
                     if not torch.equal(xk[:, i // w, i % w], xe[:, i // w, i % w])]
        chosen = sorted(remaining, key=lambda i: -gamma[i])[:s]  # stable: ties by index
        dx = torch.zeros_like(x1)
        for i in chosen:
            dx[:, i // w, i % w] = xe[:, i // w, i % w] - xk[:, i // w, i % w]
        l1 = dx.abs().double().sum().item()
        new = xk.clone()
        for i in chosen:
            if l1 > bound:
                frac = torch.tensor(bound / l1, dtype=torch.float32)
                new[:, i // w, i % w] = xk[:, i // w, i % w] + frac * dx[:, i // w, i % w]
            else:
                new[:, i // w, i % w] = xe[:, i // w, i % w]
        a += sign * grad * (new - xk)
        xk = new
        chosen_log.append(sorted(chosen))
    return a, chosen_log


@pytest.mark.parametrize("direction,eta,lam", [
    ("deletion", 0.03, 0.5), ("insertion", 0.01, 0.5), ("deletion", None, 0.0),
])
def test_batched_equals_unbatched_algorithm1(direction, eta, lam, smooth_model, images32):
    x = images32[:3]
    t = _targets(smooth_model, x)
    path = samp_path(smooth_model, x, t, direction=direction, step_size=50, eta=eta,
                     momentum=lam, internal_batch_size=2)
    if eta is not None and direction == "deletion":
        assert (path.constrained > 0).all()  # the IC is exercised
    for i in range(len(x)):
        a, chosen = reference_samp(smooth_model, x[i], t[i].item(), direction=direction, s=50,
                                   eta=eta, lam=lam)
        assert path.steps[i].item() == len(chosen)
        got = [path.selected[k, i].nonzero().view(-1).tolist() for k in range(len(chosen))]
        assert got == chosen
        torch.testing.assert_close(path.attr[i], a, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- path structure


@pytest.mark.parametrize("unit,n_units", [("pixel", 1024), ("element", 3072)])
def test_each_segment_moves_s_units_and_each_unit_moves_once(unit, n_units, smooth_model,
                                                             images32):
    t = _targets(smooth_model, images32)
    s = resolve_step_size(PAPER_STEP, n_units)
    assert s == round(16 * n_units / 224)
    path = samp_path(smooth_model, images32, t, unit=unit, eta=None, momentum=0.5)
    k = math.ceil(n_units / s)
    assert path.selected.shape == (k, 4, n_units)
    counts = path.selected.sum(2)  # [K, B]
    assert (counts[:-1] == s).all() and (counts[-1] == n_units - (k - 1) * s).all()
    assert (path.selected.sum(0) == 1).all()  # a partition of all units
    assert (path.scale == 1).all() and (path.constrained == 0).all()


def test_ic_segments_bounded_and_path_reaches_the_end(smooth_model, images32):
    x = images32
    t = _targets(smooth_model, x)
    eta = 0.02
    path = samp_path(smooth_model, x, t, step_size=50, eta=eta, momentum=0.5)
    bound = eta * x.flatten(1).sum(1)
    # replay the recorded path: every segment's L1 norm <= eta ||x||_1, the path ends at x^E
    cur = path.start.clone()
    for k in range(path.selected.shape[0]):
        sel = path.selected[k].view(4, 1, 32, 32).expand_as(cur)
        frac = path.scale[k].view(-1, 1, 1, 1)
        new = torch.where(sel, torch.where(frac < 1, cur + frac * (path.end - cur), path.end),
                          cur)
        l1 = (new - cur).abs().flatten(1).sum(1)
        assert (l1 <= bound * (1 + 1e-5)).all()
        capped = (path.scale[k] < 1) & (path.scale[k] > 0)
        torch.testing.assert_close(l1[capped], bound[capped], rtol=1e-4, atol=0)
        remaining = (cur != path.end).any(1).flatten(1).sum(1)
        active = path.scale[k] > 0
        assert torch.equal(path.selected[k].sum(1)[active], remaining[active].clamp(max=50))
        cur = new
    assert torch.equal(cur, path.end)
    assert ((path.selected.sum(0) >= 1) == (path.start != path.end).any(1).flatten(1)).all()
    assert (path.constrained == (path.scale < 1).logical_and(path.scale > 0).sum(0)).all()
    worst = math.ceil(1024 / 50) + math.ceil(1 / eta)
    assert (path.steps <= worst).all() and (path.constrained > 0).all()


def test_pixels_equal_to_the_baseline_are_never_moved(smooth_model, images32):
    x = images32.clone()
    x[:, :, :8, :] = 0.0  # already black: nothing to delete there
    path = samp_path(smooth_model, x, _targets(smooth_model, x), eta=None, momentum=0.0)
    assert (path.attr[:, :, :8, :] == 0).all() and path.attr[:, :, 8:, :].abs().sum() > 0
    assert (path.selected.sum(0) == (x != 0).any(1).flatten(1)).all()


def test_step_size_resolution_and_errors(smooth_model, images32):
    assert resolve_step_size(PAPER_STEP, 224 * 224) == 224 * 16
    assert resolve_step_size(PAPER_STEP, 32 * 32) == 73
    assert resolve_step_size(1 / 7, 224 * 224) == 224 * 32
    assert resolve_step_size(100, 1024) == 100
    for bad in (0, -3, 0.0, 1.5, True, "3"):
        with pytest.raises(ValueError):
            resolve_step_size(bad, 1024)
    t = _targets(smooth_model, images32)
    for kw in ({"direction": "sideways"}, {"unit": "row"}, {"eta": 0.0}, {"momentum": 1.0},
               {"attribution_grad": "avg"}):
        with pytest.raises(ValueError):
            salbench.methods.attribute("samp_pp", smooth_model, images32, t, **kw)


# ---------------------------------------------------------------- completeness and momentum


def test_completeness_error_shrinks_with_the_constraint(smooth_model, images32):
    x = images32[:2]
    t = _targets(smooth_model, x)
    errs = []
    for eta in (None, 0.01, 0.001):
        res = salbench.methods.attribute_with_info("samp_pp", smooth_model, x, t, eta=eta,
                                                   momentum=0.5, internal_batch_size=8)
        with torch.no_grad():
            f = smooth_model(x).gather(1, t.view(-1, 1)).squeeze(1)
            f0 = smooth_model(torch.zeros_like(x)).gather(1, t.view(-1, 1)).squeeze(1)
        torch.testing.assert_close(res.info["score_delta"], f - f0)
        direct = (res.attr.flatten(1).double().sum(1) - (f - f0).double()).abs().float()
        torch.testing.assert_close(res.info["completeness_error"], direct, atol=1e-4,
                                   rtol=1e-4)
        errs.append(res.info["completeness_error"])
    assert (errs[1] < errs[0]).all() and (errs[2] < errs[1]).all()
    assert (errs[2] < 0.15 * errs[0]).all(), errs  # O(eta): 100x smaller eta, >6x smaller error


def test_momentum_changes_the_path_and_zero_momentum_is_samp(smooth_model, images32):
    t = _targets(smooth_model, images32)
    kw = {"step_size": 50, "eta": 0.05}
    plain = samp_path(smooth_model, images32, t, momentum=0.0, **kw)
    mom = samp_path(smooth_model, images32, t, momentum=0.5, **kw)
    assert not torch.equal(plain.order(), mom.order())
    s = salbench.methods.attribute("samp", smooth_model, images32, t, **kw)
    pp0 = salbench.methods.attribute("samp_pp", smooth_model, images32, t, momentum=0.0, **kw)
    pp = salbench.methods.attribute("samp_pp", smooth_model, images32, t, **kw)
    assert torch.equal(s, pp0) and torch.equal(s, plain.attr)
    assert (s - pp).abs().max() > 1e-3
    # Algorithm 1 line 11 literally (momentum in the attribution): same with momentum 0 ...
    lit0 = salbench.methods.attribute("samp_pp", smooth_model, images32, t, momentum=0.0,
                                      attribution_grad="momentum", **kw)
    assert torch.equal(lit0, s)
    # ... and with momentum the same path, another attribution
    lit = salbench.methods.attribute("samp_pp", smooth_model, images32, t,
                                     attribution_grad="momentum", **kw)
    assert (lit - pp).abs().max() > 1e-3


# ---------------------------------------------------------------- contract, batching


@pytest.mark.parametrize("name", ["samp", "samp_pp"])
def test_contract(name, smooth_model, images32):
    spec = salbench.methods.get(name)
    assert spec.info_columns == ("completeness_error", "score_delta", "path_steps",
                                 "constrained_steps")
    assert spec.map_reduce == "sum" and spec.fast == {"step_size": 1 / 7}
    t = _targets(smooth_model, images32)
    res = salbench.methods.attribute_with_info(name, smooth_model, images32, t, profile="fast")
    a = res.attr
    assert a.shape == images32.shape and a.dtype == torch.float32 and a.device == images32.device
    assert torch.isfinite(a).all() and a.abs().sum() > 0
    for col in spec.info_columns:
        v = res.info[col]
        assert v.shape == (4,) and v.dtype == torch.float32 and torch.isfinite(v).all()
    assert (res.info["path_steps"] >= 7).all()  # ceil(1024 / 146)
    assert salbench.methods.to_map(a, "sum").shape == (4, 32, 32)


@pytest.mark.parametrize("name,kw", [
    ("samp", {}), ("samp_pp", {"eta": 0.03}), ("samp_pp", {"direction": "insertion"}),
])
def test_batch_equals_loop_and_deterministic(name, kw, smooth_model, images32):
    t = _targets(smooth_model, images32)
    batch = salbench.methods.attribute_with_info(name, smooth_model, images32, t,
                                                 internal_batch_size=3, **kw)
    again = salbench.methods.attribute(name, smooth_model, images32, t, internal_batch_size=3,
                                       **kw)
    assert torch.equal(batch.attr, again)
    singles = [salbench.methods.attribute_with_info(name, smooth_model, images32[i:i + 1],
                                                    t[i:i + 1], **kw) for i in range(4)]
    torch.testing.assert_close(batch.attr, torch.cat([r.attr for r in singles]), atol=1e-5,
                               rtol=1e-4)
    for col in ("path_steps", "constrained_steps"):
        assert torch.equal(batch.info[col], torch.cat([r.info[col] for r in singles]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samp_pp_on_cuda_matches_cpu(smooth_model, images32):
    t = _targets(smooth_model, images32)
    cpu = salbench.methods.attribute_with_info("samp_pp", smooth_model, images32, t, eta=0.03)
    gpu_model = salbench.models.load("tiny_smooth", device="cuda")
    gpu = salbench.methods.attribute_with_info("samp_pp", gpu_model, images32.cuda(), t.cuda(),
                                               eta=0.03)
    assert gpu.attr.device.type == "cuda"
    assert all(v.device.type == "cuda" for v in gpu.info.values())
    torch.testing.assert_close(gpu.attr.cpu(), cpu.attr, atol=1e-4, rtol=1e-3)
    assert torch.equal(gpu.info["path_steps"].cpu(), cpu.info["path_steps"])
