"""Layer-wise Relevance Propagation (Bach et al. 2015; Montavon et al. 2019) with zennit.

zennit (PyPI ``zennit``, the maintained LRP library; ``pip install 'salbench[lrp]'``) supplies
the rules, the composites and the canonizers; this module chooses them, checks the network,
and runs the call batched. Composites (``composite`` parameter):

- ``epsilon_plus_flat`` (default): the flat rule at the first linear layer, z+ for the other
  convolutions, epsilon for the dense layers (zennit's ``EpsilonPlusFlat``);
- ``epsilon_gamma_box``: z^B (box) at the first convolution, gamma (0.25) for the other
  convolutions, epsilon for the dense layers (``EpsilonGammaBox``);
- ``epsilon_alpha2_beta1``: alpha=2, beta=1 for convolutions, epsilon for dense layers
  (``EpsilonAlpha2Beta1``).

Average pooling and the residual sums get zennit's normalising rule, activations and merged
batch-norms pass relevance unchanged, max pooling passes it to the maximum (its gradient).

Canonization: batch-norm is merged into the preceding convolution (zennit's
``SequentialMergeBatchNorm``; for torchvision ResNets ``ResNetCanonizer``, which also turns each
residual addition into a summation module with its own rule). Canonizers and rule hooks are
applied to the network for the duration of one chunk and removed afterwards (also on error):
the model object keeps no hook and bit-identical weights (tested).

The Classifier's normalisation: a salbench Classifier normalises inside, (x - mean) / std, in
its ``forward``, which is not a module. LRP is run on the network behind it (``model.net``)
with the normalised input z = (x - mean) / std as the input layer, and the relevance of z_i is
returned as the relevance of pixel x_i (relevance is a share of the output, not a gradient, so
it is not divided by std as autograd through the normalisation would do). The flat rule
ignores input values, so it is unaffected; the box rule gets the bounds of z for x in
[0, 1]: low = (0 - mean) / std, high = (1 - mean) / std per channel.

Initial relevance: the target logit f_c(x) at the output (zero elsewhere), so rules that
conserve make the relevance sum to f_c(x) (tested on a bias-free network); biases, the
epsilon stabiliser, and alpha-beta where a neuron has no negative inputs absorb or add some.

Supported networks: nn.Sequential stacks and torchvision VGG and ResNet models built from
Conv2d (groups = 1), Linear, BatchNorm2d, ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d,
Flatten, Dropout and Identity. Anything else (EfficientNet's depthwise convolutions, ReLU6,
SiLU, GELU, squeeze-excitation blocks, Inception's concatenating blocks) raises BadInputError
naming the first such layer: zennit would run on them with rules that were not designed for
them, and the result would silently be something other than LRP.

Numeric settings: the network runs eagerly in float32 whatever the model's ``precision`` /
``compile`` settings say (zennit's rules are module hooks, which a compiled graph would skip).

Output: float32 [B, 3, H, W], signed relevance per pixel and channel. Cost per image: one
forward and one (modified) backward pass; chunks of ``internal_batch_size`` images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from salbench.errors import BadInputError, ConfigError
from salbench.methods.engine import for_chunks
from salbench.methods.registry import register
from salbench.models.base import Classifier

COMPOSITES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon_alpha2_beta1")

#: Leaf modules LRP's rules cover here (Conv2d only with groups = 1).
SUPPORTED_LEAVES: tuple[type[nn.Module], ...] = (
    nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity,
)


def _zennit() -> Any:
    try:
        import zennit.canonizers
        import zennit.composites
        import zennit.torchvision  # noqa: F401
    except ImportError:
        raise ConfigError("method 'lrp' needs zennit, an optional dependency: "
                          "pip install 'salbench[lrp]' (or zennit>=0.5.1)") from None
    return zennit


def _containers() -> tuple[type[nn.Module], ...]:
    """Container modules whose forward is known: Sequential, torchvision VGG and ResNet."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
    from torchvision.models.vgg import VGG

    return (nn.Sequential, VGG, ResNet, BasicBlock, Bottleneck)


