"""``salbench compare``: paired and Welch intervals, one-run metrics, manifests, CLI (no Ray)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats

from salbench.cli import main
from salbench.errors import ConfigError
from salbench.results.compare import COLUMNS, compare_runs, config_differences
from salbench.results.tables import BASE_FIELDS, write_shard, write_table

MANIFEST: dict[str, Any] = {
    "status": "complete",
    "config": {"name": "cmp", "seed": 0, "profile": "fast", "out": "runs",
               "dataset": {"kind": "synthetic", "n": 6},
               "models": [{"name": "m"}], "methods": [{"name": "ig", "steps": 8}],
               "metrics": [{"name": "insertion"}, {"name": "deletion"}],
               "resources": {"batch_size": 2}},
    "config_hash": "aaaaaaaaaa",
    "dataset": {"fingerprint": "f00d", "rows": 6},
    "packages": {"salbench": "0.1.0", "torch": "2.14.1"},
    "git_commit": "1111111",
    "shards": 1,
}


def make_run(root: Path, run_id: str, rows: list[dict[str, Any]], *, shard_rows: int = 100,
             manifest: dict[str, Any] | None = None,
             summary: pd.DataFrame | None = None) -> Path:
    """A run directory written by hand: finished shards, manifest.json, optional summary.

    Each row needs sample_id, model, method and any metric values (floats); status
    defaults to "ok". Every run also gets a curve column, which is not a metric.
    """
    run_dir = root / run_id
    metric_cols = sorted({k for r in rows for k in r} - {n for n, _ in BASE_FIELDS})
    schema = pa.schema([*BASE_FIELDS, *[(c, pa.float64()) for c in metric_cols],
                        ("insertion_curve", pa.list_(pa.float32()))])
    records = []
    for i, r in enumerate(rows):
        rec = {"run_id": run_id, "shard": 0, "index": i, "status": "ok", "error": "",
               "label": -1, "target": 1, "pred": 1, "target_prob": 0.5,
               "insertion_curve": [0.5, 0.25]}
        rec.update({c: math.nan for c in metric_cols})
        rec.update(r)
        records.append(rec)
    for shard, start in enumerate(range(0, len(records), shard_rows)):
        write_shard(run_dir, shard, pa.Table.from_pylist(records[start:start + shard_rows],
                                                         schema=schema))
    m = copy.deepcopy(MANIFEST) if manifest is None else manifest
    m["run_id"] = run_id
    (run_dir / "manifest.json").write_text(json.dumps(m))
    if summary is not None:
        write_table(summary, run_dir / "summary.parquet")
    return run_dir


def rows_of(values: dict[str, list[float]], ids: list[str] | None = None, model: str = "m",
            method: str = "ig", status: dict[int, str] | None = None) -> list[dict[str, Any]]:
    n = len(next(iter(values.values())))
    ids = ids or [f"s{i}" for i in range(n)]
    out = []
    for i in range(n):
        r: dict[str, Any] = {"sample_id": ids[i], "model": model, "method": method}
        r.update({k: v[i] for k, v in values.items()})
        if status and i in status:
            r["status"] = status[i]
        out.append(r)
    return out


def one(table: pd.DataFrame, metric: str, method: str = "ig") -> pd.Series:
    hit = table[(table["metric"] == metric) & (table["method"] == method)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


A_INS = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60]
D_INS = [0.01, 0.03, 0.02, 0.06, 0.0, 0.0]
A_DEL = [0.50, 0.40, 0.30, 0.20, 0.10, 0.05]
D_DEL = [-0.05, -0.06, -0.05, -0.06, -0.05, 0.0]


@pytest.fixture
def paired_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Same six samples; sample 4 is NaN in B and sample 5 an error row in A."""
    b_ins = [a + d for a, d in zip(A_INS, D_INS, strict=True)]
    b_ins[4] = math.nan
    b_del = [a + d for a, d in zip(A_DEL, D_DEL, strict=True)]
    run_a = make_run(tmp_path, "a", rows_of({"insertion_auc": A_INS, "deletion_auc": A_DEL},
                                            status={5: "method_error"}), shard_rows=4)
    m = copy.deepcopy(MANIFEST)
    m["config"]["methods"] = [{"name": "ig", "steps": 64}]
    m["config_hash"] = "bbbbbbbbbb"
    m["dataset"]["fingerprint"] = "beef"
    m["packages"]["torch"] = "2.15.0"
    run_b = make_run(tmp_path, "b", rows_of({"insertion_auc": b_ins, "deletion_auc": b_del}),
                     manifest=m)
    return run_a, run_b


