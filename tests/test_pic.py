"""PIC metrics (SIC / AIC, MS-SSIM variant, pic_blur) and MS-SSIM.

Reference: the PAIR ``saliency`` package 0.2.1 (``compute_pic_metric``). It calls ``np.trapz``,
removed in NumPy 2.4, so its module's ``np`` is replaced by a shim *in PAIR's module only*.
"""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import salbench
from salbench.metrics import pic
from salbench.metrics.msssim import MIN_SIDE, ms_ssim, upsampled_size

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture()
def pair(monkeypatch):
    """PAIR's pic module with a NumPy shim (trapz, quantile(interpolation=)) in its namespace."""
    ppic = pytest.importorskip("saliency.metrics.pic")

    def quantile(a, q, *args, interpolation=None, **kw):
        if interpolation is not None:
            kw["method"] = interpolation
        return np.quantile(a, q, *args, **kw)

    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.trapz, shim.quantile = np.trapezoid, quantile
    monkeypatch.setattr(ppic, "np", shim)
    # PAIR's griddata under a threaded OpenBLAS crawls on a busy machine (see
    # pic.single_threaded_blas); one BLAS thread changes no number.
    with pic.single_threaded_blas():
        yield ppic


@pytest.fixture(autouse=True)
def _fresh_cache():
    pic.BOKEH_CACHE.clear()
    yield
    pic.BOKEH_CACHE.clear()


def photo(name: str, size: int = 64) -> np.ndarray:
    img = getattr(skimage_data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.array(Image.fromarray(img[..., :3]).resize((size, size), Image.BILINEAR))


def maps_for(size: int = 64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - 0.45 * size) ** 2 + (xx - 0.4 * size) ** 2) / (0.05 * size**2))
    return {
        "random": rng.random((size, size)).astype(np.float32),
        "blob": (blob + 0.1 * rng.random((size, size))).astype(np.float32),
    }


# A deterministic 3-class "model" on uint8 images: logits from colour means and contrast.
_W = np.array([[4.0, -2.0, -1.0, 3.0], [-1.0, 3.0, -2.0, 1.0], [-2.0, -1.0, 4.0, -2.0]])


def np_logits(batch: np.ndarray) -> np.ndarray:
    b = np.asarray(batch, np.float64) / 255.0
    feats = np.stack([b[..., 0].mean((1, 2)), b[..., 1].mean((1, 2)), b[..., 2].mean((1, 2)),
                      np.abs(np.diff(b, axis=2)).mean((1, 2, 3)) * 10], axis=1)
    return feats @ _W.T


def sic_predict(cls: int):
    def f(batch):
        z = np_logits(batch)
        p = np.exp(z - z.max(1, keepdims=True))
        return list(p[:, cls] / p.sum(1))
    return f


def aic_predict(cls: int, ref: np.ndarray):
    """1.0 while the class is top-1 and the image keeps 60% of ``ref``'s fine detail."""
    detail = lambda b: np.abs(np.diff(np.asarray(b, np.float64), axis=2)).mean((1, 2, 3))  # noqa: E731
    floor = 0.6 * detail(ref[None])[0]
    return lambda batch: [float(a and d >= floor) for a, d in
                          zip(np_logits(batch).argmax(1) == cls, detail(batch), strict=True)]


def pair_run(ppic, img, smap, mask, predict, **kw):
    """(status, auc, curve_y) of PAIR, with its exception mapped onto our skip statuses."""
    try:
        r = ppic.compute_pic_metric(img, smap, mask, predict, list(pic.DEFAULT_THRESHOLDS),
                                    min_pred_value=kw.get("min_pred", 0.0), num_data_points=1000)
    except ppic.ComputePicMetricError as exc:
        msg = str(exc)
        if "min_pred_value" in msg:
            return "skip_min_pred", math.nan, None
        if "entropy" in msg:
            return "skip_blurred_info", math.nan, None
        return "skip_blurred_pred", math.nan, None
    return "ok", float(r.auc), np.asarray(r.curve_y)


