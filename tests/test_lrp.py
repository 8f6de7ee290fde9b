"""LRP (zennit behind salbench.methods.lrp): agreement with zennit's own attributor, the
conservation property, the model left untouched, clear errors for unsupported layers."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import salbench
from salbench.errors import BadInputError, ConfigError
from salbench.models.base import Classifier
from salbench.models.tiny import init_with_generator

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial batch-norm statistics and affine parameters (random init has 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def tv_models():
    """Random-weight torchvision models (batch-norm statistics randomised), loaded once."""
    return {name: _randomise_batchnorm(salbench.models.load(name, weights="random"))
            for name in ("resnet18", "resnet50", "vgg16")}


def _zennit_reference(model: Classifier, x: torch.Tensor, target: torch.Tensor,
                      composite: str, resnet: bool) -> torch.Tensor:
    """zennit's own Gradient attributor on the network behind the normalisation, with the
    target logit (of the canonized network, as zennit computes it) as the output relevance
    (written from zennit's documentation)."""
    canon = ResNetCanonizer() if resnet else SequentialMergeBatchNorm()
    low = (0 - model.mean) / model.std
    high = (1 - model.mean) / model.std
    comp = {
        "epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=[canon]),
        "epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=[canon]),
        "epsilon_alpha2_beta1": lambda: EpsilonAlpha2Beta1(canonizers=[canon]),
    }[composite]()
    z = (x - model.mean) / model.std
    onehot = nn.functional.one_hot(target, model.num_classes).float()
    with Gradient(model=model.net, composite=comp) as attributor:
        _, rel = attributor(z, lambda logits: onehot * logits)
    return rel


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name,composite", [
    ("tiny_cnn", "epsilon_plus_flat"), ("tiny_cnn", "epsilon_gamma_box"),
    ("tiny_cnn", "epsilon_alpha2_beta1"),
    ("resnet18", "epsilon_plus_flat"), ("resnet18", "epsilon_gamma_box"),
    ("resnet18", "epsilon_alpha2_beta1"),
    ("resnet50", "epsilon_plus_flat"), ("vgg16", "epsilon_gamma_box"),
])
def test_lrp_equals_zennit(name, composite, tv_models):
    model = salbench.models.load(name) if name == "tiny_cnn" else tv_models[name]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 32, 32, generator=g)
    with torch.no_grad():
        target = model(x).argmax(1)
    ours = salbench.methods.attribute("lrp", model, x, target, composite=composite,
                                      internal_batch_size=2)
    ref = _zennit_reference(model, x, target, composite, resnet=name.startswith("resnet"))
    assert ours.shape == x.shape and ours.dtype == torch.float32
    assert ref.abs().sum() > 0
    assert _rel_l2(ours, ref) < 1e-5, _rel_l2(ours, ref)


def _bias_free_classifier() -> Classifier:
    with torch.device("meta"):
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(16 * 8 * 8, 10, bias=False),
        )
    return Classifier(init_with_generator(net, 3), name="bias_free", input_size=(32, 32),
                      num_classes=10, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


@pytest.mark.parametrize("composite", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_lrp_conserves_the_target_logit_on_a_bias_free_network(composite):
    # flat / box, z+ / gamma, epsilon (1e-6), normalised average pooling, max pooling (its
    # gradient) and ReLU (pass) all conserve relevance without biases: the map sums to f_c(x)
    model = _bias_free_classifier()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        logit = model(x)[torch.arange(4), target]
    rel = salbench.methods.attribute("lrp", model, x, target, composite=composite,
                                     epsilon=1e-9)
    torch.testing.assert_close(rel.double().sum(dim=(1, 2, 3)), logit.double(), rtol=1e-4,
                               atol=1e-5)
    # and the relevance is not the gradient x input, nor signed at random: the flat/box
    # first layer makes it differ from the raw gradient route
    assert not torch.allclose(rel, rel.abs())


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_lrp_leaves_the_model_as_it_was(name, tv_models):
    model = tv_models[name]
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    before, names = _state(model), [n for n, _ in model.named_modules()]
    with torch.no_grad():
        logits = model(x)
    salbench.methods.attribute("lrp", model, x, torch.tensor([1, 2]),
                               composite="epsilon_gamma_box")
    after = model.state_dict()
    assert set(after) == set(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert [n for n, _ in model.named_modules()] == names
    assert _hook_count(model) == 0
    assert not any("forward" in vars(m) for m in model.modules())  # canonizer's overrides
    with torch.no_grad():
        assert torch.equal(model(x), logits)


def test_lrp_batch_equals_loop_and_is_deterministic():
    model = salbench.models.load("tiny_cnn")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([4, 7, 1])
    batch = salbench.methods.attribute("lrp", model, x, t)
    again = salbench.methods.attribute("lrp", model, x, t, internal_batch_size=1)
    singles = torch.cat([salbench.methods.attribute("lrp", model, x[i:i + 1], t[i:i + 1])
                         for i in range(3)])
    torch.testing.assert_close(batch, singles, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(batch, again, atol=1e-6, rtol=1e-5)
    assert torch.equal(batch, salbench.methods.attribute("lrp", model, x, t))


def _sequential(*layers: nn.Module) -> Classifier:
    return Classifier(nn.Sequential(*layers).eval(), name="s", input_size=(16, 16),
                      num_classes=4)


@pytest.mark.parametrize("net,message", [
    (lambda: _sequential(nn.Conv2d(3, 4, 3), nn.SiLU(), nn.Flatten(), nn.LazyLinear(4)),
     r"layer '1' \(SiLU\)"),
    (lambda: _sequential(nn.Conv2d(3, 3, 3, groups=3), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(4)), r"layer '0' is a grouped/depthwise"),
    (lambda: _sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Flatten(), nn.LazyLinear(4)),
     r"ReLU6"),
    (lambda: _sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.LazyLinear(4)), r"batch-norm '2' does not follow a convolution"),
])
def test_lrp_unsupported_layers_are_named(net, message):
    model = net()
    x = torch.rand(1, 3, 16, 16)
    model(x)  # materialise the lazy layer
    with pytest.raises(BadInputError, match=message):
        salbench.methods.attribute("lrp", model, x, 0)


def test_lrp_on_efficientnet_names_the_layer(lite0):
    with pytest.raises(BadInputError, match=r"lrp: layer '.*' \(ReLU6\) is not supported"):
        salbench.methods.attribute("lrp", lite0, torch.rand(1, 3, 224, 224), 0)


def test_lrp_bad_composite_and_missing_zennit(monkeypatch):
    model = _bias_free_classifier()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ConfigError, match="composite"):
        salbench.methods.attribute("lrp", model, x, 0, composite="z_plus")
    monkeypatch.setitem(sys.modules, "zennit", None)
    monkeypatch.setitem(sys.modules, "zennit.composites", None)
    with pytest.raises(ConfigError, match=r"salbench\[lrp\]"):
        salbench.methods.attribute("lrp", model, x, 0)
