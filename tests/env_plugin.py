"""A test-only attribution method that fails unless its process has the allocator settings
salbench gives its model actors (``salbench.actors.memory.worker_env``)."""

from __future__ import annotations

import os

import torch

from salbench.actors.memory import worker_env


def allocator_probe(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|x| as the map (float [B, 3, H, W]); RuntimeError when the environment lacks a setting."""
    missing = {k: v for k, v in worker_env().items() if os.environ.get(k) != v}
    if missing:
        raise RuntimeError(f"model actor started without {missing}")
    return x.abs()