# ------------------------------------------------------------------ bokeh images vs PAIR


def test_bokeh_image_equals_pair_bit_for_bit(pair):
    img = photo("astronaut", 48)
    rng = np.random.default_rng(0)
    for frac in (0.0, 0.01, 0.2, 0.8):
        mask = rng.random((48, 48)) < frac
        np.testing.assert_array_equal(pic.bokeh_image(img, mask),
                                      pair.create_blurred_image(img, mask))
    gray = img[..., 0].copy()
    mask = rng.random((48, 48)) < 0.1
    np.testing.assert_array_equal(pic.bokeh_image(gray, mask),
                                  pair.create_blurred_image(gray, mask))
    assert pic.webp_size(img) == pair.estimate_image_entropy(img)
    full = np.ones((48, 48), bool)
    np.testing.assert_array_equal(pic.bokeh_image(img, full), img)


# ------------------------------------------------------------------ PIC vs PAIR


@pytest.mark.parametrize("kind", ["sic", "aic"])
def test_pic_curve_agrees_with_pair(pair, kind):
    """Same image, map, mask and predict -> same skips, AUC within 1e-3 (here: equal)."""
    seen = set()
    for name in ("chelsea", "coffee", "astronaut"):
        img = photo(name)
        cls = int(np_logits(img[None]).argmax())
        mask = pic.generate_random_mask(64, 64, 0.01, seed=3)
        for mname, smap in maps_for().items():
            for other in (False, True):  # the original class, or another (often skipped)
                c = (cls + 1) % 3 if other else cls
                predict = sic_predict(c) if kind == "sic" else aic_predict(c, img)
                ours = pic.pic_curve(img, smap, mask, predict, num_workers=2)
                status, auc, y = pair_run(pair, img, smap, mask, predict)
                assert ours.status == status, (name, mname, other)
                seen.add(status)
                if status == "ok":
                    assert abs(ours.auc - auc) < 1e-3, (name, mname, ours.auc, auc)
                    np.testing.assert_allclose(ours.y, y, atol=1e-9)
                else:
                    assert math.isnan(ours.auc) and ours.message
    assert "ok" in seen and "skip_blurred_pred" in seen


def test_min_pred_skip_matches_pair(pair):
    img = photo("chelsea")
    cls = int(np_logits(img[None]).argmax())
    mask = pic.generate_random_mask(64, 64, 0.01, seed=0)
    predict = sic_predict(cls)
    p = predict(img[None])[0]
    ours = pic.pic_curve(img, maps_for()["blob"], mask, predict, min_pred=p + 1e-6)
    assert ours.status == "skip_min_pred"
    assert pair_run(pair, img, maps_for()["blob"], mask, predict, min_pred=p + 1e-6)[0] == (
        "skip_min_pred")


def test_a_constant_map_is_degenerate_not_a_plausible_sic(pair):
    """A constant map has no ranking. Called directly, ``pic_curve`` (like PAIR's, tie rule
    of np.quantile: every pixel >= the quantile) reveals everything at every threshold and
    scores the diagonal, an SIC of 0.5 that means nothing; so a run never scores such a map:
    the model stage flags it ``degenerate_map`` before any metric (``runner.degenerate_reason``;
    the run-level behaviour is pinned in tests/test_fidelity.py)."""
    from salbench.runner import degenerate_reason

    img = photo("coffee")
    cls = int(np_logits(img[None]).argmax())
    mask = pic.generate_random_mask(64, 64, 0.01, seed=0)
    smap = np.full((64, 64), 0.3, np.float32)
    assert degenerate_reason(smap) == "constant map (every pixel 0.3): no pixel ranking"
    assert degenerate_reason(np.zeros((64, 64))).startswith("constant map (every pixel 0)")
    nan_map = smap.copy()
    nan_map[0, :5] = np.nan
    assert degenerate_reason(nan_map) == "5 of 4096 map pixels are NaN or inf"
    assert degenerate_reason(maps_for(64)["blob"]) is None
    ours = pic.pic_curve(img, smap, mask, sic_predict(cls))
    np.testing.assert_array_equal(ours.levels, pic.webp_size(img))  # all bokeh = original
    assert ours.auc == pytest.approx(0.5, abs=1e-12)  # the artefact: the diagonal y = x
    assert pair_run(pair, img, smap, mask, sic_predict(cls))[1] == pytest.approx(ours.auc)


