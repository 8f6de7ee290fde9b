"""The documented ``ray job submit`` sequence (docs/CLUSTER.md, "A Ray job on one machine")
on a local head node: ``RAY_AUTH_MODE=token``, ``ray start --head``, ``ray status``, ``ray job
submit --working-dir . -- salbench run CONFIG --out ABSOLUTE``, then the run's tables; then
``salbench run CONFIG --address HOST:PORT`` from a shell joins the same head.

Needs ``ray[default]`` (the ``test`` and ``cluster`` extras: the dashboard and the jobs CLI).
Without it the test is skipped, or fails when ``SALBENCH_REQUIRE_JOBS=1`` (``.ci/run`` sets
it). The commands run as in an activated virtual environment (this Python's ``bin`` first on
``PATH``) from the repository root. The head node gets free ports (the dashboard agent's
too: its default 52365 is taken by any other Ray on the machine, the test session's
included, and without its HTTP server the head cannot run jobs) and a temp dir of its own,
and is stopped by terminating its ``ray start --block`` process: ``ray stop`` would stop
every Ray on the machine, other users' included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_JOBS = os.environ.get("SALBENCH_REQUIRE_JOBS") == "1"
# small on purpose: the point is the job sequence, not the pipeline (tested elsewhere)
CONFIG = {
    "name": "job", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
    "models": ["tiny_smooth"], "methods": ["vg", {"name": "ig", "steps": 8}],
    "metrics": ["insertion", "pointing_game"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}


def _unavailable(reason: str) -> None:
    if REQUIRE_JOBS:
        pytest.fail(f"SALBENCH_REQUIRE_JOBS=1 but {reason}")
    pytest.skip(reason)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_until_up(urls: list[str], head: subprocess.Popen, log: Path, seconds: float) -> None:
    """Until every URL (the dashboard's and its agent's unauthenticated health checks)
    answers 200."""
    deadline = time.time() + seconds
    for url in urls:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                assert head.poll() is None, f"ray start --head exited: {log.read_text()[-3000:]}"
                assert time.time() < deadline, f"no answer at {url}: {log.read_text()[-3000:]}"
                time.sleep(0.5)


def test_ray_job_submit_runs_salbench_on_a_head_node(tmp_path):
    for module in ("aiohttp", "aiohttp_cors", "opencensus", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            _unavailable(f"ray[default] is not installed ({module} missing): "
                         "pip install '.[test]' or '.[cluster]'")
    bindir = Path(sys.executable).parent
    if not (bindir / "ray").exists() or not (bindir / "salbench").exists():
        _unavailable(f"the ray / salbench commands are not installed in {bindir}")
    gcs, dashboard, client, agent = _free_ports(4)
    temp = tempfile.mkdtemp(prefix="sbray-", dir="/tmp")  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_AUTH_MODE"] = "token"  # docs: export RAY_AUTH_MODE=token
    # On SIGTERM Ray (>= 2.60) drains the node for up to 30 s first, and Ray Data's idle
    # helper actors keep it from ever counting as drained: stop at once, as `ray stop` does.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    # `ray status` says "No cluster status" until the head's monitor first reports, every
    # 5 s by default: every second here, so the test waits less for its first status
    env["AUTOSCALER_UPDATE_INTERVAL_S"] = "1"
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "runs"
    head_log = tmp_path / "head.log"
    with open(head_log, "wb") as fh:
        head = subprocess.Popen(
            ["ray", "start", "--head", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
             "--block", "--port", str(gcs), "--dashboard-port", str(dashboard),
             "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port",
             str(client), "--temp-dir", temp, "--num-cpus", "2"],
            cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_until_up([f"{url}/api/gcs_healthz", f"http://127.0.0.1:{agent}/api/healthz"],
                       head, head_log, 180)
        deadline = time.time() + 120
        while True:  # "No cluster status" until the autoscaler's monitor first reports
            status = subprocess.run(["ray", "status", "--address", f"127.0.0.1:{gcs}"],
                                    cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=120)
            if status.returncode != 0 or "No cluster status" not in status.stdout:
                break
            assert time.time() < deadline, status.stdout[-2000:]
            time.sleep(1)
        assert status.returncode == 0 and "/2.0 CPU" in status.stdout, \
            status.stdout[-2000:] + status.stderr[-2000:]
        submit = ["ray", "job", "submit", "--address", url, "--working-dir", ".", "--",
                  "salbench", "run", str(cfg), "--out", str(out)]
        for _ in range(5):  # the job module may find the agent a moment after both are up
            job = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=600)
            log = job.stdout + job.stderr
            if "submitted successfully" in log or job.returncode == 0:
                break
            time.sleep(3)
        assert job.returncode == 0 and "succeeded" in log, log[-4000:]
        assert "[salbench]" in log and "cells (100%)" in log  # progress reaches the job log
        assert "run directory: " in log and "pointing_game" in log  # the results table
        (run_dir,) = out.iterdir()
        samples = pd.read_parquet(run_dir / "samples")
        assert len(samples) == 8 and (samples["status"] == "ok").all()
        summary = pd.read_parquet(run_dir / "summary.parquet")
        assert {"insertion_auc", "pointing_game_hit"} <= set(summary["metric"])
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        # the job joined the head node (RAY_ADDRESS), it did not start a Ray of its own
        assert f":{gcs}" in (run_dir / "run.log").read_text()

        # `salbench run --address` from a shell joins the same head (README, "On a laptop cluster")
        joined = tmp_path / "joined"
        res = subprocess.run(["salbench", "run", str(cfg), "--out", str(joined), "--address",
                              f"127.0.0.1:{gcs}"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        (run_dir,) = joined.iterdir()
        assert str(run_dir) in res.stdout and "[salbench]" in res.stderr
        ray_lines = (run_dir / "run.log").read_text()  # Ray's own lines: run.log, not stderr
        assert f"127.0.0.1:{gcs}" in ray_lines or "Connecting to existing" in ray_lines
        assert not [ln for ln in res.stderr.splitlines()
                    if ln.strip() and not ln.startswith("[salbench]")], res.stderr[-3000:]
        joined_rows = pd.read_parquet(run_dir / "samples")
        assert len(joined_rows) == 8 and (joined_rows["status"] == "ok").all()
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)
