"""An independent transcription of the FullGrad authors' code (github.com/idiap/fullgrad-saliency,
``saliency/fullgrad.py`` and ``saliency/tensor_extractor.py``) for the tests.

Bias layers are the authors' module types: nn.Conv2d and nn.Linear with a bias, and every
nn.BatchNorm2d with its effective bias beta - running_mean * gamma / sqrt(running_var + eps);
the gradient is taken at the module's output (a tensor hook registered in a forward hook, as
pytorch-grad-cam does: the authors' ``register_backward_hook`` is deprecated and refuses the
in-place ReLUs of torchvision's ResNets). Only for models whose batch-norm modules output the
batch-norm itself (not timm-style BatchNormAct2d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _post_process(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The authors' ``_postProcess``: abs, then per-image min-max over all channels."""
    t = t.abs()
    flat = t.view(t.size(0), -1)
    t = t - flat.min(1, keepdim=True)[0].unsqueeze(1).unsqueeze(1)
    flat = t.view(t.size(0), -1)
    return t / (flat.max(1, keepdim=True)[0].unsqueeze(1).unsqueeze(1) + eps)


def _bias_hook(b: torch.Tensor, terms: list[torch.Tensor]):
    """Forward hook: on the backward pass, append gradient(output) * bias to ``terms``."""

    def fwd(_m, _i, out):
        shape = [1, -1] + [1] * (out.ndim - 2)
        out.register_hook(lambda g: terms.append(g * b.view(shape)))

    return fwd


def authors_fullgrad(model: nn.Module, x: torch.Tensor, target: torch.Tensor
                     ) -> tuple[torch.Tensor, float]:
    """FullGrad map float [B, 1, H, W] of the target logits, and the largest completeness
    error |logit - (sum(grad * x) + sum of all bias terms)| over the batch (for a salbench
    Classifier, the bias terms include its input normalisation's)."""
    terms: list[torch.Tensor] = []
    handles = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            b = -(m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)) + m.bias
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            b = m.bias
        else:
            continue

        handles.append(m.register_forward_hook(_bias_hook(b.detach(), terms)))
    xv = x.detach().clone().requires_grad_(True)
    try:
        logits = model(xv)
        score = logits.gather(1, target.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, xv)
    finally:
        for h in handles:
            h.remove()
    gxi = grad * xv.detach()
    total = gxi.flatten(1).sum(1) + sum(t.flatten(1).sum(1) for t in terms)
    if hasattr(model, "mean"):  # a Classifier normalises (x - mean) / std inside: a bias
        # -mean / std whose gradient is std * grad, i.e. the term -mean * grad
        total = total - (model.mean * grad).flatten(1).sum(1)
    err = (logits.detach().gather(1, target.view(-1, 1)).squeeze(1) - total).abs().max()
    cam = _post_process(gxi).sum(1, keepdim=True)
    for t in terms:
        if t.ndim == 4:
            up = F.interpolate(_post_process(t), size=x.shape[-2:], mode="bilinear",
                               align_corners=True)
            cam = cam + up.sum(1, keepdim=True)
    return cam.detach(), float(err)
