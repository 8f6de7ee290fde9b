"""Fault injection for the pipeline tests: a method whose map is NaN on bright images, a
model-stage metric that raises on bright images, and a method that loses the "device" once.

"Bright" is a mean above ``threshold`` (x in [0, 1]); a test picks the threshold so that one
image of its dataset is bright. Importing this module registers ``fault_nan_bright``,
``fault_constant``, ``fault_device_once`` (methods) and ``fault_raise_bright`` (a
model-stage metric).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

import salbench


def _bright(x: torch.Tensor, threshold: float) -> torch.Tensor:
    return x.mean(dim=(1, 2, 3)) > threshold


@salbench.methods.register("fault_nan_bright")
def nan_bright(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, *,
               threshold: float = 0.5) -> torch.Tensor:
    """|x| (float [B, 3, H, W]); every pixel NaN on the images brighter than ``threshold``."""
    a = x.abs().clone()
    a[_bright(x, threshold)] = float("nan")
    return a


@salbench.methods.register("fault_constant")
def constant(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """An all-zero attribution (as Grad-CAM gives when no activation is positive)."""
    return torch.zeros_like(x)


@salbench.methods.register("fault_device_once")
def device_once(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, *,
                marker: str = "") -> torch.Tensor:
    """|x|; the first call of a run (no file at ``marker`` yet) writes the marker with this
    process's id and raises the error CUDA gives after a device-side assert."""
    path = Path(marker)
    if marker and not path.exists():
        path.write_text(str(os.getpid()))
        raise RuntimeError("CUDA error: device-side assert triggered")
    return x.abs()


@salbench.metrics.register("fault_raise_bright", stage="model",
                           columns={"fault_mean": "float"})
def raise_bright(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                 maps: torch.Tensor, *, threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """The map's mean per image; raises ValueError when a bright image is in the batch."""
    if bool(_bright(x, threshold).any()):
        raise ValueError("injected failure on a bright image")
    return {"fault_mean": maps.mean(dim=(1, 2))}
