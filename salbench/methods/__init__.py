"""Attribution methods: a registry, ``attribute`` and ``to_map`` (SPEC 2 and 4).

``attribute(name, model, x, target, **params)`` returns float32 [B, 3, H, W] on x's device.
Every method runs batched through :mod:`salbench.methods.engine`.
"""

from __future__ import annotations

from typing import Any

import torch

from salbench.errors import BadInputError
from salbench.methods.engine import default_chunk
from salbench.methods.registry import REGISTRY, Attribution, MethodSpec, get, register
from salbench.models.base import Classifier

REDUCTIONS = ("abs_sum", "sum", "max_abs")


def names() -> list[str]:
    """Registered method names."""
    return REGISTRY.names()


def _check_inputs(model: Classifier, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise BadInputError(f"x must be a float tensor [B, 3, H, W] in [0, 1], got {shape}")
    if not x.is_floating_point():
        raise BadInputError(f"x must be floating point in [0, 1], got {x.dtype}")
    target = torch.as_tensor(target, device=x.device).long().view(-1)
    if len(target) == 1 and len(x) > 1:
        target = target.expand(len(x))
    if len(target) != len(x):
        raise BadInputError(f"target has {len(target)} entries for a batch of {len(x)}")
    k = getattr(model, "num_classes", None)
    if k is not None and len(target) and (target.min() < 0 or target.max() >= k):
        raise BadInputError(f"target classes must be in [0, {k}), got {target.tolist()}")
    return target


def attribute_with_info(
    name: str,
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor | int | list[int],
    *,
    profile: str = "paper",
    finite: bool = True,
    **params: Any,
) -> Attribution:
    """Run method ``name``; returns the attribution and its per-sample diagnostics.

    The result is checked: float32 [B, 3, H, W] on x's device with finite values (with
    ``finite=False`` non-finite values are returned, for a caller that flags the samples
    that have them), otherwise BadInputError says what the method returned. On CPU, a
    method's ``internal_batch_size`` is at most
    :data:`~salbench.methods.engine.CPU_INTERNAL_BATCH_SIZE` (16) unless ``params`` sets it
    (the defaults, 64, are sized for GPUs; the chunk size does not change the results beyond
    float rounding).
    """
    spec: MethodSpec = get(name)
    target = _check_inputs(model, x, target)
    args = spec.params(profile, **params)
    if "internal_batch_size" in args and "internal_batch_size" not in params:
        args["internal_batch_size"] = default_chunk(args["internal_batch_size"], x.device)
    out = spec.fn(model, x.float(), target, **args)
    res = out if isinstance(out, Attribution) else Attribution(out)
    a = res.attr
    if not isinstance(a, torch.Tensor) or tuple(a.shape) != tuple(x.shape):
        got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise BadInputError(f"method {name!r} returned {got}; expected {tuple(x.shape)}")
    if a.device != x.device:
        raise BadInputError(f"method {name!r} returned a tensor on {a.device}, input on {x.device}")
    if finite and not torch.isfinite(a).all():
        raise BadInputError(f"method {name!r} returned NaN or inf values")
    res.attr = a.float()
    return res


def attribute(
    name: str,
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor | int | list[int],
    *,
    profile: str = "paper",
    **params: Any,
) -> torch.Tensor:
    """Attribution of method ``name``: float32 [B, 3, H, W] on x's device (SPEC 2)."""
    return attribute_with_info(name, model, x, target, profile=profile, **params).attr


def to_map(attr: torch.Tensor, reduce: str = "abs_sum") -> torch.Tensor:
    """Attribution float [B, 3, H, W] -> saliency map float32 [B, H, W].

    reduce: "abs_sum" (sum of |a| over channels), "sum" (signed sum), "max_abs" (max |a|).
    """
    if reduce == "abs_sum":
        return attr.abs().sum(1).float()
    if reduce == "sum":
        return attr.sum(1).float()
    if reduce == "max_abs":
        return attr.abs().amax(1).float()
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


from salbench.methods import (  # noqa: E402,F401
    blur_ig,
    cams,
    deeplift,
    dga,
    fullgrad,
    geometric,
    gradcam,
    gradient,
    guided_ig,
    idgi,
    ig,
    igos,
    lrp,
    meaningful_perturbation,
    relu_variants,
    rise,
    samp,
    smoothgrad,
    xrai,
)

__all__ = [
    "Attribution", "MethodSpec", "REGISTRY", "attribute", "attribute_with_info", "get",
    "names", "register", "to_map",
]
