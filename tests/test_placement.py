"""Placement: with GPUs in the cluster, each model gets its own pools, and the model stages
(AttributeActor, ScoreActor) hold a GPU share; here the GPUs are a Ray resource only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_model_stages_get_their_gpu_share_and_one_model_each(tmp_path):
    script = Path(__file__).parent / "scripts" / "placement.py"
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["rows"] == 8  # 4 images x 2 models x 1 method
    pids = set()
    for model, where in report["models"].items():
        for stage in ("attribute", "score"):
            (actor,) = [json.loads(p) for p in where[stage]]  # one actor per model and stage
            assert actor["model"] == model and len(actor["gpu_ids"]) == 1, (stage, actor)
            assert actor["device"] == "cpu"  # no CUDA here: the GPU is only a resource
            pids.add(actor["pid"])
    assert len(pids) == 4  # every (model, stage) pool is its own actor


def test_placement_outside_ray_does_not_start_ray():
    """The actors also run in-process (benchmarks, notebooks): placement() must not connect
    to, or start, a Ray cluster there (a stale cluster address made it hang)."""
    code = ("import ray, torch\n"
            "from salbench.actors.attribute import placement\n"
            "print(placement('m', torch.device('cpu')), ray.is_initialized())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    info, started = res.stdout.strip().rsplit(" ", 1)
    assert json.loads(info)["gpu_ids"] == [] and started == "False"
