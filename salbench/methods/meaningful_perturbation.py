"""Mask: "Interpretable explanations of black boxes by meaningful perturbation" (Fong &
Vedaldi, ICCV 2017), as the I-GOS paper (002) compares against it.

The optimisation problem, the regularisers and everything around it are I-GOS's
(:mod:`salbench.methods.igos`, paper 002 Eq. 10): a deletion mask M of ``mask_size`` x
``mask_size``, upsampled bilinearly, blending x with its blurred copy,

    min_M  f_c(x * up(M) + x_blur * (1 - up(M))) + l1_coeff mean|1 - M| + tv_coeff TV(M),

0 <= M <= 1, starting from M = 1, with the same noise N(0, 0.2^2) (normalised units) on the
point where the model is differentiated. Only the descent direction and the step differ, the
two things I-GOS changes (paper 002, Sec. 3.3-3.4):

- direction: the plain gradient of the objective at the current mask (I-GOS: the integrated
  gradient along the path from the baseline);
- step: Adam with learning rate 0.1, then clipping to [0, 1], for up to 500 iterations (I-GOS:
  a backtracking Armijo line search, 15 iterations).

Where these settings come from: paper 002 gives Mask "the maximal iteration is 500" (Sec. 4.2,
running time) and says it "downloaded and ran the code" of the baselines and used "the same
pre-/post-processing with the same baseline image" for all methods; it says Mask "usually takes
hundreds of iterations" because it has no line search. The I-GOS code
(github.com/zhongangqi/IGOS) is built on the PyTorch Mask code (jacobgil's
pytorch-explain-black-box): it still creates ``torch.optim.Adam([mask], lr=0.1)`` and scales
that code's coefficients (``l1_coeff = 0.01 * 100``, ``tv_coeff = 0.2 * 100``); the Mask code
itself runs Adam at lr 0.1 for 500 iterations on a 28 x 28 mask. We therefore take Adam, lr
0.1, 500 iterations, and I-GOS's regularisers (l1 1.0, TV 20 with exponent 2, the values of
``igos``, as the paper's "same heatmap resolution, same lambdas" reading suggests); the Mask
code's own values are ``l1_coeff=0.01, tv_coeff=0.2, tv_beta=3`` (set them to reproduce that
code instead). ``step_rule`` may also be "armijo" (I-GOS's line search with the plain
gradient: the ablation that isolates the direction) or "fixed" (M - lr d, as the I-GOS
paper's "fixed step size" ablation). The paper scores Mask at each mask resolution as I-GOS:
``mask_size`` 224, 112, 28, 14 or 7.

Heatmap, info columns and batching as ``igos`` (float32 [B, 3, H, W] in [0, 1], 1 - up(M) in
all three channels; the optimiser is element-wise per image, so a batch equals a loop of
single images). Cost per image: ``iterations`` forward+backward passes (500; fast profile 50)
plus two forward passes (F at the start and at the end).
"""

from __future__ import annotations

import torch

from salbench.methods.igos import IgosSettings, igos_optimize, upsample
from salbench.methods.registry import Attribution, register, settings_from
from salbench.models.base import Classifier


@register(
    "meaningful_perturbation",
    fast={"iterations": 50},
    info_columns=("objective_start", "objective_end", "masked_score", "ls_fallbacks"),
)
def meaningful_perturbation(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    mask_size: int = 28,
    iterations: int = 500,
    step_rule: str = "adam",
    learning_rate: float = 0.1,
    l1_coeff: float = 1.0,
    tv_coeff: float = 20.0,
    tv_beta: float = 2.0,
    baseline: str | float = "blur",
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    noise_std: float = 0.2,
    step_max: float = 200.0,
    step_decay: float = 0.2,
    step_min: float = 1e-5,
    armijo_beta: float = 1e-4,
    ls_chunk: int = 0,
    score: str = "prob",
    seed: int = 0,
    internal_batch_size: int = 64,
) -> Attribution:
    """Mask (Fong & Vedaldi 2017) heatmap 1 - up(M): float32 [B, 3, H, W] in [0, 1].

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. The I-GOS objective minimised along
    the plain gradient, with ``step_rule`` "adam" (default, ``learning_rate`` 0.1), "fixed"
    or "armijo" (then ``step_max`` ... ``ls_chunk`` as in ``igos``). Other parameters: see
    :mod:`salbench.methods.igos`. Reports ``objective_start`` F(1), ``objective_end`` F(M),
    ``masked_score`` f(Phi(x, up(M))) and ``ls_fallbacks`` (line-search fallbacks; 0 unless
    "armijo").
    """
    settings = settings_from(IgosSettings, {**locals(), "ig_steps": 1})
    res = igos_optimize(model, x, target, settings, direction="gradient",
                        step_rule=step_rule, learning_rate=learning_rate)
    heat = 1 - upsample(res.mask, tuple(x.shape[-2:]))
    info = {
        "objective_start": res.objective[:, 0],
        "objective_end": res.objective[:, -1],
        "masked_score": res.score,
        "ls_fallbacks": res.fallbacks,
    }
    return Attribution(heat.expand(-1, 3, -1, -1).contiguous().float(), info)