def test_edge_cases_give_statuses_not_exceptions():
    mask = pic.generate_random_mask(32, 32, 0.01, seed=0)
    zero = np.zeros((32, 32, 3), np.uint8)
    smap = maps_for(32)["blob"]
    c = pic.pic_curve(zero, smap, mask, sic_predict(0))
    assert c.status == "skip_blurred_info" and math.isnan(c.auc)
    bad = smap.copy()
    bad[3, 4] = np.nan
    img = photo("chelsea", 32)
    c = pic.pic_curve(img, bad, mask, sic_predict(0))
    assert c.status == pic.ERROR_STATUS and "NaN" in c.message and np.isnan(c.y).all()
    c = pic.pic_curve(img.astype(np.float32), smap, mask, sic_predict(0))
    assert c.status == pic.ERROR_STATUS and "uint8" in c.message
    c = pic.pic_curve(img, smap[:8], mask, sic_predict(0))
    assert c.status == pic.ERROR_STATUS


# ------------------------------------------------------------------ post-processing by hand


def test_curve_post_processing_hand_computed():
    kw = dict(num_points=5, thresholds=(0.1, 0.2))
    # raw sizes: original 200, blurred 100 -> levels (150, 125) -> x = (0.5, 0.25)
    mono = pic.curve_from_levels(200, 100, [125, 150], 1.0, 0.0, [0.6, 0.2], **kw)
    # x = (0.25, 0.5), y = running max (0.6, 0.6); points + (0,0), (1,1); grid 0, .25, .., 1
    np.testing.assert_allclose(mono.y, [0, 0.6, 0.6, 0.8, 1.0])
    assert mono.auc == pytest.approx(0.25 * (0 + 0.6 + 0.6 + 0.8 + 0.5))
    raw = pic.curve_from_levels(200, 100, [125, 150], 1.0, 0.0, [0.6, 0.2],
                                keep_monotonous=False, **kw)
    np.testing.assert_allclose(raw.y, [0, 0.6, 0.2, 0.6, 1.0])
    assert raw.auc == pytest.approx(0.25 * (0.6 + 0.2 + 0.6 + 0.5))
    # clipping: a level above the original's -> 1, a prediction below the blurred one -> 0;
    # predictions normalised between blurred (0.2) and original (0.6)
    c = pic.curve_from_levels(200, 100, [150, 300], 0.6, 0.2, [0.1, 0.5], **kw)
    np.testing.assert_allclose(c.y, [0, 0, 0, 0.375, 1.0])
    # the skip rules, in PAIR's order
    assert pic.curve_from_levels(200, 100, [], 0.5, 0.1, [], min_pred=0.6,
                                 **kw).status == "skip_min_pred"
    assert pic.curve_from_levels(100, 100, [], 0.5, 0.6, [], **kw).status == "skip_blurred_info"
    assert pic.curve_from_levels(200, 100, [], 0.5, 0.5, [], **kw).status == "skip_blurred_pred"


