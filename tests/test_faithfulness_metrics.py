"""The Quantus / LATEC faithfulness family: agreement with Quantus 0.6.0 (exact for the
deterministic metrics, in distribution for the stochastic ones), with Captum's infidelity
and pytorch-grad-cam's confidence metrics, the papers' definitions on hand-computed cases
where Quantus deviates, edge cases, batch independence, and one pipeline run.

Quantus' features are the values of x (an RGB image has 3 per pixel) and it broadcasts a
[B, 1, H, W] map over the channels; salbench's features are pixels. So Quantus'
``features_in_step`` 3k is salbench's k on RGB images (each pixel's 3 copies are adjacent
in Quantus' sort of a map with distinct values), and the random-subset metrics are compared
on grey images (both given x [B, 1, H, W] and a model that repeats the channel).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import salbench
import salbench.metrics
from salbench.errors import BadInputError
from salbench.metrics.registry import REGISTRY, direction

quantus = pytest.importorskip("quantus")

#: Quantus warns about every parameter choice and every perturbation that changes nothing
pytestmark = pytest.mark.filterwarnings("ignore")

FAMILY = ("faithfulness_correlation", "faithfulness_estimate", "monotonicity",
          "monotonicity_correlation", "selectivity", "region_perturbation", "irof", "road",
          "infidelity", "sufficiency", "average_drop", "increase_in_confidence")


class Repeat(nn.Module):
    """A grey-image view of a 3-channel model: [B, 1, H, W] -> model([B, 3, H, W])."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z.expand(-1, 3, -1, -1))


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.AvgPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(3),
                         nn.Flatten(), nn.Linear(72, 5)).eval()


@pytest.fixture(scope="module")
def setup():
    model = _net()
    g = torch.Generator().manual_seed(1)
    x = torch.rand((3, 3, 24, 24), generator=g)
    maps = torch.rand((3, 24, 24), generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, maps


@pytest.fixture(autouse=True)
def _quantus_shims(monkeypatch):
    """Quantus 0.6.0 calls np.trapz, which NumPy 2.4 removed."""
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)


def _q(metric, model, x, y, a, **call):
    return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(),
                             a_batch=a[:, None].numpy(), device="cpu", **call), np.float64)


def _fn(name):
    return salbench.metrics.get(name).fn


def test_registered_with_quantus_names_and_directions():
    want = {"faithfulness_correlation": ("higher", {"nr_runs": 100, "subset_size": 224}),
            "faithfulness_estimate": ("higher", {"features_in_step": 1}),
            "monotonicity": ("higher", {"features_in_step": 1}),
            "monotonicity_correlation": ("higher", {"nr_samples": 100, "eps": 1e-5,
                                                    "perturb_baseline": "uniform"}),
            "selectivity": ("lower", {"patch_size": 8}),
            "region_perturbation": ("higher", {"patch_size": 8, "regions_evaluation": 100}),
            "irof": ("higher", {"segmentation_method": "slic", "perturb_baseline": "mean"}),
            "road": ("lower", {"noise": 0.01}),
            "infidelity": ("lower", {"n_perturb_samples": 10, "perturb_patch_sizes": (4,)}),
            "sufficiency": ("higher", {"threshold": 0.6, "distance_func": "seuclidean"}),
            "average_drop": ("lower", {}), "increase_in_confidence": ("higher", {})}
    for name, (d, params) in want.items():
        spec = salbench.metrics.get(name)
        assert spec.stage == "model" and spec.columns[name] == "float"
        assert direction(name) == d
        assert {k: spec.defaults[k] for k in params} == params
    assert direction("region_perturbation_lerf") == "lower"
    assert direction("road_lerf") == "higher"
    assert list(salbench.metrics.get("road").defaults["percentages"]) == list(range(10, 100, 10))


