"""Grad-CAM (Selvaraju et al. 2017) with a per-architecture target-layer table.

cam = ReLU(sum_c w_c A_c), w_c = spatial mean of d score / d A_c, for the activations A
[B, C, h, w] of the target layer; upsampled bilinearly to the input size. The layer is the
last convolutional block of each registered architecture (``TARGET_LAYERS``), or, for any
other model, the last module whose output is a 4-D feature map with more than one spatial
position (found with one probe forward pass). The map is spread evenly over the three
channels (each holds cam / 3), and the method's map reduction is "sum", so ``to_map`` returns
the CAM itself. ``capture_layer`` (a layer's activations, gradients and the target's score,
batched) and ``cam_attribution`` (ReLU, upsampling, spread over channels) serve the other
CAMs too (:mod:`salbench.methods.cams`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salbench.errors import BadInputError
from salbench.methods.engine import for_chunks, target_scores
from salbench.methods.registry import register
from salbench.models.base import Classifier

#: model name (or name prefix) -> dotted module path of the Grad-CAM layer.
TARGET_LAYERS = {
    "efficientnet_lite": "net.bn2",  # conv_head + BN + ReLU6: the last feature map
    "resnet": "net.layer4",
    "vgg16": "net.features.29",  # last ReLU before the final max pool
    "vgg19": "net.features.35",
    "inception_v3": "net.Mixed_7c",
}


def find_target_layer(model: Classifier) -> str:
    """The module path of the Grad-CAM layer of ``model`` (table, else the last 4-D map)."""
    name = getattr(model, "name", "")
    for prefix, layer in TARGET_LAYERS.items():
        if name.startswith(prefix):
            return layer
    seen: list[str] = []
    hooks = []
    for path, module in model.named_modules():
        if path and not list(module.children()):
            def hook(_m: nn.Module, _i: object, out: object, path: str = path) -> None:
                if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-2:].numel() > 1:
                    seen.append(path)
            hooks.append(module.register_forward_hook(hook))
    try:
        h, w = model.input_size
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w, device=p.device, dtype=p.dtype))
    finally:
        for hk in hooks:
            hk.remove()
    if not seen:
        raise ValueError(f"model {name!r} has no 4-D feature map for Grad-CAM; pass layer=")
    return seen[-1]


def layer_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule of ``model`` at dotted ``path``; BadInputError (a ValueError) naming the
    path when there is none."""
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise BadInputError(f"Grad-CAM layer {path!r} not found in the model: {exc}") from None


def capture_layer(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    path: str,
    *,
    gradients: bool = True,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The activations of layer ``path`` for images ``x`` float [B, 3, H, W], in chunks of
    ``internal_batch_size`` (one forward pass per image, plus one backward with
    ``gradients``).

    Returns (A, G, s): A float32 [B, C, h, w], the layer's output; G float32 [B, C, h, w],
    d s / d A (None without ``gradients``); s float32 [B], the target's score (``score``:
    logit, prob or log_prob). BadInputError names the layer when it is missing or its output
    is not a 4-D feature map.
    """
    module = layer_module(model, path)
    acts: list[object] = []
    handle = module.register_forward_hook(lambda _m, _i, out: acts.append(out))
    parts: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        acts.clear()
        xi = x[idx].detach().requires_grad_(gradients)  # a graph even if the weights are frozen
        s = target_scores(model(xi), target[idx], score)
        a = acts[-1] if acts else None
        if not isinstance(a, torch.Tensor) or a.ndim != 4:
            got = "no output" if a is None else (
                f"shape {tuple(a.shape)}" if isinstance(a, torch.Tensor) else type(a).__name__)
            raise BadInputError(f"Grad-CAM layer {path!r} gave {got}; a CAM needs a 4-D "
                                "feature map [B, C, h, w] (pass layer= another module)")
        grad = torch.autograd.grad(s.sum(), a)[0].detach().float() if gradients else None
        return a.detach().float(), grad, s.detach().float()

    try:
        with torch.set_grad_enabled(gradients):
            for_chunks(len(x), internal_batch_size, compute, lambda _i, r: parts.append(r),
                       device=x.device)
    finally:
        handle.remove()
    a = torch.cat([p[0] for p in parts])
    g = torch.cat([p[1] for p in parts]) if gradients else None  # type: ignore[misc]
    return a, g, torch.cat([p[2] for p in parts])


def cam_attribution(cam: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """A layer's class activation map float [B, h, w] -> the attribution float32
    [B, 3, H, W] of input ``size`` (H, W): ReLU, bilinear upsampling (half-pixel centres),
    each channel cam / 3, so the method's "sum" map reduction returns the upsampled CAM."""
    up = F.interpolate(F.relu(cam.float()).unsqueeze(1), size=tuple(size), mode="bilinear",
                       align_corners=False)
    return (up / 3).expand(-1, 3, -1, -1).contiguous()


@register("gradcam", map_reduce="sum")
def gradcam(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    layer: str | None = None,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> torch.Tensor:
    """Grad-CAM of the target class at ``layer`` (default: the architecture's table entry),
    upsampled to the input: float32 [B, 3, H, W], each channel cam / 3, cam >= 0."""
    a, g, _ = capture_layer(model, x, target, layer or find_target_layer(model), score=score,
                            internal_batch_size=internal_batch_size)
    weights = g.mean(dim=(2, 3), keepdim=True)  # type: ignore[union-attr]
    return cam_attribution((weights * a).sum(1), x.shape[-2:])
