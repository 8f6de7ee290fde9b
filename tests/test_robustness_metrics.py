"""Robustness metrics (salbench/metrics/robustness.py) against Quantus 0.6.0 on the same
tiny model, images and explanation function (vg): exactly for the deterministic ones, in
distribution for the stochastic ones (difference of the per-image means of repeated draws
against its standard error); the papers' definitions where Quantus deviates, on hand cases;
batching independence; the extended ``method`` contract; and the pipeline."""

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
from salbench.errors import BadInputError
from salbench.metrics.registry import REGISTRY, direction
from salbench.metrics.rerun import method_callable
from salbench.metrics.robustness import consistency_summary, reduce_scores
from salbench.models.base import Classifier

quantus = pytest.importorskip("quantus")
#: Quantus warns about every parameter choice and every perturbation that changes nothing
pytestmark = pytest.mark.filterwarnings("ignore")

ROBUSTNESS = ["max_sensitivity", "avg_sensitivity", "local_lipschitz", "continuity",
              "relative_input_stability", "relative_output_stability",
              "relative_representation_stability", "consistency"]
#: Quantus normalises over the whole batch by default; salbench per sample
PER_SAMPLE = {"normalise_func_kwargs": {"normalise_axes": [1, 2, 3]}, "disable_warnings": True}
#: a difference of means within this many standard errors is sampling error
Z_MAX = 4.0


def _maps_fn(name: str):
    def maps_fn(model, x, t):
        return salbench.methods.to_map(salbench.methods.attribute(name, model, x, t))
    return maps_fn


@pytest.fixture(scope="module")
def setup():
    """tiny_smooth, four random 32 px images (each with a black pixel: Quantus pads
    translations with the image minimum, salbench with black), the predicted classes, vg
    maps, the ``method`` callable and Quantus' explain_func (the same vg maps, [B, 1, H, W])."""
    model = salbench.models.load("tiny_smooth")
    x = torch.rand((4, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    x[:, :, 0, 0] = 0.0
    with torch.no_grad():
        t = model(x).argmax(1)
    fn = _maps_fn("vg")

    def explain(model, inputs, targets, **_):
        return fn(model, torch.as_tensor(np.asarray(inputs)).float(),
                  torch.as_tensor(np.asarray(targets)).long()).numpy()[:, None]

    return model, x, t, fn(model, x, t), method_callable(fn, x, t, 16), explain


def _ours(setup, name, **kw):
    model, x, t, maps, method, _ = setup
    spec = salbench.metrics.get(name)
    extra = {"method": method} if spec.needs_method else {}
    return np.asarray(spec.fn(model, x, t, maps, **extra, **spec.params(**kw))[name], float)


def _quantus(setup, metric):
    model, x, t, maps, _, explain = setup
    return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(),
                             a_batch=maps.numpy()[:, None], explain_func=explain,
                             device="cpu"), float)


