"""A test-only attribution method that kills its own process on chosen samples, standing in
for a sample that crashes native code or draws the OS's out-of-memory killer."""

from __future__ import annotations

import os
import signal

import torch


def crash_on_bright(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                    threshold: float = 0.5) -> torch.Tensor:
    """|x| as the map (float [B, 3, H, W]); SIGKILLs this process when an image of the batch
    has a mean above ``threshold`` (x in [0, 1])."""
    if bool((x.mean(dim=(1, 2, 3)) > threshold).any()):
        os.kill(os.getpid(), signal.SIGKILL)
    return x.abs()