def test_deterministic_metrics_equal_quantus(setup):
    """Same model, inputs, maps and parameters (Quantus' features_in_step x 3 on RGB)."""
    model, x, y, maps = setup
    ours = _fn("faithfulness_estimate")(model, x, y, maps, features_in_step=4,
                                        perturb_baseline=0.0)["faithfulness_estimate"]
    ref = _q(quantus.FaithfulnessEstimate(features_in_step=12, perturb_baseline=0.0,
                                          disable_warnings=True), model, x, y, maps)
    assert np.abs(ours - ref).max() < 1e-5
    ours = _fn("monotonicity_correlation")(
        model, x, y, maps, features_in_step=4, perturb_baseline=0.0)["monotonicity_correlation"]
    ref = _q(quantus.MonotonicityCorrelation(features_in_step=12, nr_samples=2,
                                             perturb_baseline=0.0, disable_warnings=True),
             model, x, y, maps)
    assert np.abs(ours - ref).max() < 1e-6
    for ps in (4, 5):  # 5: a padded grid with partial border patches
        out = _fn("selectivity")(model, x, y, maps, patch_size=ps, perturb_baseline=0.0)
        ref = _q(quantus.Selectivity(patch_size=ps, perturb_baseline=0.0,
                                     disable_warnings=True), model, x, y, maps)
        assert np.abs(np.stack(out["selectivity_curve"]) - ref).max() < 1e-6
        assert np.abs(out["selectivity"] - np.trapezoid(ref, axis=1)).max() < 1e-5
        out = _fn("region_perturbation")(model, x, y, maps, patch_size=ps,
                                         regions_evaluation=10, perturb_baseline=0.0)
        for key, col in (("morf", "region_perturbation"), ("lerf", "region_perturbation_lerf")):
            ref = _q(quantus.RegionPerturbation(patch_size=ps, regions_evaluation=10,
                                                order=key, perturb_baseline=0.0,
                                                disable_warnings=True), model, x, y, maps)
            assert np.abs(np.stack(out[f"region_perturbation_{key}_curve"]) - ref).max() < 1e-6
            # Samek's AOPC from Quantus' curve (Quantus itself reports its trapezoid area)
            assert np.abs(out[col] - ref.sum(1) / 11).max() < 1e-6


def test_irof_equals_quantus_per_image(setup, monkeypatch):
    """Quantus' IROF only runs on one-channel inputs (its mask has one channel): grey images
    through a channel-repeating model, segments from the same scikit-image call, one image
    per Quantus batch (in larger batches Quantus pads shorter curves with zeros, which
    lowers their trapezoid area by half the last point)."""
    from salbench.metrics.irof import superpixels

    model, x, y, maps = setup
    grey = x.mean(1, keepdim=True)
    monkeypatch.setattr(quantus.helpers.utils, "get_superpixel_segments",
                        lambda img, segmentation_method: superpixels(np.repeat(img, 3, -1)))
    out = _fn("irof")(model, grey.expand(-1, 3, -1, -1), y, maps, perturb_baseline=0.3)
    ref = np.array([_q(quantus.IROF(perturb_baseline=0.3, return_aggregate=False,
                                    disable_warnings=True), Repeat(model).eval(),
                       grey[i:i + 1], y[i:i + 1], maps[i:i + 1])[0] for i in range(3)])
    assert np.abs(out["irof"] - ref).max() < 1e-5
    assert all(len(c) == len(np.unique(superpixels(g[0].numpy()[..., None].repeat(3, -1))))
               for c, g in zip(out["irof_curve"], grey, strict=True))


