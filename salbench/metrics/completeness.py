"""Completeness (Sundararajan et al. 2017): |sum(attribution) - (f(x) - f(x'))|.

For any method, against a stated reference x' (``baseline``, black by default, the IG
family's default) and score (target logit by default). Path methods also report their own
``completeness_error`` against the path they integrated (the method's own baseline and
score); this metric applies one reference to every method, so methods can be compared.
``completeness_relative`` divides by |f(x) - f(x')| (NaN when that is 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from salbench.methods.baselines import make_baseline
from salbench.methods.engine import batched_scores
from salbench.metrics.registry import register
from salbench.models.base import Classifier


@register("completeness", stage="model",
          columns={"completeness": "float", "completeness_relative": "float"})
def completeness(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    attr: torch.Tensor | None = None,
    baseline: str | float = "black",
    score: str = "logit",
    internal_batch_size: int = 64,
) -> dict[str, Any]:
    """|sum of the attribution - (f(x) - f(baseline))|, absolute and relative."""
    a = attr if attr is not None else maps.unsqueeze(1)
    both = torch.cat([x, make_baseline(x, baseline)])
    s = batched_scores(model, len(both), lambda i: both[i], target.repeat(2), score=score,
                       internal_batch_size=internal_batch_size).double()
    delta = (s[: len(x)] - s[len(x):]).cpu().numpy()
    err = np.abs(a.flatten(1).double().sum(1).cpu().numpy() - delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(delta != 0, err / np.abs(delta), np.nan)
    return {"completeness": err, "completeness_relative": rel}