def t_interval(d: np.ndarray) -> tuple[float, float]:
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def test_paired_delta_and_interval(paired_runs):
    table = compare_runs(*paired_runs)
    assert list(table.columns) == COLUMNS
    ins = one(table, "insertion_auc")
    d = np.array(D_INS[:4])  # sample 4: NaN in B, sample 5: error in A -> dropped
    assert ins["paired"] and ins["n_a"] == ins["n_b"] == 4
    assert ins["mean_a"] == pytest.approx(0.25) and ins["mean_b"] == pytest.approx(0.28)
    assert ins["delta"] == pytest.approx(0.03)
    low, high = t_interval(d)
    assert (ins["ci95_low"], ins["ci95_high"]) == (pytest.approx(low), pytest.approx(high))
    assert low < 0 < high and not ins["significant"]
    dl = one(table, "deletion_auc")
    low, high = t_interval(np.array(D_DEL[:5]))  # only sample 5 (error in A) is dropped
    assert dl["n_a"] == 5 and dl["delta"] == pytest.approx(np.mean(D_DEL[:5]))
    assert (dl["ci95_low"], dl["ci95_high"]) == (pytest.approx(low), pytest.approx(high))
    assert high < 0 and dl["significant"]
    # target_prob (0.5 everywhere) is a metric too; the curve column is not
    tp = one(table, "target_prob")
    assert tp["delta"] == 0 and not tp["significant"]
    assert "insertion_curve" not in set(table["metric"])
    assert table["n_error_a"].eq(1).all() and table["n_error_b"].eq(0).all()


def test_unpaired_welch(tmp_path):
    a_vals, b_vals = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 3.0, 5.0, 6.0]
    run_a = make_run(tmp_path, "a", rows_of({"insertion_auc": a_vals}))
    run_b = make_run(tmp_path, "b", rows_of({"insertion_auc": b_vals}))
    row = one(compare_runs(run_a, run_b), "insertion_auc")
    ref = stats.ttest_ind(b_vals, a_vals, equal_var=False).confidence_interval(0.95)
    assert not row["paired"] and (row["n_a"], row["n_b"]) == (4, 5)
    assert row["delta"] == pytest.approx(np.mean(b_vals) - np.mean(a_vals))
    assert row["ci95_low"] == pytest.approx(ref.low)
    assert row["ci95_high"] == pytest.approx(ref.high)
    assert row["significant"] == (ref.low > 0 or ref.high < 0)
    # same count, different ids: still unpaired
    run_c = make_run(tmp_path, "c", rows_of({"insertion_auc": [1.5, 2.5, 3.5, 4.5]},
                                            ids=["x0", "x1", "x2", "x3"]))
    assert not one(compare_runs(run_a, run_c), "insertion_auc")["paired"]


def test_metrics_and_rows_in_one_run_only(tmp_path):
    rows_a = (rows_of({"insertion_auc": [0.1, 0.2], "deletion_auc": [0.3, 0.4]})
              + rows_of({"insertion_auc": [0.5, 0.6]}, method="vg"))
    rows_b = rows_of({"insertion_auc": [0.1, 0.2], "pointing_game_hit": [1.0, 0.0]})
    table = compare_runs(make_run(tmp_path, "a", rows_a), make_run(tmp_path, "b", rows_b))
    assert one(table, "insertion_auc")["only_in"] == ""
    dl = one(table, "deletion_auc")
    assert dl["only_in"] == "a" and dl["mean_a"] == pytest.approx(0.35) and dl["n_b"] == 0
    assert math.isnan(dl["delta"]) and not dl["significant"]
    pg = one(table, "pointing_game_hit")
    assert pg["only_in"] == "b" and pg["mean_b"] == pytest.approx(0.5) and pg["n_a"] == 0
    vg = table[table["method"] == "vg"]
    assert set(vg["only_in"]) == {"a"} and set(vg["metric"]) == {"insertion_auc", "target_prob"}
    # vg has no deletion_auc values in either run: no row
    assert list(table[["model", "method", "metric"]].itertuples(index=False)) == sorted(
        table[["model", "method", "metric"]].itertuples(index=False))


def test_identical_runs(paired_runs, tmp_path):
    run_a = paired_runs[0]
    rows = rows_of({"insertion_auc": A_INS, "deletion_auc": A_DEL}, status={5: "method_error"})
    copy_a = make_run(tmp_path / "copy", "a2", rows, shard_rows=2)  # other shard layout
    for other in (run_a, copy_a):
        table = compare_runs(run_a, other)
        assert len(table) == 3 and table["paired"].all()
        assert (table["delta"] == 0).all() and not table["significant"].any()
        assert (table["ci95_low"] == 0).all() and (table["ci95_high"] == 0).all()
        assert table.attrs["differences"] == []


def test_config_differences(paired_runs):
    diffs = compare_runs(*paired_runs).attrs["differences"]
    assert "config_hash: aaaaaaaaaa -> bbbbbbbbbb" in diffs
    assert "dataset.fingerprint: f00d -> beef" in diffs
    assert "packages.torch: 2.14.1 -> 2.15.0" in diffs
    assert any(d.startswith("config.methods: ") and '"steps": 64' in d for d in diffs)
    assert len(diffs) == 4
    b = copy.deepcopy(MANIFEST)
    b["git_commit"] = None
    b["config"]["dataset"]["limit"] = 3
    del b["packages"]["salbench"]
    assert config_differences(MANIFEST, b) == [
        "git_commit: 1111111 -> null", "config.dataset.limit: <missing> -> 3",
        "packages.salbench: 0.1.0 -> <missing>"]