def test_interpolation_matches_interp1d_with_tied_levels():
    from scipy.interpolate import interp1d

    for levels, vals in (([0.3, 0.1, 0.3, 0.8], [0.2, 0.1, 0.5, 0.9]),
                         ([0.0, 0.5, 0.0], [0.7, 0.8, 0.9])):  # ties with the (0, 0) anchor
        x, y = pic.interpolate_curve(levels, vals, 1001)
        f = interp1d([*levels, 0.0, 1.0], [*vals, 0.0, 1.0])  # PAIR's call, point by point
        np.testing.assert_array_equal(y[:-1], [float(f(v)) for v in x[:-1]])
        assert x[-1] == 1.0 and y[-1] == 1.0 and len(x) == 1001
    # a tie takes the last point in sorted (stable) order: at 0 the anchor, at 0.3 the 0.5
    assert y[0] == 0.0
    _, y = pic.interpolate_curve([0.3, 0.3], [0.2, 0.5], 11)
    assert y[3] == 0.5  # the segment from the left ends at the first, the next starts at
    assert y[2] == pytest.approx(0.2 * 2 / 3) and y[4] == pytest.approx(0.5 + 0.5 / 7)


def test_aggregate_median_mean_and_skips():
    x = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    mk = lambda y, status="ok": pic.PicCurve(status, x, np.asarray(y, float), 0.0)  # noqa: E731
    curves = [mk([0, 0.2, 0.4, 0.6, 1]), mk([0, 0.4, 0.4, 0.4, 1]), mk([0, 1, 1, 1, 1]),
              mk([np.nan] * 5, "skip_blurred_pred")]
    ax, ay, auc = pic.aggregate(curves, kind="aic")
    np.testing.assert_allclose(ay, [0, 1.6 / 3, 1.8 / 3, 2.0 / 3, 1])
    assert auc == pytest.approx(np.trapezoid(ay, x))
    _, my, mauc = pic.aggregate(curves, kind="sic")
    np.testing.assert_allclose(my, [0, 0.4, 0.4, 0.6, 1])
    assert mauc == pytest.approx(0.25 * (0.4 + 0.4 + 0.6 + 0.5))
    with pytest.raises(ValueError, match="ok"):
        pic.aggregate(curves[3:], kind="sic")
    with pytest.raises(ValueError, match="kind"):
        pic.aggregate(curves, kind="mean")


def test_aggregate_binned_hand_computed():
    levels = np.array([[0.05, 0.15, 0.95], [0.06, 0.5, 1.0]])
    values = np.array([[0.2, 0.4, 0.9], [0.4, np.nan, 1.0]])
    centres, curve, auc = pic.aggregate_binned(levels, values, kind="aic", bins=10)
    assert curve[0] == pytest.approx(0.3) and curve[1] == pytest.approx(0.4)
    assert curve[9] == pytest.approx(0.95)  # 0.95 and 1.0 share the last bin
    assert curve[5] == pytest.approx(0.4 + (0.95 - 0.4) * 4 / 8)  # empty bin: interpolated
    assert auc == pytest.approx(curve.mean())


# ------------------------------------------------------------------ MS-SSIM


def test_ms_ssim_matches_pytorch_msssim():
    ref = pytest.importorskip("pytorch_msssim")
    g = torch.Generator().manual_seed(0)
    for h, w in ((161, 161), (175, 203)):
        x = torch.rand(2, 3, h, w, generator=g) * 255
        x = F.avg_pool2d(x, 5, 1, 2)  # some structure
        y = (x + torch.randn(2, 3, h, w, generator=g) * 20).clamp(0, 255)
        want = ref.ms_ssim(x, y, data_range=255, size_average=False)
        assert (ms_ssim(x, y) - want).abs().max() < 1e-4
        assert (ms_ssim(x.double(), y.double()).float() - want).abs().max() < 1e-4
    assert torch.equal(ms_ssim(x, x), torch.ones(2))


