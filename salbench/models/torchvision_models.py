"""torchvision ResNet-18/34/50/101, VGG-16/19 and Inception-v3 from local weight files.

The papers' models (SPEC 3). Weights are never downloaded: each entry looks for torchvision's
own file name (the one ``torchvision`` would download to ``$TORCH_HOME/hub/checkpoints``) in
``$SALBENCH_WEIGHTS`` and the torch hub cache, or takes ``weights=PATH`` (any file name).
``weights="random"`` skips loading and keeps a random initialisation seeded with 0 (for
benchmarks and tests; the global RNG is left untouched).

Inception-v3: built with ``aux_logits=False, init_weights=False``; the file's ``AuxLogits.*``
tensors are dropped. Google's Inception weights expect inputs scaled to [-1, 1]; torchvision
handles that with ``transform_input=True`` on top of ImageNet normalisation, which is the same
affine map as normalising with mean = std = 0.5, so we normalise with 0.5 / 0.5 and keep
``transform_input=False``. Input 299, crop fraction 299/342 (torchvision's resize to 342).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from salbench.models.base import IMAGENET_MEAN, IMAGENET_STD, Classifier
from salbench.models.registry import register
from salbench.models.weights import (
    RANDOM,
    build_random,
    build_with_state_dict,
    find_weights,
    load_state_dict_file,
)


def _tv() -> Any:
    """``torchvision.models``, imported when a torchvision model is built (it costs ~1 s)."""
    return importlib.import_module("torchvision.models")


#: name -> (constructor, torchvision's weight file name, input size, crop fraction, mean, std)
SPECS: dict[
    str,
    tuple[Callable[[], nn.Module], str, int, float, tuple[float, ...], tuple[float, ...]],
] = {
    "resnet18": (
        lambda: _tv().resnet18(weights=None),
        "resnet18-f37072fd.pth", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD,
    ),
    "resnet34": (
        lambda: _tv().resnet34(weights=None),
        "resnet34-b627a593.pth", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD,
    ),
    "resnet50": (
        lambda: _tv().resnet50(weights=None),
        "resnet50-11ad3fa6.pth", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD,
    ),
    "resnet101": (
        lambda: _tv().resnet101(weights=None),
        "resnet101-cd907fc2.pth", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD,
    ),
    "vgg16": (
        lambda: _tv().vgg16(weights=None),
        "vgg16-397923af.pth", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD,
    ),
    "vgg19": (
        lambda: _tv().vgg19(weights=None),
        "vgg19-dcbb9e9d.pth", 224, 0.875, IMAGENET_MEAN, IMAGENET_STD,
    ),
    "inception_v3": (
        lambda: _tv().inception_v3(
            weights=None, aux_logits=False, init_weights=False, transform_input=False
        ),
        "inception_v3_google-0cc3c7bd.pth", 299, 299 / 342, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
    ),
}


def build_torchvision(name: str, weights: str | None = None, **kwargs: Any) -> Classifier:
    """torchvision model ``name`` as a :class:`Classifier` (input [B, 3, S, S] in [0, 1]).

    Args:
        name: a key of :data:`SPECS`.
        weights: None (search ``$SALBENCH_WEIGHTS`` and the torch hub cache for torchvision's
            file name), a path to a state dict, or ``"random"``.

    Raises:
        WeightsNotFoundError: no file; the message names the file and where to put it.
        SalbenchError: the file is not a state dict for this architecture.
    """
    if kwargs:
        raise TypeError(f"{name}: unexpected arguments {sorted(kwargs)}")
    ctor, filename, size, crop, mean, std = SPECS[name]
    if weights == RANDOM:
        net = build_random(ctor)
    else:
        path = find_weights(filename, weights, name)
        sd = load_state_dict_file(path)
        if name == "inception_v3":
            sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
        net = build_with_state_dict(ctor, sd, name, str(path))
    return Classifier(
        net.eval(),
        name=name,
        input_size=(size, size),
        num_classes=1000,
        mean=mean,
        std=std,
        crop_fraction=crop,
    )


def _register(name: str) -> None:
    @register(name)
    def build(weights: str | None = None, **kwargs: Any) -> Classifier:
        return build_torchvision(name, weights=weights, **kwargs)

    build.__doc__ = f"torchvision {name} from a local weight file; see build_torchvision."


for _name in SPECS:
    _register(_name)
