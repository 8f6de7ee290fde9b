"""Keep freed memory inside a worker process instead of returning it to the OS.

:func:`keep_freed_memory` (``mallopt`` at run time) sets process-wide limits, but only
glibc's main arena, which serves the main thread, can hold blocks of any size in its heap:
a thread on another arena gets every block above 64 MB (the heap size of non-main arenas) as
a separate mapping whatever the settings, unmapped again on free. The pipeline runs each
model actor's batches on the actor's main thread (``salbench.pipeline.graph.model_compute``),
so tuning in the actor's constructor is enough, as in an in-process run. Where the installed
Ray can only run batches in a worker thread, the model actors are started with
:func:`worker_env` in their environment instead: one arena for all threads, no per-block
mmap, no trimming. That works but costs speed (every thread then shares one arena and its
lock; the three set-ups' measured times are in docs/PIPELINE.md, "Memory of the CPU
actors and the model actors").

glibc serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
unmaps it on free, and trims the heap's top; torch on CPU has no caching allocator, so each
chunk of path points (64 images x 224 px activations are hundreds of MB) faults in fresh
zeroed pages on every forward and backward pass: millions of minor page faults per pass
and about half the CPU time in the kernel without this, none with it (``benchmarks/alloc.py``;
figures in BENCHMARKS.md). The cost: the
process keeps its peak heap, which a chunked method bounds through
``internal_batch_size``.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: The trim threshold both mechanisms set: freed memory below it stays in the process.
TRIM_THRESHOLD = 2**31 - 1
_tuned = False


def _enabled() -> bool:
    """glibc's settings apply: on Linux, unless ``SALBENCH_MALLOC_TUNING=0``."""
    return sys.platform.startswith("linux") and os.environ.get("SALBENCH_MALLOC_TUNING") != "0"


def worker_env() -> dict[str, str]:
    """Environment variables that give a new process the same allocator settings, for all
    of its threads ({} when ``SALBENCH_MALLOC_TUNING=0`` or not on Linux)."""
    if not _enabled():
        return {}
    return {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0",
            "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}


def tuned_for_this_thread() -> bool:
    """Whether blocks the calling thread frees stay in the process: it is the main thread
    and :func:`keep_freed_memory` has tuned the main arena, or the :func:`worker_env`
    settings are in the process's environment (one tuned arena for every thread)."""
    env = worker_env()
    if env and all(os.environ.get(k) == v for k, v in env.items()):
        return True
    return _tuned and threading.current_thread() is threading.main_thread()


@functools.cache
def glibc_function(name: str) -> Any:
    """glibc's function ``name`` (``mallopt``, ``malloc_trim``), or None where the C library
    is not glibc or has no such function."""
    try:
        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """glibc only: no per-block mmap, no heap trimming (``mallopt``); once per process.

    Returns whether the allocator is (now) tuned. A no-op elsewhere (macOS, musl) and when
    ``SALBENCH_MALLOC_TUNING=0``.
    """
    global _tuned
    if _tuned:
        return True
    if not _enabled():
        return False
    mallopt = glibc_function("mallopt")
    if mallopt is None:
        return False
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _tuned:
        log.info("mallopt refused the allocator settings; keeping glibc's defaults")
    return _tuned
