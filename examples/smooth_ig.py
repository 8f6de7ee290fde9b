"""SmoothIG: Integrated Gradients averaged over noisy copies of the image.

The plugin of salbench's tutorial (docs/TUTORIAL.md). SmoothGrad (Smilkov et al. 2017)
averages plain gradients over noisy copies of the input; SmoothIG averages Integrated
Gradients the same way (Captum calls this a NoiseTunnel around IG). For each image x:
draw ``samples`` Gaussian noise tensors with sigma = ``noise`` x (max(x) - min(x)) (the
SmoothGrad convention), clip each noisy copy to [0, 1], run IG from a black baseline with
``steps`` points on every copy, and average the attributions.

The defaults spend IG's gradient budget: 8 copies x 25 steps = IG's 200 steps (its paper
default), and the fast profile 4 x 4 = IG's 16 fast steps.
"""

from __future__ import annotations

import torch

import salbench
from salbench.methods import Attribution
from salbench.methods.seeding import image_generators


@salbench.methods.register("smooth_ig", fast={"samples": 4, "steps": 4},
                           info_columns=("smooth_ig_completeness_error",))
def smooth_ig(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, *,
              samples: int = 8, noise: float = 0.15, steps: int = 25, seed: int = 0,
              internal_batch_size: int = 64) -> Attribution:
    """IG averaged over ``samples`` noisy copies of x.

    x: float32 [B, 3, H, W] in [0, 1]; target: int64 [B] class indices. Returns the
    attribution float32 [B, 3, H, W] and, per image, the mean completeness error of the
    copies' IG (|sum(attr) - (f(copy) - f(black))|, logits) as a diagnostic.
    """
    b = len(x)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(b, 1, 1, 1, 1)
    # one generator per image, seeded by `seed` and the image's pixels: an image gets the
    # same noise whichever images share its batch
    eps = torch.stack([torch.randn((samples, *x.shape[1:]), generator=g)
                       for g in image_generators(x, seed)]).to(x.device)
    copies = (x.unsqueeze(1) + noise * span * eps).clamp(0, 1)  # [B, samples, 3, H, W]
    # every copy of every image through salbench's batched IG in one call
    ig = salbench.methods.attribute_with_info(
        "ig", model, copies.flatten(0, 1), target.repeat_interleave(samples), steps=steps,
        internal_batch_size=internal_batch_size)
    attr = ig.attr.view(b, samples, *x.shape[1:]).mean(1)
    error = ig.info["completeness_error"].view(b, samples).mean(1)
    return Attribution(attr, {"smooth_ig_completeness_error": error})
