"""The CAM family (salbench/methods/cams.py) against pytorch-grad-cam, plus contracts.

Reference: pytorch-grad-cam (PyPI ``grad-cam``), run on the same Classifier, layer, images
and targets. Two comparisons per method and model:
- low resolution, before ReLU: our ``*_cam`` function on the activations and gradients the
  reference captured itself vs the reference's ``get_cam_image`` (its own weights and sum);
- end to end: our attribution's map, min-max scaled per image, vs the reference's own
  post-processing of its map (ReLU, min-max scaling, OpenCV resize).
The relative L2 error ||ours - ref|| / ||ref|| of each is printed (``-s``) and bounded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import salbench
from salbench.methods import cams
from salbench.methods.gradcam import capture_layer

gradcam_lib = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

NAMES = ["gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam",
         "ablationcam"]
REFERENCE = {"gradcam_pp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
             "hirescam": "HiResCAM", "eigencam": "EigenCAM", "scorecam": "ScoreCAM",
             "ablationcam": "AblationCAM"}
GRADIENT_CAMS = {"gradcam_pp": cams.gradcam_pp_cam, "xgradcam": cams.xgradcam_cam,
                 "layercam": cams.layercam_cam, "hirescam": cams.hirescam_cam}


def _rel(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


def _minmax(maps: torch.Tensor) -> np.ndarray:
    m = maps.flatten(1)
    lo, hi = m.amin(1, keepdim=True), m.amax(1, keepdim=True)
    return ((m - lo) / (hi - lo)).view_as(maps).numpy()


class _Scaled(torch.nn.Module):
    """A classifier with its logits times 1000: G^2 >> 1e-6, where pytorch-grad-cam's
    epsilon in Grad-CAM++'s denominator (not in the paper, not in ours) is negligible."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1000


def _reference(name: str, model, layer: str, x: torch.Tensor, t: torch.Tensor):
    """The reference's low-resolution map before ReLU, from its own captured activations and
    gradients, and the activations and gradients it captured."""
    module = model.get_submodule(layer)
    cam = getattr(gradcam_lib, REFERENCE[name])(model=model, target_layers=[module])
    targets = [ClassifierOutputTarget(int(c)) for c in t]
    try:
        out = cam.activations_and_grads(x.clone().requires_grad_(True))  # frozen weights
        sum(tg(o) for tg, o in zip(targets, out, strict=True)).backward()
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        low = cam.get_cam_image(x, module, targets, acts, grads, False)
    finally:
        cam.activations_and_grads.release()
    return np.asarray(low, np.float32), acts, grads


def _ours_low(name: str, model, layer: str, x, t, acts: np.ndarray, grads: np.ndarray):
    a, g = torch.from_numpy(acts), torch.from_numpy(grads)
    if name in GRADIENT_CAMS:
        return GRADIENT_CAMS[name](a, g)
    if name == "eigencam":
        return cams.eigencam_cam(a)
    if name == "scorecam":
        return cams.scorecam_cam(model, x, t, a)
    _, _, y = capture_layer(model, x, t, layer, gradients=False)
    return cams.ablationcam_cam(model, x, t, a, y, layer)


def _agreement(name: str, model, layer: str, x: torch.Tensor, t: torch.Tensor):
    """(relative L2 at low resolution, relative L2 end to end); the reference's end-to-end
    map is its forward's post-processing of its low-resolution map (ReLU, min-max scaling,
    OpenCV resize, min-max scaling: ``compute_cam_per_layer`` and ``aggregate_multi_layers``)."""
    if name == "gradcam_pp":
        model, layer = _Scaled(model), f"model.{layer}"
    ref_low, acts, grads = _reference(name, model, layer, x, t)
    with torch.no_grad():
        ours_low = _ours_low(name, model, layer, x, t, acts, grads).numpy()
    if name == "eigencam":  # orient the reference's arbitrary SVD sign by our stated rule
        sign = np.sign((ref_low * acts.mean(1)).sum(axis=(1, 2)))[:, None, None]
        ref_low = ref_low * sign
    h, w = x.shape[-2:]
    ref_full = scale_cam_image(scale_cam_image(np.maximum(ref_low, 0), (w, h)))
    ours = salbench.methods.attribute(name, model, x, t, layer=layer).sum(1)
    return _rel(ours_low, ref_low), _rel(_minmax(ours), ref_full)


@pytest.fixture(scope="module")
def resnet18():
    return salbench.models.load("resnet18", weights="random")


