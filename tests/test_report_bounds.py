"""Report defects of issue 19: each diagnostic once, intervals inside the metric's range
(Wilson for hit rates, clipped t for bounded AUCs, and the report says which), Ray stage
times relative to the run, each aggregate AUC next to its per-sample mean."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats
from test_report import CONFIG, make_run, md_rows, md_table

from salbench.config import parse_config
from salbench.report import write_report
from salbench.report.intervals import bounded_summary, curve_band, wilson
from salbench.report.tables import pair_aggregates, stage_rows
from salbench.results.samples import RunSamples
from salbench.results.scan import Shards
from salbench.results.summary import summarize


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("bounds"), "rep-b")
    man = json.loads((run_dir / "manifest.json").read_text())
    man["timings"]["stages"] = {  # raw clock readings, as older manifests hold them
        "ReadRange": {"time_total_s": 1.5, "earliest_start_time": 3446.34,
                      "latest_end_time": 3450.84, "rows": 6, "bytes": 1000},
        "MapBatches(AttributeActor)": {"time_total_s": 9.0, "earliest_start_time": 3447.0,
                                       "latest_end_time": 3470.5, "rows": 30, "bytes": 2e6},
    }
    (run_dir / "manifest.json").write_text(json.dumps(man))
    write_report(run_dir)
    return run_dir, (run_dir / "report" / "tables.md").read_text()


def test_each_diagnostic_is_listed_once(built):
    _, md = built
    diagnostics = md.split("## Method diagnostics", 1)[1].split("\n## ", 1)[0]
    titles = re.findall(r"^### (.+)$", diagnostics, flags=re.M)
    assert "completeness_error" in titles
    assert len(titles) == len(set(titles))
    assert md.count("### completeness_error\n") == 1


def test_wilson_matches_published_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)


def _old_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """A summary as runs before ``ci_method`` wrote it: plain Student t intervals."""
    rows = []
    for metric in ("pointing_game_hit", "insertion_auc", "insertion_ratio_auc"):
        v = samples[metric].to_numpy(np.float64)
        low, high = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
        rows.append({"model": "m", "method": "vg", "metric": metric, "n": len(v),
                     "n_rows": len(v), "n_error": 0, "mean": v.mean(), "std": v.std(ddof=1),
                     "median": np.median(v), "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(rows)


def test_bounded_intervals_stay_in_range():
    samples = pd.DataFrame({"model": "m", "method": "vg", "status": "ok", "index": range(10),
                            "pointing_game_hit": [1.0] * 9 + [0.0],
                            "insertion_auc": [0.0] * 9 + [0.9],
                            "insertion_ratio_auc": [0.0] * 9 + [3.0]})
    old = _old_summary(samples)
    raw = old.set_index("metric")
    assert raw.loc["pointing_game_hit", "ci95_high"] > 1  # what the t interval gives
    assert raw.loc["insertion_auc", "ci95_low"] < 0
    rows = RunSamples(Shards(table=pa.Table.from_pandas(samples, preserve_index=False)))
    out = bounded_summary(old, rows).set_index("metric")
    assert (out.loc["pointing_game_hit", ["ci95_low", "ci95_high"]].tolist()
            == pytest.approx(list(wilson(9, 10))))
    assert out.loc["pointing_game_hit", "ci_method"] == "wilson"
    assert out.loc["insertion_auc", "ci95_low"] == 0.0
    assert out.loc["insertion_auc", "ci95_high"] == pytest.approx(raw.loc["insertion_auc",
                                                                          "ci95_high"])
    assert out.loc["insertion_auc", "ci_method"] == "t_clipped"
    # a ratio is only bounded below (0): clipped there, its upper end kept
    assert out.loc["insertion_ratio_auc", "ci95_low"] == 0.0
    assert out.loc["insertion_ratio_auc", "ci95_high"] == pytest.approx(raw.loc[
        "insertion_ratio_auc", "ci95_high"])
    # a current summary (with ci_method) is the pipeline's own and is used as it is
    cfg = parse_config({**CONFIG, "metrics": ["insertion", "pointing_game"], "methods": ["vg"]})
    current = summarize(samples.assign(sample_id=[f"s{i}" for i in range(10)],
                                       target_prob=0.5, error="", label=-1, target=3), cfg)
    assert bounded_summary(current, rows) is current
    hit = current.set_index("metric").loc["pointing_game_hit"]
    assert [hit["ci95_low"], hit["ci95_high"]] == pytest.approx(list(wilson(9, 10)))


def test_report_tables_say_which_interval(built):
    _, md = built
    pg = md.split("### pointing_game_hit (↑)\n", 1)[1].split("\n###", 1)[0]
    assert "Wilson score interval" in pg
    ins = md.split("### insertion_auc (↑)\n", 1)[1].split("\n###", 1)[0]
    assert "clipped to [0, 1]" in ins
    for metric in ("pointing_game_hit (↑)", "insertion_auc (↑)", "wsol_f1 (↑)"):
        for row in md_table(md, metric):
            found = re.findall(r"-?\d+\.\d+", row["95% CI"])
            if found:
                low, high = map(float, found)
                assert 0.0 <= low <= high <= 1.0


def test_curve_bands_stay_in_range():
    rng = np.random.default_rng(0)
    curves = np.clip(rng.normal(0.02, 0.05, (6, 11)), 0, 1)
    mean, low, high = curve_band(curves, "insertion_curve")
    assert (low >= 0).all() and (high <= 1).all() and (low <= mean).all()
    hits = (rng.uniform(size=(8, 11)) < 0.9).astype(float)
    hits[:, 0] = 1.0
    mean, low, high = curve_band(hits, "aic_curve")
    assert high[0] == pytest.approx(1.0) and low[0] == pytest.approx(wilson(8, 8)[0])
    assert (low >= 0).all() and (high <= 1).all()


def test_stage_times_are_relative_to_the_first_operator(built):
    _, md = built
    header, rows = md_rows(md, "Ray Data stages")
    table = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert table["ReadRange"]["start s"] == "0.0" and table["ReadRange"]["end s"] == "4.5"
    att = table["MapBatches(AttributeActor)"]
    assert (att["start s"], att["end s"], att["span s"]) == ("0.7", "24.2", "23.5")
    assert "3446" not in md
    rel = stage_rows({"A": {"start_s": 0.0, "end_s": 2.0, "time_total_s": 1.0}})
    assert rel[0]["span_s"] == 2.0


def test_aggregate_auc_sits_next_to_its_per_sample_mean(built):
    assert pair_aggregates(["sic_aggregate_auc", "insertion_auc", "sic_auc", "x"]) == [
        "sic_auc", "sic_aggregate_auc", "insertion_auc", "x"]
    assert pair_aggregates(["insertion_auc", "deletion_auc", "insertion_ratio_auc",
                            "pointing_game_hit", "deletion_ratio_auc"]) == [
        "insertion_auc", "insertion_ratio_auc", "deletion_auc", "deletion_ratio_auc",
        "pointing_game_hit"]
    _, md = built
    header, _ = md_rows(md, "Overview: tiny_cnn")
    i = header.index("sic_aggregate_auc (↑)")
    assert header[i - 1] == "sic_auc (↑)"


def test_binned_pic_counts_constant_maps_as_degenerate_not_as_errors():
    """Paper 001's binned PIC uses the rows with a map and finite curves; its counts are the
    summary's: a ``degenerate_map`` row is degenerate, a filtered row skipped, a failed
    row an error (degenerate maps used to be counted among the errors)."""
    from salbench.metrics.pic import aggregate_binned
    from salbench.report.data import RunTables
    from salbench.report.tables import stat

    levels = [[0.0, 0.5, 1.0], [0.0, 0.2, 0.9], None, None, None, [0.0, 0.4, 1.0]]
    ratios = [[0.1, 0.6, 1.0], [0.2, 0.3, 0.8], None, None, None, [0.0, float("nan"), 1.0]]
    statuses = ["ok", "metric_error", "degenerate_map", "filtered", "model_error", "ok"]
    samples = pa.table({
        "model": ["m"] * 6, "method": ["vg"] * 6, "index": list(range(6)),
        "status": statuses, "pic_blur_levels": levels, "pic_blur_prob_ratio": ratios})
    run = RunTables("r", {}, RunSamples(Shards(table=samples)), pd.DataFrame())
    got = stat(run, "m", "vg", "pic_blur_sic_binned_auc")
    want = aggregate_binned(np.array(levels[:2]), np.array(ratios[:2]), kind="sic")[2]
    assert got.mean == pytest.approx(want)
    # n: the two finite curves; the NaN curve of row 5 is skipped with the filtered row
    assert (got.n, got.errors, got.degenerate, got.skipped) == (2, 1, 1, 2)
