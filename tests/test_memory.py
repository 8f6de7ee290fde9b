"""The allocator settings of the worker processes (salbench.actors.memory)."""

from __future__ import annotations

import sys

import pytest

from salbench.actors.memory import worker_env
from salbench.pipeline import parse_config, run


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_worker_env_and_its_opt_out(monkeypatch):
    env = worker_env()
    assert env == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                   "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
    monkeypatch.setenv("SALBENCH_MALLOC_TUNING", "0")
    assert worker_env() == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
@pytest.mark.usefixtures("ray_session")
def test_model_actors_start_with_the_allocator_settings(tmp_path):
    """Ray Data runs a model actor's batches in a worker thread, which mallopt in the actor
    cannot tune; the settings must be in the actor process's environment."""
    cfg = {"name": "env", "out": str(tmp_path), "seed": 0, "profile": "fast",
           "dataset": {"kind": "synthetic", "n": 2, "size": 32, "seed": 1},
           "models": ["tiny_cnn"], "methods": ["tests.env_plugin:allocator_probe"],
           "metrics": ["pointing_game"],
           "resources": {"shard_size": 2, "torch_threads": 1}}
    s = run(parse_config(cfg), progress=None).samples
    assert (s["status"] == "ok").all(), s["error"].tolist()
