"""salbench.evaluate and Results: the in-process executor gives the Ray pipeline's tables;
configs as mappings, YAML files, RunConfigs or keywords; the Arrow tables, means and report;
and docs/TUTORIAL.md, whose code is executed here."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add it
    sys.path.insert(0, str(ROOT))

import salbench  # noqa: E402
from salbench.config import parse_config  # noqa: E402
from salbench.errors import ConfigError  # noqa: E402
from salbench.pipeline.run import resume  # noqa: E402
from salbench.results.tables import shard_paths  # noqa: E402
from tests.plugins import plugin_sandbox  # noqa: E402

CONFIG = {
    "name": "api",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 3, "size": 32, "seed": 4},
    "models": ["tiny_smooth"],
    "methods": ["vg", {"name": "ig", "steps": 8}],
    "metrics": ["insertion", "pointing_game"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}


@pytest.fixture(autouse=True, scope="module")
def sandbox():
    """Registrations made here (the test plugins, the tutorial's method) end with the module."""
    with plugin_sandbox("tests.plugins", "smooth_ig"):
        yield


def _tables(res: salbench.Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    return res.samples.drop(columns=["run_id"]), res.summary


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> salbench.Results:
    return salbench.evaluate(CONFIG, out=tmp_path_factory.mktemp("local"), ray=False)


@pytest.mark.slow
def test_in_process_and_ray_pipeline_give_identical_tables(ray_session, tmp_path):
    """Same config and seed: identical per-sample and summary tables from the Ray graph and
    the in-process executor, with a plugin method, a plugin CPU metric and the split PIC
    metric (Bokeh -> Score -> Finalize stages) configured."""
    if Path.cwd().resolve() != ROOT:
        pytest.skip("Ray workers import tests.plugins from the driver's working directory: "
                    "run pytest from the repository root")
    importlib.import_module("tests.plugins.toy")
    cfg = {**CONFIG, "methods": [*CONFIG["methods"], "plugin_blur_ig"],
           "metrics": ["insertion", "deletion", "pointing_game", "sic", "plugin_map_entropy"]}
    local = salbench.evaluate(cfg, out=tmp_path / "local", ray=False)
    on_ray = salbench.evaluate(cfg, out=tmp_path / "ray", ray=True)
    assert len(local.samples) == 3 * 3 and (local.samples["status"] == "ok").all()
    assert local.samples["sic_skipped"].notna().all()  # the split metric ran
    assert local.samples["map_entropy"].between(0, 1).all()
    pd.testing.assert_frame_equal(*[r.samples.drop(columns=["run_id"]) for r in (local, on_ray)],
                                  check_exact=True)
    pd.testing.assert_frame_equal(local.summary, on_ray.summary, check_exact=True)
    drop = local.samples_arrow.schema.get_field_index("run_id")
    assert local.samples_arrow.remove_column(drop).equals(on_ray.samples_arrow.remove_column(drop))
    timings = [json.loads((r.run_dir / "manifest.json").read_text())["timings"]
               for r in (local, on_ray)]
    assert timings[0]["executor"] == "in_process" and "stages" in timings[1]


def test_evaluate_accepts_a_mapping_yaml_runconfig_or_keywords(local_run, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the config asks for 1 thread; evaluate must restore ours
    try:
        runs = [salbench.evaluate(path, out=tmp_path, ray=False),
                salbench.evaluate(parse_config(CONFIG), out=tmp_path, ray=False),
                salbench.evaluate(out=tmp_path, ray=False, **CONFIG)]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    for res in runs:
        assert res.run_dir.parent == tmp_path
        for a, b in zip(_tables(local_run), _tables(res), strict=True):
            pd.testing.assert_frame_equal(a, b)
    # keywords replace the config's keys; resources are merged key by key
    res = salbench.evaluate(path, out=tmp_path, ray=False, methods=["gxi"],
                            resources={"shard_size": 3})
    assert set(res.samples["method"]) == {"gxi"} and len(res.samples) == 3
    assert res.config.resources.shard_size == 3 and res.config.resources.batch_size == 2
    assert len(list((res.run_dir / "samples").glob("*.parquet"))) == 1
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['metric'\]"):
        salbench.evaluate(CONFIG, metric=["insertion"], ray=False)
    with pytest.raises(ConfigError, match="config must be a RunConfig, a mapping or a YAML"):
        salbench.evaluate(42, ray=False)
    with pytest.raises(ConfigError, match="does not exist"):
        salbench.evaluate(tmp_path / "missing.yaml", ray=False)


def test_results_tables_means_and_load(local_run):
    s, summ = local_run.samples, local_run.summary
    arrow = local_run.samples_arrow
    assert arrow.schema.field("insertion_curve").type == pa.list_(pa.float32())
    assert arrow.num_rows == len(s) == 3 * 2
    assert arrow.column("sample_id").to_pylist() == s["sample_id"].tolist()
    np.testing.assert_array_equal(arrow.column("insertion_auc").to_numpy(),
                                  s["insertion_auc"].to_numpy())
    pd.testing.assert_frame_equal(local_run.summary_arrow.to_pandas(), summ)
    # means: per model x method, the mean over the ok rows with a finite value
    means = local_run.means(["insertion_auc", "pointing_game_hit"])
    assert list(means.columns) == ["insertion_auc", "pointing_game_hit"]
    for (model, method), g in s.groupby(["model", "method"]):
        for col in means.columns:
            v = g.loc[g["status"] == "ok", col].to_numpy(float)
            v = v[np.isfinite(v)]
            expected = v.mean() if len(v) else np.nan
            np.testing.assert_allclose(means.loc[(model, method), col], expected)
    loaded = salbench.Results.load(local_run.run_dir)
    assert loaded.config == local_run.config
    pd.testing.assert_frame_equal(loaded.samples, s)
    pd.testing.assert_frame_equal(loaded.summary, summ)
    with pytest.raises(ConfigError, match="not a finished salbench run"):
        salbench.Results.load(local_run.run_dir / "samples")


def test_resume_in_process_finishes_a_run(local_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(local_run.run_dir, copy)
    for p in shard_paths(copy, 1):  # the second shard never finished
        p.unlink()
    res = resume(copy, progress=None, in_process=True)
    assert json.loads((copy / "manifest.json").read_text())["counts"]["shards_run_now"] == 1
    for a, b in zip(_tables(local_run), (res.samples.drop(columns=["run_id"]), res.summary),
                    strict=True):
        pd.testing.assert_frame_equal(a, b)


def test_report(local_run):
    report = pytest.importorskip("salbench.report")
    if not hasattr(report, "write_report"):
        pytest.skip("salbench.report has no write_report yet")
    index = local_run.report()
    assert index.name == "index.html" and index.is_file()


# --- docs/TUTORIAL.md -------------------------------------------------------------------

TUTORIAL = ROOT / "docs" / "TUTORIAL.md"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """The tutorial's Python blocks run in order in one namespace, in a fresh directory with
    examples/ on sys.path (the reader's module next to their notebook); the report blocks
    are left to test_tutorial_report."""
    blocks = _blocks(TUTORIAL.read_text(), "python")
    listing = [b for b in blocks if b.startswith("# smooth_ig.py")]
    code = [b for b in blocks if b not in listing]
    workdir = tmp_path_factory.mktemp("tutorial")
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.syspath_prepend(str(ROOT / "examples"))
        for block in code:
            if ".report()" not in block:
                exec(compile(block, str(TUTORIAL), "exec"), namespace)
    return {"listing": listing, "code": code, "namespace": namespace, "dir": workdir}


@pytest.mark.slow
def test_tutorial_runs_and_its_listing_is_the_example_module(tutorial):
    """The module the tutorial shows is examples/smooth_ig.py, byte for byte; its code runs
    and benchmarks the new method next to the built-ins on the bundled photos."""
    assert len(tutorial["listing"]) == 1
    source = (ROOT / "examples" / "smooth_ig.py").read_text()
    assert tutorial["listing"][0].split("\n", 1)[1] == source
    res = tutorial["namespace"]["res"]
    assert isinstance(res, salbench.Results) and res.run_dir.is_relative_to(tutorial["dir"])
    s = res.samples
    assert set(s["method"]) == {"vg", "ig", "smooth_ig"} and (s["status"] == "ok").all()
    assert set(s["model"]) == {"efficientnet_lite0"}
    assert s["smooth_ig_completeness_error"].notna().sum() == (s["method"] == "smooth_ig").sum()
    assert "smooth_ig" in salbench.methods.names()


def test_tutorial_yaml_configs_are_valid(tutorial, monkeypatch):
    """The tutorial's YAML configs parse (their import-path names resolve)."""
    configs = _blocks(TUTORIAL.read_text(), "yaml")
    assert configs
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    for text in configs:
        cfg = parse_config(yaml.safe_load(text))
        assert "smooth_ig" in [m.label for m in cfg.methods]


@pytest.mark.slow
def test_tutorial_report(tutorial, monkeypatch):
    report = pytest.importorskip("salbench.report")
    if not hasattr(report, "write_report"):
        pytest.skip("salbench.report has no write_report yet")
    blocks = [b for b in tutorial["code"] if ".report()" in b]
    assert blocks
    monkeypatch.chdir(tutorial["dir"])
    for block in blocks:
        exec(compile(block, str(TUTORIAL), "exec"), tutorial["namespace"])
    assert Path(tutorial["namespace"]["index"]).is_file()


def test_reference_docs_cover_every_metric_and_config_key():
    """docs/METRICS.md has a section per built-in metric, docs/API.md a row per config key."""
    from dataclasses import fields

    from salbench.config import _TOP_KEYS, ResourceConfig

    headings = re.findall(r"^### (.+)$", (ROOT / "docs" / "METRICS.md").read_text(), re.M)
    documented = {name for h in headings for name in re.findall(r"`([a-z_0-9]+)`", h)}
    builtin = {n for n in salbench.metrics.names()
               if salbench.metrics.get(n).fn.__module__.startswith("salbench.")}
    assert documented == builtin
    api = (ROOT / "docs" / "API.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_.]+)` \|", api, re.M))
    assert rows >= (_TOP_KEYS - {"resources"}) | {f"resources.{f.name}"
                                                  for f in fields(ResourceConfig)}
    kinds = set(re.findall(r"^\| `([a-z]+)` \|", api, re.M))
    assert kinds >= {n for n in salbench.datasets.names() if not n.startswith("plugin_")}
