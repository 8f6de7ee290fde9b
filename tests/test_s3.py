"""Datasets and results on object storage, against a local S3 server (moto): the storage
helpers, ``salbench shard`` / ``run`` / ``resume`` / ``report`` / ``compare`` with S3 URIs,
kill-and-resume, missing objects, and Hugging Face image Parquet files read as they are."""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import KILLED_MID_RUN, stop_process_group
from PIL import Image

from salbench import heartbeat, storage
from salbench.cli import main
from salbench.config import parse_config
from salbench.datasets import open_dataset
from salbench.datasets import shards as shard_stage
from salbench.errors import ConfigError
from salbench.pipeline.manifest import read_manifest
from salbench.pipeline.run import run
from salbench.results.tables import finished_shards, read_samples, shard_paths

_COUNTER = itertools.count()

CONFIG = {
    "name": "s3",
    "seed": 0,
    "profile": "fast",
    "models": ["tiny_cnn"],
    "methods": ["vg", "gxi"],
    "metrics": ["insertion", "deletion", "pointing_game"],
    "resources": {"shard_size": 3, "batch_size": 3, "torch_threads": 1},
}


@pytest.fixture()
def bucket(s3_server) -> str:
    """A new empty bucket on the local S3 server; its ``s3://`` URI."""
    name = f"salbench-test-{os.getpid()}-{next(_COUNTER)}"
    fs = pafs.S3FileSystem(endpoint_override=s3_server.split("://")[1], scheme="http",
                           allow_bucket_creation=True)
    fs.create_dir(name)
    return f"s3://{name}"


