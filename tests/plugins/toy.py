"""A user's plugin module for the tests: one of each kind, registered with the decorators,
plus unregistered functions that break the method contract (named by import path).

Importing this module registers ``plugin_blur_ig`` and ``plugin_pid_probe`` (methods),
``plugin_map_entropy`` and ``plugin_masked_drop`` (metrics), ``plugin_tiny`` (a model) and
``plugin_squares`` (a dataset).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

import salbench
from salbench.datasets.base import Dataset, Row
from salbench.methods import Attribution
from salbench.methods.baselines import make_baseline
from salbench.methods.ig import integrated_gradients
from salbench.models.base import Classifier
from salbench.models.tiny import build_tiny


@salbench.methods.register("plugin_blur_ig", fast={"steps": 8},
                           info_columns=("completeness_error", "score_delta"))
def blur_ig(model: Classifier, x: torch.Tensor, target: torch.Tensor, *, steps: int = 64,
            sigma: float = 2.0) -> Attribution:
    """IG from a Gaussian-blurred copy of x (sigma px): x float [B, 3, H, W] in [0, 1],
    target int64 [B] -> float32 [B, 3, H, W] and IG's completeness diagnostics [B]."""
    base = make_baseline(x, "blur", blur_sigma=sigma)
    return integrated_gradients(model, x, target, steps=steps, baseline=base)


@salbench.methods.register("plugin_pid_probe", info_columns=("worker_pid",))
def pid_probe(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> Attribution:
    """The vanilla gradient [B, 3, H, W], with the id of the process that computed it."""
    attr = salbench.methods.attribute("vg", model, x, target)
    return Attribution(attr, {"worker_pid": torch.full((len(x),), float(os.getpid()))})


@salbench.metrics.register("plugin_map_entropy", stage="cpu",
                           columns={"map_entropy": "float"})
def map_entropy(sample: dict, *, eps: float = 1e-12) -> dict:
    """Shannon entropy of |map| / sum |map|, divided by log(H W): 0 (one pixel) .. 1 (flat).
    Returns a numpy float32 on purpose (the registry converts it)."""
    p = np.abs(sample["map"]).ravel()
    p = p / max(float(p.sum()), eps)
    h = -(p * np.log(np.maximum(p, eps))).sum() / np.log(p.size)
    return {"map_entropy": np.float32(h)}


@salbench.metrics.register("plugin_masked_drop", stage="model",
                           columns={"masked_drop": "float"})
def masked_drop(model: Classifier, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
                *, fraction: float = 0.1) -> dict:
    """Drop of the target's softmax probability when the top ``fraction`` of the map's
    pixels are set to 0: maps float [B, H, W] -> B values in [-1, 1]."""
    flat = maps.flatten(1)
    k = max(1, int(fraction * flat.shape[1]))
    keep = torch.ones_like(flat)
    keep.scatter_(1, flat.topk(k, dim=1).indices, 0.0)
    with torch.no_grad():
        both = torch.cat([x, x * keep.view_as(maps).unsqueeze(1)])
        p = torch.softmax(model(both), 1).gather(1, target.repeat(2).view(-1, 1)).squeeze(1)
    return {"masked_drop": (p[: len(x)] - p[len(x):]).cpu().numpy()}


@salbench.models.register("plugin_tiny")
def tiny_seed1(weights: str | None = None) -> Classifier:
    """tiny_smooth with other random weights (seed 1): [B, 3, 32, 32] -> logits [B, 10]."""
    return build_tiny("tiny_smooth", weights=weights, seed=1)


@salbench.datasets.register("plugin_squares")
class Squares(Dataset):
    """``n`` 32 x 32 noise images with one bright square each, its box, label -1."""

    kind = "plugin_squares"

    def __init__(self, n: int = 4, seed: int = 0) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def read(self, start: int, stop: int) -> Iterator[Row]:
        for i in range(max(0, start), min(stop, self.n)):
            rng = np.random.default_rng([self.seed, i])
            img = rng.integers(0, 120, (32, 32, 3), dtype=np.uint8)
            y, x = (int(v) for v in rng.integers(0, 22, 2))
            img[y:y + 10, x:x + 10] = (230, 200, 40)
            yield {"sample_id": f"square-{i}", "image": img, "label": -1,
                   "boxes": [[x, y, x + 10, y + 10]], "source": f"plugin_squares:{i}"}


# Unregistered functions that break the method contract, named by import path in configs.

def wrong_shape(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Returns one channel [B, 1, H, W] instead of [B, 3, H, W]."""
    return x[:, :1].clone()


def nan_attr(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Returns NaN everywhere."""
    return torch.full_like(x, float("nan"))


def wrong_device(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Returns a tensor on the meta device, not the input's."""
    return torch.zeros_like(x, device="meta")


def undeclared_info(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> Attribution:
    """Returns a diagnostic it never declared (a plain function declares none)."""
    return Attribution(x.clone(), {"extra": torch.zeros(len(x))})


def no_model_argument(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The wrong signature: a method is fn(model, x, target, **params)."""
    return x
