"""Plugins: a user's module (tests/plugins/toy.py) registering a method, a metric, a model
and a dataset runs through the Ray pipeline on two model workers next to the built-ins; bad
plugins fail with messages that say what was expected, and in a run become error rows."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add it
    sys.path.insert(0, str(ROOT))

import salbench  # noqa: E402
from salbench.config import parse_config  # noqa: E402
from salbench.errors import BadInputError, ConfigError  # noqa: E402
from salbench.methods.baselines import make_baseline  # noqa: E402
from salbench.metrics.registry import check_columns  # noqa: E402
from tests.plugins import plugin_sandbox  # noqa: E402

TOY = "tests.plugins.toy"
RESOURCES = {"shard_size": 2, "batch_size": 2, "torch_threads": 1}


@pytest.fixture(autouse=True, scope="module")
def toy():
    """The plugin module, imported (registering its plugins) for this module's tests only."""
    with plugin_sandbox("tests.plugins"):
        yield importlib.import_module(TOY)


def _small(**changes) -> dict:
    cfg = {"dataset": {"kind": "synthetic", "n": 2, "size": 32, "seed": 1},
           "models": ["tiny_smooth"], "methods": ["vg"], "metrics": ["insertion"],
           "resources": RESOURCES}
    return {**cfg, **changes}


@pytest.mark.slow
def test_user_module_plugins_run_on_two_ray_workers_next_to_builtins(ray_session, toy,
                                                                    tmp_path):
    """The issue's acceptance test: everything registered in tests/plugins/toy.py (method,
    metric, model, dataset) runs on Ray workers (one AttributeActor per model, two models),
    which import the module themselves, and gives rows next to the built-ins."""
    if Path.cwd().resolve() != ROOT:
        pytest.skip("Ray workers import tests.plugins from the driver's working directory: "
                    "run pytest from the repository root")
    bad = [f"{TOY}:wrong_shape", f"{TOY}:nan_attr", f"{TOY}:wrong_device"]
    res = salbench.evaluate(
        dataset={"kind": "plugin_squares", "n": 4},
        models=["tiny_smooth", "plugin_tiny"],
        methods=["vg", {"name": "ig", "steps": 8}, "plugin_blur_ig", "plugin_pid_probe", *bad],
        metrics=["insertion", "pointing_game", "plugin_map_entropy", "plugin_masked_drop"],
        resources=RESOURCES, out=tmp_path, ray=True)
    s = res.samples
    assert len(s) == 4 * 2 * 7  # nothing dropped: samples x models x methods
    assert set(s["model"]) == {"tiny_smooth", "plugin_tiny"}
    good = s[~s["method"].isin(bad)]
    assert (good["status"] == "ok").all(), good["error"].tolist()
    assert set(good["method"]) == {"vg", "ig", "plugin_blur_ig", "plugin_pid_probe"}
    # the plugin metrics' values, next to the built-in metrics
    assert good["map_entropy"].between(0, 1).all() and good["masked_drop"].between(-1, 1).all()
    assert good["insertion_auc"].between(0, 1).all()
    assert good["pointing_game_hit"].isin([0.0, 1.0]).all()
    # the plugin method ran with its registered defaults: its score_delta is f(x) - f(x')
    # for the blurred baseline x' (sigma 2 px), recomputed here from the dataset plugin
    blur = good[good["method"] == "plugin_blur_ig"].set_index(["model", "sample_id"])
    images = {r["sample_id"]: r["image"] for r in toy.Squares(n=4).read(0, 4)}
    for (model_name, sid), row in blur.iterrows():
        model = salbench.models.load(model_name)
        x = torch.from_numpy(images[sid]).permute(2, 0, 1)[None].float() / 255
        base = make_baseline(x, "blur", blur_sigma=2.0)
        with torch.no_grad():
            f = model(torch.cat([x, base]))[:, int(row["target"])]
        assert row["score_delta"] == pytest.approx(float(f[0] - f[1]), abs=1e-5)
        assert row["completeness_error"] < 0.3 * abs(row["score_delta"])  # 8 steps
    # one worker process per model (two AttributeActors), neither of them this process
    pids = good[good["method"] == "plugin_pid_probe"].groupby("model")["worker_pid"].unique()
    assert all(len(p) == 1 for p in pids) and pids["tiny_smooth"][0] != pids["plugin_tiny"][0]
    assert os.getpid() not in {p[0] for p in pids}
    # bad methods: error rows saying what was expected, for both models; a NaN map is a
    # degenerate map (no ranking), with the count of its NaN pixels
    errors = s[s["method"].isin(bad)]
    assert len(errors) == 4 * 2 * 3
    nan_rows = errors[errors["method"] == f"{TOY}:nan_attr"]
    assert (nan_rows["status"] == "degenerate_map").all()
    assert nan_rows["error"].str.contains("map pixels are NaN or inf").all()
    errors = errors[errors["method"] != f"{TOY}:nan_attr"]
    assert (errors["status"] == "method_error").all()
    msg = errors.groupby("method")["error"].first()
    # the batch failed, so each sample was redone alone: the message is the one-sample call's
    assert "expected (1, 3, 32, 32)" in msg[f"{TOY}:wrong_shape"]
    assert "meta" in msg[f"{TOY}:wrong_device"]
    summ = res.summary.set_index(["model", "method", "metric"])
    assert summ.loc[("plugin_tiny", "plugin_blur_ig", "map_entropy"), "n"] == 4
    nan_summary = summ.loc[("tiny_smooth", f"{TOY}:nan_attr", "insertion_auc")]
    assert (nan_summary["n"], nan_summary["n_degenerate"]) == (0, 4)
    assert summ.loc[("tiny_smooth", f"{TOY}:wrong_shape", "insertion_auc"), "n_error"] == 4
    # the run's config names the plugins by import path (workers, `salbench resume`), the
    # tables by their registered names
    saved = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    assert {"name": f"{TOY}:blur_ig", "alias": "plugin_blur_ig"} in saved["methods"]
    assert saved["dataset"]["kind"] == f"{TOY}:Squares"