def test_ms_ssim_small_images_are_upsampled_bilinear():
    ref = pytest.importorskip("pytorch_msssim")
    assert upsampled_size(64, 64) == (MIN_SIDE, MIN_SIDE)
    assert upsampled_size(32, 48) == (161, 242) and upsampled_size(224, 300) == (224, 300)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 40, 64, generator=g) * 255
    y = (x + 30 * torch.rand(1, 3, 40, 64, generator=g)).clamp(0, 255)
    size = upsampled_size(40, 64)
    up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    want = ref.ms_ssim(up(x), up(y), data_range=255, size_average=False)
    assert (ms_ssim(x, y) - want).abs().max() < 1e-4
    with pytest.raises(ValueError, match="161"):
        ms_ssim(x, y, upsample_small=False)


def test_msssim_information_level_is_msssim_of_pairs_bokeh(pair):
    img = photo("astronaut")
    cls = int(np_logits(img[None]).argmax())
    mask = pic.generate_random_mask(64, 64, 0.01, seed=0)
    smap = maps_for()["blob"]
    c = pic.pic_curve(img, smap, mask, sic_predict(cls), info="msssim")
    assert c.status == "ok" and c.level_original == 1.0 and 0 < c.level_blurred < 1
    t = (0.05, 0.5)
    bok = [pair.create_blurred_image(img, (smap >= np.quantile(smap, 1 - th)) | mask) for th in t]
    chw = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].double()  # noqa: E731
    want = [float(ms_ssim(chw(b), chw(img))) for b in bok]
    got = [c.levels[pic.DEFAULT_THRESHOLDS.index(th)] for th in t]
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert (np.diff(c.x) > 0).all() and 0 < c.auc < 1


# ------------------------------------------------------------------ seeds, determinism


def test_random_mask_seeding():
    img = photo("chelsea", 32)
    m = pic.image_mask(img, 0.01, seed=0)
    assert m.sum() == int(32 * 32 * 0.01) and m.dtype == bool
    np.testing.assert_array_equal(m, pic.image_mask(img.copy(), 0.01, seed=0))
    assert not np.array_equal(m, pic.image_mask(img, 0.01, seed=1))
    assert not np.array_equal(m, pic.image_mask(photo("coffee", 32), 0.01, seed=0))
    np.testing.assert_array_equal(pic.generate_random_mask(8, 8, 0.25, 5),
                                  pic.generate_random_mask(8, 8, 0.25, 5))


def _batch(model, names=("chelsea", "coffee", "astronaut", "rocket"), size=32):
    x = torch.stack([torch.from_numpy(photo(n, size)).permute(2, 0, 1).float() / 255
                     for n in names])
    with torch.no_grad():
        target = model(x).argmax(1)
    blob = torch.from_numpy(maps_for(size)["blob"])
    maps = torch.stack([blob, torch.from_numpy(maps_for(size)["random"]), blob.T, 1 - blob])
    return x, target, maps[: len(names)]


@pytest.mark.parametrize("name", ["sic", "aic", "sic_msssim", "aic_msssim"])
def test_registry_metric_equals_pic_curve_and_pair(smooth_model, pair, name):
    """Batched registry metric == per-sample pic_curve == PAIR on the same model and masks."""
    spec = salbench.metrics.get(name)
    assert spec.stage == "model" and spec.fast == {}
    x, target, maps = _batch(smooth_model)
    out = spec.fn(smooth_model, x, target, maps, **spec.params(internal_batch_size=7))
    assert set(out) == set(spec.columns)
    kind, info = name.split("_")[0], "msssim" if "msssim" in name else "webp"
    statuses = []
    for i in range(len(x)):
        img = salbench.models.base.to_uint8(x[i])
        mask = pic.image_mask(img, 0.01, seed=0)
        predict = pic.predictor(smooth_model, int(target[i]), kind)
        c = pic.pic_curve(img, maps[i].numpy(), mask, predict, info=info)
        statuses.append(c.status)
        assert out[f"{name}_skipped"][i] == (0.0 if c.ok else 1.0)
        if c.ok:
            assert out[f"{name}_auc"][i] == c.auc
            np.testing.assert_array_equal(out[f"{name}_curve"][i], c.y[::10].astype(np.float32))
        else:
            assert math.isnan(out[f"{name}_auc"][i]) and np.isnan(out[f"{name}_curve"][i]).all()
        if info == "webp":
            status, auc, _ = pair_run(pair, img, maps[i].numpy(), mask, predict)
            assert status == c.status and (not c.ok or abs(auc - c.auc) < 1e-3)
    assert "ok" in statuses