def check_network(net: nn.Module) -> bool:
    """Raise BadInputError naming the first layer LRP does not support; True for a
    torchvision ResNet (it needs the ResNet canonizer)."""
    containers = _containers()
    modules = list(net.named_modules())
    previous: nn.Module | None = None
    for name, module in modules:  # leaves first: the message names the layer itself
        if len(list(module.children())) > 0:
            continue
        where, kind = name or "the network itself", type(module).__name__
        if isinstance(module, nn.BatchNorm2d) and not isinstance(previous, (nn.Conv2d,
                                                                            nn.Linear)):
            raise BadInputError(
                f"lrp: batch-norm {where!r} does not follow a convolution, so it cannot be "
                "merged into one (LRP has no rule for a free-standing batch-norm)")
        previous = module
        if not isinstance(module, SUPPORTED_LEAVES):
            raise BadInputError(
                f"lrp: layer {where!r} ({kind}) is not supported; LRP here covers Conv2d, "
                "Linear, BatchNorm2d, ReLU, max/average pooling, Flatten, Dropout, Identity")
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise BadInputError(
                f"lrp: layer {where!r} is a grouped/depthwise convolution (groups="
                f"{module.groups}), which the LRP rules here do not cover")
    is_resnet = False
    for name, module in modules:
        if len(list(module.children())) == 0:
            continue
        if not isinstance(module, containers):
            raise BadInputError(
                f"lrp: block {name or 'the network itself'!r} ({type(module).__name__}) has "
                "a forward LRP does not know; supported: nn.Sequential, torchvision VGG and "
                "ResNet")
        is_resnet |= type(module).__name__ in ("BasicBlock", "Bottleneck")
    return is_resnet


def make_composite(name: str, *, low: torch.Tensor, high: torch.Tensor, epsilon: float,
                   gamma: float, resnet: bool) -> Any:
    """The zennit composite ``name`` (one of :data:`COMPOSITES`) with its canonizers.

    low, high: float [1, 3, 1, 1], the bounds of the network's (normalised) input, for the box
    rule.
    """
    zennit = _zennit()
    canon = (zennit.torchvision.ResNetCanonizer() if resnet
             else zennit.canonizers.SequentialMergeBatchNorm())
    comps = zennit.composites
    if name == "epsilon_plus_flat":
        return comps.EpsilonPlusFlat(epsilon=epsilon, canonizers=[canon])
    if name == "epsilon_gamma_box":
        return comps.EpsilonGammaBox(low=low, high=high, epsilon=epsilon, gamma=gamma,
                                     canonizers=[canon])
    if name == "epsilon_alpha2_beta1":
        return comps.EpsilonAlpha2Beta1(epsilon=epsilon, canonizers=[canon])
    raise ConfigError(f"lrp: composite must be one of {COMPOSITES}, got {name!r}")


@register("lrp")
def lrp(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    composite: str = "epsilon_plus_flat",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """LRP relevance of the target logit (zennit): float32 [B, 3, H, W], signed.

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. ``composite``: one of
    :data:`COMPOSITES`; ``epsilon`` of the epsilon rule, ``gamma`` of the gamma rule
    (epsilon_gamma_box). See the module docstring for the rules, the canonizers and how the
    Classifier's normalisation is treated.
    """
    if composite not in COMPOSITES:
        raise ConfigError(f"lrp: composite must be one of {COMPOSITES}, got {composite!r}")
    _zennit()
    net, mean, std = (getattr(model, k, None) for k in ("net", "mean", "std"))
    if not isinstance(net, nn.Module) or not isinstance(mean, torch.Tensor) or getattr(
            model, "grayscale", False):
        raise BadInputError("lrp needs a salbench Classifier (a 'net' behind a per-channel "
                            "normalisation, three input channels)")
    resnet = check_network(net)
    mean = mean.detach().float().to(x.device).view(1, -1, 1, 1)
    std = std.detach().float().to(x.device).view(1, -1, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std
    x = x.detach().float()
    out = torch.empty_like(x)

    def compute(idx: torch.Tensor) -> torch.Tensor:
        comp = make_composite(composite, low=low, high=high, epsilon=epsilon, gamma=gamma,
                              resnet=resnet)
        z = ((x[idx] - mean) / std).requires_grad_(True)
        with comp.context(net) as hooked:
            logits = hooked(z)
            onehot = torch.zeros_like(logits)
            onehot.scatter_(1, target[idx].view(-1, 1), 1.0)
            (rel,) = torch.autograd.grad(logits, z, onehot * logits.detach())
        return rel.detach().float()

    def done(idx: torch.Tensor, rel: torch.Tensor) -> None:
        out[idx] = rel

    with torch.enable_grad():
        for_chunks(len(x), internal_batch_size, compute, done, device=x.device)
    return out
