"""The driver process's allocators: what it keeps of the memory it frees.

A run's driver frees nearly everything it allocates (rows come in, a shard is written,
the rows go), but allocators keep freed memory for reuse. Over a long run that kept memory,
not live data, is what grows the driver: measured on a Ray run of tiny_cnn (BENCHMARKS.md,
"Driver memory at scale"), glibc's in-use heap was the same 201 MB at 4,000 and at 16,000
rows while its free-but-kept memory grew from 12 to 19 MB; ``malloc_trim`` gave it back.
"""

from __future__ import annotations

import ctypes
import os

import pyarrow as pa

from salbench.actors.memory import glibc_function, tuned_for_this_thread


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
    (:mod:`salbench.actors.memory`)."""
    trim = glibc_function("malloc_trim")
    if trim is None or tuned_for_this_thread():
        return False
    trim(ctypes.c_size_t(0))
    return True