def _z(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-image difference of means of repeated draws [R, B] over its standard error."""
    se = np.sqrt(ours.var(0, ddof=1) / len(ours) + ref.var(0, ddof=1) / len(ref))
    return (ours.mean(0) - ref.mean(0)) / se


def test_method_callable_chunks_every_perturbation_and_repeats_targets():
    """method(model, x, target): all N inputs in one call, run in chunks of ``chunk``;
    target defaults to the batch's, each repeated N / B times; method(model) (mprt's use)
    re-runs the batch itself."""
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    t = torch.tensor([7, 9])
    calls = []

    def maps_fn(model, xs, ts):
        calls.append((model, len(xs), ts.tolist()))
        return xs.sum(1)

    method = method_callable(maps_fn, x, t, chunk=4)
    xs = x.repeat_interleave(3, 0)
    out = method("m", xs)
    assert torch.equal(out, xs.sum(1))
    assert calls == [("m", 4, [7, 7, 7, 9]), ("m", 2, [9, 9])]
    calls.clear()
    assert torch.equal(method("other"), x.sum(1)) and calls == [("other", 2, [7, 9])]
    calls.clear()
    method("m", xs[:2], torch.tensor([1, 2]))
    assert calls == [("m", 2, [1, 2])]
    with pytest.raises(BadInputError, match="not a multiple"):
        method("m", xs[:5])
    with pytest.raises(BadInputError, match="3 targets for 2 images"):
        method("m", xs[:2], torch.tensor([1, 2, 3]))


def test_registered_with_quantus_parameter_names_defaults_and_directions():
    specs = {n: salbench.metrics.get(n) for n in ROBUSTNESS}
    assert all(s.stage == "model" for s in specs.values())
    assert all(specs[n].needs_method for n in ROBUSTNESS if n != "consistency")
    for n in ("max_sensitivity", "avg_sensitivity"):
        d = specs[n].defaults
        assert (d["nr_samples"], d["lower_bound"], d["upper_bound"]) == (200, 0.2, None)
        assert (d["norm_numerator"], d["norm_denominator"]) == ("fro", None)
    assert specs["local_lipschitz"].defaults["perturb_std"] == 0.1
    assert specs["continuity"].defaults["nr_steps"] == 28
    for n in ("relative_input_stability", "relative_output_stability",
              "relative_representation_stability"):
        d = specs[n].defaults
        assert (d["eps_min"], d["lower_bound"], d["upper_bound"]) == (1e-6, 0.02, 0.2)
        assert d["return_nan_when_prediction_changes"] is True
    assert [direction(n) for n in ROBUSTNESS[:-1]] == ["lower"] * 7
    assert direction("consistency") == "higher"


def test_continuity_equals_quantus(setup):
    """Deterministic: equal to Quantus to float32 rounding (its abs and max-normalisation)."""
    ours = _ours(setup, "continuity")
    ref = _quantus(setup, quantus.Continuity(**PER_SAMPLE))
    np.testing.assert_allclose(ours, ref, rtol=1e-5)
    assert np.isfinite(ours).all()
    fewer = _ours(setup, "continuity", nr_steps=7, abs=False, normalise=False)
    np.testing.assert_allclose(
        fewer, _quantus(setup, quantus.Continuity(nr_steps=7, abs=False, normalise=False,
                                                  disable_warnings=True)), rtol=1e-5)


@pytest.mark.parametrize("name, cls, kw, qkw", [
    # Yeh et al.'s definition (no denominator) against Quantus with a unit denominator
    ("avg_sensitivity", "AvgSensitivity", {"nr_samples": 1},
     {"norm_denominator": lambda a: np.ones(len(a))}),
    # Quantus' relative form (norm_denominator="fro") against its default
    ("max_sensitivity", "MaxSensitivity", {"nr_samples": 3, "norm_denominator": "fro"}, {}),
    ("local_lipschitz", "LocalLipschitzEstimate", {"nr_samples": 3}, {}),
    ("relative_input_stability", "RelativeInputStability", {"nr_samples": 2}, {}),
    ("relative_output_stability", "RelativeOutputStability", {"nr_samples": 2}, {}),
    ("relative_representation_stability", "RelativeRepresentationStability",
     {"nr_samples": 2}, {}),
])
def test_stochastic_metrics_agree_with_quantus_in_distribution(setup, name, cls, kw, qkw):
    """R draws of each image's score from salbench (seeds 0..R-1) and from Quantus (its
    global NumPy RNG): the per-image means agree within Z_MAX standard errors, and the
    standard error is under 20 % of the mean (a wrong noise range or norm would show). The
    relative stabilities divide by near-zero values, so their logs are compared."""
    r = 40 if "relative" in name else 20
    keep = {"return_nan_when_prediction_changes": False} if "relative" in name else {}
    ours = np.stack([_ours(setup, name, seed=s, **kw, **keep) for s in range(r)])
    np.random.seed(0)
    qargs = {k: v for k, v in kw.items() if k != "norm_denominator"}
    ref = np.stack([_quantus(setup, getattr(quantus, cls)(**qargs, **qkw, **keep,
                                                          **PER_SAMPLE))
                    for _ in range(r)])
    if "relative" in name:  # ratios with near-zero divisors: heavy tails; compare logs
        ours, ref = np.log(ours), np.log(ref)
    z = _z(ours, ref)
    se = np.sqrt(ours.var(0, ddof=1) / r + ref.var(0, ddof=1) / r)
    rel = se if "relative" in name else se / np.abs(ref.mean(0))
    print(f"{name}: max |z| = {np.abs(z).max():.2f}, "
          f"max |diff of means| = {np.abs(ours.mean(0) - ref.mean(0)).max():.3g}, "
          f"max SE{' of the log' if 'relative' in name else ' / mean'} = {rel.max():.3g}")
    assert np.all(np.abs(z) < Z_MAX), z
    assert np.all(rel < 0.2)  # decisive: a 20 % error in the scores would show


class _Linear(nn.Module):
    """Logits [m - c, c - m] of the mean intensity m of a [B, 3, H, W] input."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([m - self.c, self.c - m], 1)


