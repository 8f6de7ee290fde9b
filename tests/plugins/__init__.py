"""Plugins for the tests, outside the salbench package, like a user's own code.

``tests.plugins.toy`` is importable by the Ray workers because Ray puts the driver's working
directory (the repository root, where pytest runs) on their ``sys.path``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import salbench

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def plugin_sandbox(*module_prefixes: str) -> Iterator[None]:
    """Afterwards, undo every registration made inside and forget the modules named
    ``module_prefixes*`` imported inside: other tests list the registries
    (``metrics.names()``), and a later import must register again."""
    registries = [salbench.models.REGISTRY, salbench.methods.REGISTRY,
                  salbench.metrics.REGISTRY, salbench.datasets.REGISTRY]
    saved = [dict(r._entries) for r in registries]
    modules = set(sys.modules)
    try:
        yield
    finally:
        for registry, entries in zip(registries, saved, strict=True):
            registry._entries.clear()
            registry._entries.update(entries)
        for name in set(sys.modules) - modules:
            if name.startswith(module_prefixes):
                del sys.modules[name]
