"""Out-of-core reads: shards file by file (scan.py), a run split by model x method in one
scan (groups.py), curve bands summed block by block, compare's pairing on sorted ids.

Expected values come from pandas / numpy on the same rows held whole (an independent
computation), never from the code under test.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from salbench.report.intervals import CurveMoments, curve_band
from salbench.results.groups import Groups, split_by_group
from salbench.results.scan import Shards

STATUSES = ["ok", "ok", "ok", "metric_error", "bad_image", "degenerate_map", "filtered"]


def _rows(n: int, seed: int = 0) -> pd.DataFrame:
    """n rows of three models x two methods, interleaved, with statuses, errors, a scalar
    and a 5-point curve."""
    rng = np.random.default_rng(seed)
    status = rng.choice(STATUSES, n)
    error = np.where(status == "metric_error",
                     rng.choice(["insertion: ValueError: x", "insertion: E: a\nwsol: E: b"],
                                n), "")
    return pd.DataFrame({
        "index": np.arange(n) // 6, "sample_id": [f"s{i // 6:05d}" for i in range(n)],
        "model": rng.choice(["m1", "m2", "m3"], n), "method": rng.choice(["vg", "ig"], n),
        "status": status, "error": error, "score": rng.random(n),
        "curve": [rng.random(5).astype(np.float32) for _ in range(n)],
    })


def _write(frame: pd.DataFrame, tmp_path, parts: int) -> Shards:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("curve"), "curve",
                             table.column("curve").cast(pa.list_(pa.float32())))
    files = []
    for i, piece in enumerate(np.array_split(np.arange(len(frame)), parts)):
        files.append(str(tmp_path / f"shard-{i:05d}.parquet"))
        pq.write_table(table.take(pa.array(piece)), files[-1], row_group_size=97)
    return Shards(files, pafs.LocalFileSystem())


def test_groups_hold_each_groups_rows_and_counts_like_pandas(tmp_path):
    frame = _rows(3000)
    shards = _write(frame, tmp_path, parts=7)
    with Groups(shards, ["index", "status", "score", "curve"]) as groups:
        expected = frame.groupby(["model", "method"])
        assert set(groups.counts) == set(expected.groups)
        for (model, method), want in expected:
            got = groups.read(model, method).to_pandas()
            np.testing.assert_array_equal(got["index"], want["index"])
            np.testing.assert_array_equal(got["score"], want["score"])
            np.testing.assert_array_equal(np.stack(got["curve"]), np.stack(want["curve"]))
            count = groups.counts[(model, method)]
            assert count.rows == len(want)
            assert dict(count.statuses) == want["status"].value_counts().to_dict()
            lines = want.loc[want["status"] == "metric_error", "error"].str.split("\n")
            labels = pd.Series([ln.split(":")[0] for ls in lines for ln in ls])
            assert dict(count.metric_fails) == labels.value_counts().to_dict()
            assert count.errors == (~want["status"].isin(
                ["ok", "metric_error", "degenerate_map", "filtered"])).sum()
            blocks = list(groups.batches(model, method, ["score"], batch_rows=100))
            assert all(b.num_rows >= 100 for b in blocks[:-1])
            assert sum(b.num_rows for b in blocks) == len(want)
        assert groups.read("m9", "vg", ["score"]).num_rows == 0
        assert groups.read("m9", "vg", ["score"]).schema.field("score").type == pa.float64()
        with pytest.raises(KeyError, match="error"):
            groups.read("m1", "vg", ["error"])
        folder = groups._dir
        assert os.listdir(folder)
    assert not os.path.exists(folder)


def test_a_read_column_holds_its_own_bytes_not_the_whole_rows(tmp_path):
    frame = _rows(4000)
    frame["wide"] = [np.zeros(200, np.float32)] * len(frame)
    shards = _write(frame, tmp_path, parts=4)
    with Groups(shards, ["score", "wide"]) as groups:
        model, method = sorted(groups.counts)[0]
        before = pa.total_allocated_bytes()
        score = groups.read(model, method, ["score"])
        held = pa.total_allocated_bytes() - before
        assert held <= 2 * score.nbytes + 4096  # the rows are 100x wider than score


def test_split_by_group_routes_every_row_once():
    frame = _rows(500, seed=3)
    batch = pa.RecordBatch.from_pandas(frame[["model", "method", "score"]],
                                       preserve_index=False)
    seen = []
    for (model, method), rows in split_by_group(batch):
        assert set(rows.column("model").to_pylist()) == {model}
        assert set(rows.column("method").to_pylist()) == {method}
        seen += rows.column("score").to_pylist()
    assert sorted(seen) == sorted(frame["score"])


def test_shards_read_file_by_file_fill_a_missing_column_with_nulls(tmp_path):
    a = pa.table({"model": ["m"] * 3, "x": [1.0, 2.0, 3.0], "y": [1, 2, 3]})
    b = pa.table({"model": ["m"] * 2, "x": [4.0, 5.0]})
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(b, tmp_path / "b.parquet")
    shards = Shards([str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")],
                    pafs.LocalFileSystem())
    assert pa.types.is_dictionary(shards.schema.field("model").type)
    table = shards.read(["x", "y", "model"])
    assert table.column("x").to_pylist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert table.column("y").to_pylist() == [1, 2, 3, None, None]
    assert table.column("model").type == pa.string()
    assert [len(b) for b in shards.batches(["x"], batch_rows=2)] == [2, 1, 2]


def test_curve_moments_equal_numpy_over_the_curves_held_whole():
    rng = np.random.default_rng(5)
    curves = rng.beta(2, 5, size=(1003, 11)) + 1e4  # a large offset: a naive sum loses it
    acc = CurveMoments()
    for block in np.array_split(curves, [1, 2, 50, 51, 700]):
        acc.add(block)
    assert acc.n == len(curves)
    np.testing.assert_allclose(acc.mean, curves.mean(axis=0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(acc.m2 / (acc.n - 1), curves.var(axis=0, ddof=1), rtol=1e-9)
    mean, low, high = curve_band(curves - 1e4, "insertion_curve")
    half = 1.9623 * (curves - 1e4).std(axis=0, ddof=1) / np.sqrt(len(curves))
    np.testing.assert_allclose(high - mean, np.minimum(half, 1 - mean), rtol=1e-3)
