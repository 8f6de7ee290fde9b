"""The driver's ShardWriter: rows in any order and batching give the same shard files, and
the rows of shards that are not complete wait on local disk, not in the driver."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from salbench.config import parse_config
from salbench.pipeline.run import merge_stage_stats, plan_shards, run_windows
from salbench.pipeline.writer import ShardFormat, ShardWriter

MODELS, METHODS, IMAGES, SHARD = ["fast", "slow"], ["vg", "gxi"], 12, 3


def _config(save_maps: bool = False):
    return parse_config({
        "name": "w", "seed": 0, "profile": "fast",
        "dataset": {"kind": "synthetic", "n": IMAGES, "size": 8},
        "models": [{"name": "tiny_cnn", "alias": m} for m in MODELS], "methods": METHODS,
        "metrics": ["insertion", "pointing_game"], "save_maps": save_maps,
        "resources": {"shard_size": SHARD},
    })


def _rows(model: str, save_maps: bool) -> list[dict]:
    rng = np.random.default_rng(len(model))
    rows = []
    for index in range(IMAGES):
        for method in METHODS:
            crop = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8).tobytes()
            rows.append({
                "shard": index // SHARD, "index": index, "sample_id": f"s{index}",
                "sample_key": f"k{index}", "cell_key": f"{index}{model}{method}",
                "model": model, "method": method, "status": "ok", "error": "",
                "label": index % 3, "target": index % 3, "pred": index % 3,
                "target_prob": float(rng.random()), "seconds": 0.01,
                "values": json.dumps({"insertion_auc": float(rng.random()),
                                      "insertion_curve": rng.random(5).tolist(),
                                      "pointing_game_hit": float(rng.random() < 0.5)}),
                **({"map": rng.random(16).astype(np.float32).tobytes(), "map_dtype": "float32",
                    "height": 4, "width": 4, "crop": crop} if save_maps else {}),
            })
    return rows


def _write(tmp_path, name: str, batches: list[list[dict]], save_maps: bool) -> ShardWriter:
    run_dir = tmp_path / name
    (run_dir / "samples").mkdir(parents=True)
    writer = ShardWriter(ShardFormat.of(_config(save_maps)), run_dir, "run",
                         plan_shards(IMAGES, SHARD))
    for batch in batches:
        writer.add(batch)
    return writer


def _tables(tmp_path, name: str) -> dict[str, bytes]:
    files = sorted((tmp_path / name / "samples").glob("*.parquet"))
    return {f.name: pq.read_table(f) for f in files}


def test_one_model_far_ahead_waits_on_disk_and_gives_the_same_shards(tmp_path):
    for save_maps in (False, True):
        fast, slow = _rows("fast", save_maps), _rows("slow", save_maps)
        together = [[r for r in fast + slow if r["shard"] == s] for s in range(IMAGES // SHARD)]
        ref = _write(tmp_path, f"together-{save_maps}", together, save_maps)
        assert len(ref.parts) == 0
        ref.finish()
        # every fast row first, in batches that split a sample's methods across parts
        skewed = [fast[i:i + 3] for i in range(0, len(fast), 3)]
        writer = _write(tmp_path, f"skewed-{save_maps}", skewed, save_maps)
        assert len(writer.parts) == IMAGES // SHARD  # every shard waits for "slow"
        on_disk = os.listdir(writer.parts._dir)
        assert len(on_disk) == len(skewed)  # one file per part, no rows held in the writer
        assert not list((tmp_path / f"skewed-{save_maps}" / "samples").glob("*.parquet"))
        for i in range(0, len(slow), 5):
            writer.add(slow[i:i + 5])
        timings = writer.finish()
        assert not os.path.exists(writer.parts._dir)
        assert timings["method_images"] == {f"{m}/{k}": IMAGES for m in MODELS
                                            for k in METHODS}
        want, got = _tables(tmp_path, f"together-{save_maps}"), _tables(
            tmp_path, f"skewed-{save_maps}")
        assert list(got) == list(want) and len(got) == IMAGES // SHARD
        for name in want:
            assert got[name].equals(want[name]), name
        if save_maps:  # one input image per sample x model, the crop of its first row
            table = next(iter(got.values())).to_pandas()
            with_png = table[table["input_png"].notna()]
            assert len(with_png) == SHARD * len(MODELS)
            assert not with_png.duplicated(["index", "model"]).any()
            first = with_png.iloc[0]
            row = next(r for r in fast + slow if r["index"] == first["index"]
                       and r["model"] == first["model"] and r["method"] == first["method"])
            png = np.asarray(Image.open(io.BytesIO(first["input_png"])))
            assert png.tobytes() == row["crop"]


def test_run_windows_take_whole_shards_up_to_the_window():
    pending = [{"shard": s, "start": a, "stop": b} for s, a, b in
               [(0, 0, 16), (2, 32, 48), (3, 48, 64), (4, 64, 70), (9, 144, 160)]]
    assert list(run_windows(pending, None)) == [pending]
    got = [[item["shard"] for item in w] for w in run_windows(pending, 32)]
    assert got == [[0, 2], [3, 4], [9]]  # 16 + 16; 16 + 6 (+ 16 > 32); 16
    # a shard larger than the window is a window of its own
    assert [[i["shard"] for i in w] for w in run_windows(pending, 10)] == [[0], [2], [3], [4],
                                                                           [9]]
    assert list(run_windows([], 32)) == []


def test_stage_statistics_of_windows_add_up():
    first = {"Read": {"time_total_s": 1.5, "start_s": 100.0, "end_s": 104.0, "rows": 4,
                      "bytes": 40},
             "Attr": {"time_total_s": 3.0, "start_s": 101.0, "end_s": 105.0, "rows": 8}}
    second = {"Read": {"time_total_s": 0.5, "start_s": 110.0, "end_s": 111.0, "rows": 2,
                       "bytes": 20},
              "Attr": {"time_total_s": 1.0, "start_s": 110.5, "end_s": 112.5, "rows": 4}}
    assert merge_stage_stats([first, second]) == {
        "Read": {"time_total_s": 2.0, "start_s": 0.0, "end_s": 11.0, "rows": 6, "bytes": 60},
        "Attr": {"time_total_s": 4.0, "start_s": 1.0, "end_s": 12.5, "rows": 12}}
    assert merge_stage_stats([]) == {}
