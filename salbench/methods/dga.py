"""DGA: Distilled Gradient Aggregation (Jeon, Jeong, Choi, NeurIPS 2022; paper 003, SPEC 4).

Follows the reference pseudo-code of the supplement (Sec. F) step for step. With x the input,
N = ``steps`` and a_k the local attribution at the k-th distilled input x_k (x_0 = x):

    for k = 0 .. N-1:
        a_k   = local(x_k)                                   (default FullGrad)
        A    += ReLU(a_k)
        t     = (k + 1) / N
        WC_k  = 1 - [|a_k| <= quantile(|a_k|, t)]            weak-contributor mask
        EPC_k = 1 - [a_k >= quantile(a_k, epc_quantile)]     extremely-positive-contributor mask
        x_{k+1} = x * (t WC_k + (1 - t) EPC_k)               (always a mask of the original x)
    DGA = A / N

Quantiles are taken per image over all elements of a_k (``flatten(1)``) with
``torch.quantile`` (linear interpolation), as in the pseudo-code; torch limits a row to 2^24
elements (images up to about 2360 x 2360). The result is float32 [B, 3, H, W], >= 0
everywhere (a mean of ReLUs). The mask after the last step is never used, so it is not
computed (the pseudo-code computes and discards it).

Registered as:

- ``dga``: the paper's DGA, local attribution ``fullgrad`` (:mod:`salbench.methods.fullgrad`,
  the authors' post-processing). The main paper builds DGA on FullGrad, and the supplement's
  Table 1 lists "G*I", "DGA (G*I)" and "DGA" as three columns, its Figure 1 ablating the
  FullGrad post-processing; the supplement's code leaves ``local_attribution`` abstract.
- ``dga_gxi``: the same with gradient x input as the local attribution, the supplement's
  "DGA (G*I)" (Table 1); it was salbench's ``dga`` before FullGrad existed here (SPEC 4).
- the supplement's Table 2 mask ablations are ``mask`` values: "both" (the pseudo-code,
  default), "wc" (weak-contributor mask only, the EPC mask replaced by ones: DGA_W, which
  Sec. K also describes as q = 1) and "epc" (EPC mask only, the WC mask replaced by ones:
  DGA_E); with the FullGrad local attribution, as Table 2's DGA column equals Table 1's DGA.
  Table 2's ReLU variants of IG and Guided IG are :mod:`salbench.methods.relu_variants`.

How the paper is read where it is silent:

- FullGrad's map has one channel ([B, 1, H, W] in the authors' code, which the pseudo-code's
  ``thres.unflatten(-1, [1, 1, 1])`` and ``torch.mul(inputs, final_mask)`` broadcast over the
  colour channels). salbench's ``fullgrad`` spreads it evenly over the three channels (map
  reduction "sum"), so for a local method registered with map reduction "sum" (FullGrad,
  Grad-CAM) the masks are computed from the map itself (the channel sum, one value per
  pixel) and broadcast over the channels, exactly as with the authors' one-channel map.
  The aggregated A keeps the spread form, so ``to_map`` with "abs_sum" gives the mean of
  ReLU(FullGrad map) over the steps. For other local methods (gxi, vg) the masks are per
  element of [3, H, W], as the pseudo-code does with a 3-channel attribution.
- FullGrad is called with the authors' post-processing (per-layer rescaling,
  ``align_corners=True``) and the target logit; it is >= 0, so the ReLU changes nothing.
- The input x_k is masked in salbench's [0, 1] image space (the model normalises inside),
  so a masked pixel is black. The pseudo-code masks ``inputs``, whatever ``model_func``
  takes; whether that was the normalised image (a masked pixel would then be the mean
  colour) is not said. Black is salbench's convention for removed pixels.

Parameters: ``steps`` N = 30 and ``epc_quantile`` q = 0.9 (supplement Sec. K: the values used
for all experiments). ``local``: the name of any registered attribution method, called with
its paper defaults (plus this call's ``score``, ``internal_batch_size`` and ``seed`` where it
takes them); "fullgrad" for ``dga``, "gxi" for ``dga_gxi``, "vg" for the plain gradient.
``score``: the target logit (the pseudo-code explains ``model_func``'s output, the paper's
networks output logits).

Batching: the steps are sequential (each mask depends on the previous local attribution), so
the loop runs over steps and each step evaluates the local attribution of all B images in one
batched call (chunks of ``internal_batch_size``). Cost: ``steps`` forward+backward passes per
image with "fullgrad", "gxi" or "vg" (30 in the paper profile, 10 in the fast profile);
FullGrad's per-step overhead over G*I is its post-processing of every bias layer's gradient.
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


def _check(steps: int, epc_quantile: float, mask: str, local: str) -> None:
    if mask not in MASKS:
        raise ConfigError(f"dga: mask must be one of {MASKS}, got {mask!r}")
    if int(steps) < 1:
        raise ConfigError(f"dga: steps must be >= 1, got {steps}")
    if not 0.0 <= float(epc_quantile) <= 1.0:
        raise ConfigError(f"dga: epc_quantile must be in [0, 1], got {epc_quantile}")
    if not isinstance(local, str) or local.startswith("dga"):
        raise ConfigError(f"dga: local must name another registered method, got {local!r}")


def distill(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int,
    epc_quantile: float,
    mask: str,
    local: str,
    score: str,
    seed: int,
    internal_batch_size: int,
) -> torch.Tensor:
    """DGA with local method ``local`` (see the module docstring): float32 [B, 3, H, W] >= 0."""
    _check(steps, epc_quantile, mask, local)
    spec = get(local)  # UnknownNameError listing the registered methods
    passed = {"score": score, "internal_batch_size": internal_batch_size, "seed": seed}
    args = spec.params("paper", **{k: v for k, v in passed.items() if k in spec.defaults})
    single_channel = spec.map_reduce == "sum"

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
            # a map spread over the channels (FullGrad, Grad-CAM): masks from the map itself
            mask_of = a.sum(1, keepdim=True) if single_channel else a
            cur = x * distillation_mask(mask_of, (k + 1) / n, float(epc_quantile), mask)
    return total / n


@register("dga", fast={"steps": 10})
def dga(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 30,
    epc_quantile: float = 0.9,
    mask: str = "both",
    local: str = "fullgrad",
    score: str = "logit",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Distilled Gradient Aggregation (Jeon et al. 2022), FullGrad as the local attribution.

    The mean of ReLU(local attribution) over N distilled inputs.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. Returns float32 [B, 3, H, W] >= 0.
    Local attribution FullGrad by default (the paper's DGA). Fast profile: 10 steps.
    """
    return distill(model, x, target, steps=steps, epc_quantile=epc_quantile, mask=mask,
                   local=local, score=score, seed=seed, internal_batch_size=internal_batch_size)


@register("dga_gxi", fast={"steps": 10})
def dga_gxi(
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
    """DGA with gradient x input as the local attribution (the supplement's "DGA (G*I)").

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. Returns float32 [B, 3, H, W] >= 0.
    Same parameters as ``dga``; fast profile: 10 steps.
    """
    return distill(model, x, target, steps=steps, epc_quantile=epc_quantile, mask=mask,
                   local=local, score=score, seed=seed, internal_batch_size=internal_batch_size)
