"""The Ray pipeline end to end: tables, error rows, determinism, resume, config errors, CLI.

What is Ray's own runs on the session's local Ray (``ray_session``): the tables and stage
statistics of a run (``tiny_run``), windows and multi-shard blocks (Ray Data executions and
blocks), the writer actor's failure, the placement of two models on two CPUs, the CLI.
What does not depend on the executor runs in-process (``in_process=True``: the same stage
functions, actors and ShardWriter in this process; both executors write equal tables,
tests/test_api.py and tests/test_numerics.py): error rows made by the reader and the decoder,
resume's bookkeeping, every metric's columns, an embedded model's predictions, and the
second run of a config whose tables must equal ``tiny_run``'s.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from salbench.cli import DEMO_CONFIG, main
from salbench.config import load_config, parse_config
from salbench.errors import ConfigError
from salbench.pipeline.run import resume, run
from salbench.results.tables import finished_shards, read_samples, shard_paths

TINY = {
    "name": "t",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 5, "size": 32, "seed": 3},
    "models": ["tiny_smooth"],
    "methods": ["vg", {"name": "ig", "steps": 8}],
    "metrics": ["insertion", "deletion", "pointing_game"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}


def _config(tmp_path: Path, **changes) -> dict:
    cfg = json.loads(json.dumps(TINY))
    cfg["out"] = str(tmp_path / "runs")
    cfg.update(changes)
    return cfg


def _tables(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    samples = read_samples(run_dir).drop(columns=["run_id"])
    summary = pd.read_parquet(run_dir / "summary.parquet")
    return samples, summary


def _assert_same_tables(run_a: Path, run_b: Path) -> None:
    """The two runs' samples (run ids aside) and summaries are equal."""
    a, b = _tables(run_a), _tables(run_b)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def _stages(run_dir: Path) -> dict:
    """The manifest's Ray Data stage statistics."""
    return json.loads((run_dir / "manifest.json").read_text())["timings"]["stages"]


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory):
    """TINY on the Ray graph (its manifest has Ray Data's stage statistics)."""
    tmp = tmp_path_factory.mktemp("tiny")
    return run(parse_config(_config(tmp)), progress=None)


def test_tables_and_manifest(tiny_run):
    s = tiny_run.samples
    assert len(s) == 5 * 2 and set(s["method"]) == {"vg", "ig"}
    assert (s["status"] == "ok").all() and (s["model"] == "tiny_smooth").all()
    assert s["run_id"].nunique() == 1 and s["run_id"].iloc[0] == tiny_run.run_dir.name
    ig = s[s["method"] == "ig"]
    assert ig["completeness_error"].notna().all() and s.loc[s.method == "vg",
                                                           "completeness_error"].isna().all()
    assert all(len(c) == 11 for c in s["insertion_curve"])  # fast profile: 10 steps
    assert s["insertion_auc"].between(0, 1).all() and s["pointing_game_hit"].isin([0, 1]).all()
    # every row's AUC is the trapezoid of its own curve
    for curve, auc in zip(s["deletion_curve"], s["deletion_auc"], strict=False):
        c = np.asarray(curve, np.float64)
        assert auc == pytest.approx(((c[1:] + c[:-1]) / 2).mean(), rel=1e-6)
    summ = tiny_run.summary
    row = summ[(summ.method == "ig") & (summ.metric == "insertion_auc")].iloc[0]
    vals = ig["insertion_auc"].to_numpy()
    assert row["n"] == 5 and row["mean"] == pytest.approx(vals.mean())
    assert row["ci95_low"] < row["mean"] < row["ci95_high"]
    man = json.loads((tiny_run.run_dir / "manifest.json").read_text())
    assert man["status"] == "complete" and man["counts"]["rows"] == 10
    assert man["dataset"]["rows"] == 5 and len(man["dataset"]["fingerprint"]) == 16
    assert man["packages"]["torch"] and man["config"]["methods"][1] == {"name": "ig", "steps": 8}
    stages = man["timings"]["stages"]
    assert stages["MapBatches(AttributeActor)"]["rows"] == 10  # 5 samples x 2 methods
    assert stages["MapBatches(AttributeActor)"]["bytes"] > 0
    assert finished_shards(tiny_run.run_dir) == {0, 1, 2}
    # samples/ is a plain Parquet dataset
    assert len(pd.read_parquet(tiny_run.run_dir / "samples")) == 10


