"""Mask (meaningful_perturbation): the Mask code's Adam loop written plainly, the deletion
property the paper claims, the batching contract, the other step rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import salbench
from salbench.methods.igos import blur_baseline, igos_optimize
from salbench.methods.seeding import image_generators

# the paper's lambdas keep the tiny random model's mask near 1 (its target probability is
# ~0.15); these let the mask move within a few dozen iterations
LAMBDAS = {"l1_coeff": 0.05, "tv_coeff": 0.2}


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _reference_mask(model, x1, t1, *, mask_size, iterations, l1_coeff, tv_coeff, tv_beta=2.0,
                    lr=0.1, noise_std=0.2, seed=0):
    """The Mask code's loop for ONE image (jacobgil/pytorch-explain-black-box, with I-GOS's
    blur, noise and upsampling): torch.optim.Adam on the mask, autograd, clamp after each
    step, the softmax probability of the target."""
    size = tuple(x1.shape[-2:])
    base = blur_baseline(x1, 51, 50.0)
    gen = image_generators(x1, seed)[0]
    sigma = noise_std * model.std.view(1, 3, 1, 1)
    mask = torch.ones(1, 1, mask_size, mask_size, requires_grad=True)
    opt = torch.optim.Adam([mask], lr=lr)
    for _ in range(iterations):
        up = F.interpolate(mask, size=size, mode="bilinear", align_corners=True)
        noise = torch.randn((3, *size), generator=gen) * sigma
        prob = torch.softmax(model(x1 * up + base * (1 - up) + noise), 1)[0, int(t1)]
        m = mask[0, 0]
        tv = (torch.mean(torch.abs(m[:-1, :] - m[1:, :]).pow(tv_beta))
              + torch.mean(torch.abs(m[:, :-1] - m[:, 1:]).pow(tv_beta)))
        loss = l1_coeff * torch.mean(torch.abs(1 - mask)) + tv_coeff * tv + prob
        opt.zero_grad()
        loss.backward()
        opt.step()
        mask.data.clamp_(0, 1)
    return mask.detach()


def test_mask_equals_the_plain_adam_loop(smooth_model, images32):
    x = images32[:2]
    t = _targets(smooth_model, x)
    kw = dict(mask_size=8, iterations=6, **LAMBDAS)
    res = igos_optimize(smooth_model, x, t, direction="gradient", step_rule="adam",
                        learning_rate=0.1, internal_batch_size=3, **kw)
    assert res.mask.min() < 0.7  # it moved
    for i in range(2):
        ref = _reference_mask(smooth_model, x[i:i + 1], t[i], **kw)
        torch.testing.assert_close(res.mask[i:i + 1], ref, atol=1e-5, rtol=0)


def test_deleting_the_mask_area_lowers_the_score_more_than_random_areas(smooth_model,
                                                                         images32):
    # paper 002 / Fong & Vedaldi: the mask marks the region whose deletion (blurring) lowers
    # the target probability; deleting its top 20 % must beat 20 random areas of that size
    x, t = images32, _targets(smooth_model, images32)
    heat = salbench.methods.attribute("meaningful_perturbation", smooth_model, x, t,
                                      mask_size=8, iterations=60, **LAMBDAS)[:, 0]
    base = blur_baseline(x)
    n, k = x.shape[-1] * x.shape[-2], int(0.2 * x.shape[-1] * x.shape[-2])

    def prob_without(idx: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(len(x), n).scatter_(1, idx, 0.0).view(len(x), 1, *x.shape[-2:])
        with torch.no_grad():
            p = torch.softmax(smooth_model(x * keep + base * (1 - keep)), 1)
        return p[torch.arange(len(x)), t]

    p_mask = prob_without(heat.flatten(1).topk(k, 1).indices)
    g = torch.Generator().manual_seed(1)
    p_rand = torch.stack([prob_without(torch.rand(len(x), n, generator=g).argsort(1)[:, :k])
                          for _ in range(20)])
    assert (p_mask < p_rand.min(0).values).all(), (p_mask, p_rand.min(0).values)


def test_contract_batch_equals_loop_and_seed(smooth_model, images32):
    t = _targets(smooth_model, images32)
    kw = dict(mask_size=8, iterations=5, **LAMBDAS)
    res = salbench.methods.attribute_with_info("meaningful_perturbation", smooth_model,
                                               images32, t, **kw)
    a = res.attr
    assert a.shape == images32.shape and a.dtype == torch.float32
    assert (a >= 0).all() and (a <= 1).all() and a.max() > 0.1
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])
    spec = salbench.methods.get("meaningful_perturbation")
    assert set(res.info) == set(spec.info_columns)
    assert (res.info["objective_end"] < res.info["objective_start"]).all()
    singles = torch.cat([
        salbench.methods.attribute("meaningful_perturbation", smooth_model,
                                   images32[i:i + 1], t[i:i + 1], **kw) for i in range(4)])
    torch.testing.assert_close(a, singles, atol=1e-5, rtol=0)
    assert torch.equal(a, salbench.methods.attribute("meaningful_perturbation", smooth_model,
                                                     images32, t, **kw))
    other = salbench.methods.attribute("meaningful_perturbation", smooth_model, images32, t,
                                       seed=1, **kw)
    assert not torch.equal(a, other)
    d = spec.defaults
    assert (d["iterations"], d["step_rule"], d["learning_rate"], d["mask_size"]) == (
        500, "adam", 0.1, 28)
    assert (d["l1_coeff"], d["tv_coeff"]) == (salbench.methods.get("igos").defaults["l1_coeff"],
                                              salbench.methods.get("igos").defaults["tv_coeff"])


def test_other_step_rules_and_errors(smooth_model, images32):
    t = _targets(smooth_model, images32)
    res = igos_optimize(smooth_model, images32, t, direction="gradient", step_rule="armijo",
                        mask_size=8, iterations=4, l1_coeff=0.01, tv_coeff=0.1, step_max=1e4)
    assert res.objective.shape == (4, 5)
    assert (res.objective[:, 1:] <= res.objective[:, :-1]).all()  # Armijo descends
    fixed = igos_optimize(smooth_model, images32, t, direction="gradient", step_rule="fixed",
                          learning_rate=5.0, mask_size=8, iterations=2, noise_std=0.0,
                          **LAMBDAS)
    assert fixed.objective.shape == (4, 2) and fixed.steps.shape == (4, 2)
    with pytest.raises(ValueError, match="step_rule"):
        salbench.methods.attribute("meaningful_perturbation", smooth_model, images32, t,
                                   step_rule="sgd")
    with pytest.raises(ValueError, match="direction"):
        igos_optimize(smooth_model, images32, t, direction="newton")
