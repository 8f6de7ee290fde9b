"""Settings objects behind long signatures: the registered keyword defaults and the settings
dataclasses agree, and a settings object gives the same result as the same keywords."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import salbench
from salbench.methods.igos import IgosSettings, igos_optimize
from salbench.metrics import pic
from salbench.metrics.pic import PicSettings


def _defaults(cls):
    return {f.name: f.default for f in dataclasses.fields(cls)}


def test_igos_registered_defaults_are_the_settings_defaults():
    assert salbench.methods.get("igos").defaults == _defaults(IgosSettings)


def test_igos_settings_object_equals_keywords(smooth_model, images32):
    x = images32[:2]
    with torch.no_grad():
        t = smooth_model(x).argmax(1)
    kw = dict(mask_size=6, iterations=2, ig_steps=3, l1_coeff=0.01, seed=3)
    by_name = igos_optimize(smooth_model, x, t, **kw)
    by_settings = igos_optimize(smooth_model, x, t, IgosSettings(**kw))
    assert torch.equal(by_name.mask, by_settings.mask)
    assert torch.equal(by_name.objective, by_settings.objective)
    # the settings give the values: a different one changes the result
    other = igos_optimize(smooth_model, x, t, IgosSettings(**kw), l1_coeff=5.0)
    assert not torch.equal(other.objective, by_name.objective)
    with pytest.raises(TypeError, match="ig_stpes"):
        igos_optimize(smooth_model, x, t, ig_stpes=3)


@pytest.mark.parametrize("name", ["sic", "aic", "sic_msssim", "aic_msssim"])
def test_pic_registered_defaults_are_the_settings_defaults(name):
    params = salbench.metrics.get(name).params()
    shared = {k: v for k, v in _defaults(PicSettings).items() if k in params}
    assert set(shared) == {"thresholds", "min_pred", "keep_monotonous", "num_points",
                           "mask_fraction", "seed", "num_workers", "bokeh"}
    for key, value in shared.items():
        assert tuple(params[key]) == value if key == "thresholds" else params[key] == value


def test_pic_blur_registered_defaults_are_the_settings_defaults():
    params = salbench.metrics.get("pic_blur").params()
    assert params["blur_radius"] == PicSettings().blur_radius
    assert params["steps"] == pic.PIC_BLUR_STEPS


def test_pic_settings_are_checked_and_normalised():
    s = PicSettings(thresholds=[0.1, 0.5])
    assert s.thresholds == (0.1, 0.5) and isinstance(s.thresholds, tuple)
    with pytest.raises(ValueError, match="info must be one of"):
        PicSettings(info="png")
    with pytest.raises(ValueError, match="bokeh must be one of"):
        PicSettings(bokeh="gauss")
    with pytest.raises(ValueError, match="ascending"):
        PicSettings(thresholds=(0.5, 0.1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.info = "msssim"  # type: ignore[misc]


def test_pic_curve_settings_object_equals_keywords():
    rng = np.random.default_rng(0)
    img = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    smap = rng.random((24, 24))
    mask = pic.generate_random_mask(24, 24, 0.05, seed=1)

    def predict(images):  # brighter images are "more predictive": a monotone toy score
        return np.asarray(images, np.float64).mean(axis=(1, 2, 3)) / 255.0

    kw = dict(thresholds=(0.05, 0.2, 0.5), num_points=11, keep_monotonous=False)
    by_name = pic.pic_curve(img, smap, mask, predict, **kw)
    by_settings = pic.pic_curve(img, smap, mask, predict, PicSettings(**kw))
    assert by_name.status == by_settings.status
    np.testing.assert_array_equal(by_name.y, by_settings.y)
    np.testing.assert_array_equal(by_name.levels, by_settings.levels)
    assert len(by_name.x) == 11 and by_name.thresholds == (0.05, 0.2, 0.5)
    with pytest.raises(TypeError, match="treshold"):
        pic.pic_curve(img, smap, mask, predict, treshold=0.1)


def test_samp_pp_registered_defaults_are_the_settings_defaults():
    from salbench.methods.samp import SampSettings, samp_path

    expected = {k: v for k, v in _defaults(SampSettings).items() if k != "record"}
    assert salbench.methods.get("samp_pp").defaults == expected
    with pytest.raises(TypeError, match="stepsize"):
        samp_path(None, torch.zeros(1, 3, 4, 4), torch.zeros(1, dtype=torch.long), stepsize=2)