def test_same_config_twice_gives_identical_tables(tiny_run, tmp_path):
    """The second run is in-process: equal tables to the Ray run's need everything seeded
    (run after run, executor aside). Ray reruns of TINY equal it too: the windows, blocks
    and writer tests."""
    again = run(parse_config(_config(tiny_run.run_dir.parent.parent)), progress=None,
                in_process=True)
    assert again.run_dir != tiny_run.run_dir  # a second run gets its own directory
    a, b = _tables(tiny_run.run_dir), _tables(again.run_dir)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


def test_a_run_in_windows_gives_the_one_graphs_tables(tiny_run, tmp_path):
    """window_images: 3 runs the 3 shards (2 + 2 + 1 images) as 2 Ray Data executions,
    shard 0, then shards 1 and 2 (2 + 2 > 3, 2 + 1 <= 3); the tables are the single graph's,
    the stage statistics the windows' sums."""
    cfg = _config(tmp_path, resources={**TINY["resources"], "window_images": 3})
    windowed = run(parse_config(cfg), progress=None)
    _assert_same_tables(tiny_run.run_dir, windowed.run_dir)
    attribute = _stages(windowed.run_dir)["MapBatches(AttributeActor)"]
    assert attribute["rows"] == 10 and 0 <= attribute["start_s"] < attribute["end_s"]
    log = (windowed.run_dir / "run.log").read_text()
    assert log.count("placement plan") == 2, log  # each window plans its pools


def test_blocks_of_several_shards_give_the_one_shard_blocks_tables(tiny_run, tmp_path):
    """block_images: 4 reads the 3 shards (2 + 2 + 1 images) as 2 Ray Data blocks (shards 0
    and 1, then 2); the model stage still batches each shard on its own, so the tables are
    those of one shard per block."""
    cfg = _config(tmp_path, resources={**TINY["resources"], "block_images": 4})
    blocked = run(parse_config(cfg), progress=None)
    _assert_same_tables(tiny_run.run_dir, blocked.run_dir)
    assert _stages(blocked.run_dir)["FromItems"]["rows"] == 2  # one item per block
    assert _stages(tiny_run.run_dir)["FromItems"]["rows"] == 3
    assert "2 shards per Ray Data block" in (blocked.run_dir / "run.log").read_text()


def test_resume_recomputes_only_missing_shards(tiny_run, tmp_path):
    """Resume's bookkeeping (finished shards, leftovers, manifest) is the driver's, the same
    for both executors: the missing shards are computed in-process. (The Ray graph resumes
    in test_a_shard_that_cannot_be_written_fails_the_run_with_its_cause, and this same
    half-finished run, on object storage, in tests/test_s3.py.)"""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, copy)
    # a run killed mid-way: shard 1 never finished, shard 2 was written but not marked
    for p in shard_paths(copy, 1):
        p.unlink()
    shard_paths(copy, 2)[1].unlink()
    (copy / "samples" / ".shard-00003.parquet.tmp-99").write_bytes(b"partial")
    (copy / "summary.parquet").unlink()
    assert finished_shards(copy) == {0}
    res = resume(copy, progress=None, in_process=True)
    man = json.loads((copy / "manifest.json").read_text())
    assert man["counts"]["shards_run_now"] == 2
    a, b = _tables(tiny_run.run_dir), _tables(copy)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    assert len(res.samples) == 10 and not res.samples.duplicated(["index", "method"]).any()


