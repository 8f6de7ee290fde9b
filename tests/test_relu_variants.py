"""The DGA supplement's ReLU variants (Sec. H, Eq. 1-2, Table 2): IG_p1/p2, GIG_p1/p2."""

from __future__ import annotations

import pytest
import torch

import salbench


def _targets(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _grad(model, x1, t1):
    xv = x1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xv)[0, int(t1)], xv)
    return g


def _relu_riemann(model, x1, t1, alphas):
    """sum_k ReLU(grad f(a_k x) * x) / S over the given alphas (black baseline, one image)."""
    total = torch.zeros_like(x1)
    for a in alphas:
        total += torch.relu(_grad(model, a * x1, t1) * x1) / len(alphas)
    return total


def test_p1_is_the_relu_of_ig_and_gig(smooth_model, images32):
    t = _targets(smooth_model, images32)
    for name, base in (("ig_p1", "ig"), ("gig_p1", "gig")):
        ours = salbench.methods.attribute(name, smooth_model, images32, t, steps=4)
        ref = salbench.methods.attribute(base, smooth_model, images32, t, steps=4)
        torch.testing.assert_close(ours, torch.relu(ref), atol=0, rtol=0)


def test_ig_p2_equals_a_loop_over_the_path(smooth_model, images32):
    """Eq. 2 on IG's straight path with its default right Riemann rule, alpha = k / S."""
    t = _targets(smooth_model, images32)
    steps = 6
    ours = salbench.methods.attribute("ig_p2", smooth_model, images32, t, steps=steps,
                                      internal_batch_size=5)
    for i in range(len(t)):
        ref = _relu_riemann(smooth_model, images32[i:i + 1], t[i],
                            [(k + 1) / steps for k in range(steps)])
        torch.testing.assert_close(ours[i:i + 1], ref, atol=1e-6, rtol=1e-5)


def test_gig_p2_on_the_straight_path_is_the_left_riemann_sum(smooth_model, images32):
    """With max_dist = 0 Guided IG's path is IG's straight line, gradient at each step's start."""
    t = _targets(smooth_model, images32)
    steps = 5
    ours = salbench.methods.attribute("gig_p2", smooth_model, images32, t, steps=steps,
                                      max_dist=0.0)
    for i in range(len(t)):
        ref = _relu_riemann(smooth_model, images32[i:i + 1], t[i],
                            [k / steps for k in range(steps)])
        torch.testing.assert_close(ours[i:i + 1], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("p1,p2", [("ig_p1", "ig_p2"), ("gig_p1", "gig_p2")])
def test_relu_of_sum_is_at_most_sum_of_relus(p1, p2, smooth_model, images32):
    """On the same path ReLU(sum_k c_k) <= sum_k ReLU(c_k), elementwise; the two differ."""
    x = images32[:2]
    t = _targets(smooth_model, x)
    a = salbench.methods.attribute(p1, smooth_model, x, t, steps=4)
    b = salbench.methods.attribute(p2, smooth_model, x, t, steps=4)
    assert (a <= b + 1e-6).all() and not torch.allclose(a, b)


@pytest.mark.parametrize("name", ["ig_p2", "gig_p2"])
def test_contract_determinism_and_batch_equals_loop(name, smooth_model, images32):
    x = images32[:3]
    t = _targets(smooth_model, x)
    batch = salbench.methods.attribute(name, smooth_model, x, t, steps=4, internal_batch_size=2)
    assert batch.shape == x.shape and batch.dtype == torch.float32
    assert (batch >= 0).all() and batch.max() > 0
    assert torch.equal(batch, salbench.methods.attribute(name, smooth_model, x, t, steps=4,
                                                         internal_batch_size=2))
    singles = torch.cat([salbench.methods.attribute(name, smooth_model, x[i:i + 1], t[i:i + 1],
                                                    steps=4) for i in range(len(t))])
    torch.testing.assert_close(batch, singles, atol=1e-6, rtol=1e-5)


def test_variants_and_dga_gxi_through_the_ray_pipeline_batch_equals_singles(ray_batch_run):
    """A Ray run that attributes 3 images in one batch stores the maps that single-image calls
    give on its stored input crops (maps are stored as float16; the smooth model, where the
    path methods' batching changes nothing beyond float rounding). The run is the session's
    shared one (conftest ``ray_batch_run``: these five methods with steps 4 on tiny_smooth
    among other models and methods); its tiny_smooth rows of these methods are this test's."""
    import numpy as np

    from salbench.models.base import to_tensor

    names = ["ig_p1", "ig_p2", "gig_p1", "gig_p2", "dga_gxi"]
    model_rows = ray_batch_run["samples"].query("model == 'tiny_smooth'")
    s = model_rows[model_rows["method"].isin(names)]
    assert len(s) == 15 and (s["status"] == "ok").all(), s["error"].tolist()
    model = salbench.models.load("tiny_smooth")
    crops = {i: to_tensor(c)[None] for i, c in ray_batch_run["crops"]["tiny_smooth"].items()}
    assert len(crops) == 3
    for r in s.itertuples():
        attr = salbench.methods.attribute(r.method, model, crops[r.index],
                                          torch.tensor([r.target]), profile="fast", steps=4)
        reduce = salbench.methods.get(r.method).map_reduce or "abs_sum"
        single = salbench.methods.to_map(attr, reduce)[0].numpy().astype(np.float16)
        stored = np.frombuffer(r.map, np.float16).reshape(single.shape)
        np.testing.assert_allclose(stored.astype(np.float32), single.astype(np.float32),
                                   rtol=2e-3, atol=1e-3, err_msg=r.method)
