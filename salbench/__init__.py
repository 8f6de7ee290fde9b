"""salbench: evaluate attribution (saliency) methods for image classifiers at ImageNet scale."""

from __future__ import annotations

from salbench import datasets, methods, metrics, models

__version__ = "0.1.0"

__all__ = ["datasets", "methods", "metrics", "models", "__version__"]
