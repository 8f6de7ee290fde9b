"""ROAD, RemOve And Debias (Rong et al. 2022), batched on the model stage.

For each percentage p of ``percentages`` (10, 20, ..., 90, the paper's), the int(H W p / 100)
pixels with the highest map values (MoRF) or the lowest (LeRF; ties keep raster order) are
removed and *imputed*: noisy linear imputation, as the paper's reference code and Quantus
0.6: every removed value (per channel) is the weighted mean of its 8 neighbours (weight
1/6 for the 4 direct, 1/12 for the 4 diagonal neighbours inside the image), a sparse
linear system solved here on the model's device by conjugate gradients (all systems of a
chunk at once), plus Gaussian noise of standard deviation ``noise`` from the image's seed.
The model then classifies the imputed image; the per-sample curves hold 1 where the target
is still top-1. ``road`` is the mean of the MoRF curve (lower is better), ``road_lerf`` of
the LeRF curve (higher is better); averaged over images they are the paper's accuracy
curves. 2 x len(percentages) passes (18), plus the solver's work (convolutions).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from salbench.errors import BadInputError
from salbench.methods.seeding import image_generators
from salbench.metrics.registry import register
from salbench.metrics.removal import feature_values, order, positions, predictions
from salbench.models.base import Classifier

PERCENTAGES = tuple(range(10, 100, 10))
_MIX = 0x9E3779B97F4A7C15


def _neighbour_kernel(like: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]],
                     dtype=like.dtype, device=like.device)
    return k.view(1, 1, 3, 3)


def linear_imputation(x: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-6,
                      max_iter: int = 5000) -> torch.Tensor:
    """Impute the removed pixels of images x float [M, C, H, W] (removed bool [M, H, W]):
    each removed value is the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal,
    neighbours outside the image left out), solved by conjugate gradients per image and
    channel until the residual is below ``tol`` times the right-hand side's norm. Returns
    float [M, C, H, W]; kept pixels are unchanged."""
    m, c, h, w = x.shape
    z = x.double().reshape(m * c, 1, h, w)
    mask = removed.double().repeat_interleave(c, 0).view(m * c, 1, h, w)
    kern = _neighbour_kernel(z)
    total = nnf.conv2d(torch.ones(1, 1, h, w, dtype=z.dtype, device=z.device), kern,
                       padding=1)

    def apply(v: torch.Tensor, mk: torch.Tensor) -> torch.Tensor:
        """The system's matrix times v (zero outside the removed pixels mk)."""
        return mk * (total * v - nnf.conv2d(mk * v, kern, padding=1))

    rhs = mask * nnf.conv2d((1 - mask) * z, kern, padding=1)
    u = rhs / total
    r = rhs - apply(u, mask)
    rr = (r * r).sum((1, 2, 3), keepdim=True)
    stop = (tol * rhs.flatten(1).norm(dim=1)).view(-1, 1, 1, 1) ** 2
    # conjugate gradients on the systems not yet converged (each as if solved alone)
    ids = torch.arange(m * c, device=z.device)
    uu, rc, pc, rrc, mc, stc = u, r, r.clone(), rr, mask, stop
    for _ in range(max_iter):
        keep = (rrc > stc).flatten()
        if not keep.all():
            u[ids[~keep]] = uu[~keep]
            ids, uu, rc, pc, rrc, mc, stc = (t[keep] for t in (ids, uu, rc, pc, rrc, mc, stc))
            if len(ids) == 0:
                break
        ap = apply(pc, mc)
        pap = (pc * ap).sum((1, 2, 3), keepdim=True)
        alpha = torch.where(pap > 0, rrc / torch.where(pap > 0, pap, 1), 0)
        uu = uu + alpha * pc
        rc = rc - alpha * ap
        rr_new = (rc * rc).sum((1, 2, 3), keepdim=True)
        pc = rc + (rr_new / rrc) * pc
        rrc = rr_new
    u[ids] = uu
    out = torch.where(mask > 0, u, z)
    return out.view(m, c, h, w).to(x.dtype)


def _noise(shape: torch.Size, image_seed: int, draw: int) -> torch.Tensor:
    """Standard normal values float64 ``shape``: draw ``draw`` of one image's stream."""
    g = torch.Generator().manual_seed((image_seed + draw * _MIX) % 2**63)
    return torch.randn(shape, dtype=torch.float64, generator=g)


@register("road", stage="model", fast={"percentages": [10, 50, 90]},
          columns={"road": "float", "road_lerf": "float", "road_morf_curve": "curve",
                   "road_lerf_curve": "curve"},
          directions={"road": "lower", "road_lerf": "higher"})
def road(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    percentages: list[float] | tuple[float, ...] = PERCENTAGES,
    noise: float = 0.01,
    cg_tol: float = 1e-6,
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """ROAD (Rong et al. 2022): top-1 accuracy after noisy linear imputation of the MoRF /
    LeRF pixels, per percentage."""
    b, _, h, w = x.shape
    pcts = [float(p) for p in percentages]
    if not pcts or any(not 0 <= p < 100 for p in pcts):
        raise BadInputError(f"percentages must be a non-empty list in [0, 100), got "
                            f"{percentages!r}")
    counts = torch.tensor([int(h * w * p / 100) for p in pcts], device=x.device)
    a = feature_values(maps, None)
    ranks = torch.stack([positions(order(a, descending=d)) for d in (True, False)], 1)
    seeds = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in image_generators(x, seed)]
    per = 2 * len(pcts)

    def points(j: torch.Tensor) -> torch.Tensor:
        i, o, k = j // per, (j % per) // len(pcts), j % len(pcts)
        removed = (ranks[i, o] < counts[k][:, None]).view(-1, h, w)
        filled = linear_imputation(x[i], removed, tol=cg_tol)
        eps = torch.stack([_noise(x.shape[1:], seeds[n], q) for n, q in
                           zip(i.tolist(), (j % per).tolist(), strict=True)]).to(x.device)
        return torch.where(removed[:, None], filled + noise * eps.to(x.dtype), x[i])

    top = predictions(model, b * per, points, device=x.device,
                      internal_batch_size=internal_batch_size).view(b, 2, len(pcts))
    hit = (top == target.view(-1, 1, 1)).double().cpu().numpy()
    return {"road": hit[:, 0].mean(1), "road_lerf": hit[:, 1].mean(1),
            "road_morf_curve": list(hit[:, 0].astype(np.float32)),
            "road_lerf_curve": list(hit[:, 1].astype(np.float32))}
