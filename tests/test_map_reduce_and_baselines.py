"""IDGI's two open choices as config values (issue 26, item 8): a method entry's own
``map_reduce``, and ``baseline: preprocessed_zero`` for the IG-family / IDGI methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salbench
from salbench.config import parse_config
from salbench.errors import ConfigError
from salbench.keys import method_key

BASE = {
    "name": "mr",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 2, "size": 32, "seed": 3},
    "models": ["tiny_smooth"],
    "metrics": ["insertion"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}
METHODS = [
    {"name": "vg", "alias": "vg_abs"},
    {"name": "vg", "map_reduce": "sum", "alias": "vg_sum"},
    "gradcam",
    {"name": "gradcam", "map_reduce": "max_abs", "alias": "gradcam_max"},
]


def test_per_method_map_reduce_in_the_config():
    cfg = parse_config({**BASE, "methods": METHODS})
    vg_abs, vg_sum, gradcam, gradcam_max = cfg.methods
    get = salbench.methods.get
    assert cfg.map_reduce_for(vg_abs, get("vg")) == "abs_sum"  # the run's default
    assert cfg.map_reduce_for(vg_sum, get("vg")) == "sum"  # the entry's own
    assert cfg.map_reduce_for(gradcam, get("gradcam")) == "sum"  # the method's registered
    assert cfg.map_reduce_for(gradcam_max, get("gradcam")) == "max_abs"  # entry wins
    assert "map_reduce" not in vg_sum.call_params()  # not a parameter of the function
    assert method_key(cfg, vg_abs) != method_key(cfg, vg_sum)
    assert parse_config(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"methods\[0\]: map_reduce"):
        parse_config({**BASE, "methods": [{"name": "vg", "map_reduce": "mean"}]})


def test_the_pipeline_reduces_each_method_its_own_way(tmp_path):
    res = salbench.evaluate({**BASE, "methods": METHODS[:2], "save_maps": True}, ray=False,
                            out=tmp_path)
    rows = res.samples.sort_values(["sample_id"])
    maps = {}
    for method in ("vg_abs", "vg_sum"):
        sel = rows[rows["method"] == method]
        maps[method] = np.stack([
            np.frombuffer(r["map"], np.float16).reshape(r["map_height"], r["map_width"])
            for _, r in sel.iterrows()]).astype(np.float32)
    assert (maps["vg_abs"] >= 0).all()
    assert (maps["vg_sum"] < 0).any()  # signed: the channel sum, not its absolute values
    assert (np.abs(maps["vg_sum"]) <= maps["vg_abs"] + 1e-3).all()


@pytest.mark.parametrize("name", ["ig", "idgi_ig"])
def test_preprocessed_zero_baseline_is_the_models_mean_colour(name, smooth_model, images32):
    x = images32[:2]
    with torch.no_grad():
        t = smooth_model(x).argmax(1)
    res = salbench.methods.attribute_with_info(name, smooth_model, x, t, steps=16,
                                               baseline="preprocessed_zero", score="logit")
    mean_image = smooth_model.mean.view(1, 3, 1, 1).expand_as(x)
    with torch.no_grad():
        # the normalised reference is zero
        assert torch.allclose((mean_image - smooth_model.mean) / smooth_model.std,
                              torch.zeros_like(x))
        delta = (smooth_model(x) - smooth_model(mean_image))[torch.arange(2), t]
    torch.testing.assert_close(res.info["score_delta"], delta, atol=1e-5, rtol=1e-5)
    black = salbench.methods.attribute(name, smooth_model, x, t, steps=16, score="logit")
    assert not torch.allclose(res.attr, black)


def test_preprocessed_zero_on_gig_and_errors(smooth_model, images32):
    x = images32[:1]
    a = salbench.methods.attribute("gig", smooth_model, x, 0, steps=8,
                                   baseline="preprocessed_zero")
    assert a.shape == x.shape and torch.isfinite(a).all()
    with pytest.raises(ValueError, match="preprocessed_zero"):
        salbench.methods.attribute("ig", torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)), x, 0, steps=4,
            baseline="preprocessed_zero")
