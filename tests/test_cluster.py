"""``salbench run --address`` against a separately started ``ray start --head`` cluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_joins_an_existing_cluster(tmp_path):
    ray_bin = Path(sys.executable).with_name("ray")
    salbench_bin = Path(sys.executable).with_name("salbench")
    if not ray_bin.exists() or not salbench_bin.exists():
        pytest.skip("ray / salbench console scripts not installed next to this Python")
    port = _free_port()
    # a private cluster for this test: no token shared with other Ray sessions on the machine
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["RAY_AUTH_MODE"] = "disabled"
    # On SIGTERM `ray start --block` (Ray >= 2.60) first asks the GCS to drain the node, for
    # up to 30 s; the GCS, in the same process group, is already stopping: stop at once
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1",
         "--include-dashboard=false", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    try:
        cfg = {
            "name": "cluster", "out": str(tmp_path / "runs"),
            "dataset": {"kind": "synthetic", "n": 3, "size": 32},
            "models": ["tiny_smooth"], "methods": ["vg"], "metrics": ["pointing_game"],
            "resources": {"shard_size": 2, "torch_threads": 1},
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        deadline = time.time() + 60
        while True:  # wait for the head to accept connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    pytest.fail("ray start --head did not come up")
                time.sleep(0.5)
        res = subprocess.run(
            [str(salbench_bin), "run", str(path), "--address", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=240, env=env,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        run_dir = Path(next(line.split(": ", 1)[1] for line in res.stdout.splitlines()
                            if line.startswith("run directory: ")))
        ray_lines = (run_dir / "run.log").read_text()  # Ray's own lines: run.log, not stderr
        assert f"127.0.0.1:{port}" in ray_lines or "Connecting to existing" in ray_lines
        samples = pd.read_parquet(run_dir / "samples")
        assert len(samples) == 3 and (samples["status"] == "ok").all()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
