"""Test-only probes of where work runs: an attribution method that fails unless the thread
running it keeps freed memory in the process (``salbench.memory.tuned_for_this_thread``),
and a Ray Data UDF that records whether it runs on its process's main thread."""

from __future__ import annotations

import threading

import numpy as np
import torch

from salbench.memory import tuned_for_this_thread


def allocator_probe(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|x| as the map (float [B, 3, H, W]); RuntimeError when the allocator is not tuned for
    the calling thread."""
    if not tuned_for_this_thread():
        raise RuntimeError(f"batch ran in thread {threading.current_thread().name!r}, whose "
                           "allocator keeps glibc's defaults")
    return x.abs()


class ThreadProbe:
    """Ray Data UDF: adds ``main`` (bool), whether the batch ran on the main thread."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        on_main = threading.current_thread() is threading.main_thread()
        return {**batch, "main": np.full(len(batch["id"]), on_main)}
