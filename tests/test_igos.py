"""I-GOS (paper 002): unbatched reference, hand-computed linear case, line search, batching."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import salbench
from salbench.methods.igos import blur_baseline, igos_optimize
from salbench.methods.seeding import image_generators
from salbench.models.base import Classifier

# settings under which the tiny random model's mask moves far from 1 in a few iterations, with
# varied accepted step sizes (the paper's lambdas keep this weak model's mask near 1)
MOVING = {"l1_coeff": 0.01, "tv_coeff": 0.1, "step_max": 1e4}


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _reference_igos(model, x1, t1, *, mask_size, iterations, ig_steps, l1_coeff, tv_coeff,
                    tv_beta=2.0, noise_std=0.2, step_max=200.0, step_decay=0.2,
                    step_min=1e-5, armijo_beta=1e-4, score="prob", seed=0):
    """The paper's algorithm for ONE image, written plainly (like the authors' code): autograd
    through the mask, one forward per path point, one forward per line-search candidate."""
    size = tuple(x1.shape[-2:])
    base = blur_baseline(x1, 51, 50.0)
    gen = image_generators(x1, seed)[0]
    sigma = noise_std * model.std.view(1, 3, 1, 1)

    def up(m):
        return F.interpolate(m, size=size, mode="bilinear", align_corners=True)

    def f(inp):
        out = model(inp)
        if score == "prob":
            out = torch.softmax(out, 1)
        return out[0, int(t1)]

    def reg(m):
        tv = (torch.mean(torch.abs(m[0, 0, :-1, :] - m[0, 0, 1:, :]).pow(tv_beta))
              + torch.mean(torch.abs(m[0, 0, :, :-1] - m[0, 0, :, 1:]).pow(tv_beta)))
        return l1_coeff * torch.mean(torch.abs(1 - m)) + tv_coeff * tv

    def objective(m):
        u = up(m)
        return float(reg(m) + f(x1 * u + base * (1 - u)))

    mask = torch.ones(1, 1, mask_size, mask_size)
    history = [objective(mask)]
    for _ in range(iterations):
        mv = mask.clone().requires_grad_(True)
        loss = reg(mv)
        for s in range(ig_steps):
            u = (s + 1) / ig_steps * up(mv)
            noise = torch.randn((3, *size), generator=gen) * sigma
            loss = loss + f(x1 * u + base * (1 - u) + noise) / ig_steps
        (tg,) = torch.autograd.grad(loss, mv)
        f_now = objective(mask)
        step = step_max
        while True:
            if step <= step_min:
                new = (mask - step_min * tg).clamp(0, 1)
                break
            cand = (mask - step * tg).clamp(0, 1)
            if objective(cand) <= f_now - armijo_beta * step * float((tg ** 2).sum()):
                new = cand
                break
            step *= step_decay
        mask = new.detach()
        history.append(objective(mask))
    return mask, torch.tensor(history)


def test_igos_equals_unbatched_reference(smooth_model, images32):
    x = images32[:2]
    t = _targets(smooth_model, x)
    kw = dict(mask_size=8, iterations=4, ig_steps=4, **MOVING)
    res = igos_optimize(smooth_model, x, t, internal_batch_size=5, **kw)
    assert res.mask.shape == (2, 1, 8, 8)
    assert res.mask.min() < 0.5  # the optimisation really moved
    assert len(set(res.steps.flatten().tolist())) > 1  # several step sizes were accepted
    for i in range(2):
        ref_mask, ref_hist = _reference_igos(smooth_model, x[i:i + 1], t[i], **kw)
        torch.testing.assert_close(res.mask[i:i + 1], ref_mask, atol=2e-5, rtol=0)
        torch.testing.assert_close(res.objective[i], ref_hist.float(), atol=2e-5, rtol=1e-5)


def test_igos_equals_reference_with_paper_lambdas_and_logit(smooth_model, images32):
    x = images32[2:3]
    t = _targets(smooth_model, x)
    kw = dict(mask_size=28, iterations=3, ig_steps=3, l1_coeff=1.0, tv_coeff=20.0,
              score="logit", seed=3)
    res = igos_optimize(smooth_model, x, t, **kw)
    assert res.mask.min() < 0.999
    ref_mask, _ = _reference_igos(smooth_model, x, t[0], **kw)
    torch.testing.assert_close(res.mask, ref_mask, atol=2e-5, rtol=0)


def _linear_classifier(w: torch.Tensor) -> Classifier:
    """logits = W flatten(x) on [B, 3, h, w] inputs, no normalisation (mean 0, std 1)."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    side = int(round((w.shape[1] / 3) ** 0.5))
    return Classifier(nn.Sequential(nn.Flatten(), lin), name="linear", input_size=(side, side),
                      num_classes=w.shape[0], mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _linear_expected(c: torch.Tensor, k: float, beta: float) -> tuple[torch.Tensor, float]:
    """First a in 200, 40, 8, ... (> 1e-5) with F(clip(1 - a k c)) - F(1) <= -beta a k^2 |c|^2
    for F(M) = sum M c; 1e-5 (the lower bound) when none qualifies."""
    alpha = 200.0
    while alpha > 1e-5:
        cand = (1 - alpha * k * c).clamp(0, 1)
        if ((cand - 1) * c).sum() <= -beta * alpha * k * k * (c * c).sum():
            return cand, alpha
        alpha *= 0.2
    return (1 - 1e-5 * k * c).clamp(0, 1), 1e-5


@pytest.mark.parametrize("beta", [0.1, 0.3])
def test_igos_linear_model_hand_computed(beta):
    # f(x) = w . x, black baseline, no noise, no regulariser: along the mask path
    # f(Phi(s/S M)) = sum_i (s/S) M_i c_i with c = sum_channels w * x, so the integrated
    # gradient is (S + 1) / (2S) * c (paper, supplement Prop. 1). Only the c > 0 entries can
    # move (the others are clipped at 1), so for small a the Armijo test holds iff
    # sum_{c>0} c^2 >= beta k sum c^2: here the positive share is 0.094, so beta = 0.1
    # backtracks to an accepted step and beta = 0.3 ends at the lower bound 1e-5.
    g = torch.Generator().manual_seed(1)
    w = torch.randn(2, 48, generator=g) * 0.3
    x = torch.rand(1, 3, 4, 4, generator=g)
    model = _linear_classifier(w)
    s_steps = 4
    k = (s_steps + 1) / (2 * s_steps)
    c = (w[0].view(3, 4, 4) * x[0]).sum(0).double()
    expected, alpha = _linear_expected(c, k, beta)
    res = salbench.methods.attribute_with_info(
        "igos", model, x, torch.tensor([0]), mask_size=4, iterations=1, ig_steps=s_steps,
        l1_coeff=0.0, tv_coeff=0.0, baseline=0.0, noise_std=0.0, score="logit",
        armijo_beta=beta)
    if beta == 0.1:
        assert 1e-5 < alpha < 200.0 and expected.min() == 0  # backtracked, then clipped
        assert res.info["ls_fallbacks"].item() == 0
    else:
        assert alpha == 1e-5 and res.info["ls_fallbacks"].item() == 1
    torch.testing.assert_close(res.attr[0, 0].double(), 1 - expected, atol=1e-6, rtol=0)
    f_end = float(w[0] @ (x[0] * expected.float()).flatten())
    torch.testing.assert_close(res.info["masked_score"], torch.tensor([f_end]), atol=1e-5,
                               rtol=0)


def test_objective_decreases_and_mask_stays_in_unit_interval(smooth_model, images32):
    t = _targets(smooth_model, images32)
    res = igos_optimize(smooth_model, images32, t, mask_size=8, iterations=5, ig_steps=3,
                        **MOVING)
    assert (res.mask >= 0).all() and (res.mask <= 1).all()
    assert res.mask.min() == 0 and res.mask.max() == 1  # the projection was active
    assert (res.fallbacks == 0).all()
    diffs = res.objective[:, 1:] - res.objective[:, :-1]
    assert (diffs <= 0).all(), res.objective  # Armijo: every accepted step descends
    assert (res.objective[:, -1] < res.objective[:, 0] - 0.01).all()


def test_contract_and_info(smooth_model, images32):
    t = _targets(smooth_model, images32)
    res = salbench.methods.attribute_with_info("igos", smooth_model, images32, t,
                                               profile="fast", **MOVING)
    a = res.attr
    assert a.shape == images32.shape and a.dtype == torch.float32
    assert a.device == images32.device
    assert (a >= 0).all() and (a <= 1).all() and a.max() > 0.5
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])
    spec = salbench.methods.get("igos")
    assert set(res.info) == set(spec.info_columns)
    for v in res.info.values():
        assert v.shape == (4,) and v.dtype == torch.float32
    assert (res.info["objective_end"] <= res.info["objective_start"]).all()
    # objective_start is F(1) = the target probability of the unmasked image
    with torch.no_grad():
        p = torch.softmax(smooth_model(images32), 1).gather(1, t.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(res.info["objective_start"], p)
    assert spec.defaults["iterations"] == 15 and spec.defaults["ig_steps"] == 20
    assert spec.defaults["mask_size"] == 28 and spec.defaults["score"] == "prob"


def test_batch_equals_loop_and_chunking_invariance(smooth_model, images32):
    t = _targets(smooth_model, images32)
    kw = dict(mask_size=8, iterations=3, ig_steps=3, **MOVING)
    batch = salbench.methods.attribute("igos", smooth_model, images32, t, **kw)
    singles = torch.cat([
        salbench.methods.attribute("igos", smooth_model, images32[i:i + 1], t[i:i + 1], **kw)
        for i in range(4)
    ])
    torch.testing.assert_close(batch, singles, atol=2e-5, rtol=0)
    other = salbench.methods.attribute("igos", smooth_model, images32, t, ls_chunk=1,
                                       internal_batch_size=5, **kw)
    torch.testing.assert_close(batch, other, atol=2e-5, rtol=0)


def test_deterministic_with_seed(smooth_model, images32):
    t = _targets(smooth_model, images32)
    kw = dict(mask_size=8, iterations=2, ig_steps=3, **MOVING)
    a = salbench.methods.attribute("igos", smooth_model, images32, t, seed=5, **kw)
    b = salbench.methods.attribute("igos", smooth_model, images32, t, seed=5, **kw)
    c = salbench.methods.attribute("igos", smooth_model, images32, t, seed=6, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the path noise depends on the seed


@pytest.mark.parametrize("mask_size", [224, 112, 28, 14, 7])
def test_mask_size_variants(mask_size, smooth_model, images32):
    x = images32[:2]
    t = _targets(smooth_model, x)
    res = igos_optimize(smooth_model, x, t, mask_size=mask_size, iterations=1, ig_steps=2,
                        **MOVING)
    assert res.mask.shape == (2, 1, mask_size, mask_size)
    a = salbench.methods.attribute("igos", smooth_model, x, t, mask_size=mask_size,
                                   iterations=1, ig_steps=2, **MOVING)
    assert a.shape == x.shape and torch.isfinite(a).all()
    up = F.interpolate(res.mask, size=(32, 32), mode="bilinear", align_corners=True)
    torch.testing.assert_close(a[:, :1], 1 - up)


def test_bad_parameters(smooth_model, images32):
    t = _targets(smooth_model, images32)
    with pytest.raises(ValueError, match="mask_size"):
        salbench.methods.attribute("igos", smooth_model, images32, t, mask_size=1)
    with pytest.raises(ValueError, match="step_decay"):
        salbench.methods.attribute("igos", smooth_model, images32, t, step_decay=1.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_igos_runs_on_cuda(smooth_model, images32):
    t = _targets(smooth_model, images32)
    gpu_model = salbench.models.load("tiny_smooth", device="cuda")
    res = igos_optimize(gpu_model, images32.cuda(), t.cuda(), mask_size=8, iterations=3,
                        ig_steps=3, **MOVING)
    assert res.mask.device.type == "cuda" and res.objective.device.type == "cuda"
    assert (res.mask >= 0).all() and (res.mask <= 1).all() and res.mask.min() < 0.5
    assert (res.objective[:, 1:] <= res.objective[:, :-1]).all()
    a = salbench.methods.attribute("igos", gpu_model, images32.cuda(), t.cuda(),
                                   profile="fast")
    assert a.device.type == "cuda" and a.shape == images32.shape