def test_registry_batching_seed_and_cache_do_not_change_results(smooth_model):
    spec = salbench.metrics.get("sic")
    x, target, maps = _batch(smooth_model)
    full = spec.fn(smooth_model, x, target, maps, **spec.params(num_workers=1))
    pic.BOKEH_CACHE.clear()
    old, pic.BOKEH_CACHE.max_bytes = pic.BOKEH_CACHE.max_bytes, 0  # no cache
    try:
        single = [spec.fn(smooth_model, x[i:i + 1], target[i:i + 1], maps[i:i + 1],
                          **spec.params(num_workers=2)) for i in (2, 0, 3, 1)]
    finally:
        pic.BOKEH_CACHE.max_bytes = old
    # The same batch without the cache and on 2 workers: the very same numbers.
    pic.BOKEH_CACHE.clear()
    old, pic.BOKEH_CACHE.max_bytes = pic.BOKEH_CACHE.max_bytes, 0
    try:
        again = spec.fn(smooth_model, x, target, maps, **spec.params(num_workers=2))
    finally:
        pic.BOKEH_CACHE.max_bytes = old
    np.testing.assert_array_equal(again["sic_auc"], full["sic_auc"])
    # One sample at a time: the model's forward pass itself may round differently with the
    # batch size (tiny_smooth's logits moved 4.5e-7 between batches of 64 and of 1 on an
    # Intel Xeon, 2026-12-05; bit-equal on an AMD EPYC), so equal to float32 rounding.
    for j, i in enumerate((2, 0, 3, 1)):
        np.testing.assert_allclose(single[j]["sic_auc"], full["sic_auc"][i:i + 1],
                                   rtol=1e-5, atol=0)
    other = spec.fn(smooth_model, x, target, maps, **spec.params(seed=1))
    ok = ~np.isnan(full["sic_auc"]) & ~np.isnan(other["sic_auc"])
    assert ok.any() and not np.array_equal(full["sic_auc"][ok], other["sic_auc"][ok])


def test_registry_nan_map_and_skip_encoding(smooth_model):
    spec = salbench.metrics.get("aic")
    x, target, maps = _batch(smooth_model, names=("chelsea", "coffee"))
    maps[1, 0, 0] = float("nan")
    wrong = (target + 1) % 10  # never the top-1 class: AIC skips (blurred as predictive)
    out = spec.fn(smooth_model, x, wrong, maps, **spec.params())
    assert out["aic_skipped"][0] == 1.0 and math.isnan(out["aic_auc"][0])
    assert math.isnan(out["aic_skipped"][1]) and math.isnan(out["aic_auc"][1])