def test_bad_metric_outputs_become_metric_error_rows(tmp_path):
    """A model-stage metric returning the wrong number of values and a CPU metric returning a
    number instead of a dict: error rows with what was expected, the run completes."""

    @salbench.metrics.register("test_short", stage="model", columns={"short": "float"})
    def short(model, x, target, maps):
        return {"short": np.zeros(len(x) - 1)}

    @salbench.metrics.register("test_not_dict", stage="cpu", columns={"nd": "float"})
    def not_dict(sample):
        return 0.5

    # the model-stage metric failed on the batch of 2, so it was redone per sample: the
    # message is the one-sample call's
    for name, expected in (("test_short", "has 0 values for a batch of 1 images; expected "
                                          "one float per image"),
                           ("test_not_dict", "returned float; expected a dict")):
        res = salbench.evaluate(_small(metrics=["insertion", name]), out=tmp_path, ray=False)
        s = res.samples
        assert len(s) == 2 and (s["status"] == "metric_error").all()
        assert all(e.startswith(f"{name}: BadInputError") and expected in e
                   for e in s["error"]), s["error"].tolist()
        assert s["insertion_auc"].notna().all()  # the other metric's values are kept


def test_registration_checks_signatures():
    with pytest.raises(TypeError, match=r"expected a function fn\(model, x, target, "
                                        r"\*\*params\).*\(x, target\)"):
        salbench.methods.register("test_sig1")(lambda x, target: x)
    with pytest.raises(TypeError, match="every parameter after model, x, target with a "
                                        "default.*missing a required argument: 'k'"):
        @salbench.methods.register("test_sig2")
        def needs_k(model, x, target, *, k):
            return x
    with pytest.raises(TypeError, match=r"fast=\{'stepz': 2\} names \['stepz'\]"):
        @salbench.methods.register("test_sig3", fast={"stepz": 2})
        def m(model, x, target, steps=4):
            return x
    with pytest.raises(TypeError, match=r"expected a function fn\(model, x, target, maps"):
        salbench.metrics.register("test_sig4", stage="model", columns={"a": "float"})(
            lambda sample: {"a": 1.0})
    with pytest.raises(TypeError, match=r"expected a function fn\(sample, \*\*params\)"):
        salbench.metrics.register("test_sig5", stage="cpu", columns={"a": "float"})(
            lambda model, x, target, maps: {"a": 1.0})
    assert not {"test_sig1", "test_sig2", "test_sig3"} & set(salbench.methods.names())
    assert not {"test_sig4", "test_sig5"} & set(salbench.metrics.names())
    # a metric that takes the attribution / the method gets them as keywords: accepted
    salbench.metrics.register("test_sig6", stage="model", columns={"a": "float"})(
        lambda model, x, target, maps, *, attr, method: {"a": [0.0] * len(x)})