def _png(rng: np.random.Generator, size: tuple[int, int] = (40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _photos(root: Path, n: int = 7) -> Path:
    rng = np.random.default_rng(5)
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"img{i:02d}.png").write_bytes(_png(rng, (36 + i, 44)))
    (root / "labels.csv").write_text("file,label\n" + "".join(
        f"img{i:02d}.png,{i % 10}\n" for i in range(n)))
    return root


def _rows(run_dir: Path | str) -> pd.DataFrame:
    return read_samples(run_dir).drop(columns=["run_id"])


# --------------------------------------------------------------------------- storage
def test_storage_paths_and_uris(bucket, tmp_path):
    assert storage.join(tmp_path, "a", "b.txt") == tmp_path / "a" / "b.txt"
    assert storage.join(f"{bucket}/x/", "y", "z.json") == f"{bucket}/x/y/z.json"
    assert storage.basename(f"{bucket}/runs/r1/") == "r1"
    assert storage.normalize(f"file://{tmp_path}") == tmp_path and not storage.is_uri("a/b")
    for base in (tmp_path / "d", f"{bucket}/d"):
        assert not storage.exists(base)
        storage.write_text(storage.join(base, "one.txt"), "1")
        storage.write_bytes(storage.join(base, "sub", "two.parquet"), b"2")
        storage.write_bytes(storage.join(base, "three.parquet"), b"3")
        assert storage.is_dir(base) and storage.read_text(storage.join(base, "one.txt")) == "1"
        assert [storage.basename(f) for f in storage.list_files(base, "*.parquet")] == [
            "three.parquet"]
        assert [storage.basename(f) for f in storage.glob(storage.join(base, "**/*.parquet"))
                ] == ["two.parquet", "three.parquet"]
        assert storage.glob(storage.join(base, "t*.parquet")) == [
            storage.join(base, "three.parquet")]
        storage.delete(storage.join(base, "one.txt"))
        assert not storage.exists(storage.join(base, "one.txt"))
    assert not [p for p in (tmp_path / "d").iterdir() if p.name.startswith(".")]  # no temps
    with pytest.raises(FileNotFoundError, match=re.escape(f"{bucket}/d/gone.txt: not found")):
        storage.read_bytes(f"{bucket}/d/gone.txt")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_commit_protocol_counts_a_shard_only_with_an_agreeing_marker(where, request, tmp_path):
    from salbench.results.tables import write_shard

    run_dir = request.getfixturevalue("bucket") + "/run" if where == "s3" else tmp_path / "run"
    table = pa.table({"index": pa.array([0, 1, 2], pa.int64()), "model": ["m"] * 3,
                      "method": ["vg"] * 3})
    for shard in range(4):
        write_shard(run_dir, shard, table)
    assert finished_shards(run_dir) == {0, 1, 2, 3}
    storage.delete(shard_paths(run_dir, 1)[1])                  # object, no marker
    storage.delete(shard_paths(run_dir, 2)[0])                  # marker, no object
    storage.write_text(shard_paths(run_dir, 3)[1], json.dumps({"shard": 3, "rows": 2}))
    assert finished_shards(run_dir) == {0}
    assert list(read_samples(run_dir)["index"]) == [0, 1, 2]


def test_retry_backs_off_on_transient_errors_only(monkeypatch):
    monkeypatch.setattr(storage, "RETRY_BASE_SECONDS", 0.0)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("connection reset")
        return "ok"

    assert storage.retry(flaky, "s3://b/k") == "ok" and len(calls) == 3

    def down() -> None:
        calls.append(1)
        raise OSError("connection reset")

    calls.clear()
    with pytest.raises(OSError, match=r"s3://b/k: connection reset \(after 5 attempts\)"):
        storage.retry(down, "s3://b/k")
    assert len(calls) == storage.RETRY_ATTEMPTS

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("no such key")

    calls.clear()
    with pytest.raises(FileNotFoundError, match="s3://b/k: not found"):
        storage.retry(missing, "s3://b/k")
    assert len(calls) == 1  # a missing object is not retried


def test_fsspec_fallback_for_schemes_pyarrow_lacks():
    pytest.importorskip("fsspec")
    uri = "memory://salbench-test/x/a.txt"
    storage.write_text(uri, "hello")
    assert storage.read_text(uri) == "hello"
    assert storage.list_files("memory://salbench-test/x") == [uri]


# --------------------------------------------------------------------------- the CLI on S3
def _write_config(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


def _run_dir(out: str) -> str:
    (line,) = [x for x in out.splitlines() if x.startswith("run directory: ")]
    return line.removeprefix("run directory: ")


def test_cli_shard_run_resume_report_compare_on_s3(s3_server, ray_session, bucket, tmp_path,
                                                    monkeypatch, capsys):
    photos = _photos(tmp_path / "inputs" / "photos")
    shards = f"{bucket}/shards"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["shard", str(photos), shards, "--rows-per-shard", "3"]) == 0
    assert "wrote 7 rows (0 with errors) in 3 shard(s)" in capsys.readouterr().out
    assert [storage.basename(f) for f in storage.list_files(shards)] == [
        f"shard-0000{i}.parquet" for i in range(3)]

    dataset = {"kind": "parquet", "path": shards}
    cfg = _write_config(tmp_path / "inputs" / "s3.yaml", dataset=dataset, out=f"{bucket}/runs")
    assert main(["run", str(cfg), "--quiet"]) == 0
    s3_run = _run_dir(capsys.readouterr().out)
    assert s3_run.startswith(f"{bucket}/runs/s3-")
    for name in ("manifest.json", "config.yaml", "run.log", "summary.parquet"):
        assert storage.is_file(storage.join(s3_run, name)), name
    assert finished_shards(s3_run) == {0, 1, 2}
    s3_rows = _rows(s3_run)
    assert len(s3_rows) == 7 * 2 and (s3_rows["status"] == "ok").all()
    assert s3_rows["pointing_game_hit"].isna().all()  # no boxes in a folder of photos

    # the same config with out on local disk (in-process: both executors write equal
    # tables, tests/test_numerics.py): the same rows
    local_out = tmp_path / "local-runs"
    local_cfg = {**yaml.safe_load(cfg.read_text()), "out": str(local_out)}
    local_run = run(parse_config(local_cfg), progress=None, in_process=True).run_dir
    pd.testing.assert_frame_equal(s3_rows, _rows(local_run))

    # killed mid-way: shard 1 never finished, shard 2 was written but not marked
    for p in shard_paths(s3_run, 1):
        storage.delete(p)
    storage.delete(shard_paths(s3_run, 2)[1])
    storage.delete(storage.join(s3_run, "summary.parquet"))
    assert finished_shards(s3_run) == {0}
    assert main(["resume", s3_run, "--quiet"]) == 0
    assert _run_dir(capsys.readouterr().out) == s3_run
    manifest = json.loads(storage.read_text(storage.join(s3_run, "manifest.json")))
    assert manifest["counts"]["shards_run_now"] == 2 and manifest["status"] == "complete"
    pd.testing.assert_frame_equal(_rows(s3_run), s3_rows)
    log = storage.read_text(storage.join(s3_run, "run.log"))
    assert log.count("3 shards, 3 pending") == 1 and log.count("3 shards, 2 pending") == 1

    assert main(["report", s3_run]) == 0
    assert capsys.readouterr().out.strip() == f"report: {s3_run}/report/index.html"
    assert "<html" in storage.read_text(f"{s3_run}/report/index.html").lower()
    assert storage.is_file(f"{s3_run}/report/tables.md")

    assert main(["compare", str(local_run), s3_run]) == 0
    out = capsys.readouterr().out
    assert "vg" in out and "gxi" in out and s3_run in out
    assert main(["run", str(cfg), "--quiet", "--reuse", s3_run, "--out", str(local_out)]) == 0
    reused = Path(_run_dir(capsys.readouterr().out))
    assert json.loads((reused / "manifest.json").read_text())["counts"]["cells_reused_now"] == 14
    pd.testing.assert_frame_equal(_rows(reused), s3_rows)
    assert list(cwd.iterdir()) == []  # nothing of the runs in the working directory


def test_missing_dataset_root_is_a_config_error(s3_server, bucket, capsys, tmp_path):
    cfg = _write_config(tmp_path / "c.yaml", dataset={"kind": "parquet",
                                                      "path": f"{bucket}/nothing"},
                        out=f"{bucket}/runs")
    assert main(["run", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"salbench: error: dataset.path: '{bucket}/nothing' does not exist\n"
    assert not storage.exists(f"{bucket}/runs")  # failed before the run started
    with pytest.raises(ConfigError, match="does not exist"):
        open_dataset({"kind": "parquet", "path": [f"{bucket}/nothing/shard.parquet"]})
    with pytest.raises(ConfigError, match="no files match"):
        open_dataset({"kind": "parquet", "path": f"{bucket}/nothing/*.parquet"})
    with pytest.raises(ConfigError, match="dataset.path: cannot list 'nosuchscheme://x/y'"):
        open_dataset({"kind": "parquet", "path": "nosuchscheme://x/y"})


def test_missing_object_becomes_an_error_row_naming_it(s3_server, bucket, tmp_path,
                                                       monkeypatch):
    from salbench.datasets.parquet import write_shards

    shards = f"{bucket}/shards"
    write_shards(open_dataset({"kind": "synthetic", "n": 6, "size": 32, "seed": 1}), shards,
                 rows_per_shard=2)
    ds = open_dataset({"kind": "parquet", "path": shards})
    gone = f"{shards}/shard-00001.parquet"
    storage.delete(gone)  # vanished between planning and reading
    monkeypatch.setattr(shard_stage, "_dataset", lambda spec: ds)
    rows = list(shard_stage.read_shard({"shard": 1, "start": 2, "stop": 4}, dataset_json="{}"))
    assert [r["index"] for r in rows] == [2, 3]
    for r in rows:
        assert r["image"] == b"" and f"{gone}: not found" in r["read_error"]
    assert [r["read_error"] for r in shard_stage.read_shard(
        {"shard": 0, "start": 0, "stop": 2}, dataset_json="{}")] == ["", ""]


def test_unreadable_object_is_an_error_row_in_a_run(s3_server, ray_session, bucket, tmp_path):
    from salbench.datasets.parquet import write_shards

    shards = f"{bucket}/shards"
    write_shards(open_dataset({"kind": "synthetic", "n": 4, "size": 32, "seed": 1}), shards,
                 rows_per_shard=2)
    storage.write_bytes(f"{shards}/zz-junk.parquet", b"not parquet")
    cfg = parse_config({**CONFIG, "methods": ["vg"], "metrics": ["insertion"],
                        "dataset": {"kind": "parquet", "path": shards}, "out": f"{bucket}/runs"})
    res = run(cfg, progress=None)
    bad = res.samples[res.samples["status"] != "ok"]
    assert len(res.samples) == 5 and len(bad) == 1
    assert f"parquet shard {shards}/zz-junk.parquet: not a readable Parquet file" in (
        bad["error"].iloc[0])


@pytest.mark.slow
def test_driver_killed_mid_run_on_s3_then_resumed(s3_server, ray_session, bucket, tmp_path,
                                                 capsys):
    """A real kill: ``salbench run`` with ``out`` on S3 SIGKILLed after two shards, then
    ``salbench resume s3://...`` (the command line's ``main``, in this process: another
    driver than the killed one): the rows equal an uninterrupted run's, none twice."""
    salbench_bin = Path(sys.executable).with_name("salbench")
    if not salbench_bin.exists():
        pytest.skip("salbench console script not installed next to this Python")
    cfg = {**CONFIG, **KILLED_MID_RUN, "metrics": ["insertion"]}
    reference = run(parse_config({**cfg, "out": str(tmp_path / "ref")}), progress=None,
                    in_process=True)  # both executors write equal tables (test_numerics)
    out = f"{bucket}/runs"
    path = _write_config(tmp_path / "c.yaml", **{**cfg, "out": out})
    proc = subprocess.Popen([str(salbench_bin), "run", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)

    def markers() -> list[str]:
        try:
            return [r for r in storage.walk_files(out) if "/_done/" in r]
        except FileNotFoundError:
            return []

    try:
        deadline = time.time() + 240
        while len(markers()) < 2:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no shard finished in time"
            time.sleep(0.1)
    finally:
        stop_process_group(proc.pid)  # the driver and the local Ray it started
        proc.wait(timeout=30)
    run_dir = storage.join(out, markers()[0].split("/")[0])
    done = finished_shards(run_dir)
    assert 2 <= len(done) < 8, done  # killed mid-run
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "running"  # a SIGKILL cannot be recorded ...
    status, note = heartbeat.status(run_dir, manifest)  # ... but its heartbeat tells
    assert status == "interrupted" and "that process is gone" in note, note
    capsys.readouterr()
    assert main(["resume", run_dir]) == 0  # on the session's Ray: the driver is gone
    assert f"taking over {run_dir}: its driver stopped" in capsys.readouterr().err
    assert heartbeat.read(run_dir) is None and read_manifest(run_dir)["status"] == "complete"
    assert finished_shards(run_dir) == set(range(8))
    table = _rows(run_dir)
    assert not table.duplicated(["index", "model", "method"]).any()
    pd.testing.assert_frame_equal(table, _rows(reference.run_dir))


def test_heartbeat_on_object_storage_refuses_a_second_driver(bucket):
    run_dir = f"{bucket}/live"
    first = heartbeat.Heartbeat(run_dir, every=60.0).claim()
    try:
        beat = heartbeat.read(run_dir)
        assert beat is not None and beat.driver == first.beat.driver and beat.alive()
        assert heartbeat.status(run_dir, {"status": "running"}) == ("running", None)
        with pytest.raises(heartbeat.LiveRunError, match="being run by another driver now"):
            heartbeat.Heartbeat(run_dir).claim()
    finally:
        first.stop()
    assert heartbeat.read(run_dir) is None
    second = heartbeat.Heartbeat(run_dir, every=60.0).claim()  # free again
    second.stop()


def test_weights_pulled_to_a_store_prefix_are_found_by_runs(bucket, tmp_path, monkeypatch):
    import hashlib
    import http.server
    import threading

    from salbench.models.pull import pull
    from salbench.models.weights import find_weights

    body = os.urandom(2048)
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.pth").write_bytes(body)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(tmp_path / "srv"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        out = pull("vgg16", f"{bucket}/weights",
                   url=f"http://127.0.0.1:{httpd.server_address[1]}/f.pth",
                   sha256=hashlib.sha256(body).hexdigest(), say=lambda _: None)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert out == f"{bucket}/weights/vgg16-397923af.pth"
    monkeypatch.setenv("SALBENCH_WEIGHTS", f"{bucket}/weights")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    local = find_weights("vgg16-397923af.pth", None, "vgg16")
    assert local.read_bytes() == body and local.is_relative_to(tmp_path / "tmp")


# --------------------------------------------------------------------------- Hugging Face
def _hf_file(path: Path | str, images: list[bytes], labels: list[int],
             paths: list[str | None] | None, binary: bool = False) -> None:
    """A file in the Hugging Face ``datasets`` image layout: ``image`` struct<bytes, path>
    (or plain binary), ``label`` int64 (a ClassLabel), the features in the schema metadata."""
    if binary:
        image = pa.array(images, pa.binary())
    else:
        image = pa.array([{"bytes": b, "path": p} for b, p in zip(images, paths, strict=True)],
                         pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    features = {"info": {"features": {"image": {"_type": "Image"}, "label": {
        "names": [f"c{i}" for i in range(10)], "_type": "ClassLabel"}}}}
    table = pa.table({"image": image, "label": pa.array(labels, pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps(features)})
    storage.write_parquet(table, path, row_group_size=2)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_hugging_face_image_parquet_read_as_is(where, request, tmp_path):
    base = request.getfixturevalue("bucket") + "/hf" if where == "s3" else tmp_path / "hf"
    rng = np.random.default_rng(2)
    images = [_png(rng) for _ in range(7)]
    _hf_file(storage.join(base, "data", "validation-00000-of-00002.parquet"), images[:3],
             [4, 0, 9], ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", None])
    _hf_file(storage.join(base, "data", "validation-00001-of-00002.parquet"), images[3:5],
             [1, 2], ["ILSVRC2012_val_00000004.JPEG", "ILSVRC2012_val_00000005.JPEG"])
    _hf_file(storage.join(base, "data", "test-00000-of-00001.parquet"), images[5:], [-1, -1],
             None, binary=True)
    ds = open_dataset({"kind": "parquet", "path": storage.join(base, "data",
                                                               "validation-*.parquet")})
    rows = list(ds)
    assert len(ds) == 5 and [r["image"] for r in rows] == images[:5]
    assert [r["label"] for r in rows] == [4, 0, 9, 1, 2]
    first = storage.join(base, "data", "validation-00000-of-00002.parquet")
    assert [r["sample_id"] for r in rows] == [
        "ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG",
        "validation-00000-of-00002.parquet:2", "ILSVRC2012_val_00000004.JPEG",
        "ILSVRC2012_val_00000005.JPEG"]
    assert all(r["boxes"] == [] for r in rows) and rows[2]["source"] == f"{first}#2"
    assert ds.sample_ids() == [r["sample_id"] for r in rows]
    assert [r["sample_id"] for r in ds.read(2, 4)] == [rows[2]["sample_id"],
                                                       rows[3]["sample_id"]]
    # a directory: every file, image as plain binary too (ids from file name and row)
    whole = open_dataset({"kind": "parquet", "path": storage.join(base, "data")})
    assert len(whole) == 7
    tail = list(whole.read(0, 2))
    assert [r["sample_id"] for r in tail] == ["test-00000-of-00001.parquet:0",
                                              "test-00000-of-00001.parquet:1"]
    assert [r["image"] for r in tail] == images[5:] and [r["label"] for r in tail] == [-1, -1]
    # the fingerprint sees labels and ids, not only the listing
    fp = ds.fingerprint()
    _hf_file(storage.join(base, "other", "validation-00000-of-00002.parquet"), images[:3],
             [4, 0, 8], ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG", None])
    _hf_file(storage.join(base, "other", "validation-00001-of-00002.parquet"), images[3:5],
             [1, 2], ["ILSVRC2012_val_00000004.JPEG", "ILSVRC2012_val_00000005.JPEG"])
    assert open_dataset({"kind": "parquet", "path": storage.join(base, "other")}
                        ).fingerprint() != fp


def test_hugging_face_layout_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"image": pa.array([1, 2], pa.int64()),
                             "label": pa.array([0, 1])}), bad)
    (row,) = list(open_dataset({"kind": "parquet", "path": str(bad)}))
    assert re.search(r"bad\.parquet: column 'image' has type int64, expected binary or struct",
                     row["error"])
    pq.write_table(pa.table({"image": pa.array([b"x"]), "label": pa.array(["cat"])}), bad)
    (row,) = list(open_dataset({"kind": "parquet", "path": str(bad)}))
    assert "column 'label' has type string, expected an integer" in row["error"]


def test_hugging_face_layout_runs(tmp_path):
    rng = np.random.default_rng(3)
    images = [_png(rng) for _ in range(4)]
    _hf_file(tmp_path / "validation-00000-of-00001.parquet", images, [1, 2, 3, 4],
             [f"v{i}.JPEG" for i in range(4)])
    cfg = parse_config({**CONFIG, "methods": ["vg"], "out": str(tmp_path / "runs"),
                        "dataset": {"kind": "parquet",
                                    "path": str(tmp_path / "validation-*.parquet")}})
    res = run(cfg, progress=None, in_process=True)  # both executors read with one reader
    s = res.samples
    assert list(s["sample_id"]) == [f"v{i}.JPEG" for i in range(4)]
    assert list(s["label"]) == [1, 2, 3, 4] and (s["status"] == "ok").all()
    assert s["pointing_game_hit"].isna().all()


# --------------------------------------------------------------------------- folder, imagenet
@pytest.mark.parametrize("layout", ["csv", "xml", "classfolders"])
def test_imagenet_root_on_s3_reads_as_local(bucket, tmp_path, layout):
    from fixtures_imagenet import make_imagenet_fixture

    local = tmp_path / "imagenet"
    make_imagenet_fixture(local, n=5, layout=layout)
    storage.upload_dir(local, f"{bucket}/imagenet")
    a = open_dataset({"kind": "imagenet", "root": str(local)})
    b = open_dataset({"kind": "imagenet", "root": f"{bucket}/imagenet"})
    assert b.layout == a.layout and b.fingerprint() == a.fingerprint()
    for ra, rb in zip(a, b, strict=True):
        assert rb["source"].startswith(f"{bucket}/imagenet/")
        assert {k: v for k, v in ra.items() if k != "source"} == {
            k: v for k, v in rb.items() if k != "source"}


def test_folder_on_s3_and_shard_from_s3_to_s3(bucket, tmp_path, capsys):
    photos = _photos(tmp_path / "photos", n=4)
    (photos / "notes.txt").write_text("not an image")
    storage.upload_dir(photos, f"{bucket}/photos")
    storage.delete(f"{bucket}/photos/img02.png")  # named in labels.csv, gone: an error row
    remote = list(open_dataset({"kind": "folder", "path": f"{bucket}/photos",
                                "labels": "labels.csv"}))
    local = list(open_dataset({"kind": "folder", "path": str(photos), "labels": "labels.csv"}))
    assert [r["sample_id"] for r in remote] == [f"img0{i}.png" for i in range(4)]
    assert [r["label"] for r in remote] == [0, 1, 2, 3]
    assert remote[2]["error"] == "file not found" and remote[2]["image"] == b""
    assert remote[3]["source"] == f"{bucket}/photos/img03.png"
    assert [r["image"] for i, r in enumerate(remote) if i != 2] == [
        r["image"] for i, r in enumerate(local) if i != 2]
    assert main(["shard", f"{bucket}/photos", f"{bucket}/shards", "--kind", "folder"]) == 0
    assert "wrote 3 rows (0 with errors) in 1 shard(s)" in capsys.readouterr().out
    rows = list(open_dataset({"kind": "parquet", "path": f"{bucket}/shards"}))
    assert [r["image"] for r in rows] == [r["image"] for i, r in enumerate(local) if i != 2]


def test_evaluate_with_out_on_s3_returns_results_at_the_uri(bucket, tmp_path, monkeypatch):
    """``salbench.evaluate(out="s3://...")`` (in this process): the Results keep the URI,
    read the summary and rows from the bucket, and ``Results.load`` of that URI agrees."""
    import salbench
    from salbench.api import Results

    monkeypatch.chdir(tmp_path)
    res = salbench.evaluate(dataset={"kind": "synthetic", "n": 2, "size": 32},
                            models=["tiny_cnn"], methods=["vg"], metrics=["pointing_game"],
                            out=f"{bucket}/api", ray=False)
    assert isinstance(res.run_dir, str) and res.run_dir.startswith(f"{bucket}/api/")
    assert len(res.samples) == 2 and (res.samples["status"] == "ok").all()
    assert sum(len(b) for b in res.scan(columns=["sample_id"])) == 2
    again = Results.load(res.run_dir)
    pd.testing.assert_frame_equal(again.summary, res.summary)
    assert list(tmp_path.iterdir()) == []  # nothing of the run in the working directory