def test_pic_blur_preset(smooth_model):
    spec = salbench.metrics.get("pic_blur")
    assert spec.params()["steps"] == 24 and spec.params()["blur_radius"] == 20.0
    x, target, maps = _batch(smooth_model)
    out = spec.fn(smooth_model, x, target, maps, **spec.params())
    assert set(out) == set(spec.columns)
    img = salbench.models.base.to_uint8(x[0])
    base = pic.blur_base(img, 20.0)
    np.testing.assert_array_equal(
        base, np.asarray(Image.fromarray(img).filter(__import__("PIL.ImageFilter").ImageFilter
                                                     .GaussianBlur(20))))
    masks = pic.count_masks(maps[0].numpy(), [j / 24 for j in range(25)])
    assert [int(m.sum()) for m in masks] == [round(j / 24 * 32 * 32) for j in range(25)]
    for i in range(len(x)):
        c = pic.pic_curve(salbench.models.base.to_uint8(x[i]), maps[i].numpy(), None,
                          pic.predictor(smooth_model, int(target[i]), "sic"), bokeh="blur",
                          thresholds=pic.PIC_BLUR_THRESHOLDS)
        assert (out["pic_blur_sic_auc"][i] == c.auc) or (c.status != "ok" and math.isnan(
            out["pic_blur_sic_auc"][i]))
        lv = out["pic_blur_levels"][i]
        assert len(lv) == 25
        if np.isfinite(lv).all():
            assert lv[0] == 0.0 and lv[-1] == 1.0
            assert out["pic_blur_prob_ratio"][i][-1] == pytest.approx(1.0)
            assert out["pic_blur_top1"][i][-1] == 1.0  # target = top-1 of the original
    assert np.isfinite(out["pic_blur_sic_auc"]).any()


@pytest.mark.parametrize("name", ["sic", "aic", "sic_msssim", "pic_blur"])
def test_split_form_equals_the_model_stage_function(smooth_model, name):
    """prepare (CPU) -> model_scores (model) -> finalize (CPU), as the pipeline runs it,
    gives the columns of the all-in-one metric, skipped samples included (to float32
    rounding: the two score the bokeh images in different batches)."""
    spec = salbench.metrics.get(name)
    assert spec.prepare is not None and spec.finalize is not None
    x, target, maps = _batch(smooth_model)
    target = target.clone()
    target[1] = (target[1] + 1) % 10  # a sample the protocol skips
    with torch.no_grad():
        p = torch.softmax(smooth_model(x), 1).gather(1, target.view(-1, 1)).squeeze(1)
    min_pred = float(p.sort().values[1])  # the sample(s) below it are skipped (SIC)
    params = spec.params(internal_batch_size=5, min_pred=min_pred)
    whole = spec.fn(smooth_model, x, target, maps, **params)
    for i in range(len(x)):
        sample = {"image": salbench.models.base.to_uint8(x[i]), "map": maps[i].numpy()}
        _key, state, images = spec.prepare(sample, **params)
        prob, top1 = pic.model_scores(smooth_model, list(images), [int(target[i])] * len(images))
        cols = spec.finalize(state, prob, top1, **params)
        assert set(cols) == set(spec.columns)
        for col, value in cols.items():  # scored in other batches: float32 rounding (see
            # test_registry_batching_seed_and_cache_do_not_change_results)
            np.testing.assert_allclose(np.asarray(value), np.asarray(whole[col][i]),
                                       rtol=1e-5, atol=1e-6, err_msg=col)
    assert np.nanmax([whole[c] for c in whole if c.endswith("_skipped")]) == 1.0
    assert np.isfinite([whole[c] for c in whole if c.endswith("_auc")]).any()


def test_dataset_level_summary_median_and_mean():
    import pandas as pd

    rows = pd.DataFrame({
        "sic_skipped": [0.0, 0.0, 0.0, 1.0],
        "sic_curve": [np.array([0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0]),
                      np.array([0.0, 0.2, 1.0]), np.array([np.nan] * 3)],
    })
    sic_summary = salbench.metrics.get("sic").summary
    value, n = sic_summary(rows)["sic_aggregate_auc"]
    assert n == 3 and value == pytest.approx(0.25 * (0 + 0.2) + 0.25 * (0.2 + 1))  # median
    aic_rows = rows.rename(columns={"sic_skipped": "aic_skipped", "sic_curve": "aic_curve"})
    value, n = salbench.metrics.get("aic").summary(aic_rows)["aic_aggregate_auc"]
    assert value == pytest.approx(0.25 * (0 + 0.4) + 0.25 * (0.4 + 1))  # mean of 1, 0, .2
