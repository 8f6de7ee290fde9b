"""salbench: evaluate attribution (saliency) methods for image classifiers at ImageNet scale.

The subpackages (``datasets``, ``methods``, ``metrics``, ``models``) and the API
(``evaluate``, ``Results``) load on first use, so that a process which only reads and
decodes images (a pipeline read task) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("datasets", "methods", "metrics", "models")
_API = ("Results", "evaluate")

__all__ = ["Results", "datasets", "evaluate", "methods", "metrics", "models", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"salbench.{name}")
    if name in _API:
        return getattr(importlib.import_module("salbench.api"), name)
    raise AttributeError(f"module 'salbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
