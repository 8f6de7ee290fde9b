"""The CAM family on Grad-CAM's layer table: Grad-CAM++, XGrad-CAM, Layer-CAM, HiResCAM,
Eigen-CAM, Score-CAM and Ablation-CAM.

Each method reads the activations A float32 [B, C, h, w] of the Grad-CAM layer (the
architecture's entry in :data:`~salbench.methods.gradcam.TARGET_LAYERS`, else the last 4-D
feature map; ``layer=`` overrides) and, for the gradient CAMs, G = d score / d A of the target
class (``score``: the logit by default, as pytorch-grad-cam), captured batched by
:func:`~salbench.methods.gradcam.capture_layer`. It forms a low-resolution map [B, h, w]
(the ``*_cam`` functions below, pure functions of A and G, or of the model for Score-CAM and
Ablation-CAM), then :func:`~salbench.methods.gradcam.cam_attribution` applies ReLU, upsamples
bilinearly to the input and spreads the map over the three channels (each cam / 3; map
reduction "sum").

Agreement with pytorch-grad-cam (``grad-cam`` on PyPI, a test-only reference): the
low-resolution maps before ReLU equal its ``get_cam_image`` on the same activations and
gradients to float rounding (tests/test_cams.py prints the relative L2 errors).
What differs on purpose, for every method: salbench returns the map unnormalised (no
per-image min-max scaling to [0, 1]) and upsamples with torch (half-pixel bilinear, as
OpenCV's ``resize``, which pytorch-grad-cam uses); a map min-max scaled after upsampling
equals pytorch-grad-cam's output. Per-method differences are in each docstring.

Cost per image: the gradient CAMs (Grad-CAM++, XGrad-CAM, Layer-CAM, HiResCAM) 1 forward pass
and 1 backward pass from the score down to the layer only (not to the input); Eigen-CAM 1
forward pass; Score-CAM 1 + C' + 1 forward passes (C' the channels that are not constant, at
most C: 512 for ResNet-18 / VGG-16, 1280 for EfficientNet-Lite0, 2048 for ResNet-50 and
Inception-v3; the last pass, for the black image of the constant channels, only when there
is one); Ablation-CAM 1 + C' forward passes (C' the channels that are not all zero). Every
per-channel pass is a whole forward pass (the layers before the target run too). With a
``channels`` cap (64 in the fast profile) C' is at most the cap. The per-channel passes run
as batches of ``internal_batch_size`` (image, channel) pairs over all images of the call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from salbench.errors import BadInputError
from salbench.methods.engine import batched_scores, for_chunks, target_scores
from salbench.methods.gradcam import (
    cam_attribution,
    capture_layer,
    find_target_layer,
    layer_module,
)
from salbench.methods.registry import register
from salbench.models.base import Classifier

#: channel caps of the fast profile: Score-CAM and Ablation-CAM run 1 forward pass per
#: channel of the layer (512 to 2048 on the papers' models); the fast profile keeps 64.
FAST_CHANNELS = 64


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(2, 3), keepdim=True)


def gradcam_pp_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ map before ReLU: A, G float [B, C, h, w] -> float32 [B, h, w].

    w_c = sum_ij alpha_ij ReLU(G_ij), alpha = G^2 / (2 G^2 + sum_ab A_ab G^3) (Chattopadhay et
    al. 2018, Eq. 19, with the exponential of the score as the paper's derivation), alpha = 0
    where G = 0 or the denominator is 0.
    """
    a, g = a.float(), g.float()
    g2 = g * g
    denom = 2 * g2 + _spatial_sum(a) * g2 * g
    ok = (g != 0) & (denom != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, denom, torch.ones_like(denom)),
                        torch.zeros_like(g))
    weights = _spatial_sum(alpha * F.relu(g))
    return (weights * a).sum(1)


def xgradcam_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM map before ReLU: A, G float [B, C, h, w] -> float32 [B, h, w].

    w_c = sum_ij G_ij A_ij / sum_ab A_ab (Fu et al. 2020), 0 for a channel whose
    activations sum to 0.
    """
    a, g = a.float(), g.float()
    total = _spatial_sum(a)
    safe = torch.where(total != 0, total, torch.ones_like(total))
    weights = torch.where(total != 0, _spatial_sum(g * a) / safe, torch.zeros_like(total))
    return (weights * a).sum(1)


def layercam_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Layer-CAM map before ReLU: sum_c ReLU(G_c) * A_c (Jiang et al. 2021), float32 [B, h, w]."""
    return (F.relu(g.float()) * a.float()).sum(1)


