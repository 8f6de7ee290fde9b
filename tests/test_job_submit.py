"""The documented ``ray job submit`` sequence (docs/CLUSTER.md) on a local head node.

Needs ``ray[default]`` (the ``cluster`` extra: the dashboard and the jobs CLI); skipped
without it. The head node gets free ports and a temp dir of its own, and is stopped by
terminating its ``ray start --block`` process: ``ray stop`` would stop every Ray on the
machine, other users' included.
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
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "name": "job", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
    "models": ["tiny_smooth"], "methods": ["vg", {"name": "ig", "steps": 8}],
    "metrics": ["insertion", "pointing_game"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _ray(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def test_ray_job_submit_runs_salbench_on_a_head_node(tmp_path):
    for module in ("aiohttp", "aiohttp_cors", "opencensus", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"ray[default] is not installed ({module} missing): "
                        "pip install 'salbench[cluster]'")
    if shutil.which("salbench") is None:
        pytest.skip("the salbench command is not on PATH")
    gcs, dashboard, client = _free_ports(3)
    temp = tempfile.mkdtemp(prefix="sbray-", dir="/tmp")  # short: Ray's socket paths
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "out": str(tmp_path / "runs")}))
    head = subprocess.Popen(
        _ray("start", "--head", "--block", "--port", str(gcs), "--dashboard-host",
             "127.0.0.1", "--dashboard-port", str(dashboard), "--ray-client-server-port",
             str(client), "--temp-dir", temp, "--num-cpus", "2", "--disable-usage-stats"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 180
        while True:
            listed = subprocess.run(_ray("job", "list", "--address", url), env=env,
                                    capture_output=True, text=True, timeout=60)
            if listed.returncode == 0:
                break
            assert head.poll() is None, "ray start --head exited"
            assert time.time() < deadline, listed.stderr[-2000:]
            time.sleep(3)
        for _ in range(3):  # a dashboard still starting its modules may drop the upload
            job = subprocess.run(
                _ray("job", "submit", "--address", url, "--working-dir", str(ROOT), "--",
                     "salbench", "run", str(cfg)),
                env=env, capture_output=True, text=True, timeout=900)
            out = job.stdout + job.stderr
            if "submitted successfully" in out or job.returncode == 0:
                break
            time.sleep(10)
        assert job.returncode == 0 and "succeeded" in out, out[-4000:]
        assert "[salbench]" in out and "cells (100%)" in out  # progress reaches the job log
        (run_dir,) = (tmp_path / "runs").iterdir()
        samples = pd.read_parquet(run_dir / "samples")
        assert len(samples) == 8 and (samples["status"] == "ok").all()
        summary = pd.read_parquet(run_dir / "summary.parquet")
        assert {"insertion_auc", "pointing_game_hit"} <= set(summary["metric"])
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "complete"
        # the job joined the head node (RAY_ADDRESS), it did not start a Ray of its own
        assert f":{gcs}" in (run_dir / "run.log").read_text()
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)
