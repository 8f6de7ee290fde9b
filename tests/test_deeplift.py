"""DeepLIFT (rescale rule): Captum's DeepLift where Captum applies, summation-to-delta on ReLU
networks (re-used in-place ReLUs and overlapping max pooling included), the max-pooling rule
by hand, the batching contract and hooks removed."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import salbench
from salbench.models.base import Classifier
from salbench.models.tiny import init_with_generator


def _classifier(net: nn.Module, size: int = 32) -> Classifier:
    return Classifier(net.eval(), name="net", input_size=(size, size), num_classes=10,
                      mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def _relu_avgpool_net() -> Classifier:
    with torch.device("meta"):
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(16 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10),
        )
    return _classifier(init_with_generator(net, 1))


def _images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_deeplift_equals_captum_on_a_relu_network():
    captum_attr = pytest.importorskip("captum.attr")
    model = _relu_avgpool_net()
    x = _images()
    with torch.no_grad():
        t = model(x).argmax(1)
    ours = salbench.methods.attribute("deeplift", model, x, t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = captum_attr.DeepLift(model).attribute(x.clone(), target=t,
                                                    baselines=torch.zeros_like(x))
    rel = float((ours - ref.detach()).norm() / ref.detach().norm())
    assert rel < 1e-5, rel
    assert (ours - x * salbench.methods.attribute("vg", model, x, t)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18"])
@pytest.mark.parametrize("baseline", ["black", "preprocessed_zero"])
def test_summation_to_delta(name, baseline):
    # tiny_cnn: ReLU + 2x2 max pooling; resnet18: in-place ReLU modules called twice per
    # block, 3x3 / stride-2 max pooling with overlapping windows, batch-norm
    model = (salbench.models.load(name) if name == "tiny_cnn"
             else salbench.models.load(name, weights="random"))
    x = _images(3)
    t = torch.tensor([1, 4, 7])
    res = salbench.methods.attribute_with_info("deeplift", model, x, t, baseline=baseline)
    ref = (torch.zeros_like(x) if baseline == "black"
           else model.mean.view(1, 3, 1, 1).expand_as(x))
    with torch.no_grad():
        delta = (model(x) - model(ref))[torch.arange(3), t]
    assert _hooks(model) == 0
    total = res.attr.double().sum(dim=(1, 2, 3))
    torch.testing.assert_close(total, delta.double(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.info["score_delta"], delta, rtol=1e-5, atol=1e-6)
    assert (res.info["completeness_error"] < 1e-4 * delta.abs().clamp_min(1)).all()
    if baseline == "preprocessed_zero" and name == "resnet18":
        return  # bias-free and positively homogeneous around z = 0: gradient x input is exact
    # not the gradient x (input - reference), which does not sum to the delta here
    grad = salbench.methods.attribute("vg", model, x, t)
    assert ((grad * (x - ref)).double().sum(dim=(1, 2, 3)) - delta).abs().max() > 1e-3


def test_max_pooling_rule_by_hand():
    # f(x) = 2 * maxpool2x2(x[:, 0]) on a 2 x 2 image (channels 1, 2 ignored): the input's
    # window maximum 0.9 at (0, 1), the reference's 0.7 at (1, 0). The difference of the
    # outputs, 0.9 - 0.7, goes to the input's maximum (max(y, y') - y' = 0.2), and
    # y - max(y, y') = 0 to the reference's; times the weight 2.
    class Pick(nn.Module):
        def forward(self, z):
            return z[:, :1]

    net = nn.Sequential(Pick(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1, 10, bias=False))
    with torch.no_grad():
        net[3].weight.fill_(2.0)
    model = Classifier(net, name="pool", input_size=(2, 2), num_classes=10,
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[0.1, 0.9], [0.3, 0.2]])
    ref = torch.zeros(1, 3, 2, 2)
    ref[0, 0] = torch.tensor([[0.0, 0.1], [0.7, 0.6]])
    a = salbench.methods.attribute("deeplift", model, x, 0, baseline=ref)
    expected = torch.zeros(1, 3, 2, 2)
    expected[0, 0, 0, 1] = 2 * (0.9 - 0.7)
    torch.testing.assert_close(a, expected, atol=1e-6, rtol=0)


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_contract_batch_equals_loop_determinism_and_no_hooks_left():
    model = salbench.models.load("tiny_cnn")
    x = _images(3)
    t = torch.tensor([0, 5, 9])
    a = salbench.methods.attribute("deeplift", model, x, t)
    assert a.shape == x.shape and a.dtype == torch.float32 and a.device == x.device
    assert torch.equal(a, salbench.methods.attribute("deeplift", model, x, t))
    singles = torch.cat([salbench.methods.attribute("deeplift", model, x[i:i + 1], t[i:i + 1])
                         for i in range(3)])
    torch.testing.assert_close(a, singles, atol=1e-6, rtol=1e-4)
    chunked = salbench.methods.attribute("deeplift", model, x, t, internal_batch_size=2)
    torch.testing.assert_close(a, chunked, atol=1e-6, rtol=1e-4)
    assert _hooks(model) == 0
    spec = salbench.methods.get("deeplift")
    assert spec.defaults["baseline"] == "black"
    assert set(spec.info_columns) == {"completeness_error", "score_delta"}