def test_metric_outputs_are_checked():
    cols = {"auc": "float", "curve": "curve"}
    with pytest.raises(BadInputError, match=r"returned list; expected a dict column -> value "
                                            r"with the columns \['auc', 'curve'\]"):
        check_columns("m", cols, [1.0], 1)
    with pytest.raises(BadInputError, match=r"expected exactly the declared \['auc', 'curve'\] "
                                            r"\(missing \['curve'\], undeclared \['x'\]\)"):
        check_columns("m", cols, {"auc": [1.0], "x": [1.0]}, 1)
    with pytest.raises(BadInputError, match="expected a number per image"):
        check_columns("m", cols, {"auc": np.zeros((2, 3)), "curve": np.zeros((2, 3))}, 2)
    with pytest.raises(BadInputError, match="expected a 1-D sequence of numbers per image"):
        check_columns("m", cols, {"auc": np.zeros(2), "curve": np.zeros(2)}, 2)
    with pytest.raises(BadInputError, match="holds str"):
        check_columns("m", cols, {"auc": "high", "curve": [0.0]})
    # batches may be arrays, tensors or lists; one sample's numpy values become plain floats
    ok = {"auc": torch.tensor([0.5, 0.25]), "curve": np.zeros((2, 3), np.float32)}
    assert check_columns("m", cols, ok, 2) is not ok
    one = check_columns("m", cols, {"auc": np.float32(0.5), "curve": np.arange(3.0)})
    assert one == {"auc": 0.5, "curve": [0.0, 1.0, 2.0]} and type(one["auc"]) is float


def test_import_paths_resolve_to_registered_plugins(toy):
    spec = salbench.methods.get(f"{TOY}:blur_ig")  # the registered spec, not a bare function
    assert spec.name == "plugin_blur_ig" and spec.fast == {"steps": 8}
    assert spec.info_columns == ("completeness_error", "score_delta")
    assert salbench.metrics.get(f"{TOY}:masked_drop").columns == {"masked_drop": "float"}
    cfg = parse_config(_small(methods=[{"name": f"{TOY}:blur_ig", "steps": 3}]))
    assert cfg.methods[0].params == {"steps": 3}
    # a plain function by import path: a method spec from its signature
    assert salbench.methods.get(f"{TOY}:wrong_shape").defaults == {}


@pytest.mark.parametrize("name, expected", [
    (f"{TOY}:no_model_argument", r"methods\[0\]: method .*expected a function "
                                 r"fn\(model, x, target, \*\*params\)"),
    ("tests.plugins.nope:fn", r"methods\[0\]: .*cannot import module 'tests.plugins.nope' "
                              r"\(No module named .*expected a module on sys.path"),
    (f"{TOY}:missing", r"methods\[0\]: .*has no attribute 'missing'; it has \[.*'blur_ig'"),
    (f"{TOY}:", r"methods\[0\]: .*an import path is 'package.module:attribute'"),
])
def test_bad_method_names_fail_at_config_time(name, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config(_small(methods=[name]))


def test_bad_metric_and_model_names_fail_at_config_time():
    with pytest.raises(ConfigError, match=r"metrics\[0\]: metric .*resolves to function; "
                                          r"register it with @salbench.metrics.register"):
        parse_config(_small(metrics=[f"{TOY}:wrong_shape"]))
    with pytest.raises(ConfigError, match=r"models\[0\]: unknown model 'tiny'.*or an import "
                                          r"path 'package.module:function'"):
        parse_config(_small(models=["tiny"]))


def test_registering_again(toy):
    importlib.reload(toy)  # the same functions registered again (a re-run notebook cell)
    assert salbench.methods.get("plugin_blur_ig").fn is toy.blur_ig
    with pytest.raises(ValueError, match=r"method 'vg' is already registered by "
                                         r"salbench.methods.gradient.*; test_plugins.*registers"):
        salbench.methods.register("vg")(lambda model, x, target: x)


def _local_plugin(model, x, target):
    """A method in this test module, which Ray workers cannot import (tests/ is not on their
    path)."""
    return x.clone()


def test_plugins_other_processes_cannot_import_are_refused_before_work(ray_session, tmp_path):
    salbench.methods.register("test_local", _local_plugin)
    with pytest.raises(ConfigError, match=r"Ray workers cannot load these plugins: method "
                                          r"'test_plugins:_local_plugin'.*No module named "
                                          r"'test_plugins'.*--working-dir"):
        salbench.evaluate(_small(methods=["test_local"]), out=tmp_path, ray=True)
    # in this process the same plugin runs
    res = salbench.evaluate(_small(methods=["test_local"]), out=tmp_path, ray=False)
    assert (res.samples["status"] == "ok").all() and set(res.samples["method"]) == {"test_local"}

    def inner(model, x, target):
        return x

    salbench.methods.register("test_inner", inner)
    with pytest.raises(ConfigError, match="not a module-level name; another process"):
        salbench.evaluate(_small(methods=["test_inner"]), out=tmp_path, ray=True)
    inner.__module__ = "__main__"
    with pytest.raises(ConfigError, match=r"defined in __main__ \(a script or notebook\)"):
        salbench.evaluate(_small(methods=["test_inner"]), out=tmp_path, ray=True)
