"""FullGrad: against the authors' algorithm and pytorch-grad-cam's FullGrad (torchvision ResNet-18
and VGG-16, random weights), completeness, the implicit bias of ReLU6, unsupported models,
the contract and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import salbench
from salbench.errors import BadInputError, ConfigError
from salbench.models.base import Classifier

try:
    from fullgrad_reference import authors_fullgrad
except ImportError:  # imported as tests.test_fullgrad
    from tests.fullgrad_reference import authors_fullgrad


@pytest.fixture(scope="module")
def tv_models():
    """torchvision ResNet-18 and VGG-16 as salbench Classifiers (random weights, seed 0)."""
    return {name: salbench.models.load(name, weights="random") for name in ("resnet18", "vgg16")}


SIZES = {"resnet18": 64, "vgg16": 32}


def _inputs(model, size: int, n: int = 2):
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = model(x).argmax(1)
    return x, t


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _map(attr: torch.Tensor) -> torch.Tensor:
    return salbench.methods.to_map(attr, salbench.methods.get("fullgrad").map_reduce)


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_equals_the_authors_algorithm(name, tv_models):
    model = tv_models[name]
    x, t = _inputs(model, SIZES[name])
    ref, err = authors_fullgrad(model, x, t)
    res = salbench.methods.attribute_with_info("fullgrad", model, x, t)
    ours = _map(res.attr)
    for i in range(len(x)):
        assert _rel(ours[i].numpy(), ref[i, 0].numpy()) < 1e-5, name
    # the decomposition is complete, in the reference and in ours
    logit = model(x).gather(1, t.view(-1, 1)).abs().max().item()
    assert err < 1e-4 * logit
    assert (res.info["completeness_error"] < 1e-4 * logit).all()


@pytest.mark.parametrize("name", ["resnet18", "vgg16"])
def test_agrees_with_pytorch_grad_cam(name, tv_models):
    """grad-cam's FullGrad rescales each channel and resizes with OpenCV (align_corners=False),
    then min-max normalises the sum; ours with those two choices, min-max normalised, is equal.
    With the authors' choices (the default) the maps differ."""
    from pytorch_grad_cam import FullGrad
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = tv_models[name]
    x, t = _inputs(model, SIZES[name])
    with FullGrad(model, []) as cam:
        ref = cam(x, [ClassifierOutputTarget(int(c)) for c in t])
    ours = _map(salbench.methods.attribute("fullgrad", model, x, t, rescale="channel",
                                           align_corners=False))
    default = _map(salbench.methods.attribute("fullgrad", model, x, t))
    for i in range(len(x)):
        o = (ours[i] - ours[i].min()) / (ours[i].max() - ours[i].min())
        assert _rel(o.numpy(), ref[i]) < 2e-4, name
        d = (default[i] - default[i].min()) / (default[i].max() - default[i].min())
        assert _rel(d.numpy(), ref[i]) > 1e-3


def _relu6_model() -> Classifier:
    """Conv(+bias) -> BN -> ReLU6 twice, weights scaled so that ReLU6 saturates often."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 3)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(8, generator=gen))
                m.running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    return Classifier(net.eval(), name="relu6", input_size=(16, 16), num_classes=5,
                      mean=(0.5,) * 3, std=(0.25,) * 3, crop_fraction=1.0)


def test_relu6_clip_is_an_implicit_bias_and_keeps_completeness():
    model = _relu6_model()
    x, t = _inputs(model, 16, n=3)
    acts = []
    h = model.net[2].register_forward_hook(lambda _m, _i, o: acts.append(o.detach().clone()))
    res = salbench.methods.attribute_with_info("fullgrad", model, x, t)
    h.remove()
    assert (acts[0] >= 6).float().mean() > 0.05  # the clip is active on many units
    logit = model(x).gather(1, t.view(-1, 1)).squeeze(1).abs()
    assert (res.info["completeness_error"] < 1e-4 * logit).all()
    assert (res.attr >= 0).all() and res.attr.shape == x.shape


def test_bf16_model_is_not_refused_for_its_rounding():
    """Under ``precision: bf16`` rounding alone breaks completeness by more than the check's
    tolerance; the map is still computed and the error reported."""
    from salbench.models import numerics

    model = numerics.apply(_relu6_model(), numerics.Numerics("bf16"))
    x, t = _inputs(model, 16, n=2)
    res = salbench.methods.attribute_with_info("fullgrad", model, x, t)
    assert res.attr.shape == x.shape and torch.isfinite(res.attr).all()
    assert torch.isfinite(res.info["completeness_error"]).all()


class _Clamp(nn.Module):
    """A shifted ReLU: below 1 it outputs the constant 1, an implicit bias fullgrad does not
    trace (a Tensor.clamp call)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.clamp(min=1.0)


