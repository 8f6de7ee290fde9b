"""Grad-CAM (Selvaraju et al. 2017) with a per-architecture target-layer table.

cam = ReLU(sum_c w_c A_c), w_c = spatial mean of d score / d A_c, for the activations A
[B, C, h, w] of the target layer; upsampled bilinearly to the input size. The layer is the
last convolutional block of each registered architecture (``TARGET_LAYERS``), or, for any
other model, the last module whose output is a 4-D feature map with more than one spatial
position (found with one probe forward pass). The map is spread evenly over the three
channels (each holds cam / 3), and the method's map reduction is "sum", so ``to_map`` returns
the CAM itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

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


def _module(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise ValueError(f"Grad-CAM layer {path!r} not found in the model: {exc}") from None


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
    module = _module(model, layer or find_target_layer(model))
    acts: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: acts.append(out))
    out = torch.zeros_like(x, dtype=torch.float32)

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        acts.clear()
        xi = x[idx].detach().requires_grad_(True)
        s = target_scores(model(xi), target[idx], score)
        (grad,) = torch.autograd.grad(s.sum(), acts[-1])
        return acts[-1].detach().float(), grad.float()

    def done(idx: torch.Tensor, result: tuple[torch.Tensor, torch.Tensor]) -> None:
        a, grad = result
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * a).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out[idx] = (cam / 3).expand(-1, 3, -1, -1)

    try:
        with torch.enable_grad():
            for_chunks(len(x), internal_batch_size, compute, done, device=x.device)
    finally:
        handle.remove()
    return out
