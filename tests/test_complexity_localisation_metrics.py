"""The Quantus-family localisation and complexity metrics (CPU stage, model-free).

Against Quantus 0.6.0 on the same float64 maps and masks (its normalisation made per map,
as salbench's: ``normalise_axes=(1, 2, 3)``; its ``abs`` switched to match); against
hand-computed values, including the cases where salbench follows the paper and Quantus
does not (the weighted attribution localisation, ties, all-zero maps); and through the
in-process pipeline, where one sample's failure of one metric stays on that sample.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import salbench
from salbench.config import parse_config
from salbench.datasets.synthetic import SyntheticParams, generate, mask_box
from salbench.errors import BadInputError
from salbench.metrics import complexity as C
from salbench.metrics import localisation_quantus as L
from salbench.metrics.preprocess import ground_truth_mask
from salbench.metrics.registry import REGISTRY, direction
from salbench.results.rankings import split_rankings

LOCALISATION = ("topk_intersection", "relevance_rank_accuracy", "relevance_mass_accuracy",
                "attribution_localisation")
COMPLEXITY = ("sparseness", "complexity", "effective_complexity")


def _smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth signed random map float64 [h, w] (noise blurred by a 5x5 box), no ties."""
    z = rng.normal(size=(h + 4, w + 4))
    c = np.cumsum(np.cumsum(np.pad(z, ((1, 0), (1, 0))), 0), 1)
    return (c[5:, 5:] - c[:-5, 5:] - c[5:, :-5] + c[:-5, :-5])[:h, :w] / 25 + 0.05 * \
        rng.normal(size=(h, w))


@pytest.fixture(scope="module")
def batch():
    """Five signed maps float64 [5, 1, 30, 36] (no ties) and the synthetic dataset's object
    masks (discs and squares, bool [5, 1, 30, 36]); one mask is a single corner pixel."""
    rng = np.random.default_rng(7)
    params = SyntheticParams(seed=1, height=30, width=36, min_frac=0.2, max_frac=0.6)
    masks = np.stack([generate(params, i)[1] for i in range(4)]
                     + [np.pad(np.ones((1, 1), bool), ((0, 29), (0, 35)))])[:, None]
    # noise plus the object at different strengths: scores spread over their range
    gain = np.array([2.0, 0.5, 0.0, -0.5, 1.0])[:, None, None, None]
    maps = np.stack([_smooth(rng, 30, 36) for _ in range(5)])[:, None] + gain * masks
    x = rng.uniform(size=(5, 3, 30, 36))
    return x, maps, masks


def _quantus(cls_name: str, x, a, s=None, **kw):
    quantus = pytest.importorskip("quantus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = getattr(quantus, cls_name)(
            disable_warnings=True, normalise_func_kwargs={"normalise_axes": (1, 2, 3)}, **kw)
        out = metric(model=None, x_batch=x, y_batch=np.zeros(len(x), int), a_batch=a.copy(),
                     s_batch=s)
    return np.asarray(out, np.float64)


QUANTUS_CASES = [
    ("TopKIntersection", L.topk_intersection_score, {"k": 1}),
    ("TopKIntersection", L.topk_intersection_score, {"k": 60}),
    ("TopKIntersection", L.topk_intersection_score, {"k": 60, "abs": True}),
    ("TopKIntersection", L.topk_intersection_score, {"k": 200, "concept_influence": True}),
    ("RelevanceRankAccuracy", L.relevance_rank_accuracy_score, {}),
    ("RelevanceRankAccuracy", L.relevance_rank_accuracy_score, {"abs": True}),
    ("RelevanceMassAccuracy", L.relevance_mass_accuracy_score, {}),
    ("RelevanceMassAccuracy", L.relevance_mass_accuracy_score, {"abs": True}),
    ("RelevanceMassAccuracy", L.relevance_mass_accuracy_score, {"abs": True,
                                                                "normalise": False}),
    # salbench's defaults are the paper's (positive relevance); Quantus' own defaults
    # (abs=True, positive_attributions=False) are checked in the second line
    ("AttributionLocalisation", L.attribution_localisation_score,
     {"abs": False, "positive_attributions": True}),
    ("AttributionLocalisation", L.attribution_localisation_score,
     {"abs": True, "positive_attributions": False}),
]


@pytest.mark.parametrize("cls_name, ours, kw", QUANTUS_CASES,
                         ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                              for c, _, kw in QUANTUS_CASES])
