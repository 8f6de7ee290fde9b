"""The driver-memory benchmark: its generated tables are what the pipeline writes (a real
run's schema; the ShardWriter's own row path writes equal shards), and its harness case
measures every operation and run in fresh processes."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmarks import driver_memory
from benchmarks import result_tables as rt
from benchmarks.common import Settings
from salbench.config import parse_config
from salbench.pipeline.run import run
from salbench.results import tables


def _shards(run_dir):
    return sorted((run_dir / "samples").glob("shard-*.parquet"))


def test_generated_table_has_a_real_runs_schema_and_files(tmp_path):
    """A real in-process run of the generator's config and a generated table of the same
    size: same shard files, same schema (names, types, order), same summary rows."""
    images = 3
    cfg = parse_config({**rt.config(rt.TWO_METHOD, images), "out": str(tmp_path / "real")})
    real = run(cfg, progress=None, in_process=True).run_dir
    gen = tmp_path / "gen"
    took = rt.generate(rt.TWO_METHOD, images * rt.TWO_METHOD.groups, gen)
    assert took["shards"] == 1 and took["rows"] == 6
    assert [p.name for p in _shards(gen)] == [p.name for p in _shards(real)]
    real_schema = pq.read_schema(_shards(real)[0])
    assert pq.read_schema(_shards(gen)[0]).equals(real_schema, check_metadata=True)
    assert real_schema.equals(tables.samples_schema(cfg))
    assert sorted(p.name for p in (gen / "_done").iterdir()) == sorted(
        p.name for p in (real / "_done").iterdir())
    real_rows, gen_rows = tables.read_samples(real), tables.read_samples(gen)
    assert list(gen_rows.dtypes.astype(str)) == list(real_rows.dtypes.astype(str))
    key = ["index", "model", "method", "sample_id", "status"]
    assert gen_rows[key].equals(real_rows[key])
    for col in ("insertion_curve", "deletion_curve"):  # the paper protocol's 20 steps
        assert (gen_rows[col].map(len) == 21).all() and (real_rows[col].map(len) == 21).all()
    real_summary = pq.read_table(real / "summary.parquet").to_pandas()
    gen_summary = pq.read_table(gen / "summary.parquet").to_pandas()
    assert list(gen_summary.columns) == list(real_summary.columns)
    assert sorted(map(tuple, gen_summary[["model", "method", "metric"]].values)) == sorted(
        map(tuple, real_summary[["model", "method", "metric"]].values))
    manifest = json.loads((gen / "manifest.json").read_text())
    real_manifest = json.loads((real / "manifest.json").read_text())
    assert manifest["counts"] == {k: v for k, v in real_manifest["counts"].items()
                                  if k in manifest["counts"]}
    assert manifest["config"] == {**real_manifest["config"], "out": manifest["config"]["out"]}


@pytest.mark.parametrize(("shape", "images"), [
    (rt.TWO_METHOD, 34), (rt.Shape(rt.PRODUCTION.models[:2], rt.ALL_METHODS, shard_size=2), 5)])
def test_fast_path_writes_what_the_shard_writer_writes(tmp_path, shape, images):
    """The column-wise tables equal those the ShardWriter makes from the same values as
    stage rows (``tables.rows_to_table``), shard by shard; a second shard, a short last
    shard, the methods' diagnostics (null on other methods' rows) and B's shift included."""
    rows = images * shape.groups
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    rt.generate(shape, rows, fast, seed=3, shift=0.1)
    rt.generate(shape, rows, slow, seed=3, shift=0.1, via_rows=True)
    assert len(_shards(fast)) == 3
    for f, s in zip(_shards(fast), _shards(slow), strict=True):
        a, b = pq.read_table(f), pq.read_table(s)
        # the run id is the directory's name; everything else must be equal
        assert a.drop(["run_id"]).equals(b.drop(["run_id"])), f.name
        assert a.column("run_id").unique().to_pylist() == ["fast"]
    table = pq.read_table(_shards(fast)[0]).to_pandas()
    assert table["cell_key"].is_unique and (table["cell_key"].str.len() == 16).all()
    if "completeness_error" in table:
        ig = table["method"].isin(["ig", "gig", "blurig", "idgi_ig", "idgi_gig",
                                   "idgi_blurig", "samp", "samp_pp"])
        assert table.loc[ig, "completeness_error"].notna().all()
        assert table.loc[~ig, "completeness_error"].isna().all()
    assert table["insertion_auc"].min() >= 0.1 - 1e-12  # Beta(2, 5) + shift, clipped


