"""The dataset registry: kind -> :class:`~salbench.datasets.base.Dataset` class or factory,
and :func:`open_dataset` (see :mod:`salbench.datasets` for the rows' contract)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from salbench.datasets.base import Dataset
from salbench.registry import Registry, decorator

REGISTRY: Registry[Callable[..., Dataset]] = Registry("dataset")

#: ``@register("kind")`` on a Dataset subclass or a factory ``(**params) -> Dataset``.
register = decorator(REGISTRY, lambda name, fn, **meta: fn)


def names() -> list[str]:
    """Registered dataset kinds."""
    return REGISTRY.names()


def open_dataset(spec: str | dict[str, Any]) -> Dataset:
    """Open a dataset from ``"kind"`` or ``{"kind": ..., **params}``. ``filter`` is the
    model stage's (which images are evaluated), not the reader's."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    params = dict(spec)
    params.pop("filter", None)
    kind = params.pop("kind", None)
    if kind is None:
        raise ValueError("dataset spec needs a 'kind' key, e.g. {kind: folder, path: photos/}")
    return REGISTRY.get(kind)(**params)
