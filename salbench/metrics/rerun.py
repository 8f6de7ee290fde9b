"""The ``method`` argument of a model-stage metric: re-run the attribution method.

A model-stage metric whose function has a keyword parameter ``method`` receives
``method(model, x=None, target=None) -> maps float32 [N, H, W]``: the run's attribution
method, with its parameters and map reduction, on ``model`` (the run's model or another one,
e.g. a randomised copy for ``mprt``) and on inputs ``x`` float [N, 3, H, W] (the metric's
own batch when None; any values, e.g. perturbed images outside [0, 1]). ``target`` int64
[N]: the classes to explain; None: the batch's targets, each repeated N / B times in a row
(``x`` holds sample i's perturbations at rows i*K .. i*K + K - 1, K = N / B). All N inputs
go in one call; the callable runs the method on chunks of at most ``chunk`` images, so a
metric hands over every perturbation of its batch at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from salbench.errors import BadInputError

#: maps_fn(model, x [n, 3, H, W], target int64 [n]) -> maps float [n, H, W]
MapsFn = Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]
#: method(model, x=None, target=None) -> maps float32 [N, H, W]
Method = Callable[..., torch.Tensor]


def method_callable(maps_fn: MapsFn, x: torch.Tensor, target: torch.Tensor,
                    chunk: int) -> Method:
    """The ``method`` callable of a metric batch x float [B, 3, H, W], target int64 [B]:
    ``maps_fn`` on chunks of at most ``chunk`` images (see the module docstring)."""
    chunk = max(1, int(chunk))

    def method(model: Any, x_new: torch.Tensor | None = None,
               target_new: torch.Tensor | None = None) -> torch.Tensor:
        if x_new is None:
            x_new = x
        if target_new is None:
            if len(x) == 0 or len(x_new) % len(x):
                raise BadInputError(f"method(model, x): x has {len(x_new)} images, not a "
                                    f"multiple of the batch's {len(x)}; pass target")
            target_new = target.repeat_interleave(len(x_new) // len(x))
        target_new = torch.as_tensor(target_new, device=x_new.device).long().view(-1)
        if len(target_new) != len(x_new):
            raise BadInputError(f"method(model, x, target): {len(target_new)} targets for "
                                f"{len(x_new)} images")
        parts = [maps_fn(model, x_new[i:i + chunk], target_new[i:i + chunk])
                 for i in range(0, len(x_new), chunk)]
        return torch.cat(parts) if parts else x_new.new_zeros((0, *x_new.shape[2:]))

    return method