def test_unfinished_run_and_aggregate_metrics(tmp_path):
    def summary(value: float) -> pd.DataFrame:
        return pd.DataFrame([{"model": "m", "method": "ig", "metric": "sic_aggregate_auc",
                              "n": 3, "n_rows": 3, "n_error": 0, "mean": value,
                              "std": math.nan, "median": math.nan, "ci95_low": math.nan,
                              "ci95_high": math.nan}])

    rows = rows_of({"sic_auc": [0.4, 0.5, 0.6]})
    run_a = make_run(tmp_path, "a", rows, summary=summary(0.5))
    m = copy.deepcopy(MANIFEST)
    m.update(status="running", shards=3)
    run_b = make_run(tmp_path, "b", rows, manifest=m, summary=summary(0.625))
    table = compare_runs(run_a, run_b)
    agg = one(table, "sic_aggregate_auc")
    assert agg["delta"] == pytest.approx(0.125) and agg["n_a"] == 3
    assert math.isnan(agg["ci95_low"]) and not agg["significant"]
    assert table.attrs["differences"] == [
        "run B is not complete (status running, 1 of 3 shards finished); only finished "
        "shards are compared"]


def test_not_a_run_directory(tmp_path, paired_runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"{empty}.*no manifest.json"):
        compare_runs(paired_runs[0], empty)
    with pytest.raises(ConfigError, match="no such directory"):
        compare_runs(tmp_path / "missing", paired_runs[0])
    (empty / "manifest.json").write_text(json.dumps(MANIFEST))
    (empty / "samples").mkdir()
    (empty / "samples" / "shard-00000.parquet").write_bytes(b"not finished")
    with pytest.raises(ConfigError, match=f"{empty} has no finished shards"):
        compare_runs(paired_runs[0], empty)
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="manifest.json is not readable JSON"):
        compare_runs(empty, paired_runs[0])


def test_cli(paired_runs, tmp_path, capsys):
    run_a, run_b = map(str, paired_runs)
    csv = tmp_path / "delta.csv"
    assert main(["compare", run_a, run_b, "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("A: a") and lines[1].startswith("B: b")
    assert "dataset.fingerprint: f00d -> beef" in out and "packages.torch" in out
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert header > next(i for i, line in enumerate(lines) if "config_hash:" in line)
    dl = next(line for line in lines if " deletion_auc " in line)
    assert dl.rstrip().endswith("*") and "-0.054 " in dl and " yes" in dl
    ins = next(line for line in lines if " insertion_auc " in line)
    assert "+0.03 " in ins and not ins.rstrip().endswith("*")
    assert "error rows m/ig: 1 in A, 0 in B" in out
    saved = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    assert list(saved.columns) == COLUMNS and len(saved) == 3

    assert main(["compare", run_a, run_b, "--metric", "deletion_auc"]) == 0
    out = capsys.readouterr().out
    assert " deletion_auc " in out and "insertion_auc" not in out
    assert main(["compare", run_a, run_b, "--metric", "insertion"]) == 0  # a registered metric
    out = capsys.readouterr().out
    assert " insertion_auc " in out and "deletion_auc" not in out
    # --fail-on-change knows which way is better: deletion_auc fell significantly from A
    # to B, an improvement (lower is better): exit 0, listed as better; from B to A it is
    # a change for the worse: exit 1
    assert main(["compare", run_a, run_b, "--fail-on-change"]) == 0
    out = capsys.readouterr().out
    assert "better (significant improvements): 1" in out and "m/ig deletion_auc" in out
    assert "worse" not in out.split("in one run only")[1]
    assert main(["compare", run_b, run_a, "--fail-on-change"]) == 1
    captured = capsys.readouterr()
    assert "1 significant changes for the worse" in captured.err
    assert "worse (significant, in the metric's worse direction): 1" in captured.out
    assert main(["compare", run_b, run_a, "--metric", "insertion_auc",
                 "--fail-on-change"]) == 0


@pytest.mark.parametrize("extra", [["--metric", "nope"], ["--csv", "/nonexistent/dir/x.csv"]])
def test_cli_errors(paired_runs, tmp_path, capsys, extra):
    run_a, run_b = map(str, paired_runs)
    bad = str(tmp_path / "not-a-run")
    assert main(["compare", run_a, bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("salbench: error: ") and bad in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["compare", run_a, run_b, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("salbench: error: ") and "Traceback" not in err


def test_compare_removes_its_group_files(paired_runs, temp_dirs):
    spill, made = temp_dirs
    table = compare_runs(*paired_runs)
    assert len(table) and len(made) == 2  # each run split by group once
    assert not list(spill.iterdir())
