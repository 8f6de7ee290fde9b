"""IROF, Iterative Removal Of Features (Rieger & Hansen 2020), batched on the model stage.

The image is cut into superpixels (``segmentation_method``: scikit-image's ``slic`` with
its defaults and ``start_label=0``, or ``felzenszwalb``, as Quantus 0.6), computed on the
CPU from the image. Segments are ordered by the mean of the map over them (most relevant
first; ties keep label order) and removed cumulatively (set to ``perturb_baseline``,
"mean": the image's mean value). The curve holds f(x_k) / f(x) after k = 1..n removals of
the n segments (f: the target's softmax probability by default, as Quantus); ``irof`` is the
area over it as Quantus computes it, n - trapezoid area with unit spacing. Higher is better.
n + 1 passes (about 100 segments with slic's defaults).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salbench.errors import BadInputError
from salbench.methods.seeding import image_generators
from salbench.metrics.registry import register
from salbench.metrics.removal import Fill, feature_values, group_sums, order, positions, scores
from salbench.models.base import Classifier

SEGMENTATIONS = ("slic", "felzenszwalb")


def superpixels(image: np.ndarray, method: str = "slic") -> np.ndarray:
    """Segment labels int64 [H, W], 0..n-1, of image float [H, W, 3] in [0, 1]."""
    from skimage.segmentation import felzenszwalb, slic

    if method not in SEGMENTATIONS:
        raise BadInputError(f"segmentation_method must be one of {SEGMENTATIONS}, "
                            f"got {method!r}")
    seg = slic(image, start_label=0) if method == "slic" else felzenszwalb(image)
    return np.unique(seg, return_inverse=True)[1].reshape(seg.shape).astype(np.int64)


@register("irof", stage="model", columns={"irof": "float", "irof_curve": "curve"},
          directions={"irof": "higher"})
def irof(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    segmentation_method: str = "slic",
    perturb_baseline: str | float = "mean",
    score: str = "prob",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """IROF (Rieger & Hansen 2020): area over the normalised score curve as superpixels are
    removed, most relevant first."""
    b, _, h, w = x.shape
    a = feature_values(maps, None)
    images = x.detach().double().permute(0, 2, 3, 1).cpu().numpy()
    segs = torch.stack([torch.from_numpy(superpixels(img, segmentation_method))
                        for img in images]).flatten(1).to(x.device)  # [B, HW]
    counts = segs.max(1).values + 1
    width = int(counts.max())
    sizes = group_sums(torch.ones_like(a), segs, width)
    means = group_sums(a, segs, width) / sizes.clamp(min=1)
    means[sizes == 0] = -torch.inf  # padding labels of images with fewer segments: last
    rank = positions(order(means, descending=True)).gather(1, segs)  # [B, HW]
    offsets = torch.cumsum(counts, 0) - counts
    total = int(counts.sum())
    owner = torch.repeat_interleave(torch.arange(b, device=x.device), counts)
    step = torch.arange(total, device=x.device) - offsets[owner]
    fill = Fill(x, perturb_baseline, image_generators(x, seed))

    def points(j: torch.Tensor) -> torch.Tensor:
        i, k = owner[j], step[j]
        removed = rank[i] <= k[:, None]
        return torch.where(removed.view(-1, 1, h, w), fill(i), x[i])

    f0 = scores(model, b, lambda i: x[i], target, score, internal_batch_size)
    fk = scores(model, total, points, target[owner], score, internal_batch_size)
    ratio = (fk / f0[owner]).cpu().numpy()
    ends = (offsets + counts).tolist()
    curves = [ratio[s:e] for s, e in zip(offsets.tolist(), ends, strict=True)]
    aoc = np.array([len(c) - (c[1:] + c[:-1]).sum() / 2 for c in curves])
    return {"irof": aoc, "irof_curve": [c.astype(np.float32) for c in curves]}