def test_summary_from_kept_rows_equals_the_runs_scan_of_its_files(tmp_path):
    """Large tables summarise the rows' scalar columns kept in memory: the same summary as
    the pipeline's scan of the shard files."""
    shape = rt.Shape(("tiny_cnn", "resnet18"), ("vg", "ig", "gxi"), shard_size=4)
    rows = 18 * shape.groups
    rt.generate(shape, rows, tmp_path / "scan", summary_in_memory=False)
    took = rt.generate(shape, rows, tmp_path / "kept", summary_in_memory=True)
    assert took["summary_s"] > 0
    scan = pq.read_table(tmp_path / "scan" / "summary.parquet").to_pandas()
    kept = pq.read_table(tmp_path / "kept" / "summary.parquet").to_pandas()
    assert len(scan) > 6 and "pointing_game_class_mean_hit" in set(scan["metric"])
    pd.testing.assert_frame_equal(kept, scan)


def test_generate_refuses_rows_off_the_shape_and_a_used_folder(tmp_path):
    with pytest.raises(ValueError, match="multiple of 2"):
        rt.generate(rt.TWO_METHOD, 7, tmp_path / "x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "f").write_text("")
    with pytest.raises(FileExistsError, match="not empty"):
        rt.generate(rt.TWO_METHOD, 8, tmp_path / "y")


def test_quick_case_measures_each_operation_and_run_and_reuses_tables(tmp_path):
    """The harness end to end at its smallest: the production-shaped table (the 2-method
    shape's tables go through the same measuring code; their generation is tested above),
    each operation and a run with each executor, every one in a fresh process."""
    s = Settings(model="tiny_cnn", quick=True, data_dir=str(tmp_path), mem_rows=(0,))
    res = driver_memory.run_case(s)
    assert [(t["shape"], t["rows"]) for t in res["tables"]] == [
        ("production", driver_memory.QUICK_PRODUCTION_ROWS)]
    for t in res["tables"]:
        assert not t["generation"]["reused"] and t["generation"]["rows_per_s"] > 0
        for what in driver_memory.OPERATIONS:
            r = t[what]
            assert "error" not in r, (t["rows"], what, r)
            assert r["peak_growth_mb"] >= 0 and r["peak_mb"] >= r["rss_before_mb"] > 0
            assert r["seconds"] > 0
    assert [(r["rows"], r["executor"]) for r in res["runs"]] == [
        (driver_memory.QUICK_RUN_ROWS[0], e) for e in driver_memory.EXECUTORS]
    for r in res["runs"]:
        assert "error" not in r, r
        assert r["rows"] == driver_memory.QUICK_RUN_ROWS[0] and r["peak_growth_mb"] >= 0
        # the resident set split: private memory's growth is part of the peak's growth
        assert 0 <= r["private_growth_mb"] <= r["peak_growth_mb"] + 0.5, r
        assert r["shared_growth_mb"] >= 0, r
    md = driver_memory.markdown(res)
    assert "| production | 100 |" in md and "| ray |" in md
    # the table is reused from the data directory (without measuring it again)
    assert driver_memory.ensure_tables(rt.PRODUCTION, "production",
                                       driver_memory.QUICK_PRODUCTION_ROWS, tmp_path)[2]["reused"]


def test_case_rejects_sizes_off_the_shape(tmp_path, capsys):
    from benchmarks import __main__ as harness

    with pytest.raises(SystemExit):
        harness.parse(["driver_memory", "--mem-rows", "4000,3"])
    assert "3 rows is not a multiple of 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        harness.parse(["driver_memory", "--run-rows", "x"])
    assert "--run-rows: comma-separated row counts" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a multiple of 100"):
        driver_memory.run_case(Settings(data_dir=str(tmp_path), mem_rows=(4,),
                                        production_rows=150, run_rows=(4,)))
    assert not list(tmp_path.iterdir())


def test_a_measurement_past_its_time_is_stopped_and_shown_as_such(tmp_path):
    rt.generate(rt.TWO_METHOD, 8, tmp_path / "a")
    r = driver_memory._subprocess(["measure", str(tmp_path / "a"), "--what", "summary"], 0.5)
    assert r["error"] == "timed out after 0 s" and r["timeout_s"] == 0.5
    row = {"shape": "2-method", "rows": 8, "groups": 2, "shards": 1,
           "generation": {"rows_per_s": 1.0, "reused": True},
           "summary": {"error": "timed out after 60 s", "timeout_s": 60,
                       "peak_growth_mb_at_timeout": 12.34},
           "report": {"error": "exit 1: boom"},
           "compare": {"peak_growth_mb": 1.0, "seconds": 2.0}}
    md = driver_memory.markdown({"tables": [row], "runs": []})
    assert "| >= 12.3 MB (stopped) | > 60 | exit 1: boom |  | 1.0 MB | 2.0 |" in md
