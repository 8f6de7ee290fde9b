"""A newcomer's first hour (issue 19): resume never damages a run, failed starts leave no
run directory, failures are recorded, hints name where the Ray address came from, the
console table shows every configured metric, provenance without git, shard file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from salbench.cli import main, results_table
from salbench.config import parse_config
from salbench.errors import ConfigError
from salbench.pipeline import manifest as mf
from salbench.pipeline.run import resume, run
from salbench.results import tables
from salbench.results.compare import config_differences
from salbench.results.tables import finished_shards, shard_paths

TINY = {
    "name": "nc", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
    "models": ["tiny_smooth"],
    "methods": ["vg", {"name": "ig", "steps": 8}],
    "metrics": ["insertion", "pointing_game"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}


def _cfg(tmp_path: Path, **changes) -> dict:
    cfg = json.loads(json.dumps(TINY))
    cfg["out"] = str(tmp_path / "runs")
    cfg.update(changes)
    return cfg


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (in-process executor)."""
    tmp = tmp_path_factory.mktemp("nc")
    return run(parse_config(_cfg(tmp)), progress=None, in_process=True).run_dir


def _snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_run_changes_nothing_and_says_so(finished, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    before = _snapshot(copy)
    res = resume(copy, in_process=True, progress=sys.stderr)
    assert _snapshot(copy) == before  # every file, byte for byte and untouched
    assert "nothing to resume" in capsys.readouterr().err
    assert len(res.samples) == 8 and len(res.summary)


def test_resume_with_work_keeps_the_first_start_and_merges_timings(finished, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    first = mf.read_manifest(copy)
    for p in shard_paths(copy, 1):
        p.unlink()
    resume(copy, progress=None, in_process=True)
    man = mf.read_manifest(copy)
    assert man["status"] == "complete" and man["started"] == first["started"]
    assert [a["shards_run"] for a in man["attempts"]] == [2, 1]
    assert man["attempts"][0] == first["attempts"][0]
    assert man["wall_seconds"] == pytest.approx(sum(a["wall_seconds"] for a in man["attempts"]),
                                                abs=2e-3)
    # per-image seconds: the mean over all images of both attempts (2 + 4 images of ig)
    t0, t1 = (a["timings"] for a in man["attempts"])
    key = "tiny_smooth/ig"
    assert t0["method_images"][key] == 4 and t1["method_images"][key] == 2
    expected = (t0["method_seconds_per_image"][key] * 4 + t1["method_seconds_per_image"][key]
                * 2) / 6
    assert man["timings"]["method_seconds_per_image"][key] == pytest.approx(expected, abs=1e-4)
    assert man["timings"]["execute_seconds"] == pytest.approx(
        t0["execute_seconds"] + t1["execute_seconds"], abs=2e-3)


def test_merge_timings_of_an_old_manifest():
    old = {"status": "complete", "started": "a", "finished": "b", "wall_seconds": 3.0,
           "timings": {"execute_seconds": 2.0, "method_seconds_per_image": {"m/x": 1.0}}}
    runs = mf.attempts(old)
    assert runs[0]["timings"] == old["timings"] and runs[0]["started"] == "a"
    runs.append({"timings": {"execute_seconds": 1.0, "method_seconds_per_image": {"m/x": 4.0},
                             "method_images": {"m/x": 3}}})
    merged = mf.merge_timings(runs)
    assert merged["execute_seconds"] == 3.0
    assert merged["method_seconds_per_image"]["m/x"] == pytest.approx((1.0 + 12.0) / 4)
    assert mf.attempts({"status": "running"}) == []


@pytest.mark.parametrize("change", [
    {"models": [{"name": "tiny_smooth", "weights": "/nonexistent/w.pth"}]},
    {"dataset": {"kind": "folder", "path": "/nonexistent/photos"}},
    {"methods": ["no_such_method"]},
])
def test_failed_starts_leave_no_run_directory(tmp_path, change):
    with pytest.raises((ConfigError, FileNotFoundError, OSError)):
        run(parse_config(_cfg(tmp_path, **change)), progress=None, in_process=True)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unreachable_cluster_leaves_no_run_directory(tmp_path, monkeypatch, capsys):
    import importlib

    run_module = importlib.import_module("salbench.pipeline.run")

    def refuse(address):
        raise ConnectionError(f"Could not find any running Ray instance ({address})")

    monkeypatch.setattr(run_module, "ensure_ray", refuse)
    cfg_path = tmp_path / "c.yaml"
    cfg = _cfg(tmp_path)
    cfg["resources"]["address"] = "auto"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert f"resources.address: auto in {cfg_path}" in err
    assert "--address" not in err and f"remove resources.address from {cfg_path}" in err
    assert not (tmp_path / "runs").exists()
    del cfg["resources"]["address"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(cfg_path), "--address", "auto"]) == 2
    err = capsys.readouterr().err
    assert "came from --address auto" in err and "drop --address" in err
    assert main(["run", str(cfg_path), "--set", "resources.address=auto"]) == 2
    assert "came from --set resources.address=auto" in capsys.readouterr().err


def test_a_run_that_fails_later_is_marked_failed(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("summary exploded")

    import importlib

    monkeypatch.setattr(importlib.import_module("salbench.pipeline.run"), "summarize_run",
                        broken)
    with pytest.raises(RuntimeError, match="summary exploded"):
        run(parse_config(_cfg(tmp_path)), progress=None, in_process=True)
    (run_dir,) = (tmp_path / "runs").iterdir()
    man = mf.read_manifest(run_dir)
    assert man["status"] == "failed" and man["error"] == "RuntimeError: summary exploded"
    assert man["resume"] == f"salbench resume {run_dir}"
    assert finished_shards(run_dir) == {0, 1}  # the work done is kept for resume
    monkeypatch.undo()
    resume(run_dir, progress=None, in_process=True)
    man = mf.read_manifest(run_dir)
    assert man["status"] == "complete" and "error" not in man


def _summary(metrics: dict[str, float]) -> pd.DataFrame:
    rows = []
    for method in ("vg", "ig"):
        for metric, mean in metrics.items():
            rows.append({"model": "m", "method": method, "metric": metric, "n": 4,
                         "n_rows": 4, "n_error": 0, "mean": mean, "std": 0.1, "median": mean,
                         "ci95_low": mean - 0.1, "ci95_high": mean + 0.1})
    return pd.DataFrame(rows)


def test_console_table_shows_every_configured_metric():
    cfg = parse_config({**TINY, "metrics": ["insertion", "deletion", "pointing_game", "wsol",
                                            "sic", "aic", "sensitivity_n", "concentration"]})
    summary = _summary({
        "target_prob": 0.5, "insertion_auc": 0.61, "insertion_ratio_auc": 0.9,
        "deletion_auc": 0.12, "deletion_ratio_auc": 0.2, "pointing_game_hit": 0.75,
        "wsol_f1": 0.33, "wsol_iou": 0.2, "wsol_mae": 0.3, "wsol_roc_auc": 0.7,
        "sic_auc": 0.41, "sic_skipped": 0.0, "sic_aggregate_auc": 0.44, "aic_auc": 0.51,
        "aic_skipped": 0.0, "aic_aggregate_auc": 0.55, "sensitivity_n": 0.05,
        "concentration_top1": 0.1, "concentration_gini": 0.6, "completeness_error": np.nan,
    })
    text = results_table(summary, cfg, width=80)
    for col in ("insertion_auc", "deletion_auc", "pointing_game_hit", "wsol_f1",
                "sic_aggregate_auc", "aic_aggregate_auc", "sensitivity_n",
                "concentration_gini"):
        assert col in text, col
    assert "completeness_error" not in text  # a diagnostic without values
    assert "0.5500" in text and "0.4400" in text
    assert max(len(line) for line in text.splitlines()) <= 100  # wrapped, not one wide line
    assert "in the report" in text
    with_values = summary.copy()
    with_values.loc[with_values["metric"] == "completeness_error", "mean"] = 0.25
    assert "completeness_error" in results_table(with_values, cfg, width=200)


def test_source_hash_tells_code_versions_apart(tmp_path):
    import salbench

    pkg = Path(salbench.__file__).parent
    a, b = tmp_path / "a" / "salbench", tmp_path / "b" / "salbench"
    shutil.copytree(pkg, a, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(pkg, b, ignore=shutil.ignore_patterns("__pycache__"))
    (b / "__pycache__").mkdir(exist_ok=True)
    (b / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    assert mf.source_hash(a) == mf.source_hash(b) == mf.source_hash(pkg)
    (b / "cli.py").write_text((b / "cli.py").read_text() + "\n# changed\n")
    assert mf.source_hash(a) != mf.source_hash(b)
    prov = mf.provenance()
    assert prov["source_hash"] == mf.source_hash(pkg) and prov["salbench_version"]
    lines = config_differences({"source_hash": "aaaa"}, {"source_hash": "bbbb"})
    assert "source_hash: aaaa -> bbbb" in lines


def test_manifest_records_provenance(finished):
    man = mf.read_manifest(finished)
    assert man["source_hash"] == mf.source_hash() and man["salbench_version"]
    assert "git_commit" in man


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_shard_files_honour_the_umask(tmp_path, umask):
    from salbench.datasets import open_dataset
    from salbench.datasets.parquet import write_shards

    old = os.umask(umask)
    try:
        paths = write_shards(open_dataset({"kind": "synthetic", "n": 3, "size": 16}),
                             tmp_path / f"sh{umask}", rows_per_shard=2)
        cfg = parse_config(_cfg(tmp_path))
        table = tables.rows_to_table([], cfg, "r")
        run_shard = tables.write_shard(tmp_path / f"run{umask}", 0, table)
    finally:
        os.umask(old)
    for p in [*paths, run_shard]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p
