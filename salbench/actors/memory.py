"""Keep freed memory inside a worker process instead of returning it to the OS.

Two mechanisms: :func:`keep_freed_memory` (``mallopt`` at run time) tunes the main arena,
which serves the thread that tuned it (an in-process run, the benchmark loop); Ray Data runs
a model actor's batches in a worker thread, whose malloc arena is chosen before salbench
can act (glibc fixes the arena limit at the first arena it creates), so the model actors
are started with :func:`worker_env` in their environment instead: one arena, no per-block
mmap, no trimming, read by glibc when the process starts. Measured here (IG, 64 steps, one
photo, in a worker thread): 2.5 million minor faults and 3.8 s per call with mallopt only,
none and 1.1 s with the environment.

glibc serves every block above its mmap threshold (at most 32 MB) with a fresh ``mmap`` and
unmaps it on free, and trims the heap's top; torch on CPU has no caching allocator, so each
chunk of path points (64 images x 224 px activations are hundreds of MB) faults in fresh
zeroed pages on every forward and backward pass. Measured on the 2-core machine
(benchmarks/alloc.py, IG on the bundled photos): millions of minor page faults per pass
and about half the CPU time in the kernel without this, none with it. The cost: the
process keeps its peak heap, which a chunked method bounds through
``internal_batch_size``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

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
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _tuned:
        log.info("mallopt refused the allocator settings; keeping glibc's defaults")
    return _tuned
