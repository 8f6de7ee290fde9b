"""A small name -> object registry, one per extension point (models, methods, metrics, datasets).

Names may also be import paths ``"package.module:attribute"``, resolved on first use, so a
config can name a user's own object without registering it first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from salbench.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries of one kind; ``kind`` is used in error messages ("method", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Register ``entry`` under ``name``; refuses to silently overwrite another entry."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not replace:
            raise ValueError(
                f"{self.kind} {name!r} is already registered; pass replace=True to override it"
            )
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises UnknownNameError listing valid ones."""
        if name in self._entries:
            return self._entries[name]
        if isinstance(name, str) and ":" in name and "." in name.split(":", 1)[0] + ".":
            return self._import(name)
        valid = ", ".join(self.names())
        raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}")

    def _import(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownNameError(
                f"{self.kind} {path!r}: cannot import module {module_name!r} ({exc}); "
                "install the package or put it on PYTHONPATH of every Ray worker"
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UnknownNameError(
                    f"{self.kind} {path!r}: module {module_name!r} has no attribute {attr!r}"
                )
            obj = getattr(obj, part)
        return obj


def merge_params(
    kind: str,
    name: str,
    defaults: dict[str, Any],
    fast: dict[str, Any],
    profile: str,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Parameters of a call: ``defaults``, then ``fast`` if profile is "fast", then
    ``overrides``; an override that is not a parameter raises ConfigError naming it."""
    if profile not in ("paper", "fast"):
        raise ConfigError(f"profile must be 'paper' or 'fast', got {profile!r}")
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ConfigError(
            f"{kind} {name!r} has no parameter(s) {unknown}; its parameters are {sorted(defaults)}"
        )
    merged = dict(defaults)
    if profile == "fast":
        merged.update(fast)
    merged.update(overrides)
    return merged


def decorator(registry: Registry[Any], build: Callable[..., Any]) -> Callable[..., Any]:
    """Make ``@register(name, **meta)`` for a registry whose entries are built by ``build``.

    ``build(name, fn, **meta)`` turns the decorated function into the registry entry.
    """

    def register(name: str, fn: Callable[..., Any] | None = None, **meta: Any) -> Any:
        replace = bool(meta.pop("replace", False))

        def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
            registry.add(name, build(name, f, **meta), replace=replace)
            return f

        return wrap(fn) if fn is not None else wrap

    return register
