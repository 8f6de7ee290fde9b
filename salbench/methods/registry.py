"""The method registry: names -> MethodSpec (function, paper defaults, fast profile)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from salbench.errors import ConfigError
from salbench.registry import Registry, decorator, merge_params


@dataclass
class Attribution:
    """What a method returns: the attribution and per-sample diagnostics.

    attr: float32 [B, 3, H, W] on the input's device.
    info: name -> float tensor [B] (e.g. ``completeness_error``), reported as columns.
    """

    attr: torch.Tensor
    info: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: ``fn(model, x, target, **params) -> Tensor | Attribution``.

    ``defaults`` are the paper defaults; ``fast`` overrides them in the fast profile.
    ``info_columns`` names the per-sample diagnostics the method reports.
    ``map_reduce`` is the channel reduction that turns the attribution into the method's
    saliency map (None: the run's ``map_reduce``, "abs_sum" by default); methods whose
    output is a signed single-channel map spread over three channels (Grad-CAM, XRAI) say
    "sum".
    """

    name: str
    fn: Callable[..., torch.Tensor | Attribution]
    defaults: dict[str, Any]
    fast: dict[str, Any]
    info_columns: tuple[str, ...] = ()
    description: str = ""
    map_reduce: str | None = None

    def params(self, profile: str = "paper", **overrides: Any) -> dict[str, Any]:
        """The parameters a call uses: defaults, then the profile, then ``overrides``."""
        return merge_params("method", self.name, self.defaults, self.fast, profile, overrides)


def _build(
    name: str,
    fn: Callable[..., Any],
    *,
    fast: dict[str, Any] | None = None,
    info_columns: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    map_reduce: str | None = None,
) -> MethodSpec:
    if defaults is None:
        sig = inspect.signature(fn)
        defaults = {
            p.name: p.default
            for p in list(sig.parameters.values())[3:]
            if p.default is not inspect.Parameter.empty
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }
    doc = (inspect.getdoc(fn) or "").split("\n", 1)[0]
    return MethodSpec(name, fn, dict(defaults), dict(fast or {}), tuple(info_columns), doc,
                      map_reduce)


REGISTRY: Registry[MethodSpec] = Registry("method")

#: ``@register("name", fast={...}, info_columns=(...))`` on ``fn(model, x, target, **params)``.
#: Parameter defaults are read from the function's keyword defaults.
register = decorator(REGISTRY, _build)


def get(name: str) -> MethodSpec:
    """The MethodSpec of ``name``, of ``captum:<Name>``, or of an import path ``pkg.mod:fn``."""
    if name.startswith("captum:"):
        from salbench.methods.captum_adapter import captum_spec

        return captum_spec(name)
    entry = REGISTRY.get(name)
    if isinstance(entry, MethodSpec):
        return entry
    if callable(entry):
        return _build(name, entry)
    raise ConfigError(f"method {name!r} resolves to {type(entry).__name__}, not a function")
