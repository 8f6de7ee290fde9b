"""A lost node loses nothing: a worker node that holds the run's model and CPU-stage actors
is removed mid-run (tests/scripts/node_loss.py, a head and two worker nodes on this machine);
Ray restarts the actors on the replacement node and re-executes the lost work, and the tables
equal an uninterrupted run's: no duplicate, no missing row. (The driver's node: a killed
driver and ``salbench resume``, tests/test_faults.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from salbench.config import parse_config
from salbench.pipeline.run import run
from salbench.results.tables import finished_shards, read_samples

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "scripts" / "node_loss.py"
CONFIG = {
    "name": "node-loss",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 10, "size": 32, "seed": 7},
    "models": ["tiny_smooth"],
    "methods": [{"name": "ig", "steps": 1000}, "vg"],
    "metrics": ["insertion", "pointing_game"],
    "resources": {"shard_size": 1, "batch_size": 1, "torch_threads": 1},
}


def _table(run_dir: Path) -> pd.DataFrame:
    return read_samples(run_dir).drop(columns=["run_id"])


def test_removed_worker_node_loses_no_row(tmp_path):
    reference = run(parse_config({**CONFIG, "out": str(tmp_path / "ref")}), progress=None,
                    in_process=True).run_dir  # uninterrupted (same tables as the graph's)
    config = {**CONFIG, "out": str(tmp_path / "runs")}
    res = subprocess.run([sys.executable, str(SCRIPT), json.dumps(config)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    # Ray's raylet may print to stdout too: the report is the script's one JSON line
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith('{"removed"')]
    report = json.loads(line)
    print(report)  # which actors were lost, when (pytest -s)
    assert report["removed"], f"the node was never removed (the run ended first): {report}"
    on_node = report["actors_on_removed_node"]
    assert any("AttributeActor" in a for a in on_node) and any("BokehActor" in a for a in on_node)
    assert report["finished"] and "error" not in report, report
    run_dir = Path(report["run_dir"])
    assert 2 <= report["shards_done_before"] < 10
    assert finished_shards(run_dir) == set(range(10))
    table = _table(run_dir)
    assert not table.duplicated(["sample_id", "model", "method"]).any()
    pd.testing.assert_frame_equal(table, _table(reference))