def _toy(c: float = 0.55) -> Classifier:
    return Classifier(_Linear(c), name="toy", input_size=(8, 8), num_classes=2,
                      mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _square_first_channel(model, xs, ts):
    """A hand-made 'method': the map is the squared first channel."""
    return xs[:, 0] ** 2


def test_papers_definitions_on_hand_cases():
    """8 x 8 px, x = 0.5 everywhere, noise fixed at +0.1 (U[0.1, 0.1 + 1e-9]), map = x_0^2:
    Yeh's sensitivity ||a(x+d) - a(x)||_F = (0.36 - 0.25) * 8 (no denominator; Quantus
    divides by ||a(x)|| = 0.25 * 8); RIS (Agarwal) = ||0.44|| / ||0.2|| over 64 and 192
    values = 0.44 / (0.2 sqrt 3); ROS = ||0.44 x 8|| / ||h(x) - h(x')|| = 3.52 / (0.1 sqrt 2).
    With the prediction flipped by the noise (c = 0.55 between 0.5 and 0.6) Agarwal's
    maximum runs over no perturbation: NaN."""
    model, x = _toy(0.7), torch.full((1, 3, 8, 8), 0.5)
    t = torch.tensor([1])
    method = method_callable(_square_first_channel, x, t, 8)
    maps = _square_first_channel(None, x, t)
    noise = {"lower_bound": 0.1, "upper_bound": 0.1 + 1e-9, "nr_samples": 3}
    get = salbench.metrics.get
    for name in ("max_sensitivity", "avg_sensitivity"):
        out = get(name).fn(model, x, t, maps, method=method, **get(name).params(**noise))
        assert out[name][0] == pytest.approx(0.11 * 8, rel=1e-5)
        rel = get(name).fn(model, x, t, maps, method=method,
                           **get(name).params(**noise, norm_denominator="fro"))
        assert rel[name][0] == pytest.approx(0.11 / 0.25, rel=1e-5)
    ris = get("relative_input_stability")
    out = ris.fn(model, x, t, maps, method=method, **ris.params(**noise))
    assert out["relative_input_stability"][0] == pytest.approx(0.44 / (0.2 * math.sqrt(3)),
                                                               rel=1e-5)
    ros = get("relative_output_stability")
    out = ros.fn(model, x, t, maps, method=method, **ros.params(**noise))
    assert out["relative_output_stability"][0] == pytest.approx(3.52 / (0.1 * math.sqrt(2)),
                                                                rel=1e-4)
    flipped = _toy(0.55)
    out = ris.fn(flipped, x, t, maps, method=method, **ris.params(**noise))
    assert math.isnan(out["relative_input_stability"][0])
    kept = ris.fn(flipped, x, t, maps, method=method,
                  **ris.params(**noise, return_nan_when_prediction_changes=False))
    assert np.isfinite(kept["relative_input_stability"][0])
    # the maximum over the perturbations that keep the prediction (Quantus: NaN if any
    # changed), NaN only when none is left
    s = torch.tensor([[1.0, 5.0, 3.0], [2.0, 4.0, 6.0]])
    drop = torch.tensor([[False, True, False], [True, True, True]])
    np.testing.assert_array_equal(reduce_scores(s, "max", drop), [3.0, np.nan])
    np.testing.assert_array_equal(reduce_scores(s, "mean", None), [3.0, 4.0])


def test_consistency_summary_equals_quantus():
    """Consistency over a set of samples equals the mean of Quantus' per-sample values on the
    same set as one batch (maps with varied signs in their first pixels, abs and normalise
    off so that several sign codes occur)."""
    model = salbench.models.load("tiny_smooth")
    g = torch.Generator().manual_seed(3)
    x = torch.rand((12, 3, 32, 32), generator=g)
    maps = torch.randn((12, 32, 32), generator=g)
    maps[:, 0, :5] = torch.sign(torch.randint(-1, 2, (12, 5), generator=g).float())
    maps[:6, 0, :5] = maps[0, 0, :5]  # six share a code
    spec = salbench.metrics.get("consistency")
    cols = spec.fn(model, x, torch.zeros(12).long(), maps,
                   **spec.params(abs=False, normalise=False))
    import pandas as pd
    value, n = consistency_summary(pd.DataFrame(cols))["consistency"]
    ref = quantus.Consistency(abs=False, normalise=False, disable_warnings=True)(
        model=model, x_batch=x.numpy(), y_batch=np.zeros(12, int),
        a_batch=maps.numpy()[:, None], device="cpu")
    assert n == 12 and value == pytest.approx(float(np.mean(ref)), abs=1e-12)
    assert 0.0 < value < 1.0
    assert consistency_summary(pd.DataFrame(cols).iloc[:0])["consistency"][1] == 0


def test_per_image_draws_do_not_depend_on_the_batch(setup):
    """A stochastic metric's score for an image is the same in any batch (float rounding of
    the method's batch aside)."""
    model, x, t, maps, method, _ = setup
    spec = salbench.metrics.get("max_sensitivity")
    whole = spec.fn(model, x, t, maps, method=method, **spec.params(nr_samples=3))
    fn = _maps_fn("vg")
    for i in range(len(x)):
        one = spec.fn(model, x[i:i + 1], t[i:i + 1], maps[i:i + 1],
                      method=method_callable(fn, x[i:i + 1], t[i:i + 1], 2),
                      **spec.params(nr_samples=3))
        assert one["max_sensitivity"][0] == pytest.approx(whole["max_sensitivity"][i],
                                                          rel=1e-5)


def test_edge_cases_zero_images_and_constant_maps(setup):
    """Black images and a constant map give numbers or NaN, never an exception; a method-less
    call says what it needs."""
    model, _, t, _, _, _ = setup
    x = torch.zeros((2, 3, 32, 32))
    fn = _maps_fn("vg")
    method = method_callable(fn, x, t[:2], 16)
    maps = torch.ones((2, 32, 32))
    for name in ROBUSTNESS:
        spec = salbench.metrics.get(name)
        small = {k: v for k, v in (("nr_samples", 2), ("nr_steps", 3))
                 if k in spec.defaults}
        extra = {"method": method} if spec.needs_method else {}
        out = spec.fn(model, x, t[:2], maps, **extra, **spec.params(**small))
        assert all(len(v) == 2 for v in out.values())
    spec = salbench.metrics.get("max_sensitivity")
    with pytest.raises(ValueError, match="method="):
        spec.fn(model, x, t[:2], maps, **spec.params(nr_samples=2))


def _raising_on_bright(spec, threshold: float):
    """``spec`` whose function raises when its batch holds an image brighter than
    ``threshold`` (mean in [0, 1])."""
    inner = spec.fn

    def fn(model, x, target, maps, **params):
        if (x.mean((1, 2, 3)) > threshold).any():
            raise ValueError("injected failure on a bright image")
        return inner(model, x, target, maps, **params)

    return dataclasses.replace(spec, fn=fn)


def test_pipeline_one_samples_failure_stays_on_it(tmp_path, monkeypatch):
    """The family through the in-process pipeline with vg on tiny_smooth: every column
    filled, the consistency summary row written; one metric raising on one sample makes
    that row a metric_error naming it, with its other metrics kept."""
    from salbench.datasets.synthetic import SyntheticParams, generate
    images = [generate(SyntheticParams(seed=3, height=32, width=32), i)[0] for i in range(4)]
    means = np.sort([im.mean() / 255.0 for im in images])
    bright = int(np.argmax([im.mean() for im in images]))
    monkeypatch.setitem(REGISTRY._entries, "local_lipschitz",
                        _raising_on_bright(REGISTRY.get("local_lipschitz"),
                                           (means[-1] + means[-2]) / 2))
    metrics = [{"name": n, **({"nr_samples": 2} if "nr_samples" in
                              salbench.metrics.get(n).defaults else {}),
                **({"nr_steps": 4} if n == "continuity" else {})} for n in ROBUSTNESS]
    res = salbench.evaluate(dataset={"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
                            models=["tiny_smooth"], methods=["vg"], metrics=metrics,
                            out=tmp_path, ray=False,
                            resources={"shard_size": 4, "batch_size": 4, "torch_threads": 1})
    s = res.samples.set_index("index").sort_index()
    assert s.loc[bright, "status"] == "metric_error"
    assert s.loc[bright, "error"] == \
        "local_lipschitz: ValueError: injected failure on a bright image"
    assert math.isnan(s.loc[bright, "local_lipschitz"])
    cols = ["max_sensitivity", "avg_sensitivity", "continuity", "consistency_code",
            "consistency_pred"]
    assert np.isfinite(s[cols].astype(float).to_numpy()).all()
    rest = s.drop(index=bright)
    assert (rest["status"] == "ok").all() and rest["local_lipschitz"].notna().all()
    summ = res.summary.set_index(["method", "metric"])
    assert summ.loc[("vg", "local_lipschitz"), ["n", "n_error"]].tolist() == [3, 1]
    assert 0.0 <= summ.loc[("vg", "consistency"), "mean"] <= 1.0
    assert summ.loc[("vg", "consistency"), "n"] == 4


def test_pipeline_reruns_the_method_in_chunks_of_internal_batch_size(tmp_path, monkeypatch):
    """In the pipeline, the metric's ``method`` runs the configured method on chunks of
    ``resources.internal_batch_size`` images: 4 images x 4 noisy copies in chunks of 3
    (spied: the sizes of the batches the method's function receives)."""
    seen: list[int] = []
    real_get = salbench.methods.get

    def spied(name):
        spec = real_get(name)

        def fn(model, x, target, **args):
            seen.append(len(x))
            return spec.fn(model, x, target, **args)
        return dataclasses.replace(spec, fn=fn)

    monkeypatch.setattr(salbench.methods, "get", spied)
    res = salbench.evaluate(dataset={"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
                            models=["tiny_smooth"], methods=["vg"],
                            metrics=[{"name": "avg_sensitivity", "nr_samples": 4}],
                            out=tmp_path, ray=False,
                            resources={"shard_size": 4, "batch_size": 4, "torch_threads": 1,
                                       "internal_batch_size": 3})
    assert (res.samples["status"] == "ok").all()
    assert seen == [4, 3, 3, 3, 3, 3, 1]
