"""Baselines (reference inputs) for path methods and perturbation metrics."""

from __future__ import annotations

import torch

BASELINES = ("black", "white", "blur", "uniform")

#: The baseline whose normalised value is zero: the model's mean colour (model-dependent).
PREPROCESSED_ZERO = "preprocessed_zero"


def gaussian_blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """torchvision's ``gaussian_blur`` (reflect padding) of x float [..., H, W], same shape.

    kernel: odd size in pixels, both axes; sigma: standard deviation in pixels. torchvision
    is imported here, on first use: importing it costs ~1 s, which every Ray worker would
    otherwise pay at start-up.
    """
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    return tv_blur(x, [kernel, kernel], [float(sigma), float(sigma)])


def make_baseline(
    x: torch.Tensor,
    kind: str | float | torch.Tensor = "black",
    *,
    blur_sigma: float = 5.0,
    seed: int = 0,
) -> torch.Tensor:
    """A baseline like ``x`` (float [B, 3, H, W] in [0, 1]).

    kind: "black" (0), "white" (1), a number c (constant c), "blur" (Gaussian blur of x with
    ``blur_sigma`` px, kernel 2*ceil(3 sigma)+1), "uniform" (U[0,1] noise from ``seed``), or a
    tensor broadcastable to x.
    """
    if isinstance(kind, torch.Tensor):
        return kind.to(device=x.device, dtype=x.dtype).expand_as(x).clone()
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(x, float(kind))
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "white":
        return torch.ones_like(x)
    if kind == "blur":
        k = 2 * int(torch.tensor(3.0 * blur_sigma).ceil()) + 1
        k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)
        return gaussian_blur(x, k, blur_sigma)
    if kind == "uniform":
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        return torch.rand(x.shape, generator=g).to(x.device, x.dtype)
    valid = ", ".join(BASELINES)
    raise ValueError(f"unknown baseline {kind!r}; valid: {valid}, a number or a tensor")


def model_baseline(model: torch.nn.Module, x: torch.Tensor, kind: str | float | torch.Tensor
                   ) -> torch.Tensor:
    """:func:`make_baseline`, plus ``"preprocessed_zero"``: the input whose normalised value
    ``(b - model.mean) / model.std`` is zero, i.e. the model's mean colour (float [B, 3, H, W]
    in [0, 1]; PAIR's examples call this "black"). Raises ValueError for a model without a
    ``mean`` buffer of 3 values."""
    if isinstance(kind, str) and kind == PREPROCESSED_ZERO:
        mean = getattr(model, "mean", None)
        if not isinstance(mean, torch.Tensor) or mean.numel() != 3:
            raise ValueError(f"baseline {PREPROCESSED_ZERO!r} needs a model with a 3-value "
                             "'mean' buffer (a salbench Classifier)")
        return mean.detach().to(x.device, x.dtype).view(1, 3, 1, 1).expand_as(x).clone()
    return make_baseline(x, kind)