def hirescam_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """HiResCAM map before ReLU: sum_c G_c * A_c (Draelos & Carin 2020), float32 [B, h, w]."""
    return (g.float() * a.float()).sum(1)


def eigencam_cam(a: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM map before ReLU: A float [B, C, h, w] -> float32 [B, h, w].

    Per image, the activations as hw points in C dimensions, centred (each channel's mean
    subtracted, as pytorch-grad-cam), projected on their first principal direction v1 (the
    first right singular vector). The sign of a singular vector is arbitrary (pytorch-grad-cam
    keeps whatever the SVD returns); here v1 is oriented so that sum(v1) >= 0, which makes the
    map correlate positively with the channel-mean activation map (that correlation is
    sigma_1^2 sum(v1) / C), i.e. the map is high where the layer is most active.
    """
    b, c, h, w = a.shape
    pts = a.float().reshape(b, c, h * w).transpose(1, 2)  # [B, hw, C]
    pts = pts - pts.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(pts, full_matrices=False)
    v1 = vh[:, 0, :]  # [B, C]
    sign = torch.where(v1.sum(1, keepdim=True) < 0, -1.0, 1.0)
    return (pts @ (v1 * sign).unsqueeze(2)).reshape(b, h, w)


def top_channels(key: torch.Tensor, keep: torch.Tensor, channels: int | None) -> torch.Tensor:
    """The channels a per-channel CAM evaluates: bool [B, C], ``keep`` (bool [B, C]) limited to
    the ``channels`` largest values of ``key`` (float [B, C]) per image (None: no limit)."""
    if channels is None or channels >= key.shape[1]:
        return keep
    if channels < 1:
        raise BadInputError(f"channels must be a positive number or None, got {channels}")
    ranked = torch.where(keep, key, torch.full_like(key, -torch.inf))
    top = ranked.topk(channels, dim=1).indices
    return keep & torch.zeros_like(keep).scatter_(1, top, True)


def scorecam_cam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    a: torch.Tensor,
    *,
    score: str = "logit",
    channel_softmax: bool = True,
    channels: int | None = None,
    align_corners: bool = True,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Score-CAM map before ReLU: sum_c w_c A_c, float32 [B, h, w], for images x float
    [B, 3, H, W] in [0, 1] and their layer activations A float [B, C, h, w].

    Each channel's map is upsampled to H x W (bilinear; ``align_corners=True`` as
    pytorch-grad-cam's ``UpsamplingBilinear2d``), min-max scaled to [0, 1] per image and
    channel, and multiplied into the image (masked-out pixels become black: the model's
    [0, 1] input is masked, before its normalisation); the target's ``score`` of each masked
    image, softmax-normalised over the channels (``channel_softmax``), is the weight. A
    constant channel masks everything (a black image, scored once per image); without
    ``channel_softmax`` it weighs 0 (the authors' code skips it). ``channels``:
    only the ``channels`` channels of largest spatial variance take part (the others get weight
    0 and leave the softmax), an approximation for speed; None keeps all.
    """
    b, c, h, w = a.shape
    a = a.float()
    flat = a.flatten(2)
    lo, hi = flat.amin(2), flat.amax(2)  # [B, C]
    varying = hi > lo
    use = top_channels(flat.var(2, unbiased=False), torch.ones_like(varying), channels)
    bi, ki = (use & varying).nonzero(as_tuple=True)  # (image, channel) pairs
    logits = torch.full((b, c), -torch.inf, device=a.device)

    def compute(idx: torch.Tensor) -> torch.Tensor:
        ib, ic = bi[idx], ki[idx]
        up = F.interpolate(a[ib, ic].unsqueeze(1), size=x.shape[-2:], mode="bilinear",
                           align_corners=align_corners)
        flat_up = up.flatten(1)
        lo_up = flat_up.amin(1).view(-1, 1, 1, 1)
        span = (flat_up.amax(1).view(-1, 1, 1, 1) - lo_up)
        mask = torch.where(span > 0, (up - lo_up) / span.clamp_min(1e-30), torch.zeros_like(up))
        return target_scores(model(x[ib] * mask), target[ib], score).float()

    def done(idx: torch.Tensor, s: torch.Tensor) -> None:
        logits[bi[idx], ki[idx]] = s

    with torch.no_grad():
        for_chunks(len(bi), internal_batch_size, compute, done, device=a.device)
        flat_ch = use & ~varying
        dark = flat_ch.any(1).nonzero(as_tuple=True)[0]
        if len(dark):
            black = batched_scores(model, len(dark), lambda i: torch.zeros_like(x[dark[i]]),
                                   target[dark], internal_batch_size=internal_batch_size,
                                   score=score)
            logits[dark] = torch.where(flat_ch[dark], black.unsqueeze(1), logits[dark])
    if channel_softmax:
        weights = torch.softmax(logits, dim=1)
    else:
        weights = torch.where(use & varying, logits, torch.zeros_like(logits))
    return (weights.view(b, c, 1, 1) * a).sum(1)


def ablationcam_cam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    a: torch.Tensor,
    y: torch.Tensor,
    path: str,
    *,
    score: str = "logit",
    channels: int | None = None,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Ablation-CAM map before ReLU: sum_c w_c A_c, float32 [B, h, w], w_c = (y - y_c) / y.

    x float [B, 3, H, W]; A float [B, C, h, w] the activations of layer ``path`` and y float
    [B] the target's ``score`` on x; y_c is the score with channel c of the layer's output set
    to 0 (the paper's ablation; the rest of the network runs on the recorded activations). A
    channel that is all zero is not run (ablating it changes nothing: w_c = 0 exactly).
    ``channels``: only the ``channels`` channels of largest mean |A| are ablated (the others
    get w_c = 0), an approximation for speed; None ablates all. w_c is 0 where y = 0.
    """
    module = layer_module(model, path)
    b, c = a.shape[:2]
    a = a.float()
    active = a.flatten(2).abs().amax(2) > 0
    bi, ki = top_channels(a.abs().mean(dim=(2, 3)), active, channels).nonzero(as_tuple=True)
    ablated = y.float().view(-1, 1).expand(b, c).clone()
    current: list[torch.Tensor] = []

    def replace(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> torch.Tensor:
        return current[0].to(out.dtype)

    def compute(idx: torch.Tensor) -> torch.Tensor:
        ib, ic = bi[idx], ki[idx]
        acts = a[ib].clone()
        acts[torch.arange(len(idx), device=a.device), ic] = 0
        current[:] = [acts]
        return target_scores(model(x[ib]), target[ib], score).float()

    def done(idx: torch.Tensor, s: torch.Tensor) -> None:
        ablated[bi[idx], ki[idx]] = s

    handle = module.register_forward_hook(replace)
    try:
        with torch.no_grad():
            for_chunks(len(bi), internal_batch_size, compute, done, device=a.device)
    finally:
        handle.remove()
    y = y.float().view(-1, 1)
    weights = torch.where(y != 0, (y - ablated) / torch.where(y != 0, y, torch.ones_like(y)),
                          torch.zeros_like(ablated))
    return (weights.view(b, c, 1, 1) * a).sum(1)


def _gradient_cam(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    layer: str | None,
    score: str,
    internal_batch_size: int,
) -> torch.Tensor:
    a, g, _ = capture_layer(model, x, target, layer or find_target_layer(model), score=score,
                            internal_batch_size=internal_batch_size)
    return cam_attribution(fn(a, g), x.shape[-2:])  # type: ignore[arg-type]


@register("gradcam_pp", map_reduce="sum")
def gradcam_pp(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018): float32 [B, 3, H, W], each channel cam / 3 >= 0.

    1 forward pass and 1 backward pass (score to layer) per image. Differs from
    pytorch-grad-cam on purpose: no 1e-6
    added to alpha's denominator (the paper has none; alpha = 0 where the denominator is 0),
    so the two agree where G^2 >> 1e-6.
    """
    return _gradient_cam(gradcam_pp_cam, model, x, target, layer, score, internal_batch_size)


@register("xgradcam", map_reduce="sum")
def xgradcam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): float32 [B, 3, H, W], each channel cam / 3 >= 0.

    1 forward pass and 1 backward pass (score to layer) per image. Differs from
    pytorch-grad-cam on purpose: no 1e-7
    added to the channel's activation sum (a channel summing to 0 gets weight 0).
    """
    return _gradient_cam(xgradcam_cam, model, x, target, layer, score, internal_batch_size)


@register("layercam", map_reduce="sum")
def layercam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Layer-CAM (Jiang et al. 2021) at one layer: float32 [B, 3, H, W], each channel
    cam / 3 >= 0. 1 forward pass and 1 backward pass (score to layer) per image. No
    difference from pytorch-grad-cam beyond the module's (no min-max scaling)."""
    return _gradient_cam(layercam_cam, model, x, target, layer, score, internal_batch_size)


@register("hirescam", map_reduce="sum")
def hirescam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): float32 [B, 3, H, W], each channel cam / 3 >= 0.
    1 forward pass and 1 backward pass (score to layer) per image. No difference from
    pytorch-grad-cam beyond the module's (no min-max scaling)."""
    return _gradient_cam(hirescam_cam, model, x, target, layer, score, internal_batch_size)