def test_a_shard_that_cannot_be_written_fails_the_run_with_its_cause(tiny_run, tmp_path):
    """The writer actor's failure reaches the driver as the writer's own exception (not
    Ray's wrapper): the run raises it and the manifest records it, resumably."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run.run_dir, copy)
    for p in shard_paths(copy, 1):
        p.unlink()
    shard_paths(copy, 1)[0].mkdir()  # a directory where shard 1's file must go
    run_id = json.loads((copy / "manifest.json").read_text())["run_id"]
    mine = f"salbench-parts-{run_id}-*"  # other processes may use TMPDIR at the same time
    assert not list(Path(tempfile.gettempdir()).glob(mine))
    with pytest.raises(OSError) as info:
        resume(copy, progress=None)
    # the writer actor's part folder is gone with the failed run
    assert not list(Path(tempfile.gettempdir()).glob(mine))
    assert "RayTaskError" not in type(info.value).__name__
    man = json.loads((copy / "manifest.json").read_text())
    assert man["status"] == "failed" and man["resume"] == f"salbench resume {copy}"
    assert man["error"].startswith(type(info.value).__name__), man["error"]
    assert finished_shards(copy) == {0, 2}


def _png(rng: np.random.Generator, size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_files_become_error_rows(tmp_path):
    """Error rows come from the reader and the decoder (read_shard, decode_batch), the same
    functions in both executors: in-process."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a_good.png").write_bytes(_png(rng))
    (root / "b_empty.jpg").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (root / "c_truncated.jpg").write_bytes(jpeg.getvalue()[:300])
    (root / "d_text.jpg").write_text("this is not an image")
    (root / "e_good.png").write_bytes(_png(rng, (33, 60)))
    (root / "f_unlabelled.png").write_bytes(_png(rng))
    (root / "labels.csv").write_text(
        "file,label\na_good.png,3\nb_empty.jpg,1\nc_truncated.jpg,1\nd_text.jpg,1\n"
        "e_good.png,12\n"
    )
    cfg = _config(tmp_path, dataset={"kind": "folder", "path": str(root),
                                     "labels": str(root / "labels.csv")})
    res = run(parse_config(cfg), progress=None, in_process=True)
    s = res.samples
    assert len(s) == 6 * 2  # nothing dropped: 6 files x 2 methods
    by_id = s.groupby("sample_id")["status"].first()
    assert by_id["a_good.png"] == "ok"
    assert (by_id[["b_empty.jpg", "c_truncated.jpg", "d_text.jpg"]] == "bad_image").all()
    # label 12 does not exist for a 10-class model: an error row that says so
    assert by_id["e_good.png"] == "bad_label"
    assert by_id["f_unlabelled.png"] == "bad_image"
    errors = s.groupby("sample_id")["error"].first()
    assert "empty" in errors["b_empty.jpg"] and "truncated" in errors["c_truncated.jpg"]
    assert "not an image" in errors["d_text.jpg"] and "out of range" in errors["e_good.png"]
    assert "missing label" in errors["f_unlabelled.png"]
    summ = res.summary
    assert set(summ["n_error"]) == {5} and set(summ["n_rows"]) == {6}


