"""The model registry: name -> builder of a :class:`~salbench.models.base.Classifier`, and
:func:`load` (see :mod:`salbench.models` for the names)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from salbench.models.base import Classifier
from salbench.registry import Registry, decorator

REGISTRY: Registry[Callable[..., Classifier]] = Registry("model")

#: ``@register("name")`` on ``def build(weights: str | None = None, **kw) -> Classifier``.
register = decorator(REGISTRY, lambda name, fn, **meta: fn)


def names() -> list[str]:
    """Registered model names (``timm:<name>`` is accepted too)."""
    return REGISTRY.names()


def load(
    name: str, weights: str | None = None, device: str | torch.device = "cpu", **kwargs: Any
) -> Classifier:
    """Build model ``name`` with local ``weights`` (a path) and move it to ``device``.

    Raises UnknownNameError (listing the valid names) or WeightsNotFoundError (naming the file
    to provide and where to put it).
    """
    if name.startswith("timm:"):
        from salbench.models.timm_models import load_timm

        model = load_timm(name[len("timm:"):], weights=weights, **kwargs)
    else:
        model = REGISTRY.get(name)(weights=weights, **kwargs)
    if not isinstance(model, Classifier):
        raise TypeError(
            f"model builder {name!r} returned {type(model).__name__}; expected a "
            "salbench.models.Classifier (wrap your nn.Module with Classifier(net, name=...))"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device).eval()
