"""The method registry: names -> MethodSpec (function, paper defaults, fast profile)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from salbench.errors import BadInputError, ConfigError
from salbench.methods import captum_adapter
from salbench.registry import Registry, check_signature, decorator, merge_params

S = TypeVar("S")


def settings_from(cls: type[S], values: Mapping[str, Any]) -> S:
    """A frozen settings dataclass ``cls`` from ``values`` (e.g. a registered function's
    ``locals()``, whose keyword parameters carry the same names): the fields' values only."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


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
    check_signature("method", name, fn, ("model", "x", "target"), defaults,
                    "fn(model, x, target, **params)")
    unknown_fast = sorted(set(fast or {}) - set(defaults))
    if unknown_fast:
        raise TypeError(f"method {name!r}: fast={fast} names {unknown_fast}, which are not "
                        f"parameters of the function (its parameters: {sorted(defaults)})")
    doc = (inspect.getdoc(fn) or "").split("\n", 1)[0]
    return MethodSpec(name, fn, dict(defaults), dict(fast or {}), tuple(info_columns), doc,
                      map_reduce)


REGISTRY: Registry[MethodSpec] = Registry("method")

#: ``@register("name", fast={...}, info_columns=(...))`` on ``fn(model, x, target, **params)``.
#: Parameter defaults are read from the function's keyword defaults.
register = decorator(REGISTRY, _build)


def get(name: str) -> MethodSpec:
    """The MethodSpec of ``name``, of ``captum:<Name>``, or of an import path ``pkg.mod:fn``.

    An import path to a function registered with ``@register`` (importing its module
    registers it) gives the registered spec, with its ``fast`` profile and info columns; to
    any other function, a spec built from its signature.
    """
    if name.startswith(captum_adapter.PREFIX):
        full, fn, defaults, description = captum_adapter.captum_method(name)
        return MethodSpec(full, fn, defaults, {}, (), description)
    entry = REGISTRY.get(name)
    if isinstance(entry, MethodSpec):
        return entry
    if callable(entry):
        registered = REGISTRY.find(entry)
        if registered:
            return REGISTRY.get(registered)
        try:
            return _build(name, entry)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
    raise ConfigError(f"method {name!r} resolves to {type(entry).__name__}; expected a "
                      "function fn(model, x, target, **params)")


def info_rows(spec: MethodSpec, info: dict[str, Any], n: int) -> list[dict[str, float]]:
    """A method's diagnostics ``info`` (name -> [n] values) as one dict per sample.

    Raises BadInputError, saying what was expected, for an undeclared name or a value that
    is not n numbers.
    """
    undeclared = sorted(set(info) - set(spec.info_columns))
    if undeclared:
        raise BadInputError(
            f"method {spec.name!r} returned diagnostics {undeclared} that it did not declare; "
            f"expected only {list(spec.info_columns)} (register it with info_columns=...)"
        )
    rows: list[dict[str, float]] = [{} for _ in range(n)]
    for key, value in info.items():
        v = value.detach().cpu() if isinstance(value, torch.Tensor) else value
        try:
            arr = np.asarray(v, np.float64)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"method {spec.name!r}: diagnostic {key!r} is not numeric "
                                f"({exc}); expected {n} numbers") from None
        if arr.shape != (n,):
            raise BadInputError(f"method {spec.name!r}: diagnostic {key!r} has shape "
                                f"{arr.shape}; expected ({n},), one number per image")
        for i in range(n):
            rows[i][key] = float(arr[i])
    return rows