def test_config_errors_name_the_bad_key(tmp_path):
    with pytest.raises(ConfigError, match=r"methods\[1\].*valid methods"):
        parse_config(_config(tmp_path, methods=["vg", "igg"]))
    with pytest.raises(ConfigError, match=r"models\[0\].*valid models"):
        parse_config(_config(tmp_path, models=["resnet5O"]))
    with pytest.raises(ConfigError, match=r"metrics\[0\].*valid metrics"):
        parse_config(_config(tmp_path, metrics=["sick"]))
    with pytest.raises(ConfigError, match=r"methods\[1\].*stepz"):
        parse_config(_config(tmp_path, methods=["vg", {"name": "ig", "stepz": 3}]))
    with pytest.raises(ConfigError, match=r"unknown key.*modles"):
        parse_config({**_config(tmp_path), "modles": []})
    with pytest.raises(ConfigError, match=r"dataset.kind.*valid datasets"):
        parse_config(_config(tmp_path, dataset={"kind": "imagenett"}))
    with pytest.raises(ConfigError, match=r"resources.batch_size.*positive"):
        parse_config(_config(tmp_path, resources={"batch_size": 0}))
    with pytest.raises(ConfigError, match=r"resources.internal_batch_size.*positive"):
        parse_config(_config(tmp_path, resources={"internal_batch_size": 0}))
    with pytest.raises(ConfigError, match=r"resources.internal_batch_size: expected int"):
        parse_config(_config(tmp_path, resources={"internal_batch_size": 8.5}))
    with pytest.raises(ConfigError, match=r"seed: expected int"):
        parse_config(_config(tmp_path, seed="zero"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.usefixtures("ray_session")
def test_missing_weights_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("SALBENCH_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    cfg = _config(tmp_path, models=["resnet18"])
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth"):
        run(parse_config(cfg), progress=None)


@pytest.mark.usefixtures("ray_session")
def test_cli_list_run_and_errors(tmp_path, capsys):
    assert main(["list", "methods"]) == 0
    assert {"vg", "gxi", "ig"} <= set(capsys.readouterr().out.split())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**_config(tmp_path), "methods": ["vg"]}))
    assert main(["run", str(cfg), "--set", "dataset.n=2"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "run directory:" in out and "insertion_auc" in out
    assert "cells/s" in captured.err and "ETA" in captured.err and "shard 0 written" in captured.err
    assert main(["run", str(cfg), "--set", "dataset.n=1", "--quiet"]) == 0
    assert "[salbench]" not in capsys.readouterr().err
    assert main(["run", str(cfg), "--set", "methods=[nope]"]) == 2
    err = capsys.readouterr().err
    assert "methods[0]" in err and "valid methods" in err and "Traceback" not in err


def test_progress_line():
    from salbench.pipeline.progress import progress_line

    line = progress_line(3, 2, 4, 10, 40, 125.0)
    assert line == "[salbench] shard 3 written: 2/4 shards, 10/40 cells, 2m05s elapsed"


def test_demo_config_file_matches_the_cli():
    repo_cfg = yaml.safe_load((Path(__file__).parents[1] / "configs" / "demo.yaml").read_text())
    assert repo_cfg == DEMO_CONFIG


@pytest.mark.slow
def test_embedded_model_on_sample_photos(tmp_path):
    """The embedded model's predictions on the sample photos (in-process)."""
    cfg = _config(tmp_path, dataset={"kind": "sample", "names": ["chelsea", "coffee", "coins"]},
                  models=["efficientnet_lite0"], methods=["vg", {"name": "ig", "steps": 4}],
                  resources={"shard_size": 3, "batch_size": 3})
    res = run(parse_config(cfg), progress=None, in_process=True)
    s = res.samples.set_index(["sample_id", "method"])
    assert (s["status"] == "ok").all() and len(s) == 6
    assert s.loc[("coffee", "vg"), "target"] == 967 and s.loc[("coffee", "vg"), "pred"] == 967
    assert s.loc[("coins", "vg"), "label"] == -1  # no ImageNet class: target = top-1
    assert s.loc[("coins", "vg"), "target"] == s.loc[("coins", "vg"), "pred"]
    assert np.isnan(s.loc[("coins", "vg"), "pointing_game_hit"])  # no box
    assert s.loc[("coffee", "ig"), "pointing_game_hit"] in (0.0, 1.0)


def test_every_metric_through_the_pipeline(tmp_path):
    """Every registered metric's columns through the pipeline's stages, in-process (the Ray
    graph with every metric writes the in-process tables:
    test_complexity_localisation_metrics.test_metrics_all_ray_and_in_process_agree)."""
    import salbench

    cfg = _config(tmp_path, dataset={"kind": "synthetic", "n": 2, "size": 64, "seed": 1},
                  methods=["vg", "idgi_ig"], metrics=salbench.metrics.names())
    config = parse_config(cfg)
    res = run(config, progress=None, in_process=True)
    s = res.samples
    assert (s["status"] == "ok").all(), s["error"].tolist()
    cols = config.value_columns()
    assert set(cols) <= set(s.columns)
    for col, kind in cols.items():
        if kind == "float" and col not in ("completeness_error", "score_delta"):
            assert s[col].notna().any(), col
    summary_metrics = set(res.summary["metric"])
    assert {"sic_auc", "wsol_f1", "mprt_spearman", "sensitivity_n",
            "sic_aggregate_auc", "aic_msssim_aggregate_auc"} <= summary_metrics


@pytest.mark.usefixtures("ray_session")
def test_two_models_with_pic_fit_a_two_cpu_cluster(tmp_path):
    """Two models x (attribute, bokeh, score) pools + finalize ask for more than 2 CPUs;
    the graph scales the requests so the run finishes instead of waiting forever."""
    cfg = _config(tmp_path, dataset={"kind": "synthetic", "n": 2, "size": 48, "seed": 2},
                  models=["tiny_smooth", "tiny_cnn"], methods=["vg"],
                  metrics=["sic", "aic", "pointing_game"])
    res = run(parse_config(cfg), progress=None)
    s = res.samples
    assert len(s) == 4 and (s["status"] == "ok").all(), s["error"].tolist()
    assert set(s["model"]) == {"tiny_smooth", "tiny_cnn"}
    assert s["sic_skipped"].notna().all() and s["aic_skipped"].notna().all()


def test_cpu_scale():
    from salbench.pipeline.plan import make_plan

    one = parse_config({**TINY, "out": "x", "metrics": ["insertion"]})
    assert make_plan(one, {"CPU": 8}).cpu_scale == 1.0
    two = parse_config({**TINY, "out": "x", "models": ["tiny_smooth", "tiny_cnn"],
                        "metrics": ["sic"]})
    # 2 x (attribute 1 + score 1 + bokeh 0.5) + finalize 0.5 = 5.5 CPUs into 2 - 0.5
    assert make_plan(two, {"CPU": 2}).cpu_scale == pytest.approx(1.5 / 5.5)


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> None:
    img.save(path, fmt, **kw)


def test_bad_input_zoo_nothing_valid_is_lost(tmp_path, monkeypatch):
    """Every odd-but-valid image is evaluated; every unusable one is an error row with its
    reason; a poisoned Parquet shard (corrupt pages) and a junk shard do not stop the run.
    The rows and their errors are the reader's and the decoder's: in-process."""
    import struct
    import zlib

    from salbench import storage
    from salbench.datasets import open_dataset
    from salbench.datasets.parquet import write_shards

    # the poisoned shard's reads fail with an OSError that storage.retry retries (5 attempts,
    # 0.2 s doubling: 6 s of waiting in this run); the attempts stay, the waits go
    monkeypatch.setattr(storage, "RETRY_BASE_SECONDS", 0.0)
    rng = np.random.default_rng(1)
    root = tmp_path / "zoo"
    root.mkdir()
    rgb = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    _save(rgb.convert("CMYK"), root / "cmyk.jpg", "JPEG")
    _save(Image.fromarray(rng.integers(0, 65535, (40, 40), dtype=np.uint16)), root / "g16.png",
          "PNG")
    _save(rgb.convert("L"), root / "gray.png", "PNG")
    _save(rgb.convert("RGBA"), root / "rgba.png", "PNG")
    _save(rgb.convert("P"), root / "palette.png", "PNG")

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2,
                                                             0, 0, 0))
    (root / "bomb.png").write_bytes(bomb + chunk(b"IEND", b""))
    (root / "empty.png").write_bytes(b"")
    res = run(parse_config(_config(tmp_path, dataset={"kind": "folder", "path": str(root)},
                                   methods=["vg"])), progress=None, in_process=True)
    by_id = res.samples.set_index("sample_id")
    ok = {"cmyk.jpg", "g16.png", "gray.png", "rgba.png", "palette.png"}
    assert (by_id.loc[sorted(ok), "status"] == "ok").all(), by_id["error"].to_dict()
    assert by_id.loc["bomb.png", "status"] == "bad_image"
    assert "too large" in by_id.loc["bomb.png", "error"]
    assert by_id.loc["empty.png", "status"] == "bad_image"

    shards = tmp_path / "shards"
    write_shards(open_dataset({"kind": "synthetic", "n": 6, "size": 32, "seed": 4}), shards,
                 rows_per_shard=2)
    poisoned = sorted(shards.glob("*.parquet"))[1]
    data = bytearray(poisoned.read_bytes())
    data[4:200] = b"\xff" * 196  # page headers destroyed, footer intact
    poisoned.write_bytes(bytes(data))
    (shards / "zz-junk.parquet").write_bytes(b"this is not parquet")
    cfg = _config(tmp_path, dataset={"kind": "parquet", "path": str(shards)}, methods=["vg"])
    res = run(parse_config(cfg), progress=None, in_process=True)
    s = res.samples
    assert len(s) == 7  # 6 rows + 1 stand-in row for the junk file: nothing dropped
    assert (s["status"] == "ok").sum() == 4
    bad = s[s["status"] != "ok"]
    assert bad["error"].str.contains("unreadable dataset rows").sum() == 2
    assert bad["error"].str.contains("zz-junk.parquet").sum() == 1


