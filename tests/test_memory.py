"""The allocator settings of the worker processes (salbench.actors.memory)."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import ray.data

from salbench.actors.memory import worker_env
from salbench.pipeline import parse_config, run
from salbench.pipeline.graph import model_compute
from salbench.pipeline.plan import Pool
from tests.env_plugin import ThreadProbe


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_worker_env_and_its_opt_out(monkeypatch):
    env = worker_env()
    assert env == {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
                   "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
    monkeypatch.setenv("SALBENCH_MALLOC_TUNING", "0")
    assert worker_env() == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
@pytest.mark.usefixtures("ray_session")
def test_model_actors_run_batches_where_the_allocator_is_tuned(tmp_path):
    """A model actor's batches must run on its main thread (tuned by mallopt in the
    constructor) or, where Ray can only use a worker thread, with the settings in the
    actor process's environment."""
    cfg = {"name": "env", "out": str(tmp_path), "seed": 0, "profile": "fast",
           "dataset": {"kind": "synthetic", "n": 2, "size": 32, "seed": 1},
           "models": ["tiny_cnn"], "methods": ["tests.env_plugin:allocator_probe"],
           "metrics": ["pointing_game"],
           "resources": {"shard_size": 2, "torch_threads": 1}}
    s = run(parse_config(cfg), progress=None).samples
    assert (s["status"] == "ok").all(), s["error"].tolist()


@pytest.mark.usefixtures("ray_session")
def test_model_stage_batches_run_on_the_actors_main_thread():
    """With this Ray, the model stages' pool runs batches on the actor's main thread (no
    worker thread, so no one-arena environment and its lock contention)."""
    compute, main_thread = model_compute(Pool("attribute", "m", 1, 1, 0.1))
    assert main_thread
    out = ray.data.range(4, override_num_blocks=2).map_batches(
        ThreadProbe, compute=compute, num_cpus=0.1).take_all()
    assert [r["main"] for r in out] == [True] * 4
    # the default pool, for contrast: Ray Data's worker thread
    out = ray.data.range(2).map_batches(
        ThreadProbe, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.1).take_all()
    assert not any(r["main"] for r in out)


def test_tuned_for_this_thread(monkeypatch):
    import salbench.actors.memory as memory

    for k in worker_env():
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(memory, "_tuned", True)
    assert memory.tuned_for_this_thread()
    with ThreadPoolExecutor(1) as pool:
        assert not pool.submit(memory.tuned_for_this_thread).result()
        for k, v in worker_env().items():
            monkeypatch.setenv(k, v)
        assert pool.submit(memory.tuned_for_this_thread).result() == bool(worker_env())
