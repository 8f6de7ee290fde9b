"""A small name -> object registry, one per extension point (models, methods, metrics, datasets).

Names may also be import paths ``"package.module:attribute"``, resolved on first use, so a
config can name a user's own object without registering it first; importing the module on a
Ray worker is what makes a plugin available there. :meth:`Registry.portable_name` turns a
name registered from a user's module into such an import path.
"""

from __future__ import annotations

import importlib
import inspect
import sys
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
        """Register ``entry`` under ``name``.

        Refuses to silently overwrite another object's entry; the same function registered
        again (a module reloaded, a notebook cell run twice) replaces its earlier entry.
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries and not replace:
            old, new = origin(self._entries[name]), origin(entry)
            if old != new:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered by {old}; {new} registers it "
                    "again (pass replace=True to override it; if both are the same file, it "
                    "was imported under two module names)"
                )
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises UnknownNameError listing valid ones.

        A name with a colon is an import path ``"package.module:attribute"`` and returns the
        imported object (for a function registered with ``@register``, the plain function:
        :meth:`find` gives its registered name).
        """
        if name in self._entries:
            return self._entries[name]
        if isinstance(name, str) and ":" in name:
            return self._import(name)
        valid = ", ".join(self.names())
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}, or an import path "
            "'package.module:function'"
        )

    def find(self, obj: Any) -> str | None:
        """The name under which ``obj`` (a function or class) is registered, if any."""
        target = inspect.unwrap(obj) if callable(obj) else obj
        for name, entry in self._entries.items():
            if _function(entry) is target:
                return name
        return None

    def portable_name(self, name: str) -> str | None:
        """``"module:qualname"`` of the object registered as ``name`` when it is defined in an
        importable module outside salbench (a process that imports that path, such as a Ray
        worker, registers it too); None for built-ins, import paths and unregistered names.

        Raises ConfigError when the object cannot be imported by another process: defined in
        ``__main__`` (a script or notebook) or inside a function.
        """
        if name not in self._entries:
            return None
        fn = _function(self._entries[name])
        module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
        if not module or module == "salbench" or module.startswith("salbench."):
            return None
        path = f"{module}:{qualname}"
        obj: Any = sys.modules.get(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if module == "__main__" or not callable(obj) or inspect.unwrap(obj) is not fn:
            where = "in __main__ (a script or notebook)" if module == "__main__" else \
                f"as {path}, which is not a module-level name"
            raise ConfigError(
                f"{self.kind} {name!r} is defined {where}; another process (a Ray worker) "
                "cannot import it: move it to a module-level function of a .py file on the "
                "workers' path, or run in this process (salbench.evaluate(..., ray=False))"
            )
        return path

    def _import(self, path: str) -> T:
        module_name, _, attr = path.partition(":")
        if not module_name or not attr:
            raise UnknownNameError(
                f"{self.kind} {path!r}: an import path is 'package.module:attribute'"
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UnknownNameError(
                f"{self.kind} {path!r}: cannot import module {module_name!r} ({exc}); "
                "expected a module on sys.path of this process and of every Ray worker "
                "(install it, or see docs/API.md, 'How plugin code reaches the workers')"
            ) from exc
        except Exception as exc:
            raise UnknownNameError(
                f"{self.kind} {path!r}: importing module {module_name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                public = sorted(k for k, v in vars(module).items() if not k.startswith("_")
                                and getattr(v, "__module__", None) == module_name)
                raise UnknownNameError(
                    f"{self.kind} {path!r}: module {module_name!r} has no attribute {attr!r}; "
                    f"it has {public}"
                )
            obj = getattr(obj, part)
        return obj


def _function(entry: Any) -> Any:
    """The user's function (or class) behind a registry entry (a spec's ``fn``, unwrapped)."""
    return inspect.unwrap(getattr(entry, "fn", entry))


def origin(entry: Any) -> str:
    """``module.qualname`` of the function behind a registry entry, for messages."""
    fn = _function(entry)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


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


def check_signature(kind: str, name: str, fn: Callable[..., Any], leading: tuple[str, ...],
                    defaults: dict[str, Any], expected: str) -> None:
    """Raise TypeError unless ``fn(*leading, **defaults)`` is a valid call of ``fn``: what the
    pipeline will call it with (each parameter after the leading ones needs a default)."""
    if not callable(fn):
        raise TypeError(f"{kind} {name!r}: expected a function {expected}, got "
                        f"{type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: accept, fail when called
        return
    try:
        sig.bind(*leading, **defaults)
    except TypeError as exc:
        raise TypeError(
            f"{kind} {name!r}: expected a function {expected}, every parameter after "
            f"{', '.join(leading)} with a default; {getattr(fn, '__qualname__', fn)}{sig} "
            f"cannot be called that way ({exc})"
        ) from None


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