@pytest.mark.parametrize("resources, expected", [
    ({}, {"ig": 16, "vg": 3}),  # CPU default for methods that set none
    ({"internal_batch_size": 5}, {"ig": 5, "vg": 3}),
    ({"internal_batch_size": None}, {"ig": 16, "vg": 3}),
])
def test_model_actor_internal_batch_size(tmp_path, monkeypatch, resources, expected):
    """On CPU a model actor chunks at CPU_INTERNAL_BATCH_SIZE (16) unless the config's
    resources or the method's own parameters say otherwise (spied: what the method's function
    receives)."""
    import dataclasses

    import salbench.methods
    from salbench.methods.engine import CPU_INTERNAL_BATCH_SIZE

    assert CPU_INTERNAL_BATCH_SIZE == 16
    seen: dict[str, int] = {}
    real_get = salbench.methods.get

    def spied(name):
        spec = real_get(name)

        def fn(model, x, target, **args):
            seen[name] = args.get("internal_batch_size")
            return spec.fn(model, x, target, **args)
        return dataclasses.replace(spec, fn=fn)

    monkeypatch.setattr(salbench.methods, "get", spied)
    cfg = _config(tmp_path, methods=["ig", {"name": "vg", "internal_batch_size": 3}],
                  resources={"shard_size": 4, "torch_threads": 1, "device": "cpu",
                             **resources})
    samples = run(parse_config(cfg), progress=None, in_process=True).samples
    assert (samples["status"] == "ok").all()
    assert seen == expected
