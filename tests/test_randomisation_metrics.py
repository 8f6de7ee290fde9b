"""Randomisation and axiom metrics (salbench/metrics/randomisation.py) against Quantus 0.6.0
on the same tiny model, images and explanation function: efficient_mprt, non_sensitivity
and input_invariance exactly, random_logit and smooth_mprt in distribution; the papers'
definitions where Quantus deviates (2-D SSIM, smoothing both maps) on hand cases; edge
cases and the pipeline."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import salbench
import salbench.methods
import salbench.metrics
import salbench.models
from salbench.methods.seeding import image_generators
from salbench.metrics import randomisation as R
from salbench.metrics.registry import REGISTRY, direction
from salbench.metrics.rerun import method_callable
from salbench.models.base import Classifier

quantus = pytest.importorskip("quantus")
#: Quantus warns about every parameter choice and every perturbation that changes nothing
pytestmark = pytest.mark.filterwarnings("ignore")

FAMILY = ["random_logit", "smooth_mprt", "efficient_mprt", "non_sensitivity",
          "input_invariance"]
PER_SAMPLE = {"normalise_func_kwargs": {"normalise_axes": [1, 2, 3]}, "disable_warnings": True}
Z_MAX = 4.0


def _maps_fn(name: str):
    def maps_fn(model, x, t):
        return salbench.methods.to_map(salbench.methods.attribute(name, model, x, t))
    return maps_fn


def _explain(fn):
    def explain(model, inputs, targets, **_):
        return fn(model, torch.as_tensor(np.asarray(inputs)).float(),
                  torch.as_tensor(np.asarray(targets)).long()).numpy()[:, None]
    return explain


@pytest.fixture(scope="module")
def setup():
    """tiny_smooth, four random 32 px images, their predicted classes, vg maps, the
    ``method`` callable and Quantus' explain_func (the same maps as [B, 1, H, W])."""
    model = salbench.models.load("tiny_smooth")
    x = torch.rand((4, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = model(x).argmax(1)
    fn = _maps_fn("vg")
    return model, x, t, fn(model, x, t), method_callable(fn, x, t, 16), _explain(fn)


def _ours(setup, name, **kw):
    model, x, t, maps, method, _ = setup
    spec = salbench.metrics.get(name)
    extra = {"method": method} if spec.needs_method else {}
    return np.asarray(spec.fn(model, x, t, maps, **extra, **spec.params(**kw))[name], float)


def _quantus(setup, metric, a=None, model=None):
    m, x, t, maps, _, explain = setup
    return np.asarray(metric(model=model or m, x_batch=x.numpy(), y_batch=t.numpy(),
                             a_batch=maps.numpy()[:, None] if a is None else a,
                             explain_func=explain, device="cpu"), float)


def _z(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    se = np.sqrt(ours.var(0, ddof=1) / len(ours) + ref.var(0, ddof=1) / len(ref))
    return (ours.mean(0) - ref.mean(0)) / se


def _ssim_2d(a, b, batched=True):
    """2-D SSIM of flattened 32 x 32 maps (scikit-image, 7 x 7 window, Quantus' data range:
    max - min over both maps)."""
    from skimage.metrics import structural_similarity
    out = []
    for p, q in zip(a, b, strict=True):
        p, q = p.reshape(32, 32), q.reshape(32, 32)
        rng = float(max(p.max(), q.max()) - min(p.min(), q.min()))
        out.append(structural_similarity(p, q, win_size=7, data_range=rng))
    return np.array(out)


def test_registered_with_quantus_parameter_names_and_directions():
    d = {n: salbench.metrics.get(n).defaults for n in FAMILY}
    assert d["smooth_mprt"]["nr_samples"] == 50 and d["smooth_mprt"]["noise_magnitude"] == 0.1
    assert d["smooth_mprt"]["layer_order"] == d["efficient_mprt"]["layer_order"] == "bottom_up"
    assert d["non_sensitivity"]["eps"] == 1e-5 and d["non_sensitivity"]["features_in_step"] == 1
    assert d["input_invariance"]["input_shift"] == -1.0
    assert d["random_logit"]["num_classes"] is None  # the model's class count
    assert [direction(n) for n in FAMILY] == ["lower", "lower", "higher", "lower", "higher"]


def test_efficient_mprt_equals_quantus(setup):
    """Deterministic (vg): the fully randomised model's weights and the entropies equal
    Quantus' (seed s here is Quantus' seed s)."""
    for seed in (0, 42):
        ours = _ours(setup, "efficient_mprt", seed=seed)
        ref = _quantus(setup, quantus.EfficientMPRT(seed=seed, **PER_SAMPLE))
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)
        assert np.isfinite(ours).all() and np.abs(ours).max() > 0


def test_non_sensitivity_equals_quantus():
    """Deterministic: the count of input values whose zero attribution and insensitivity
    disagree, with Quantus' abs and max-normalisation (black = 0 here; Quantus' "black" is
    the image minimum, so its baseline is given as 0.0). 8 px images (Quantus predicts one
    input value at a time); maps with exact zeros make both sides of the disagreement occur."""
    model = _pad_free(8)
    x = torch.rand((3, 3, 8, 8), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        t = model(x).argmax(1)
    maps = _maps_fn("vg")(model, x, t)
    sparse = torch.where(maps > maps.flatten(1).median(1).values[:, None, None], maps, 0.0)
    spec = salbench.metrics.get("non_sensitivity")
    ours = spec.fn(model, x, t, sparse, **spec.params())["non_sensitivity"]
    ref = np.asarray(quantus.NonSensitivity(perturb_baseline=0.0, **PER_SAMPLE)(
        model=model.net, x_batch=x.numpy(), y_batch=t.numpy(),
        a_batch=sparse.numpy()[:, None], device="cpu"), float)
    np.testing.assert_array_equal(ours, ref)
    assert (ref > 0).all() and (ref < 3 * 8 * 8).all()
    coarse = spec.fn(model, x, t, sparse, **spec.params(features_in_step=8))
    assert np.isfinite(coarse["non_sensitivity"]).all()


class _PadFree(nn.Module):
    """conv 3x3 without padding (so that Quantus' bias shift is exact everywhere), GELU,
    linear: logits [B, 10] of [B, 3, size, size]."""

    def __init__(self, size: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.GELU()
        self.fc = nn.Linear(4 * (size - 2) ** 2, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).flatten(1))


def _pad_free(size: int) -> Classifier:
    """:class:`_PadFree` as a Classifier with no normalisation (the bare net is Quantus')."""
    return Classifier(_PadFree(size).eval(), name="padfree", input_size=(size, size),
                      num_classes=10, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_input_invariance_matches_quantus_shifted_model(setup):
    """vg is input invariant (1), gradient x input is not (0), as Kindermans et al. found.
    The reference: Quantus' shifted network (add_mean_shift_to_first_layer: the first
    layer's bias absorbs the shift) explained at x + shift, np.isclose(atol=1e-4) with the
    map of x. Quantus' InputInvariance itself leaves the first input value of each image
    unshifted (its perturb_batch skips index 0), so its verdict for vg is 0; salbench shifts
    the whole input as the paper does."""
    from quantus.helpers.model.pytorch_model import PyTorchModel
    x = setup[1]
    model = _pad_free(32)
    with torch.no_grad():
        t = model(x).argmax(1)
    shifted = PyTorchModel(model.net, channel_first=True).add_mean_shift_to_first_layer(
        -1.0, (1, 3, 32, 32))
    spec = salbench.metrics.get("input_invariance")
    for name, want in (("vg", 1.0), ("gxi", 0.0)):
        fn = _maps_fn(name)
        maps = fn(model, x, t)
        ours = spec.fn(model, x, t, maps, method=method_callable(fn, x, t, 16),
                       **spec.params())["input_invariance"]
        a_shift = _explain(fn)(shifted, x.numpy() - 1.0, t.numpy())[:, 0]
        ref = np.isclose(maps.numpy(), a_shift, atol=1e-4).all((1, 2)).astype(float)
        np.testing.assert_array_equal(ours, ref)
        assert (ours == want).all(), name
    quantus_own = quantus.InputInvariance(disable_warnings=True)(
        model=model.net, x_batch=x.numpy(), y_batch=t.numpy(),
        a_batch=_maps_fn("vg")(model, x, t).numpy()[:, None],
        explain_func=_explain(_maps_fn("vg")), device="cpu")
    assert not any(quantus_own)


def test_random_logit_agrees_with_quantus_in_distribution(setup):
    """The off class is drawn per image (salbench) or per batch from the global NumPy RNG
    (Quantus, seeded per call); Quantus is given the 2-D SSIM of Sixt et al. (its own
    compares flattened maps with a 1-D window). R draws each: means within Z_MAX SE."""
    r = 20
    ours = np.stack([_ours(setup, "random_logit", seed=s) for s in range(r)])
    ref = np.stack([_quantus(setup, quantus.RandomLogit(num_classes=10, seed=s,
                                                        similarity_func=_ssim_2d, **PER_SAMPLE))
                    for s in range(r)])
    z = _z(ours, ref)
    print(f"random_logit: max |z| = {np.abs(z).max():.2f}, "
          f"max |diff of means| = {np.abs(ours.mean(0) - ref.mean(0)).max():.3g}")
    assert np.all(np.abs(z) < Z_MAX), z
    assert np.unique(ours).size > 4  # several off classes were drawn


def test_random_logit_is_the_2d_ssim_of_the_two_maps():
    """Hand case: a 'method' whose map for class c is channel c % 3 times (c + 1): the score
    is scikit-image's 2-D SSIM of the target's and the drawn class's max-normalised maps
    (the drawn class is never the target and is in range)."""
    from skimage.metrics import structural_similarity
    model = salbench.models.load("tiny_smooth")
    x = torch.rand((3, 3, 16, 16), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 4, 9])
    drawn = []

    def maps_fn(m, xs, ts):
        drawn.extend(ts.tolist())
        return torch.stack([xs[i, c % 3] * (c + 1) for i, c in enumerate(ts.tolist())])

    maps = maps_fn(None, x, t)
    drawn.clear()
    spec = salbench.metrics.get("random_logit")
    out = spec.fn(model, x, t, maps, method=method_callable(maps_fn, x, t, 8),
                  **spec.params(seed=3))["random_logit"]
    assert len(drawn) == 3 and all(d != tt and 0 <= d < 10
               for d, tt in zip(drawn, t.tolist(), strict=True))
    for i, c in enumerate(drawn):
        a = (x[i, t[i] % 3]).double().numpy()
        b = (x[i, c % 3]).double().numpy()
        a, b = a / np.abs(a).max(), b / np.abs(b).max()
        rng = max(a.max(), b.max()) - min(a.min(), b.min())
        assert out[i] == pytest.approx(structural_similarity(a, b, win_size=7,
                                                             data_range=rng), abs=1e-6)


def test_smooth_mprt_agrees_with_quantus_in_distribution(setup, monkeypatch):
    """Both maps averaged over the same kind of noise (Quantus' last sample unperturbed),
    the same randomised model (salbench seed 42 = Quantus seed 42), the last layer's
    Spearman correlation. Quantus smooths only the randomised model's maps, so it is given
    its own smoothed map of the original model as a_batch (Hedstrom et al. smooth both).
    salbench's draws vary through the per-image generators' seed; quantus.explain, which
    Quantus' sMPRT calls instead of explain_func, is the same vg."""
    model, x, t, maps, method, explain = setup
    monkeypatch.setattr(quantus, "explain",
                        lambda model, inputs, targets, **_: explain(model, inputs, targets))
    r, n = 16, 4
    ours = []
    for s in range(r):
        monkeypatch.setattr(R, "image_generators",
                            lambda x, seed, s=s: image_generators(x, seed + 1000 * (s + 1)))
        ours.append(R.smooth_mprt(model, x, t, maps, method=method, seed=42, nr_samples=n,
                                  skip_layers=True)["smooth_mprt"])
    ours = np.stack(ours)
    np.random.seed(0)
    ref = []
    for _ in range(r):
        q = quantus.SmoothMPRT(seed=42, nr_samples=n, skip_layers=True,
                               return_last_correlation=True, **PER_SAMPLE)
        ref.append(_quantus(setup, q, a=q.explain_smooth_batch(model, x.numpy(), t.numpy())))
    ref = np.stack(ref)
    z = _z(ours, ref)
    print(f"smooth_mprt: max |z| = {np.abs(z).max():.2f}, "
          f"max |diff of means| = {np.abs(ours.mean(0) - ref.mean(0)).max():.3g}")
    assert np.all(np.abs(z) < Z_MAX), z


def test_smooth_mprt_smooths_both_maps_hand_case():
    """Hand case: a 'method' that ignores the model and returns the input's first channel:
    the smoothed maps of the model and of every randomised copy are the same average, so the
    correlation is 1 at every layer (Quantus compares the unsmoothed map with smoothed ones,
    which gives less than 1)."""
    model = salbench.models.load("tiny_smooth")
    x = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(4))
    t = torch.tensor([1, 2])

    def first_channel(m, xs, ts):
        return xs[:, 0]

    spec = salbench.metrics.get("smooth_mprt")
    out = spec.fn(model, x, t, x[:, 0], method=method_callable(first_channel, x, t, 64),
                  **spec.params(nr_samples=3))
    np.testing.assert_allclose(out["smooth_mprt"], 1.0)
    assert len(out["smooth_mprt_curve"][0]) == len(R.randomisable_layers(model, "bottom_up"))


def test_per_image_draws_do_not_depend_on_the_batch(setup):
    """random_logit's off class and smooth_mprt's noise are drawn per image: an image's
    score is the same alone as in its batch (float rounding of the method's batch aside)."""
    model, x, t, maps, method, _ = setup
    fn = _maps_fn("vg")
    for name, kw in (("random_logit", {}), ("smooth_mprt", {"nr_samples": 3,
                                                             "skip_layers": True})):
        spec = salbench.metrics.get(name)
        whole = spec.fn(model, x, t, maps, method=method, **spec.params(**kw))[name]
        for i in range(len(x)):
            one = spec.fn(model, x[i:i + 1], t[i:i + 1], maps[i:i + 1],
                          method=method_callable(fn, x[i:i + 1], t[i:i + 1], 2),
                          **spec.params(**kw))[name]
            assert one[0] == pytest.approx(whole[i], abs=1e-5), (name, i)


def test_layer_randomisation_leaves_the_model_and_global_rng_alone(setup):
    model = setup[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models = list(R.randomised_models(model, "top_down", 0))
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert len(models) == len(R.randomisable_layers(model, "top_down"))
    with pytest.raises(ValueError, match="layer_order"):
        list(R.randomised_models(model, "sideways", 0))


def test_edge_cases_zero_images_and_constant_maps(setup):
    """Black images and a constant map: numbers or NaN (efficient_mprt's entropy of a
    constant map is 0), never an exception."""
    model = setup[0]
    x, t = torch.zeros((2, 3, 32, 32)), torch.tensor([0, 1])
    method = method_callable(_maps_fn("vg"), x, t, 16)
    maps = torch.ones((2, 32, 32))
    small = {"smooth_mprt": {"nr_samples": 2, "skip_layers": True},
             "non_sensitivity": {"features_in_step": 256}}
    for name in FAMILY:
        spec = salbench.metrics.get(name)
        extra = {"method": method} if spec.needs_method else {}
        out = spec.fn(model, x, t, maps, **extra, **spec.params(**small.get(name, {})))
        assert len(out[name]) == 2
    eff = salbench.metrics.get("efficient_mprt")
    out = eff.fn(model, x, t, maps, method=method, **eff.params())["efficient_mprt"]
    assert not np.isfinite(out).any()


def _raising_on_bright(spec, threshold: float):
    inner = spec.fn

    def fn(model, x, target, maps, **params):
        if (x.mean((1, 2, 3)) > threshold).any():
            raise ValueError("injected failure on a bright image")
        return inner(model, x, target, maps, **params)

    return dataclasses.replace(spec, fn=fn)


def test_pipeline_one_samples_failure_stays_on_it(tmp_path, monkeypatch):
    """The family through the in-process pipeline with vg on tiny_smooth: every column
    filled; one metric raising on one sample makes that row a metric_error naming it, with
    its other metrics kept."""
    from salbench.datasets.synthetic import SyntheticParams, generate
    images = [generate(SyntheticParams(seed=3, height=32, width=32), i)[0] for i in range(4)]
    means = np.sort([im.mean() / 255.0 for im in images])
    bright = int(np.argmax([im.mean() for im in images]))
    monkeypatch.setitem(REGISTRY._entries, "random_logit",
                        _raising_on_bright(REGISTRY.get("random_logit"),
                                           (means[-1] + means[-2]) / 2))
    metrics = ["random_logit", {"name": "smooth_mprt", "nr_samples": 2, "skip_layers": True},
               "efficient_mprt", {"name": "non_sensitivity", "features_in_step": 256},
               "input_invariance"]
    res = salbench.evaluate(dataset={"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
                            models=["tiny_smooth"], methods=["vg"], metrics=metrics,
                            out=tmp_path, ray=False,
                            resources={"shard_size": 4, "batch_size": 4, "torch_threads": 1})
    s = res.samples.set_index("index").sort_index()
    assert s.loc[bright, "status"] == "metric_error"
    assert s.loc[bright, "error"] == "random_logit: ValueError: injected failure on a bright image"
    assert math.isnan(s.loc[bright, "random_logit"])
    cols = ["smooth_mprt", "efficient_mprt", "non_sensitivity", "input_invariance"]
    assert np.isfinite(s[cols].astype(float).to_numpy()).all()
    assert (s["input_invariance"] == 1.0).all()  # vg on a Classifier: invariant
    rest = s.drop(index=bright)
    assert (rest["status"] == "ok").all() and rest["random_logit"].notna().all()
    summ = res.summary.set_index(["method", "metric"])
    assert summ.loc[("vg", "random_logit"), ["n", "n_error"]].tolist() == [3, 1]
