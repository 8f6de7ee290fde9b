"""The processes' allocators: what a process keeps of the memory it frees (no torch, no Ray:
the driver and the writer actor import it too).

A model worker keeps it, so that torch does not fault in fresh pages on every pass
(:func:`keep_freed_memory`, :func:`worker_env`). :func:`keep_freed_memory` (``mallopt``
at run time) sets process-wide limits, but only glibc's main arena, which serves the main
thread, can hold blocks of any size in its heap: a thread on another arena gets every block
above 64 MB (the heap size of non-main arenas) as a separate mapping whatever the settings,
unmapped again on free. The pipeline runs each
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

The driver and the writer actor give it back (:func:`use_system_allocator`,
:func:`release_freed_memory`). They free nearly everything they allocate (rows come in, a
shard is written, the rows go), but allocators keep freed memory for reuse. Over a long run
that kept memory, not live data, is what grows the driver: measured on a Ray run of tiny_cnn
(BENCHMARKS.md, "Driver memory at scale"), glibc's in-use heap was the same 201 MB at 4,000
and at 16,000 rows while its free-but-kept memory grew from 12 to 19 MB; ``malloc_trim``
gave it back.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
import threading
from typing import Any

import pyarrow as pa

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


def use_system_allocator() -> None:
    """Make the system allocator Arrow's default memory pool in this (driver) process,
    unless ``ARROW_DEFAULT_MEMORY_POOL`` chooses one. Arrow's default, mimalloc, keeps freed
    pages for reuse, so a driver that reads a run batch by batch holds more than the batch it
    is on (both measured in BENCHMARKS.md, "Driver memory at scale")."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())


def release_freed_memory() -> bool:
    """Give the memory this process has freed back to the operating system (glibc's
    ``malloc_trim(0)``: every arena's free pages, not only the heap's top). Takes a few
    milliseconds on a driver's heap. Returns False, doing nothing, where the C library cannot
    and where this process keeps its freed memory on purpose: an in-process run's model
    stage tunes glibc so that torch does not fault in fresh pages on every pass
    (:func:`keep_freed_memory`)."""
    trim = glibc_function("malloc_trim")
    if trim is None or tuned_for_this_thread():
        return False
    trim(ctypes.c_size_t(0))
    return True
