"""The out-of-core summary: per-metric counts, bounded intervals, the pointing game's class
mean, and the same table however many rows are held at once."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from salbench.config import parse_config
from salbench.metrics.localization import pointing_game_class_mean
from salbench.results.scan import Shards
from salbench.results.summary import interval, summarize_run
from salbench.results.tables import rows_to_table

CONFIG = parse_config({
    "dataset": {"kind": "synthetic", "n": 4, "size": 32},
    "models": ["tiny_cnn"], "methods": ["vg", "ig"],
    "metrics": ["insertion", "pointing_game"],
})


def _row(index: int, method: str, status: str, values: dict, error: str = "",
         label: int = 0) -> dict:
    return {"shard": 0, "index": index, "sample_id": f"s{index}", "sample_key": "k",
            "cell_key": f"c{index}{method}", "model": "m", "method": method,
            "status": status, "error": error, "label": label, "target": label, "pred": label,
            "target_prob": 0.5, "values": json.dumps(values)}


def test_interval_wilson_for_hits_and_clipped_t_for_bounded_aucs():
    low, high, how = interval(np.array([1.0, 1.0, 1.0, 0.0]), "pointing_game_hit")
    assert how == "wilson"  # textbook Wilson 95% interval of 3 hits in 4: [0.3006, 0.9544]
    assert (low, high) == (pytest.approx(0.3006, abs=1e-4), pytest.approx(0.9544, abs=1e-4))
    low, high, how = interval(np.array([0.01, 0.02, 0.9]), "insertion_auc")
    assert how == "t_clipped" and low == 0.0 and high <= 1.0  # t would go below 0
    low, high, how = interval(np.array([0.4, 0.5, 0.6]), "insertion_auc")
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert how == "t" and (low, high) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert interval(np.array([0.3]), "insertion_auc")[2] == "none"


def test_pointing_game_class_mean_by_hand():
    rows = pd.DataFrame({"pointing_game_hit": [1.0, 1.0, 0.0, 0.0, np.nan],
                         "label": [1, 1, 1, 2, 3], "target": [1, 1, 1, 2, 3]})
    value, n = pointing_game_class_mean(rows)["pointing_game_class_mean_hit"]
    assert value == pytest.approx((2 / 3 + 0.0) / 2) and n == 4  # per sample it is 0.5
    rows["label"] = -1  # no label: the target's class
    assert pointing_game_class_mean(rows)["pointing_game_class_mean_hit"][0] == \
        pytest.approx(1 / 3)


def test_counts_per_metric_and_the_same_table_from_files_or_memory(tmp_path):
    rows = [
        _row(0, "vg", "ok", {"insertion_auc": 0.2, "pointing_game_hit": 1.0}, label=1),
        _row(1, "vg", "metric_error", {"pointing_game_hit": 0.0},
             "insertion: ValueError: boom", label=1),
        _row(2, "vg", "ok", {"insertion_auc": 0.4, "pointing_game_hit": 1.0}, label=2),
        _row(3, "vg", "bad_image", {}),
        _row(0, "ig", "degenerate_map", {"completeness_error": 0.5}, "constant map"),
        _row(1, "ig", "ok", {"insertion_auc": 0.3, "pointing_game_hit": 0.0,
                             "completeness_error": 0.1}),
    ]
    table = rows_to_table(rows, CONFIG, "run")
    whole, counts = summarize_run(Shards(table=table), CONFIG)
    files = []  # the same rows as two shard files, read as the pipeline reads them
    for i, part in enumerate((table.slice(0, 3), table.slice(3))):
        files.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(part, files[-1])
    from_files = summarize_run(Shards(files, pafs.LocalFileSystem()), CONFIG)[0]
    pd.testing.assert_frame_equal(whole, from_files)
    s = whole.set_index(["method", "metric"])
    assert s.loc[("vg", "insertion_auc"), ["n", "n_error", "n_rows"]].tolist() == [2, 2, 4]
    assert s.loc[("vg", "insertion_auc"), "mean"] == pytest.approx(0.3)
    # the metric_error row keeps its pointing game; bad_image is the one error there
    assert s.loc[("vg", "pointing_game_hit"), ["n", "n_error"]].tolist() == [3, 1]
    assert s.loc[("vg", "pointing_game_class_mean_hit"), "mean"] == pytest.approx(0.75)
    # a degenerate map: no metric, but the method's diagnostic uses it
    assert s.loc[("ig", "insertion_auc"), ["n", "n_degenerate"]].tolist() == [1, 1]
    assert s.loc[("ig", "completeness_error"), "n"] == 2
    # no placeholder rows for diagnostics that are not this method's
    assert ("vg", "completeness_error") not in s.index
    assert counts[("m", "vg")].metric_fails == {"insertion": 1}
    assert pa.Table.from_pandas(whole).num_rows == len(whole)


def test_report_cells_show_degenerate_maps_next_to_the_mean():
    from salbench.report.data import degenerate, skipped
    from salbench.report.tables import Stat

    row = pd.Series({"n": 3, "n_rows": 6, "n_error": 1, "n_degenerate": 2, "mean": 0.5})
    assert (skipped(row), degenerate(row)) == (0, 2)
    cell = Stat(0.5, 0.4, 0.6, 3, skipped(row), 1, degenerate(row)).cell()
    assert cell.detail.splitlines()[-1] == "n=3, 1 err, 2 degenerate"
    old = row.drop("n_degenerate")  # a summary written before the count existed
    assert (skipped(old), degenerate(old)) == (2, 0)