CASES = [(n, "resnet18") for n in NAMES] + [
    (n, "efficientnet_lite0") for n in NAMES if n not in ("scorecam", "ablationcam")] + [
    (n, "tiny_cnn") for n in ("scorecam", "ablationcam")]


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_agrees_with_pytorch_grad_cam(name, arch, request):
    """ResNet-18 (random weights, seed 0) at layer4 (512 x 2 x 2 at 64 px); EfficientNet-Lite0
    (embedded ImageNet weights) at net.bn2 (1280 x 3 x 3 at 96 px, ReLU6); Score-CAM and
    Ablation-CAM, one forward pass per channel, on one 48 px image for ResNet-18 (layer4
    still 2 x 2) and on tiny_cnn (16 x 8 x 8) instead of Lite0's 1280 channels."""
    g = torch.Generator().manual_seed(0)
    if arch == "resnet18":
        model, layer, t = request.getfixturevalue("resnet18"), "net.layer4", torch.tensor([3, 917])
        x = torch.rand(2, 3, 64, 64, generator=g)
        if name in ("scorecam", "ablationcam"):  # 512 passes per image: one 48 px image
            x, t = torch.nn.functional.interpolate(x[:1], size=(48, 48), mode="area"), t[:1]
    elif arch == "efficientnet_lite0":
        model, layer, t = request.getfixturevalue("lite0"), "net.bn2", torch.tensor([1])
        x = torch.rand(1, 3, 96, 96, generator=g)
    else:
        model, layer, t = request.getfixturevalue("relu_model"), "net.5", torch.tensor([1, 2])
        x = torch.rand(2, 3, 32, 32, generator=g)
    low, full = _agreement(name, model, layer, x, t)
    print(f"\n{name} {arch}: rel L2 low-res {low:.2e}, end-to-end {full:.2e}")
    assert low < 1e-4 and full < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_contract_determinism_and_batch_equals_loop(name, smooth_model, images32):
    """float32 [B, 3, H, W] on the input's device, finite, >= 0, each channel a third of the
    map; the same twice; a batch equals a loop of single images (fast profile)."""
    t = torch.tensor([0, 3, 5, 9])
    a = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast")
    assert a.shape == images32.shape and a.dtype == torch.float32 and a.device == images32.device
    assert torch.isfinite(a).all() and (a >= 0).all() and a.sum() > 0
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])
    assert torch.equal(a, salbench.methods.attribute(name, smooth_model, images32, t,
                                                     profile="fast"))
    singles = torch.cat([salbench.methods.attribute(name, smooth_model, images32[i:i + 1],
                                                    t[i:i + 1], profile="fast")
                         for i in range(len(t))])
    torch.testing.assert_close(a, singles, atol=1e-6, rtol=1e-5)
    chunked = salbench.methods.attribute(name, smooth_model, images32, t, profile="fast",
                                         internal_batch_size=3)
    torch.testing.assert_close(a, chunked, atol=1e-6, rtol=1e-5)


def test_class_specific_cams_depend_on_the_target_and_eigencam_does_not(smooth_model,
                                                                      images32):
    for name in NAMES:
        a = salbench.methods.attribute(name, smooth_model, images32, 0)
        b = salbench.methods.attribute(name, smooth_model, images32, 7)
        assert torch.equal(a, b) == (name == "eigencam"), name


def test_eigencam_sign_follows_the_mean_activation():
    """The map correlates positively with the channel-mean activation map, whatever sign the
    SVD returns (activations and their mirror image give the same orientation rule)."""
    a = torch.rand(16, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    cam = cams.eigencam_cam(a)
    mean_map = a.mean(1)
    centred = mean_map - mean_map.mean(dim=(1, 2), keepdim=True)
    assert ((cam * centred).sum(dim=(1, 2)) > 0).all()
    torch.testing.assert_close(cams.eigencam_cam(a.flip(-1)), cam.flip(-1), atol=1e-5,
                               rtol=1e-4)


def test_channel_caps(relu_model):
    """``channels`` >= the layer's channels changes nothing; fewer is another (valid) map;
    Ablation-CAM without the all-zero channels is exact."""
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 2])
    for name in ("scorecam", "ablationcam"):
        full = salbench.methods.attribute(name, relu_model, x, t)
        assert torch.equal(full, salbench.methods.attribute(name, relu_model, x, t,
                                                            channels=16))
        four = salbench.methods.attribute(name, relu_model, x, t, channels=4)
        assert torch.isfinite(four).all() and not torch.equal(four, full)
    with pytest.raises(ValueError, match="channels must be a positive number"):
        salbench.methods.attribute("scorecam", relu_model, x, t, channels=0)


def test_bad_layers_name_the_layer(relu_model, images32):
    from salbench.errors import BadInputError

    for name in NAMES:
        with pytest.raises(BadInputError, match="'net.nope' not found"):
            salbench.methods.attribute(name, relu_model, images32, 0, layer="net.nope")
        with pytest.raises(BadInputError, match="'net.7' gave shape \\(4, 10\\); a CAM needs"):
            salbench.methods.attribute(name, relu_model, images32, 0, layer="net.7")


def test_scorecam_authors_settings_match_their_loop(relu_model):
    """``score="prob", channel_softmax=False, align_corners=False`` is the authors' code
    (haofanwang/Score-CAM, cam/scorecam.py), written out here as its per-channel loop: skip
    constant channels, mask with the min-max scaled upsampled channel, weigh the upsampled
    channel by the softmax probability of the target; compared after ReLU and min-max."""
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    t = 2
    a, _, _ = capture_layer(relu_model, x, torch.tensor([t]), "net.5", gradients=False)
    ref = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        for k in range(a.shape[1]):
            up = torch.nn.functional.interpolate(a[:, k:k + 1], size=(32, 32), mode="bilinear",
                                                 align_corners=False)
            if up.max() == up.min():
                continue
            norm = (up - up.min()) / (up.max() - up.min())
            prob = torch.softmax(relu_model(x * norm), dim=1)[0, t]
            ref += prob * up
    ref = torch.relu(ref)[:, 0]
    ours = salbench.methods.attribute("scorecam", relu_model, x, t, layer="net.5", score="prob",
                                      channel_softmax=False, align_corners=False).sum(1)
    rel = _rel(_minmax(ours), _minmax(ref))
    print(f"\nscorecam (authors' settings) tiny_cnn: rel L2 {rel:.2e}")
    assert rel < 1e-5
