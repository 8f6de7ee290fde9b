"""Tiny random CNNs for unit tests only (SPEC 3): ``tiny_cnn`` and ``tiny_smooth``.

Both take [B, 3, 32, 32] in [0, 1] (normalised with mean = std = 0.5 inside) and return 10
logits. ``tiny_cnn`` uses ReLU and max pooling (piecewise linear); ``tiny_smooth`` uses GELU
and average pooling (smooth), the kind of network on which two correct implementations of a
gradient method agree to float tolerance (SPEC 4). Weights are drawn from a
``torch.Generator`` seeded with ``seed`` (default 0): the same on every call, whatever the
global RNG state, which they leave untouched. A forward pass of a batch of 8 takes well under
5 ms on one CPU thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from salbench.models.base import Classifier
from salbench.models.registry import register
from salbench.models.weights import RANDOM, find_weights, load_into, load_state_dict_file


def init_with_generator(net: nn.Module, seed: int) -> nn.Module:
    """Materialise ``net`` (possibly on the meta device) on CPU with seeded random weights.

    Conv/linear weights: He-normal, N(0, 2 / fan_in); biases: N(0, 0.1^2); other parameters
    (norm layers) 1 for weights, 0 for biases. Uses only a local ``torch.Generator``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    net = net.to_empty(device="cpu")
    with torch.no_grad():
        for module in net.modules():
            for pname, p in module.named_parameters(recurse=False):
                if isinstance(module, (nn.Conv2d, nn.Linear)) and pname == "weight":
                    fan_in = math.prod(p.shape[1:])
                    p.copy_(torch.randn(p.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                elif pname == "bias":
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
                else:
                    p.fill_(1.0)
            for bname, b in module.named_buffers(recurse=False):
                b.fill_(1.0 if bname == "running_var" else 0.0)
    return net


def _tiny_net(act: Callable[[], nn.Module], pool: Callable[[], nn.Module]) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), act(), pool(),  # 32 -> 16
        nn.Conv2d(8, 16, 3, padding=1), act(), pool(),  # 16 -> 8
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


ARCHS: dict[str, Callable[[], nn.Module]] = {
    "tiny_cnn": lambda: _tiny_net(nn.ReLU, lambda: nn.MaxPool2d(2)),
    "tiny_smooth": lambda: _tiny_net(nn.GELU, lambda: nn.AvgPool2d(2)),
}


def build_tiny(name: str, weights: str | None = None, seed: int = 0, **kwargs: Any) -> Classifier:
    """Tiny test CNN ``name`` as a Classifier: [B, 3, 32, 32] in [0, 1] -> logits [B, 10].

    Args:
        name: ``tiny_cnn`` or ``tiny_smooth``.
        weights: None or ``"random"`` (seeded random weights), or a path to a state dict.
        seed: seed of the random weights.
    """
    if kwargs:
        raise TypeError(f"{name}: unexpected arguments {sorted(kwargs)}")
    with torch.device("meta"):
        net = ARCHS[name]()
    net = init_with_generator(net, seed)
    if weights is not None and weights != RANDOM:
        path = find_weights("", weights, name)
        load_into(net, load_state_dict_file(path), name, str(path))
    return Classifier(
        net.eval(),
        name=name,
        input_size=(32, 32),
        num_classes=10,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        crop_fraction=1.0,
    )


def _register(name: str) -> None:
    @register(name)
    def build(weights: str | None = None, **kwargs: Any) -> Classifier:
        return build_tiny(name, weights=weights, **kwargs)

    build.__doc__ = f"{name}: tiny seeded random CNN for unit tests; see build_tiny."


for _name in ARCHS:
    _register(_name)