def test_localisation_equals_quantus(batch, cls_name, ours, kw):
    """Same maps, same masks: equal to Quantus 0.6.0 (ranking metrics exactly; ratios to
    1e-9: Quantus adds 1e-9 to attribution localisation's denominator)."""
    x, a, s = batch
    want = _quantus(cls_name, x, a, s.astype(np.float64), **kw)
    got = np.array([ours(a[i, 0], s[i, 0], **kw) for i in range(len(a))])
    assert np.isfinite(got).all() and len(np.unique(got.round(9))) > 1  # not vacuous
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    if "Rank" in cls_name or "TopK" in cls_name:
        np.testing.assert_array_equal(got, want)


def test_complexity_family_equals_quantus(batch):
    """Effective complexity exactly; complexity within n * 1e-12 (Quantus' log(p + 1e-12));
    sparseness exactly on the map Quantus scores (its
    normalised |map| + 1e-7), and related to the paper's index as that shift implies."""
    x, a, _ = batch
    # different scales, and exact zeros on a different share of each map
    keep = np.random.default_rng(3).random(a.shape) < np.array([1, .7, .4, .1, .02])[
        :, None, None, None]
    a = a * np.array([1.0, 3.0, 0.2, 10.0, 1.0])[:, None, None, None] * keep
    for cls_name, ours, kw, tol in (
            # log(p + 1e-12) adds about sum_i p_i * 1e-12 / p_i = n * 1e-12
            ("Complexity", C.entropy_complexity, {}, a[0, 0].size * 1.001e-12),
            ("EffectiveComplexity", C.effective_complexity_count, {}, 0.0),
            ("EffectiveComplexity", C.effective_complexity_count, {"eps": 0.3}, 0.0),
            ("EffectiveComplexity", C.effective_complexity_count,
             {"eps": 0.3, "normalise": False}, 0.0),
            ("EffectiveComplexity", C.effective_complexity_count,
             {"eps": 0.1, "abs": False}, 0.0)):
        want = _quantus(cls_name, x, a, **kw)
        got = np.array([ours(a[i, 0], **kw) for i in range(len(a))])
        np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg=f"{cls_name} {kw}")
        assert len(np.unique(got)) > 1, cls_name
    want = _quantus("Sparseness", x, a)
    shifted = np.abs(a / np.abs(a).max(axis=(1, 2, 3), keepdims=True)) + 1e-7
    got_shifted = np.array([C.gini_index(m[0], normalise=False) for m in shifted])
    np.testing.assert_allclose(got_shifted, want, rtol=0, atol=1e-12)
    # the shift c = 1e-7 scales the Gini index by S / (S + n c) (S: the normalised map's
    # sum; sum_i (2i - n - 1) = 0): salbench's index (the paper's) times that is Quantus'
    got = np.array([C.gini_index(m[0]) for m in a])
    total = np.abs(a / np.abs(a).max(axis=(1, 2, 3), keepdims=True)).sum(axis=(1, 2, 3))
    n = a[0].size
    np.testing.assert_allclose(got * total / (total + n * 1e-7), want, rtol=0, atol=1e-12)
    assert np.abs(got - want).max() > 1e-6  # a visible deviation on the sparsest maps


def test_hand_computed_localisation():
    m = np.array([[5.0, 4.0, 3.0], [2.0, 1.0, 0.0]])
    g = np.array([[1, 0, 1], [0, 0, 0]], bool)
    assert L.topk_intersection_score(m, g, k=2) == 0.5  # 5 in, 4 out
    assert L.topk_intersection_score(m, g, k=2, concept_influence=True) == 1.5  # 0.5 * 6/2
    assert L.topk_intersection_score(m, g, k=3) == pytest.approx(2 / 3)
    assert L.relevance_rank_accuracy_score(m, g) == 0.5  # K = 2: {5, 4}
    assert L.relevance_mass_accuracy_score(m, g) == pytest.approx(8 / 15)
    r = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert L.relevance_rank_accuracy_score(r, np.array([[1, 0], [0, 1]], bool)) == 0.5
    assert L.relevance_rank_accuracy_score(r, np.array([[1, 0], [1, 0]], bool)) == 1.0