def test_road_equals_quantus_without_noise(setup):
    """MoRF (Quantus' order) and LeRF (Quantus given 1 - map, the reverse order) with noise
    0: the same imputed images, the same top-1 hits; grey images, as Quantus' ROAD indexes
    pixels."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    from salbench.metrics.road import linear_imputation

    model, x, y, maps = setup
    grey = x.mean(1, keepdim=True)
    pcts = [10, 30, 50, 70, 90]
    out = _fn("road")(model, grey.expand(-1, 3, -1, -1), y, maps, percentages=pcts, noise=0.0)
    for key, a in (("morf", maps), ("lerf", 1 - maps)):
        ref = quantus.ROAD(percentages=pcts, noise=0.0, disable_warnings=True)
        ref(model=Repeat(model).eval(), x_batch=grey.numpy(), y_batch=y.numpy(),
            a_batch=a[:, None].numpy(), device="cpu")
        got = np.stack(out[f"road_{key}_curve"]).mean(0)
        assert np.abs(got - np.array(list(ref.evaluation_scores.values()))).max() == 0
    # the solver against Quantus' sparse direct solve, on a blob holding 90% of the pixels
    img = torch.rand((1, 3, 24, 24), generator=torch.Generator().manual_seed(2))
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    idx = torch.argsort(((yy - 8) ** 2 + (xx - 12) ** 2).flatten(), stable=True)[:518]
    removed = torch.zeros(576, dtype=torch.bool)
    removed[idx] = True
    ours = linear_imputation(img, removed.view(1, 24, 24))[0].double().numpy()
    ref = noisy_linear_imputation(img[0].double().numpy(), idx.numpy(), noise=0.0)
    assert np.abs(ours - ref).max() < 1e-5


def _grey_setup(setup, size: int):
    model, _, _, _ = setup
    g = torch.Generator().manual_seed(5)
    grey = torch.rand((1, 1, size, size), generator=g)
    a = torch.rand((1, size, size), generator=g)
    with torch.no_grad():
        y = model(grey.expand(-1, 3, -1, -1)).argmax(1)
    return model, grey, y, a


def _z(ours: list[float], ref: list[float]) -> float:
    """Difference of the means over its standard error."""
    se = math.sqrt(np.var(ours, ddof=1) / len(ours) + np.var(ref, ddof=1) / len(ref))
    return abs(np.mean(ours) - np.mean(ref)) / se


def test_stochastic_metrics_agree_with_quantus_in_distribution(setup):
    """One grey image [1, 1, H, W] through the channel-repeating model for both libraries
    (so a removed pixel is one value for both); ours over seeds, Quantus over NumPy seeds:
    the means agree within 4 standard errors (a wrong subset size, baseline or sign moves
    them by many)."""
    model, grey, y, a = _grey_setup(setup, 24)
    rep = Repeat(model).eval()
    ours = [float(_fn("faithfulness_correlation")(rep, grey, y, a, nr_runs=20, subset_size=64,
                                                  seed=s)["faithfulness_correlation"][0])
            for s in range(40)]
    ref = []
    for s in range(40):
        np.random.seed(s)
        ref.append(float(_q(quantus.FaithfulnessCorrelation(
            nr_runs=20, subset_size=64, return_aggregate=False, disable_warnings=True),
            rep, grey, y, a)[0]))
    assert _z(ours, ref) < 4
    assert abs(np.mean(ours) - np.mean(ref)) < 0.1

    model, grey, y, a = _grey_setup(setup, 12)  # uniform draws, one per removed pixel
    rep = Repeat(model).eval()
    ours = [float(_fn("monotonicity_correlation")(rep, grey, y, a, nr_samples=3, seed=s)
                  ["monotonicity_correlation"][0]) for s in range(16)]
    ref = []
    for s in range(16):
        np.random.seed(s)
        ref.append(float(_q(quantus.MonotonicityCorrelation(nr_samples=3,
                                                            disable_warnings=True),
                            rep, grey, y, a)[0]))
    assert _z(ours, ref) < 4


def test_infidelity_agrees_with_captum_in_distribution(setup):
    """Yeh's estimator against Captum's ``infidelity`` with the same Gaussian perturbation
    (Quantus 0.6.0's Infidelity is deterministic grid removal, not Yeh's expectation). The
    attribution's generator must not share Captum's seeds (the noise would equal it)."""
    captum_metrics = pytest.importorskip("captum.metrics")
    model, x, y, maps = setup
    attr = torch.randn((1, 3, 24, 24), generator=torch.Generator().manual_seed(12345)) * 0.1
    ours = [float(_fn("infidelity")(model, x[:1], y[:1], maps[:1], attr=attr,
                                    perturb_func="gaussian", noise=0.1, n_perturb_samples=8,
                                    seed=s)["infidelity"][0]) for s in range(30)]

    def perturb(inputs):
        eps = torch.randn_like(inputs) * 0.1
        return -eps, inputs + eps  # I = -eps, x - I = x + eps

    ref = []
    for s in range(30):
        torch.manual_seed(1000 + s)
        ref.append(float(captum_metrics.infidelity(model, perturb, x[:1], attr, target=y[:1],
                                                   n_perturb_samples=8)[0]))
    assert _z(ours, ref) < 4
    # E[(I . Phi)^2] = 0.1^2 sum Phi^2 dominates (the score changes are ~1e-4)
    assert np.mean(ours) == pytest.approx(0.01 * float((attr ** 2).sum()), rel=0.25)


def test_sufficiency_equals_quantus(setup):
    model, x, y, _ = setup
    g = torch.Generator().manual_seed(4)
    base = torch.rand((3, 24, 24), generator=g)
    maps = torch.cat([base, base + 0.05 * torch.rand((3, 24, 24), generator=g)])
    xx = torch.cat([x, x.flip(0)])
    out = _fn("sufficiency")(model, xx, y.repeat(2), maps)
    ref = _q(quantus.Sufficiency(disable_warnings=True), model, xx, y.repeat(2), maps)
    assert np.abs(out["sufficiency"] - ref).max() < 1e-12
    # each map's near-copy is close to it (and a share needs at least one close image)
    assert (out["sufficiency_neighbours"] >= 1).all()


def test_cam_confidence_equals_pytorch_grad_cam(setup):
    """pytorch-grad-cam's DropInConfidence is max(0, Y - O) without the paper's division by
    Y; its IncreaseInConfidence is the paper's."""
    cam_metrics = pytest.importorskip("pytorch_grad_cam.metrics.cam_mult_image")
    targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model, x, y, maps = setup
    m = maps.flatten(1)
    scaled = ((m - m.min(1, keepdim=True).values)
              / (m.max(1, keepdim=True).values - m.min(1, keepdim=True).values)).view(maps.shape)
    t = [targets.ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    drop = cam_metrics.DropInConfidence()(x, scaled.numpy(), t, model)
    inc = cam_metrics.IncreaseInConfidence()(x, scaled.numpy(), t, model)
    with torch.no_grad():
        prob = torch.softmax(model(x), 1)[torch.arange(3), y].numpy()
    ours = _fn("average_drop")(model, x, y, maps)["average_drop"]
    assert np.abs(ours * prob - drop.ravel()).max() < 1e-6
    ours = _fn("increase_in_confidence")(model, x, y, maps)["increase_in_confidence"]
    assert (ours == inc.ravel()).all()


class Linear(nn.Module):
    """Logit 0 is w . x (the other logit 0): hand-computable score changes."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_papers_definitions_on_hand_cases(setup):
    g = torch.Generator().manual_seed(6)
    w = torch.rand((1, 3, 6, 6), generator=g) + 0.1
    x = torch.rand((1, 3, 6, 6), generator=g) + 0.1
    model, t = Linear(w), torch.zeros(1, dtype=torch.int64)
    gxi = w * x  # gradient x input: exactly the drop of removing each value to 0
    maps = gxi.sum(1)
    # Bhatt / Alvarez-Melis: with removal to black the drop equals the attribution sum
    assert _fn("faithfulness_correlation")(model, x, t, maps, attr=gxi, nr_runs=10,
                                           subset_size=5)["faithfulness_correlation"][0] \
        == pytest.approx(1.0)
    assert _fn("faithfulness_estimate")(model, x, t, maps, attr=gxi, features_in_step=2)[
        "faithfulness_estimate"][0] == pytest.approx(1.0)
    # Yeh: the gradient of a linear model has infidelity 0 for any perturbation; twice the
    # gradient is 0 only after the optimal scaling
    for kind in ("square", "gaussian"):
        kw = {"perturb_func": kind, "perturb_patch_sizes": [2, 3], "n_perturb_samples": 6}
        assert _fn("infidelity")(model, x, t, maps, attr=w, **kw)["infidelity"][0] \
            == pytest.approx(0.0, abs=1e-9)
        assert _fn("infidelity")(model, x, t, maps, attr=2 * w, **kw)["infidelity"][0] > 1e-3
        assert _fn("infidelity")(model, x, t, maps, attr=2 * w, normalise=True,
                                 **kw)["infidelity"][0] == pytest.approx(0.0, abs=1e-9)
    # Arya: putting pixels back in order; Quantus 0.6.0 replaces the baseline by the baseline
    # and so finds every map monotonic
    out = _fn("monotonicity")(model, x, t, maps, score="logit")
    assert out["monotonicity"][0] == 1.0 and np.all(np.diff(out["monotonicity_curve"][0]) > 0)
    assert out["monotonicity_curve"][0][-1] == pytest.approx(float((w * x).sum()), rel=1e-5)
    w_neg = w.clone()
    w_neg[0, :, 2, 3] = -1.0
    out = _fn("monotonicity")(Linear(w_neg), x, t, maps, score="logit")
    assert out["monotonicity"][0] == 0.0
    assert quantus.Monotonicity(disable_warnings=True)(
        model=Linear(w_neg).eval(), x_batch=x.numpy(), y_batch=t.numpy(),
        a_batch=maps[:, None].numpy(), device="cpu") == [True]
    # Samek's AOPC: 1/(L+1) sum_{k=0..L} of the drop; 2x2 patches of a 6x6 map, L = 2
    m = torch.zeros((1, 6, 6))
    m[0, :2, :2], m[0, 2:4, 2:4] = 3.0, 2.0
    out = _fn("region_perturbation")(model, x, t, m, patch_size=2, regions_evaluation=2,
                                     perturb_baseline=0.0, score="logit")
    d1 = float((w * x)[..., :2, :2].sum())
    d2 = d1 + float((w * x)[..., 2:4, 2:4].sum())
    assert out["region_perturbation"][0] == pytest.approx((0 + d1 + d2) / 3, rel=1e-5)
    # Chattopadhay: the explanation image of a 0/1 map keeps the marked pixels
    m01 = (torch.arange(36).view(1, 6, 6) % 2).float()
    y0 = torch.softmax(model(x), 1)[0, 0]
    o = torch.softmax(model(x * m01[:, None]), 1)[0, 0]
    assert _fn("average_drop")(model, x, t, m01)["average_drop"][0] == pytest.approx(
        float((y0 - o).clamp(min=0) / y0), rel=1e-5)


def test_edge_cases(setup):
    model, x, y, maps = setup
    const = torch.ones_like(maps)
    # a constant map gives equal attribution sums: no correlation
    assert np.isnan(_fn("faithfulness_correlation")(model, x, y, const, nr_runs=5,
                                                    subset_size=10)["faithfulness_correlation"]).all()
    assert np.isnan(_fn("faithfulness_estimate")(model, x, y, const, features_in_step=64)[
        "faithfulness_estimate"]).all()
    assert np.isnan(_fn("average_drop")(model, x, y, const)["average_drop"]).all()
    assert np.isnan(_fn("increase_in_confidence")(model, x, y, const)[
        "increase_in_confidence"]).all()
    # ties keep raster order: a constant map's MoRF and LeRF orders are the same
    out = _fn("region_perturbation")(model, x, y, const, regions_evaluation=5)
    assert np.allclose(out["region_perturbation"], out["region_perturbation_lerf"])
    # an all-black image: removal to black changes nothing
    black = torch.zeros_like(x)
    out = _fn("region_perturbation")(model, black, y, maps, regions_evaluation=5,
                                     perturb_baseline="black")
    assert np.allclose(out["region_perturbation"], 0) and np.allclose(
        out["region_perturbation_lerf"], 0)
    assert np.isnan(_fn("faithfulness_correlation")(model, black, y, maps, nr_runs=5,
                                                    subset_size=10)["faithfulness_correlation"]).all()
    assert (_fn("average_drop")(model, black, y, maps)["average_drop"] == 0).all()
    assert (_fn("monotonicity")(model, black, y, maps, features_in_step=64)["monotonicity"]
            == 1).all()
    # sufficiency: alone, or with one other image (never close: the distances are divided
    # by the largest), an image has no close explanation: 0, as Quantus, with 0 neighbours;
    # identical maps are all close to each other
    for n in (1, 2):
        out = _fn("sufficiency")(model, x[:n], y[:n], maps[:n])
        assert (out["sufficiency"] == 0).all() and (out["sufficiency_neighbours"] == 0).all()
    out = _fn("sufficiency")(model, x, torch.zeros_like(y), const)
    assert (out["sufficiency_neighbours"] == 2).all()
    with pytest.raises(BadInputError, match="subset_size"):
        _fn("faithfulness_correlation")(model, x, y, maps, subset_size=10_000)
    with pytest.raises(BadInputError, match="perturb_baseline"):
        _fn("selectivity")(model, x, y, maps, perturb_baseline="purple")
    with pytest.raises(BadInputError, match="regions_evaluation"):
        _fn("region_perturbation")(model, x, y, maps, regions_evaluation=0)
    with pytest.raises(BadInputError, match="features_in_step"):
        _fn("monotonicity")(model, x, y, maps, features_in_step=0)
    with pytest.raises(BadInputError, match="percentages"):
        _fn("road")(model, x, y, maps, percentages=[150])


def test_stochastic_metrics_do_not_depend_on_the_batch(setup):
    model, x, y, maps = setup
    cases = {"faithfulness_correlation": {"nr_runs": 6, "subset_size": 20},
             "monotonicity_correlation": {"features_in_step": 96, "nr_samples": 3},
             "region_perturbation": {"regions_evaluation": 4},
             "road": {"percentages": [20, 80]},
             "infidelity": {"n_perturb_samples": 4},
             "faithfulness_estimate": {"features_in_step": 96, "perturb_baseline": "uniform"}}
    for name, kw in cases.items():
        spec = salbench.metrics.get(name)
        cols = [c for c, k in spec.columns.items() if k == "float"]
        whole = spec.fn(model, x, y, maps, **spec.params(**kw, internal_batch_size=5))
        for i in range(3):
            one = spec.fn(model, x[i:i + 1], y[i:i + 1], maps[i:i + 1],
                          **spec.params(**kw, internal_batch_size=2))
            for c in cols:
                assert one[c][0] == pytest.approx(whole[c][i], abs=1e-6), (name, c)
        again = spec.fn(model, x, y, maps, **spec.params(seed=1, **kw))
        if name != "road":  # top-1 hits may not change with the seed
            assert any(not np.allclose(again[c], whole[c]) for c in cols), name


def _raising_on_bright(spec, threshold: float):
    inner = spec.fn

    def fn(model, x, target, maps, **params):
        if (x.mean((1, 2, 3)) > threshold).any():
            raise ValueError("injected failure on a bright image")
        return inner(model, x, target, maps, **params)

    return dataclasses.replace(spec, fn=fn)


def test_pipeline_runs_the_family_and_one_failure_stays_on_its_sample(tmp_path, monkeypatch):
    """Every metric of the family through the in-process pipeline (vg on tiny_smooth, small
    parameters); ROAD raising on one sample makes that row a metric_error naming it, with
    the other metrics kept."""
    from salbench.datasets.synthetic import SyntheticParams, generate
    images = [generate(SyntheticParams(seed=3, height=32, width=32), i)[0] for i in range(4)]
    means = np.sort([im.mean() / 255.0 for im in images])
    bright = int(np.argmax([im.mean() for im in images]))
    monkeypatch.setitem(REGISTRY._entries, "road",
                        _raising_on_bright(REGISTRY.get("road"), (means[-1] + means[-2]) / 2))
    small = {"faithfulness_correlation": {"nr_runs": 5, "subset_size": 16},
             "faithfulness_estimate": {"features_in_step": 128},
             "monotonicity": {"features_in_step": 128},
             "monotonicity_correlation": {"features_in_step": 256, "nr_samples": 2},
             "selectivity": {"patch_size": 16}, "region_perturbation": {"regions_evaluation": 3},
             "irof": {"segmentation_method": "felzenszwalb"}, "road": {"percentages": [50]},
             "infidelity": {"n_perturb_samples": 2}}
    metrics = [{"name": n, **small.get(n, {})} for n in FAMILY]
    res = salbench.evaluate(dataset={"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
                            models=["tiny_smooth"], methods=["vg"], metrics=metrics,
                            out=tmp_path, ray=False,
                            resources={"shard_size": 4, "batch_size": 4, "torch_threads": 1})
    s = res.samples.set_index("index").sort_index()
    assert s.loc[bright, "status"] == "metric_error"
    assert s.loc[bright, "error"] == "road: ValueError: injected failure on a bright image"
    assert math.isnan(s.loc[bright, "road"])
    finite = ["faithfulness_correlation", "faithfulness_estimate", "monotonicity",
              "monotonicity_correlation", "selectivity", "region_perturbation",
              "region_perturbation_lerf", "irof", "infidelity", "average_drop",
              "increase_in_confidence"]
    assert np.isfinite(s[finite].astype(float).to_numpy()).all()
    rest = s.drop(index=bright)
    assert (rest["status"] == "ok").all() and rest["road"].notna().all()
    summ = res.summary.set_index(["method", "metric"])
    assert summ.loc[("vg", "road"), ["n", "n_error"]].tolist() == [3, 1]
    assert summ.loc[("vg", "irof"), "n"] == 4
