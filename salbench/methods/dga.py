"""DGA: Distilled Gradient Aggregation (Jeon, Jeong, Choi, NeurIPS 2022; paper 003, SPEC 4).

Follows the reference pseudo-code of the supplement (Sec. F) step for step. With x the input,
N = ``steps`` and a_k the local attribution at the k-th distilled input x_k (x_0 = x):

    for k = 0 .. N-1:
        a_k   = local(x_k)                                   (default gradient x input)
        A    += ReLU(a_k)
        t     = (k + 1) / N
        WC_k  = 1 - [|a_k| <= quantile(|a_k|, t)]            weak-contributor mask
        EPC_k = 1 - [a_k >= quantile(a_k, epc_quantile)]     extremely-positive-contributor mask
        x_{k+1} = x * (t WC_k + (1 - t) EPC_k)               (always a mask of the original x)
    DGA = A / N

Quantiles are taken per image over all 3 x H x W elements (``flatten(1)``) with
``torch.quantile`` (linear interpolation), as in the pseudo-code; torch limits a row to 2^24
elements (images up to about 2360 x 2360). The result is float32 [B, 3, H, W], >= 0
everywhere (a mean of ReLUs). The mask after the last step is never used, so it is not
computed (the pseudo-code computes and discards it).

Parameters: ``steps`` N = 30 and ``epc_quantile`` q = 0.9 (supplement Sec. K: the values used
for all experiments). ``mask``: "both" (the pseudo-code, default), "wc" (weak-contributor mask
only: the EPC mask is replaced by ones, the supplement's DGA_W, which it also describes as
q = 1) or "epc" (EPC mask only: the WC mask is replaced by ones, DGA_E). ``local``: the name of
any registered attribution method, called with its paper defaults (plus this call's
``score``, ``internal_batch_size`` and ``seed`` where it takes them); "gxi" (gradient x input)
by default, "vg" for the plain gradient. ``score``: the target logit (the pseudo-code explains
``model_func``'s output, the paper's networks output logits).

Deviation: the main paper's DGA uses a FullGrad-style local attribution (the supplement's
Table 1 lists "DGA (G*I)" separately from "DGA", and its ablation mentions the FullGrad
post-processing); the supplement's code leaves ``local_attribution`` abstract. SPEC 4 sets
gradient x input as the default, i.e. the supplement's "DGA (G*I)" variant.

Batching: the steps are sequential (each mask depends on the previous local attribution), so
the loop runs over steps and each step evaluates the local attribution of all B images in one
batched call (chunks of ``internal_batch_size``). Cost: ``steps`` forward+backward passes per
image with "gxi" or "vg" (30 in the paper profile, 10 in the fast profile).
"""

from __future__ import annotations

import torch

from salbench.errors import ConfigError
from salbench.methods.registry import Attribution, get, register
from salbench.models.base import Classifier

MASKS = ("both", "wc", "epc")


def distillation_mask(local: torch.Tensor, t: float, epc_quantile: float, mask: str = "both"
                      ) -> torch.Tensor:
    """The supplement's combined mask t * WC + (1 - t) * EPC for local attributions [B, ...].

    local: float [B, 3, H, W]; returns float [B, 3, H, W] with values in {0, t, 1 - t, 1}.
    """
    flat = local.flatten(1)
    ones = torch.ones_like(flat)
    if mask in ("both", "wc"):
        mag = flat.abs()
        wc = 1 - (mag <= mag.quantile(t, dim=1, keepdim=True)).float()
    else:
        wc = ones
    if mask in ("both", "epc"):
        epc = 1 - (flat >= flat.quantile(epc_quantile, dim=1, keepdim=True)).float()
    else:
        epc = ones
    return (t * wc + (1 - t) * epc).view_as(local)


@register("dga", fast={"steps": 10})
def dga(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 30,
    epc_quantile: float = 0.9,
    mask: str = "both",
    local: str = "gxi",
    score: str = "logit",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Distilled Gradient Aggregation: mean of ReLU(local attribution) over N distilled inputs.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. Returns float32 [B, 3, H, W] >= 0.
    Algorithm and parameters: see the module docstring. Fast profile: 10 steps.
    """
    if mask not in MASKS:
        raise ConfigError(f"dga: mask must be one of {MASKS}, got {mask!r}")
    if int(steps) < 1:
        raise ConfigError(f"dga: steps must be >= 1, got {steps}")
    if not 0.0 <= float(epc_quantile) <= 1.0:
        raise ConfigError(f"dga: epc_quantile must be in [0, 1], got {epc_quantile}")
    if not isinstance(local, str) or local == "dga":
        raise ConfigError(f"dga: local must name another registered method, got {local!r}")
    spec = get(local)  # UnknownNameError listing the registered methods
    passed = {"score": score, "internal_batch_size": internal_batch_size, "seed": seed}
    args = spec.params("paper", **{k: v for k, v in passed.items() if k in spec.defaults})

    x = x.detach().float()
    n = int(steps)
    total = torch.zeros_like(x)
    cur = x
    for k in range(n):
        out = spec.fn(model, cur, target, **args)
        a = (out.attr if isinstance(out, Attribution) else out).detach().float()
        if a.shape != x.shape:
            raise ConfigError(f"dga: local method {local!r} returned {tuple(a.shape)}, "
                              f"expected {tuple(x.shape)}")
        total += torch.relu(a)
        if k + 1 < n:
            cur = x * distillation_mask(a, (k + 1) / n, float(epc_quantile), mask)
    return total / n
