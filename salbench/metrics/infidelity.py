"""Infidelity (Yeh et al. 2019), batched on the model stage.

INFD = E_I[(I . Phi - (f(x) - f(x - I)))^2] over random perturbations I, estimated from
``n_perturb_samples`` draws per image (from the image's seed). Phi is the method's signed
attribution (float [3, H, W]) when the pipeline passes it, else the map repeated over the
channels; f is the target logit by default (Quantus' ``softmax=False``).
``perturb_func``: "square" (Yeh's square removal: a square of a side drawn from
``perturb_patch_sizes``, at a uniformly drawn position inside the image, set to
``perturb_baseline``; I = x - x') or "gaussian" (Yeh's noisy baseline: I ~ N(0, noise^2)
per value). ``normalise``: Yeh's optimally scaled explanation (beta Phi with beta =
E[I.Phi Delta] / E[(I.Phi)^2], as Captum's ``normalize``). Lower is better;
n_perturb_samples + 1 passes. Quantus 0.6.0's Infidelity is not Yeh's estimator (it removes
every patch of a grid in turn, deterministically): see docs/METRICS.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salbench.errors import BadInputError
from salbench.methods.seeding import image_generators
from salbench.metrics.registry import register
from salbench.metrics.removal import Fill, scores
from salbench.models.base import Classifier

PERTURBATIONS = ("square", "gaussian")


def _squares(g: torch.Generator, n: int, sizes: list[int], h: int, w: int
             ) -> list[list[int]]:
    """n squares [side, top row, left column], the side drawn from ``sizes``, the position
    uniform among those inside an h x w image."""
    out = []
    for k in torch.randint(0, len(sizes), (n,), generator=g).tolist():
        side = sizes[k]
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        out.append([side, top, left])
    return out


@register("infidelity", stage="model", columns={"infidelity": "float"},
          directions={"infidelity": "lower"})
def infidelity(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    attr: torch.Tensor | None = None,
    n_perturb_samples: int = 10,
    perturb_func: str = "square",
    perturb_patch_sizes: list[int] | tuple[int, ...] = (4,),
    perturb_baseline: str | float = "black",
    noise: float = 0.1,
    normalise: bool = False,
    score: str = "logit",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """Infidelity (Yeh et al. 2019): mean squared error between I . Phi and the score drop
    over random perturbations I."""
    b, c, h, w = x.shape
    if perturb_func not in PERTURBATIONS:
        raise BadInputError(f"perturb_func must be one of {PERTURBATIONS}, got "
                            f"{perturb_func!r}")
    sizes = [int(s) for s in perturb_patch_sizes]
    if not sizes or any(not 1 <= s <= min(h, w) for s in sizes):
        raise BadInputError(f"perturb_patch_sizes must be in [1, {min(h, w)}], got "
                            f"{perturb_patch_sizes!r}")
    if n_perturb_samples < 1:
        raise BadInputError(f"n_perturb_samples must be at least 1, got {n_perturb_samples}")
    phi = (attr if attr is not None else maps.unsqueeze(1).expand(-1, c, -1, -1)).double()
    if not torch.isfinite(phi).all():
        raise ValueError("saliency map contains NaN or inf")
    s = n_perturb_samples
    gens = image_generators(x, seed)
    fill = Fill(x, perturb_baseline, gens)
    if perturb_func == "square":
        draws = torch.tensor([_squares(g, s, sizes, h, w) for g in gens],
                             device=x.device)  # [B, S, 3]: side, top row, left column
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)

        def perturbed(j: torch.Tensor) -> torch.Tensor:
            i, k = j // s, j % s
            sz, r0, c0 = (draws[i, k, q].view(-1, 1, 1) for q in range(3))
            inside = (rows >= r0) & (rows < r0 + sz) & (cols >= c0) & (cols < c0 + sz)
            return torch.where(inside[:, None], fill(i, k), x[i])
    else:
        eps = torch.stack([torch.randn((s, *x.shape[1:]), generator=g) for g in gens]
                          ).to(x.device, x.dtype) * noise  # [B, S, 3, H, W]

        def perturbed(j: torch.Tensor) -> torch.Tensor:
            return x[j // s] + eps[j // s, j % s]

    f0 = scores(model, b, lambda i: x[i], target, score, internal_batch_size)
    fs = scores(model, b * s, perturbed, target.repeat_interleave(s), score,
                internal_batch_size).view(b, s)
    dot = torch.empty(b * s, dtype=torch.float64, device=x.device)
    for start in range(0, b * s, internal_batch_size):
        j = torch.arange(start, min(b * s, start + internal_batch_size), device=x.device)
        dot[j] = ((x[j // s] - perturbed(j)).double() * phi[j // s]).sum((1, 2, 3))
    dot = dot.view(b, s)
    delta = f0[:, None] - fs
    if normalise:
        den = (dot * dot).mean(1, keepdim=True)
        num = (dot * delta).mean(1, keepdim=True)
        beta = torch.where(den > 0, num / torch.where(den > 0, den, 1), 1)
        dot = beta * dot
    return {"infidelity": ((dot - delta) ** 2).mean(1).cpu().numpy().astype(np.float64)}