def test_ties_share_the_cut_off_places():
    """Pixels tied at the cut-off share the remaining places: the expected score over random
    orders of the ties. A constant map scores the ground truth's share of the image."""
    g = np.zeros((4, 4), bool)
    g[:2, :2] = True  # 4 of 16 pixels
    const = np.full((4, 4), 0.3)
    assert L.topk_intersection_score(const, g, k=2) == pytest.approx(0.25)
    assert L.relevance_rank_accuracy_score(const, g) == pytest.approx(0.25)
    m = np.array([[3.0, 1.0], [1.0, 1.0]])
    gt = np.array([[0, 1], [0, 0]], bool)
    # k=2: 3 is out; one place left among three tied 1s, one of which is in: 1/3 hit
    assert L.topk_intersection_score(m, gt, k=2) == pytest.approx(1 / 6)
    rng = np.random.default_rng(0)  # the same as the mean over random tie orders
    orders = [np.argsort(-(m.ravel() + 1e-9 * rng.permutation(4)))[:2] for _ in range(3000)]
    empirical = np.mean([gt.ravel()[o].mean() for o in orders])
    assert empirical == pytest.approx(1 / 6, abs=0.02)


def test_attribution_localisation_follows_the_paper():
    """Kohlbrenner et al. (2020): positive relevance only; mu_w = mu * S_tot / S_in (Quantus
    0.6.0 multiplies by S_in / (a size it takes from the batch axis), and with its default
    abs=True counts negative relevance as positive)."""
    m = np.array([[2.0, -1.0], [1.0, 1.0]])
    g = np.array([[1, 1], [0, 0]], bool)
    assert L.attribution_localisation_score(m, g) == pytest.approx(0.5)  # 2 / (2 + 1 + 1)
    assert L.attribution_localisation_score(m, g, weighted=True) == pytest.approx(1.0)
    # Quantus' defaults: |relevance|: (2 + 1) / 5
    assert L.attribution_localisation_score(m, g, abs=True, positive_attributions=False) \
        == pytest.approx(0.6)
    quantus = pytest.importorskip("quantus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantus.AttributionLocalisation(weighted=True, positive_attributions=True,
                                            abs=False, disable_warnings=True)(
            model=None, x_batch=np.zeros((1, 1, 2, 2)), y_batch=np.zeros(1, int),
            a_batch=m[None, None].copy(), s_batch=g[None, None].astype(float))
    assert not q[0] == pytest.approx(1.0)  # the deviation is real
    # objects larger than max_size of the image are left out (NaN)
    big = np.array([[1, 1], [1, 0]], bool)
    assert math.isnan(L.attribution_localisation_score(m, big, max_size=0.5))
    assert L.attribution_localisation_score(m, big, max_size=0.75) == pytest.approx(0.75)


