"""The metric registry: each metric runs on the model stage or the CPU stage (SPEC 5, 6).

A ``model`` metric needs forward passes: ``fn(model, x, target, maps, **params)`` with
x float [B, 3, H, W] in [0, 1], target int64 [B], maps float32 [B, H, W]; it returns a dict
column -> B values (numbers or 1-D float arrays for curves).
A ``cpu`` metric is model-free: ``fn(sample, **params)`` where ``sample`` has ``map`` float32
[H, W], ``image`` uint8 [H, W, 3], ``boxes`` float32 [N, 4] (x0, y0, x1, y1 in map pixels),
``label`` and ``target``; it returns a dict column -> value.
``columns`` maps each output column to "float" (scalar) or "curve" (list of float32).
A ``model`` metric may also come in a *split* form that the pipeline runs on three stages:
``prepare(sample, **params) -> (key, state, images)`` on the CPU (``images`` uint8
[N, H, W, 3] to score; metrics whose ``key`` is equal share the images), the model stage
scores the images (softmax probability of the target and "target is top-1"), and
``finalize(state, prob, top1, **params) -> columns`` on the CPU again. A metric whose
dataset-level figure is not a mean of per-sample values (SIC: AUC of the median curve) has
``summary(rows) -> {name: (value, n)}``, given one model x method's ok rows. ``fn`` and the split
form give the same results (tested for each such metric).
A model metric whose function has a keyword parameter ``attr`` also receives the method's
full attribution (float32 [B, 3, H, W]), e.g. for Sensitivity-N, which needs signed values;
one with a ``method`` parameter receives ``method(model) -> maps [B, H, W]``, which re-runs
the attribution method (same parameters, same inputs) on another model (for ``mprt``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from salbench.errors import ConfigError
from salbench.registry import Registry, decorator, merge_params

STAGES = ("model", "cpu")
COLUMN_KINDS = ("float", "curve")


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric (see the module docstring for ``fn``'s signature per stage)."""

    name: str
    fn: Callable[..., dict[str, Any]]
    stage: str
    columns: dict[str, str]
    defaults: dict[str, Any]
    fast: dict[str, Any]
    description: str = ""
    needs_attr: bool = False
    needs_method: bool = False
    prepare: Callable[..., tuple[Any, Any, Any]] | None = None
    finalize: Callable[..., dict[str, Any]] | None = None
    summary: Callable[[Any], dict[str, tuple[float, int]]] | None = None

    def params(self, profile: str = "paper", **overrides: Any) -> dict[str, Any]:
        """Defaults, then the fast profile (if chosen), then ``overrides`` (validated)."""
        return merge_params("metric", self.name, self.defaults, self.fast, profile, overrides)


def _build(
    name: str,
    fn: Callable[..., Any],
    *,
    stage: str,
    columns: dict[str, str],
    defaults: dict[str, Any] | None = None,
    fast: dict[str, Any] | None = None,
    prepare: Callable[..., tuple[Any, Any, Any]] | None = None,
    finalize: Callable[..., dict[str, Any]] | None = None,
    summary: Callable[[Any], dict[str, tuple[float, int]]] | None = None,
) -> MetricSpec:
    if (prepare is None) != (finalize is None) or (prepare is not None and stage != "model"):
        raise ValueError(f"metric {name!r}: a split metric is a model metric with both "
                         "prepare and finalize")
    if stage not in STAGES:
        raise ValueError(f"metric {name!r}: stage must be one of {STAGES}, got {stage!r}")
    bad = {c: k for c, k in columns.items() if k not in COLUMN_KINDS}
    if bad:
        raise ValueError(f"metric {name!r}: column kinds must be in {COLUMN_KINDS}, got {bad}")
    if defaults is None:
        skip = 4 if stage == "model" else 1
        params = list(inspect.signature(fn).parameters.values())[skip:]
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    sig_params = inspect.signature(fn).parameters
    needs_attr, needs_method = "attr" in sig_params, "method" in sig_params
    defaults.pop("attr", None)
    defaults.pop("method", None)
    doc = (inspect.getdoc(fn) or "").split("\n", 1)[0]
    return MetricSpec(name, fn, stage, dict(columns), dict(defaults), dict(fast or {}), doc,
                      needs_attr, needs_method, prepare, finalize, summary)


REGISTRY: Registry[MetricSpec] = Registry("metric")

#: ``@register("name", stage="model"|"cpu", columns={...}, defaults=..., fast=...)``.
register = decorator(REGISTRY, _build)


def get(name: str) -> MetricSpec:
    """The MetricSpec registered as ``name``."""
    entry = REGISTRY.get(name)
    if not isinstance(entry, MetricSpec):
        raise ConfigError(
            f"metric {name!r} resolves to {type(entry).__name__}; register it with "
            "@salbench.metrics.register(name, stage=..., columns=...)"
        )
    return entry
