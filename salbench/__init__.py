"""salbench: evaluate attribution (saliency) methods for image classifiers at ImageNet scale."""

from __future__ import annotations

from salbench import datasets, methods, metrics, models

__version__ = "0.1.0"

from salbench.api import Results, evaluate  # noqa: E402  (the pipeline needs the registries)

__all__ = ["Results", "datasets", "evaluate", "methods", "metrics", "models", "__version__"]