def test_hand_computed_complexity():
    assert C.gini_index(np.array([[0.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.75)
    assert C.gini_index(np.full((3, 3), 2.0)) == pytest.approx(0.0)
    # sorted [1, 1, 2, 4]: (-3 - 1 + 2 + 12) / (4 * 8)
    assert C.gini_index(np.array([[4.0, 1.0], [2.0, -1.0]])) == pytest.approx(10 / 32)
    assert C.entropy_complexity(np.ones((2, 2))) == pytest.approx(math.log(4))
    assert C.entropy_complexity(np.array([[0.0, 0.0], [0.0, 3.0]])) == 0.0
    assert C.entropy_complexity(np.array([[1.0, 1.0, 2.0]])) == pytest.approx(1.5 * math.log(2))
    m = np.array([[0.0, 1e-6], [0.5, 1.0]])
    assert C.effective_complexity_count(m) == 2
    assert C.effective_complexity_count(m * 100, eps=0.6) == 1  # normalised to [0, 1] first
    assert C.effective_complexity_count(m * 100, eps=0.6, normalise=False) == 2
    assert C.effective_complexity_count(np.array([[-1.0, 0.5, 0.0]])) == 2


def test_edge_cases():
    zero = np.zeros((4, 4))
    g = np.zeros((4, 4), bool)
    g[1:3, 1:3] = True
    for value in (L.relevance_mass_accuracy_score(zero, g),
                  L.attribution_localisation_score(zero, g),
                  C.gini_index(zero), C.entropy_complexity(zero)):
        assert math.isnan(value)
    assert C.effective_complexity_count(zero) == 0
    # an all-zero map ranks nothing: chance level (|GT| / N) for the ranking metrics
    assert L.relevance_rank_accuracy_score(zero, g) == pytest.approx(0.25)
    # no ground truth: NaN, as the pointing game
    m = np.arange(16.0).reshape(4, 4)
    none = np.zeros((4, 4), bool)
    assert all(math.isnan(f(m, none)) for f in (
        L.relevance_rank_accuracy_score, L.relevance_mass_accuracy_score,
        L.attribution_localisation_score, lambda a, b: L.topk_intersection_score(a, b, k=3)))
    with pytest.raises(ValueError, match="k=17"):
        L.topk_intersection_score(m, g, k=17)
    with pytest.raises(ValueError, match="NaN or inf"):
        C.gini_index(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="non-negative"):
        C.entropy_complexity(np.array([[-1.0, 1.0]]), abs=False)


def test_registered_metrics_take_boxes_or_a_mask():
    """Ground truth: the sample's mask when it has one, else its boxes' pixels; an empty box
    list gives NaN. Columns, directions and Quantus' parameter names are registered."""
    params = SyntheticParams(seed=0, height=24, width=24, shapes=("disc",))
    image, mask = generate(params, 2)
    smap = np.random.default_rng(1).random((24, 24)).astype(np.float32)
    box = np.asarray([mask_box(mask)], np.float32)
    with_box = {"map": smap, "image": image, "boxes": box, "label": -1, "target": 0}
    with_mask = {**with_box, "mask": mask}
    assert ground_truth_mask(with_mask).sum() == mask.sum() < ground_truth_mask(with_box).sum()
    box_gt = ground_truth_mask(with_box)
    ys, xs = np.nonzero(box_gt)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box[0])
    fns = {"topk_intersection": lambda m, g: L.topk_intersection_score(m, g, k=50),
           "relevance_rank_accuracy": L.relevance_rank_accuracy_score,
           "relevance_mass_accuracy": L.relevance_mass_accuracy_score,
           "attribution_localisation": L.attribution_localisation_score}
    for name, fn in fns.items():
        spec = salbench.metrics.get(name)
        assert spec.stage == "cpu" and spec.columns == {name: "float"}
        assert direction(name) == "higher"
        kw = {"k": 50} if name == "topk_intersection" else {}
        assert spec.fn(with_mask, **spec.params(**kw))[name] == pytest.approx(fn(smap, mask))
        assert spec.fn(with_box, **spec.params(**kw))[name] == pytest.approx(fn(smap, box_gt))
        empty = {**with_box, "boxes": np.zeros((0, 4), np.float32)}
        assert math.isnan(spec.fn(empty, **spec.params(**kw))[name])
    assert set(salbench.metrics.get("topk_intersection").defaults) == {
        "k", "concept_influence", "abs", "normalise"}
    assert salbench.metrics.get("topk_intersection").defaults["k"] == 1000
    assert salbench.metrics.get("attribution_localisation").defaults == {
        "weighted": False, "max_size": 1.0, "positive_attributions": True, "abs": False,
        "normalise": True}
    assert salbench.metrics.get("effective_complexity").defaults == {
        "eps": 1e-5, "abs": True, "normalise": True}
    assert [direction(n) for n in COMPLEXITY] == ["higher", "lower", "lower"]
    with pytest.raises(BadInputError, match="mask has shape"):
        ground_truth_mask({**with_box, "mask": mask[:-1]})


def test_metrics_all_expands_to_every_registered_metric():
    cfg = parse_config({"dataset": "sample", "models": ["efficientnet_lite0"],
                        "methods": ["vg"], "metrics": "all"})
    assert [c.name for c in cfg.metrics] == salbench.metrics.names()
    assert set(LOCALISATION + COMPLEXITY) <= {c.name for c in cfg.metrics}
    assert parse_config(cfg.to_dict()) == cfg  # the recorded config names them all


def _raising_on_bright(spec, threshold: float):
    """``spec`` whose function raises on images brighter than ``threshold`` (mean in [0, 1])."""
    inner = spec.fn

    def fn(sample, **params):
        if sample["image"].mean() / 255.0 > threshold:
            raise ValueError("injected failure on a bright image")
        return inner(sample, **params)

    return dataclasses.replace(spec, fn=fn)


@pytest.mark.parametrize("family, failing", [(LOCALISATION, "relevance_mass_accuracy"),
                                             (COMPLEXITY, "complexity")])
def test_pipeline_one_samples_failure_stays_on_it(tmp_path, monkeypatch, family, failing):
    """The family through the in-process pipeline (synthetic images, boxes from the planted
    objects): every column filled; one metric raising on one sample makes that row a
    metric_error naming the metric, with its other metrics kept."""
    dataset = {"kind": "synthetic", "n": 4, "size": 32, "seed": 3}
    images = [generate(SyntheticParams(seed=3, height=32, width=32), i)[0] for i in range(4)]
    means = np.sort([im.mean() / 255.0 for im in images])
    bright = int(np.argmax([im.mean() for im in images]))
    monkeypatch.setitem(REGISTRY._entries, failing,
                        _raising_on_bright(REGISTRY.get(failing), (means[-1] + means[-2]) / 2))
    metrics = [{"name": "topk_intersection", "k": 100} if n == "topk_intersection" else n
               for n in family]
    res = salbench.evaluate(dataset=dataset, models=["tiny_smooth"], methods=["vg"],
                            metrics=[*metrics, "pointing_game"], out=tmp_path, ray=False,
                            resources={"shard_size": 4, "batch_size": 4, "torch_threads": 1})
    s = res.samples.set_index("index").sort_index()
    assert s.loc[bright, "status"] == "metric_error"
    assert s.loc[bright, "error"] == f"{failing}: ValueError: injected failure on a bright image"
    assert math.isnan(s.loc[bright, failing])
    others = [n for n in family if n != failing]
    assert np.isfinite(s.loc[bright, [*others, "pointing_game_hit"]].astype(float)).all()
    rest = s.drop(index=bright)
    assert (rest["status"] == "ok").all()
    assert np.isfinite(rest[list(family)].astype(float).to_numpy()).all()
    summ = res.summary.set_index(["method", "metric"])
    assert summ.loc[("vg", failing), ["n", "n_error"]].tolist() == [3, 1]
    for n in others:
        assert summ.loc[("vg", n), ["n", "n_error"]].tolist() == [4, 0]
    # rankings.parquet next to the summary: one method, so rank 1 everywhere, tau undefined
    ranks, agreement = split_rankings(pd.read_parquet(Path(res.run_dir) / "rankings.parquet"))
    assert set(family) <= set(ranks["metric"]) and (ranks["rank"] == 1).all()
    assert agreement["kendall_tau"].isna().all() and (agreement["n"] == 1).all()
    from salbench.report import write_report

    html = Path(write_report(res.run_dir)).read_text()
    assert 'id="rankings"' in html and "Method ranks, tiny_smooth" in html
    assert all(f"<td>{n}</td>" in html for n in family)


@pytest.mark.slow
def test_metrics_all_ray_and_in_process_agree(ray_session, tmp_path):
    """``metrics: all`` on two synthetic images with boxes (tiny model, fast profile, one
    method): every registered metric runs in one run, every row is ok, and the Ray pipeline
    and the in-process executor write the same samples, summary and rankings tables. (Equal
    tables on EfficientNet-Lite0, whose IG maps have near-ties: tests/test_numerics.py.)"""
    cfg = {"name": "all", "seed": 0, "profile": "fast",
           "dataset": {"kind": "synthetic", "n": 2, "size": 32, "seed": 3},
           "models": ["tiny_smooth"], "methods": ["vg"], "metrics": "all",
           "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1}}
    local = salbench.evaluate(cfg, out=tmp_path / "local", ray=False)
    on_ray = salbench.evaluate(cfg, out=tmp_path / "ray", ray=True)
    s = local.samples
    assert len(s) == 2 and (s["status"] == "ok").all(), s["error"].tolist()
    for name in salbench.metrics.names():
        spec = salbench.metrics.get(name)
        assert set(spec.columns) <= set(s.columns), name
    assert [c.name for c in parse_config(cfg).metrics] == salbench.metrics.names()
    # the synthetic images have boxes: the localisation family has values
    assert np.isfinite(s[list(LOCALISATION)].astype(float).to_numpy()).all()
    pd.testing.assert_frame_equal(*[r.samples.drop(columns=["run_id"]) for r in (local, on_ray)],
                                  check_exact=True)
    pd.testing.assert_frame_equal(local.summary, on_ray.summary, check_exact=True)
    pd.testing.assert_frame_equal(
        *[pd.read_parquet(Path(r.run_dir) / "rankings.parquet") for r in (local, on_ray)],
        check_exact=True)
