"""Shared pieces of the Quantus-style faithfulness metrics: what removed pixels become, how
pixels, patches and segments are ordered by a map, and row-wise correlations.

Every helper works on tensors on the model's device; randomness comes from one seed per
image (:func:`salbench.methods.seeding.image_generators`), so an image's values do not
depend on the other images of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from salbench.errors import BadInputError
from salbench.methods.engine import batched_scores, for_chunks
from salbench.methods.seeding import image_generators

#: ``perturb_baseline`` values: what a removed pixel becomes (all three channels).
FILLS = ("black", "white", "mean", "uniform")

_MIX = 0x9E3779B97F4A7C15


class Fill:
    """The values removed pixels take, per image, as images like x.

    x float [B, 3, H, W] in [0, 1]. ``kind``: "black" (0), "white" (1), a number, "mean"
    (the image's mean over its pixels and channels; Quantus' "mean"), or "uniform" (every
    removed value drawn independently from U[0, 1]; ``draw`` numbers independent draws of
    one image, each from a generator seeded by one draw of the image's generator in
    ``gens``, see :func:`salbench.methods.seeding.image_generators`).
    """

    def __init__(self, x: torch.Tensor, kind: str | float,
                 gens: list[torch.Generator] | None = None) -> None:
        self.x, self.kind = x, kind
        if isinstance(kind, bool) or not isinstance(kind, (str, int, float)) or (
                isinstance(kind, str) and kind not in FILLS):
            raise BadInputError(f"perturb_baseline must be one of {FILLS} or a number, "
                                f"got {kind!r}")
        if kind == "mean":
            self.value = x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        elif kind == "uniform":
            gens = gens if gens is not None else image_generators(x, 0)
            self.seeds = [int(torch.randint(0, 2**62, (1,), generator=g)) for g in gens]
        else:
            v = {"black": 0.0, "white": 1.0}.get(kind, kind) if isinstance(kind, str) else kind
            self.value = torch.full((len(x), 1, 1, 1), float(v), dtype=x.dtype, device=x.device)

    @property
    def random(self) -> bool:
        """True when the filled values are random draws."""
        return self.kind == "uniform"

    def __call__(self, i: torch.Tensor, draw: torch.Tensor | None = None) -> torch.Tensor:
        """Fill images float [c, 3, H, W] for images ``i`` int64 [c] (draws ``draw`` [c])."""
        shape = (len(i), *self.x.shape[1:])
        if not self.random:
            return self.value[i].expand(shape)
        draw = torch.zeros_like(i) if draw is None else draw
        out = torch.empty(shape, dtype=self.x.dtype)
        for n, (img, d) in enumerate(zip(i.tolist(), draw.tolist(), strict=True)):
            g = torch.Generator().manual_seed((self.seeds[img] + d * _MIX) % 2**63)
            out[n] = torch.rand(shape[1:], generator=g, dtype=self.x.dtype)
        return out.to(self.x.device)


def feature_values(maps: torch.Tensor, attr: torch.Tensor | None) -> torch.Tensor:
    """The value of each pixel, float64 [B, H*W]: the signed attribution summed over its
    channels (attr float [B, 3, H, W]) when given, else the map (float [B, H, W])."""
    a = attr.sum(1) if attr is not None else maps
    if not torch.isfinite(a).all():
        raise ValueError("saliency map contains NaN or inf")
    return a.flatten(1).double()


def order(values: torch.Tensor, *, descending: bool) -> torch.Tensor:
    """values [B, N] -> indices int64 [B, N] sorted (ties keep index order)."""
    return torch.sort(values, dim=1, descending=descending, stable=True).indices


def positions(ordered: torch.Tensor) -> torch.Tensor:
    """The inverse permutation: position [B, N] of each index in ``ordered`` [B, N]."""
    pos = torch.empty_like(ordered)
    pos.scatter_(1, ordered, torch.arange(ordered.shape[1], device=ordered.device)
                 .expand_as(ordered))
    return pos


def patch_ids(h: int, w: int, patch_size: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, int]:
    """Quantus' patch grid: (ids int64 [H*W] of each pixel's patch, number of patches).

    The image is padded to a multiple of ``patch_size`` (floor of half the padding before,
    the rest after); patches are numbered in raster order of the padded grid, so border
    patches hold fewer image pixels."""
    if patch_size < 1:
        raise BadInputError(f"patch_size must be at least 1, got {patch_size}")
    pads = []
    for n in (h, w):
        extra = (-n) % patch_size
        pads.append(extra // 2)
    rows = (torch.arange(h, device=device) + pads[0]) // patch_size
    cols = (torch.arange(w, device=device) + pads[1]) // patch_size
    per_row = math.ceil((w + (-w) % patch_size) / patch_size)
    n_rows = math.ceil((h + (-h) % patch_size) / patch_size)
    return (rows[:, None] * per_row + cols[None, :]).flatten(), n_rows * per_row


def group_sums(values: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of values [B, N] over groups ids int64 [N] or [B, N] in [0, n) -> [B, n]."""
    ids = ids.expand_as(values)
    return torch.zeros(values.shape[0], n, dtype=values.dtype, device=values.device
                       ).scatter_add_(1, ids, values)


def scores(model: Callable[[torch.Tensor], torch.Tensor], n: int,
           points: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor,
           score: str, internal_batch_size: int) -> torch.Tensor:
    """Target scores float64 [n] of n lazily built images (forward only, chunked)."""
    return batched_scores(model, n, points, targets, score=score,
                          internal_batch_size=internal_batch_size).double()


@torch.no_grad()
def predictions(model: Callable[[torch.Tensor], torch.Tensor], n: int,
                points: Callable[[torch.Tensor], torch.Tensor], *, device: torch.device,
                internal_batch_size: int) -> torch.Tensor:
    """Top-1 classes int64 [n] of n lazily built images (forward only, chunked)."""
    out = torch.empty(n, dtype=torch.int64, device=device)

    def done(idx: torch.Tensor, top: torch.Tensor) -> None:
        out[idx] = top

    for_chunks(n, internal_batch_size, lambda idx: model(points(idx)).argmax(1), done,
               device=device)
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of a, b float [B, K]; NaN where a row is constant."""
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / np.where(den > 0, den, 1), np.nan)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rank correlation (ties get their average rank), as
    ``scipy.stats.spearmanr``; NaN where a row is constant."""
    from scipy.stats import rankdata

    return pearson(rankdata(a, axis=-1), rankdata(b, axis=-1))
