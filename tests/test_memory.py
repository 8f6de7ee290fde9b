"""The allocator settings of the worker processes (salbench.memory)."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import ray.data

from salbench.config import parse_config
from salbench.memory import worker_env
from salbench.pipeline.graph import model_compute
from salbench.pipeline.plan import Pool
from salbench.pipeline.run import run
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
    import salbench.memory as memory

    for k in worker_env():
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(memory, "_tuned", True)
    assert memory.tuned_for_this_thread()
    with ThreadPoolExecutor(1) as pool:
        assert not pool.submit(memory.tuned_for_this_thread).result()
        for k, v in worker_env().items():
            monkeypatch.setenv(k, v)
        assert pool.submit(memory.tuned_for_this_thread).result() == bool(worker_env())


_FRAGMENTED_HEAP = """
import ctypes, json, sys
from pathlib import Path
from salbench.memory import release_freed_memory

def anon_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(16384) for _ in range(8000)]  # 125 MB below the mmap threshold
for b in blocks:
    ctypes.memset(b, 1, 16384)
for i, b in enumerate(blocks):
    if i % 64:  # keep one block in 64: the heap's top stays in use, its middle is free
        libc.free(b)
held = anon_kb()
if sys.argv[1] == "tuned":
    from salbench.memory import keep_freed_memory
    keep_freed_memory()
released = release_freed_memory()
print(json.dumps({"released": released, "held_kb": held, "after_kb": anon_kb()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
@pytest.mark.parametrize("tuned", [False, True])
def test_driver_gives_freed_heap_back_unless_the_process_keeps_it(tuned):
    """A heap whose middle was freed (glibc keeps it: only its top is trimmed on free) goes
    back to the system; not in a process whose model stage keeps freed memory on purpose."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP, "tuned" if tuned else "-"],
                         capture_output=True, text=True, check=True, timeout=120)
    r = json.loads(out.stdout)
    assert r["released"] is not tuned
    freed_mb = (r["held_kb"] - r["after_kb"]) / 1024
    if tuned:
        assert abs(freed_mb) < 5, r
    else:
        assert freed_mb > 100, r  # ~123 MB freed in the middle of the heap
