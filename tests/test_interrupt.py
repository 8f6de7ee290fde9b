"""A stopped run always says so; a dead run is told from a live one.

The signals are injected at each phase of the driver through ``SALBENCH_SIGNAL_AT``
(salbench.pipeline.interrupt.checkpoint), never by sleeping: the driver sends itself the
signal when it reaches the phase.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import KILLED_MID_RUN, stop_process_group

from salbench import heartbeat
from salbench.config import parse_config
from salbench.errors import ConfigError
from salbench.pipeline import interrupt
from salbench.pipeline import manifest as mf
from salbench.pipeline.run import resume, run
from salbench.results import tables

ROOT = Path(__file__).resolve().parents[1]

CFG = {
    "name": "sig", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 6, "size": 32, "seed": 3},
    "models": ["tiny_cnn"],
    "methods": ["vg"],
    "metrics": ["insertion"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}


def _salbench(args: list[str], tmp_path: Path, signal_at: str | None = None,
              **env: str) -> subprocess.CompletedProcess:
    """``salbench ARGS`` in a process group of its own; what is left of the group (the local
    Ray the driver started) is stopped before this returns, so no process of this run
    writes to its run directory afterwards (a SIGKILLed driver's writer actor would)."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full.pop("SALBENCH_SIGNAL_AT", None)
    if signal_at is not None:
        full["SALBENCH_SIGNAL_AT"] = signal_at
    proc = subprocess.Popen([sys.executable, "-m", "salbench.cli", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        stop_process_group(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _config(tmp_path: Path, **changes) -> Path:
    cfg = {**CFG, "out": str(tmp_path / "runs"), **changes}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_dirs(tmp_path: Path) -> list[Path]:
    runs = tmp_path / "runs"
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


def _assert_marked(run_dir: Path, signame: str = "SIGTERM") -> dict:
    man = json.loads((run_dir / "manifest.json").read_text())
    assert man["status"] == "failed", man.get("error")
    assert man["error"].startswith(f"interrupted by {signame}"), man["error"]
    assert man["resume"] == f"salbench resume {run_dir}"
    assert not (run_dir / heartbeat.FILE).exists()
    assert f"run failed: interrupted by {signame}" in (run_dir / "run.log").read_text()
    return man


@pytest.mark.parametrize("phase", ["checks", "ray_init"])
def test_a_signal_before_the_run_directory_exists_leaves_nothing(tmp_path, phase):
    res = _salbench(["run", str(_config(tmp_path))], tmp_path, signal_at=phase)
    assert res.returncode == 143, res.stderr[-3000:]
    assert "interrupted by SIGTERM (signal 15) before a run directory was created" in res.stderr
    assert "Traceback" not in res.stderr
    assert _run_dirs(tmp_path) == []


@pytest.mark.parametrize("phase", ["mid_run", "summary"])
def test_a_signal_during_a_ray_run_marks_it_failed(tmp_path, phase):
    res = _salbench(["run", str(_config(tmp_path))], tmp_path, signal_at=phase)
    assert res.returncode == 143, res.stderr[-3000:]
    (run_dir,) = _run_dirs(tmp_path)
    _assert_marked(run_dir)
    assert f"continue with `salbench resume {run_dir}`" in res.stderr
    done = len(tables.finished_shards(run_dir))
    assert not (run_dir / "summary.parquet").exists()
    if phase == "summary":
        assert done == 3
        # the command line in its own process: only salbench's lines on the terminal, Ray's
        # own output (a local Ray's start, Ray Data's lines) in run.log
        err = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert err[-1].startswith("salbench: interrupted by SIGTERM"), res.stderr[-3000:]
        assert all(ln.startswith("[salbench]") for ln in err[:-1]), res.stderr[-3000:]
        assert "cells (100%)" in res.stderr
        log = (run_dir / "run.log").read_text()
        assert "Ray's own output" in log and "Started a local Ray instance" in log
        assert "constructor arguments in the object store" in log  # Ray Data's own error line
    if phase == "mid_run":  # after the driver heard of its first shard
        assert done >= 1


def test_ctrl_c_marks_a_run_failed_and_a_signalled_resume_too(tmp_path):
    """SIGINT while the actor pools start; then a resume that a signal stops while it joins
    Ray; then a resume that finishes (in-process: the command line's resume after a killed
    driver is tests/test_s3.py's)."""
    res = _salbench(["run", str(_config(tmp_path))], tmp_path, signal_at="actor_pools:INT")
    assert res.returncode == 130, res.stderr[-3000:]
    (run_dir,) = _run_dirs(tmp_path)
    _assert_marked(run_dir, "SIGINT")
    res = _salbench(["resume", str(run_dir)], tmp_path, signal_at="ray_init")
    assert res.returncode == 143, res.stderr[-3000:]
    man = _assert_marked(run_dir)
    assert len(man["attempts"]) == 0
    resume(run_dir, progress=None, in_process=True)
    man = mf.read_manifest(run_dir)
    assert man["status"] == "complete" and (run_dir / "summary.parquet").exists()
    assert not (run_dir / heartbeat.FILE).exists()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """A run whose driver was SIGKILLed after its first shard (beat every 0.3 s)."""
    tmp = tmp_path_factory.mktemp("killed")
    res = _salbench(["run", str(_config(tmp, **KILLED_MID_RUN))], tmp, signal_at="mid_run:KILL",
                    SALBENCH_HEARTBEAT_S="0.3")
    assert res.returncode == -9, res.stderr[-3000:]
    (run_dir,) = _run_dirs(tmp)
    assert 1 <= len(tables.finished_shards(run_dir)) < 8  # killed mid-run
    return run_dir


def _beat_file(run_dir: Path, **changes) -> None:
    path = run_dir / heartbeat.FILE
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, **changes}))


def test_a_killed_drivers_run_is_shown_interrupted(killed_run):
    man = mf.read_manifest(killed_run)
    assert man["status"] == "running"  # nothing could record the SIGKILL
    assert man["driver"]["host"] == socket.gethostname() and man["driver"]["heartbeat_s"] == 0.3
    beat = heartbeat.read(killed_run)
    assert beat is not None and beat.pid == man["driver"]["pid"]
    # same host: the PID is gone, so the run is interrupted at once
    status, note = heartbeat.status(killed_run, man)
    assert status == "interrupted"
    assert "that process is gone" in note and f"salbench resume {killed_run}" in note


def test_a_stale_heartbeat_from_another_host_means_interrupted(killed_run, tmp_path):
    import shutil

    run_dir = tmp_path / killed_run.name
    shutil.copytree(killed_run, run_dir)
    man = mf.read_manifest(run_dir)
    # a driver on another host that beat just now (interval 60 s): alive, for all we know
    _beat_file(run_dir, host="other-host", beat=time.time(), interval_s=60.0)
    assert heartbeat.status(run_dir, man) == ("running", None)
    # the same driver, silent for 5 intervals
    _beat_file(run_dir, beat=time.time() - 5 * 60.0)
    status, note = heartbeat.status(run_dir, man)
    assert status == "interrupted"
    assert "last heartbeat 5 min ago on host other-host" in note

    from salbench.api import Results
    from salbench.results.compare import compare_runs

    with pytest.raises(ConfigError, match="it is interrupted: the run's driver stopped"):
        Results.load(run_dir)
    table = compare_runs(run_dir, run_dir)
    assert any("status interrupted" in n and "other-host" in n
               for n in table.attrs["differences"]), table.attrs
    res = _salbench(["report", str(run_dir)], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"run {run_dir} is interrupted: the run's driver stopped" in res.stderr
    # the resume takes the run over and finishes it: the tables equal an uninterrupted run's,
    # no row twice, none missing (in-process: Ray's side of resuming is the CLI test's, and
    # both executors write equal tables, tests/test_numerics.py)
    said = io.StringIO()
    resume(run_dir, progress=said, in_process=True)
    assert "taking over" in said.getvalue() and "other-host" in said.getvalue()
    assert mf.read_manifest(run_dir)["status"] == "complete"
    assert tables.finished_shards(run_dir) == set(range(8))
    reference = run(parse_config({**CFG, **KILLED_MID_RUN, "out": str(tmp_path / "reference")}),
                    progress=None, in_process=True).run_dir
    rows = tables.read_samples(run_dir).drop(columns=["run_id"])
    assert not rows.duplicated(["index", "model", "method"]).any()
    pd.testing.assert_frame_equal(rows, tables.read_samples(reference).drop(columns=["run_id"]))


def test_a_second_driver_on_a_live_run_is_refused(killed_run, tmp_path):
    import shutil

    run_dir = tmp_path / killed_run.name
    shutil.copytree(killed_run, run_dir)
    live = heartbeat.Heartbeat(run_dir, every=60.0).claim()  # this process: alive
    try:
        with pytest.raises(heartbeat.LiveRunError, match="being run by another driver now"):
            resume(run_dir, progress=None, in_process=True)
        res = _salbench(["resume", str(run_dir)], tmp_path)
        assert res.returncode == 2, res.stderr[-3000:]
        assert f"PID {os.getpid()}" in res.stderr and "Traceback" not in res.stderr
        assert mf.read_manifest(run_dir)["status"] == "running"  # untouched
        assert heartbeat.read(run_dir).driver == live.beat.driver
    finally:
        live.stop()
    assert not (run_dir / heartbeat.FILE).exists()


def test_interrupted_names_the_signal():
    import signal

    exc = interrupt.RunInterrupted(int(signal.SIGTERM))
    assert exc.code == 143 and str(exc) == "interrupted by SIGTERM (signal 15)"
    assert interrupt.interrupted(SystemExit(15)).signum == 15  # Ray's own handler's exit
    assert interrupt.interrupted(KeyboardInterrupt()).signum == int(signal.SIGINT)
    assert interrupt.interrupted(SystemExit(0)) is None
    assert interrupt.interrupted(ValueError("x")) is None


def test_heartbeat_interval_setting(monkeypatch):
    monkeypatch.setenv("SALBENCH_HEARTBEAT_S", "0.5")
    assert heartbeat.interval() == 0.5
    monkeypatch.setenv("SALBENCH_HEARTBEAT_S", "soon")
    with pytest.raises(ConfigError, match="SALBENCH_HEARTBEAT_S"):
        heartbeat.interval()
    monkeypatch.delenv("SALBENCH_HEARTBEAT_S")
    assert heartbeat.interval() == heartbeat.DEFAULT_INTERVAL_S