def test_an_unknown_implicit_bias_breaks_completeness_and_is_refused():
    model = _relu6_model()
    model.net[5] = _Clamp()
    x, t = _inputs(model, 16, n=2)
    with pytest.raises(BadInputError, match="do not add up to the logit"):
        salbench.methods.attribute("fullgrad", model, x, t)


def test_unsupported_models_are_refused_with_the_module_named(smooth_model, images32):
    with pytest.raises(BadInputError, match=r"net\.1 \(GELU\).*gelu"):
        salbench.methods.attribute("fullgrad", smooth_model, images32, 0)
    no_bias = Classifier(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(),
                                       nn.Flatten(), nn.Linear(4 * 30 * 30, 3)).eval(),
                         name="nobias", input_size=(32, 32), num_classes=3)
    with pytest.raises(BadInputError, match="no layer with a spatial bias"):
        salbench.methods.attribute("fullgrad", no_bias, images32, 0)
    train_bn = _relu6_model()
    train_bn.net[1].train()
    with pytest.raises(BadInputError, match=r"net\.1 \(BatchNorm2d\).*training mode"):
        salbench.methods.attribute("fullgrad", train_bn, torch.rand(2, 3, 16, 16), 0)
    with pytest.raises(ConfigError, match="rescale"):
        salbench.methods.attribute("fullgrad", train_bn, torch.rand(2, 3, 16, 16), 0,
                                   rescale="pixel")


def test_contract_determinism_and_batch_equals_loop(relu_model, images32):
    t = relu_model(images32).argmax(1)
    spec = salbench.methods.get("fullgrad")
    assert spec.map_reduce == "sum" and spec.info_columns == ("completeness_error",)
    batch = salbench.methods.attribute("fullgrad", relu_model, images32, t,
                                       internal_batch_size=3)
    assert batch.shape == images32.shape and batch.dtype == torch.float32
    assert (batch >= 0).all() and batch.max() > 0
    # one map spread evenly over the channels
    torch.testing.assert_close(batch[:, 0], batch[:, 1], atol=0, rtol=0)
    torch.testing.assert_close(batch[:, 0], batch[:, 2], atol=0, rtol=0)
    again = salbench.methods.attribute("fullgrad", relu_model, images32, t,
                                       internal_batch_size=3)
    assert torch.equal(batch, again)
    singles = torch.cat([salbench.methods.attribute("fullgrad", relu_model, images32[i:i + 1],
                                                    t[i:i + 1]) for i in range(len(t))])
    torch.testing.assert_close(batch, singles, atol=1e-6, rtol=1e-5)
    # the map is its input term plus its bias terms: never below the input term alone
    ref, _ = authors_fullgrad(relu_model, images32, t)
    torch.testing.assert_close(_map(batch), ref[:, 0], atol=1e-5, rtol=1e-5)


def test_fullgrad_and_dga_through_the_ray_pipeline_batch_equals_singles(ray_batch_run):
    """A Ray run that attributes 3 images in one batch stores the maps that single-image calls
    give on its stored input crops (maps are stored as float16). The run is the session's
    shared one (conftest ``ray_batch_run``: fullgrad and dga with steps 3 on tiny_cnn among
    other models and methods); its tiny_cnn fullgrad and dga rows are this test's."""
    from salbench.models.base import to_tensor

    model_rows = ray_batch_run["samples"].query("model == 'tiny_cnn'")
    s = model_rows[model_rows["method"].isin(["fullgrad", "dga"])]
    assert len(s) == 6 and (s["status"] == "ok").all()
    assert (s.loc[s["method"] == "fullgrad", "completeness_error"] < 1e-3).all()
    model = salbench.models.load("tiny_cnn")
    crops = {i: to_tensor(c)[None] for i, c in ray_batch_run["crops"]["tiny_cnn"].items()}
    assert len(crops) == 3
    for r in s.itertuples():
        params = {"steps": 3} if r.method == "dga" else {}
        attr = salbench.methods.attribute(r.method, model, crops[r.index],
                                          torch.tensor([r.target]), profile="fast", **params)
        reduce = salbench.methods.get(r.method).map_reduce or "abs_sum"
        single = salbench.methods.to_map(attr, reduce)[0].numpy().astype(np.float16)
        stored = np.frombuffer(r.map, np.float16).reshape(single.shape)
        np.testing.assert_allclose(stored.astype(np.float32), single.astype(np.float32),
                                   rtol=2e-3, atol=1e-3)
