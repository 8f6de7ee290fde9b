"""Model parameter randomisation test (Adebayo et al. 2018; paper 000's sanity check).

Cascading randomisation: the layers with parameters are re-initialised from the top
(logits) down, cumulatively, on one copy of the model; at ``steps`` evenly spaced points of
the cascade the method is re-run on the randomised model and its map compared with the
original map: Spearman rank correlation of the absolute maps and SSIM of the maps rescaled
to [0, 1] (Adebayo's two measures). A method that passes the test gives low values once the
model is randomised. Columns: the values at the fully randomised model and the curves over
the cascade. Re-initialisation uses each layer's ``reset_parameters`` under a private RNG
seeded with ``seed`` (the global RNG is untouched).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from salbench.metrics.registry import register
from salbench.metrics.similarity import _pearson, map_similarity
from salbench.models.base import Classifier


def cascade_layers(model: nn.Module) -> list[nn.Module]:
    """Modules with their own parameters and ``reset_parameters``, output side first."""
    layers = [m for m in model.modules()
              if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(False))]
    return layers[::-1]


@register("mprt", stage="model", fast={"steps": 2},
          columns={"mprt_spearman": "float", "mprt_ssim": "float",
                   "mprt_spearman_curve": "curve", "mprt_ssim_curve": "curve"})
def mprt(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    method: Callable[[Classifier], torch.Tensor] | None = None,
    steps: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Cascading model randomisation: similarity of the method's maps before and after."""
    from scipy.stats import rankdata  # imported when used: scipy.stats takes 0.25 s
    if method is None:
        raise ValueError("mprt needs the attribution method to re-run (the pipeline passes it)")
    rand = copy.deepcopy(model)
    layers = cascade_layers(rand)
    if not layers:
        raise ValueError("model has no layers with parameters to randomise")
    stops = sorted({max(1, round(len(layers) * (i + 1) / steps)) for i in range(steps)})
    original = maps.detach().cpu().numpy()
    spear = np.zeros((len(x), len(stops)))
    ssim = np.zeros((len(x), len(stops)))
    done = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for j, stop in enumerate(stops):
            for layer in layers[done:stop]:
                layer.reset_parameters()
            done = stop
            new = method(rand).detach().cpu().numpy()
            for i in range(len(x)):
                a, b = np.abs(original[i]).ravel(), np.abs(new[i]).ravel()
                spear[i, j] = _pearson(rankdata(a), rankdata(b))
                ssim[i, j] = map_similarity(original[i], new[i])["ssim"]
    return {"mprt_spearman": spear[:, -1], "mprt_ssim": ssim[:, -1],
            "mprt_spearman_curve": list(spear.astype(np.float32)),
            "mprt_ssim_curve": list(ssim.astype(np.float32))}