@register("eigencam", map_reduce="sum")
def eigencam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): float32 [B, 3, H, W], each channel cam / 3 >= 0.

    Class-agnostic (the target is not used); 1 forward pass per image and one SVD of the
    [hw, C] activations. Differs from pytorch-grad-cam on purpose: the principal direction's
    sign is fixed (see :func:`eigencam_cam`), where pytorch-grad-cam keeps the SVD's
    arbitrary sign (its map can come out as the ReLU of the negated projection).
    """
    a, _, _ = capture_layer(model, x, target, layer or find_target_layer(model),
                            gradients=False, internal_batch_size=internal_batch_size)
    return cam_attribution(eigencam_cam(a), x.shape[-2:])


@register("scorecam", fast={"channels": FAST_CHANNELS}, map_reduce="sum")
def scorecam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    score: str = "logit",
    channel_softmax: bool = True,
    channels: int | None = None,
    align_corners: bool = True,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020): float32 [B, 3, H, W], each channel cam / 3 >= 0.

    Cost per image: 1 forward pass for the activations, then 1 forward pass per channel of
    the layer that is not constant (up to 512 on ResNet-18, 2048 on ResNet-50; at most
    ``channels``, 64 in the fast profile), plus 1 for the black image when a channel is
    constant; no backward pass. Weights as pytorch-grad-cam: the target's logit of each
    masked image, softmax over the channels. The authors' code (haofanwang/Score-CAM,
    cam/scorecam.py) weighs with the softmax probability of the target class, skips constant
    channels and upsamples with ``align_corners=False``: ``score="prob",
    channel_softmax=False, align_corners=False`` here (it masks the normalised input, salbench
    the [0, 1] image, so masked-out pixels are black). Differs from pytorch-grad-cam on
    purpose: a constant channel's mask is 0 without pytorch-grad-cam's 1e-8 in the min-max
    denominator; the ``channels`` cap (all channels by default, as pytorch-grad-cam) is
    salbench's. See :func:`scorecam_cam`.
    """
    path = layer or find_target_layer(model)
    a, _, _ = capture_layer(model, x, target, path, gradients=False,
                            internal_batch_size=internal_batch_size)
    cam = scorecam_cam(model, x, target, a, score=score, channel_softmax=channel_softmax,
                       channels=channels, align_corners=align_corners,
                       internal_batch_size=internal_batch_size)
    return cam_attribution(cam, x.shape[-2:])


@register("ablationcam", fast={"channels": FAST_CHANNELS}, map_reduce="sum")
def ablationcam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    score: str = "logit",
    channels: int | None = None,
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020): float32 [B, 3, H, W], each channel cam / 3 >= 0.

    Cost per image: 1 forward pass, then 1 forward pass per channel of the layer that is not
    all zero (up to 512 on ResNet-18, 2048 on ResNet-50; at most ``channels``, 64 in the fast
    profile); no backward pass. Differs from pytorch-grad-cam on purpose: an ablated channel
    is always set to 0 (the paper), where pytorch-grad-cam sets it to min - 1e7 when the
    layer's output has no zero; its ``ratio_channels_to_ablate`` selection is replaced by the
    ``channels`` cap (largest mean |A|). See :func:`ablationcam_cam`.
    """
    path = layer or find_target_layer(model)
    a, _, y = capture_layer(model, x, target, path, gradients=False, score=score,
                            internal_batch_size=internal_batch_size)
    cam = ablationcam_cam(model, x, target, a, y, path, score=score, channels=channels,
                          internal_batch_size=internal_batch_size)
    return cam_attribution(cam, x.shape[-2:])
