"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): input-gradient and bias-gradients, summed.

A ReLU network's target logit decomposes exactly ("completeness") into the input term and one
term per bias: f(x) = sum(grad_x f * x) + sum_l sum(grad_{z_l} f * b_l), where z_l is the
output of layer l and b_l its bias broadcast over z_l. The saliency map is

    S(x) = sum_c psi(|grad_x f * x|)_c + sum_{l spatial} sum_c psi(|grad_{z_l} f * b_l|)_c

with psi = per-image min-max rescaling to [0, 1] (``(t - min) / (max - min + 1e-6)``), then
bilinear upsampling of the layer's [h, w] map to the input's [H, W]; only the layers whose
output is a feature map [B, C, h, w] enter S (the authors' code skips the fully connected
layers' [B, K] terms, which have no position). This follows the authors' code
(github.com/idiap/fullgrad-saliency, ``saliency/fullgrad.py`` and ``tensor_extractor.py``):

- bias terms: every 2-D convolution with a bias, and every batch-norm layer with its
  effective bias beta - running_mean * gamma / sqrt(running_var + eps) (in eval mode a
  batch-norm is x * gamma / sqrt(var + eps) + that bias); the gradient is taken at the
  layer's output (for a batch-norm, the affine output before any activation that follows);
- psi rescales each layer's map over all its channels at once (``rescale="layer"``, the
  authors' ``_postProcess``) before upsampling with ``align_corners=True``.

pytorch-grad-cam's ``FullGrad`` differs on purpose in two places, both selectable here:
it rescales each channel on its own (``rescale="channel"``) and resizes with OpenCV, whose
bilinear resize is ``align_corners=False``; it also min-max normalises the final sum. With
``rescale="channel", align_corners=False`` this method equals grad-cam's map up to that final
normalisation (tests/test_fullgrad.py measures it on ResNet-18 and VGG-16).

Where salbench differs from the authors' code, and why:

- the input term is taken on salbench's model input, the [0, 1] image, as every salbench
  method (the authors feed the ImageNet-normalised image, so their input term is
  grad * (x - mean) in [0, 1] units). The normalisation's own implicit bias (-mean / std)
  is not a term of the map; the completeness check below uses the network's normalised input;
- bias terms are found by tracing the forward pass (``torch.overrides.TorchFunctionMode``)
  rather than by module type, so a batch-norm inside a module that also applies an
  activation (timm's and salbench's ``BatchNormAct2d``) and functional convolutions count too;
- ReLU6 / Hardtanh clip at constants: where the input is clipped the layer outputs the
  constant, an implicit bias. Its term grad_{z} f * (max_val [z >= max_val] + min_val
  [z <= min_val]) is added like any other bias term (spatial ones enter the map), so the
  decomposition stays complete on EfficientNet-Lite (the authors' completeness check fails on
  such networks, grad-cam leaves the term out).

Unsupported architectures (BadInputError naming the module and operation): FullGrad needs a
network that is piecewise linear between its biases. Refused: smooth activations with
implicit biases (SiLU, GELU, ELU, SELU, CELU, Softplus, Mish, Hardswish, Hardsigmoid,
sigmoid, tanh), input-dependent normalisations (LayerNorm, GroupNorm, InstanceNorm, local
response norm), batch-norm in training mode or without running statistics, 1-D / 3-D
convolutions with biases, and a model with no spatial bias term at all (its map would
silently be |gradient x input|). An operation this list misses shows up as a broken
completeness: with ``score="logit"`` every call checks, per image, that the logit equals the
sum of the input term and all bias terms (including the fully connected ones) to 1e-3 of the
terms' total magnitude, and raises BadInputError otherwise. With ``score="prob"`` or
``"log_prob"`` the score is not a sum of bias terms and the check is skipped. A model that
runs its layers in bfloat16 / float16 (``precision: bf16``) is not refused (its rounding
alone breaks completeness by a few percent: 0.4 % and 8 % of the logit measured on
ResNet-18 and EfficientNet-Lite0 on CPU); ``completeness_error`` still reports it. Not tried:
``compile: true`` (the tracer needs eager execution).

Output: float32 [B, 3, H, W], each channel S / 3 (S >= 0), registered with map reduction
"sum" (as Grad-CAM), so ``to_map`` returns S. Per image it reports ``completeness_error`` =
|f(x) - sum of all terms| (NaN when not checked). Cost: one forward+backward pass per image;
all bias gradients of a chunk of ``internal_batch_size`` images come from that one backward
pass (tensor hooks), each rescaled as it arrives. Bilinear upsampling is linear, so the
channels of a layer and the layers of one resolution are summed before it and each resolution
is upsampled once (the authors upsample every channel of every layer; equal up to float
rounding; on EfficientNet-Lite0 at 224 px, 3 images took 73-86 s upsampling every channel and
1.5-2 s this way, on the shared 2-core machine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from salbench.errors import BadInputError, ConfigError
from salbench.methods.engine import for_chunks, target_scores
from salbench.methods.registry import Attribution, register
from salbench.models.base import Classifier

RESCALES = ("layer", "channel")
EPS = 1e-6  # the authors' _postProcess
COMPLETENESS_TOL = 1e-3

_UNSUPPORTED_NAMES = (
    "silu", "gelu", "elu", "selu", "celu", "softplus", "mish", "hardswish", "hardsigmoid",
    "sigmoid", "tanh", "logsigmoid", "softsign", "tanhshrink", "layer_norm", "group_norm",
    "instance_norm", "local_response_norm", "rms_norm", "scaled_dot_product_attention",
)
#: functions whose use inside the model makes FullGrad's decomposition undefined
UNSUPPORTED: dict[Callable[..., Any], str] = {
    fn: name
    for name in _UNSUPPORTED_NAMES
    for fn in (getattr(F, name, None), getattr(torch, name, None),
               getattr(torch.Tensor, name, None))
    if fn is not None
}
_CONV_OTHER = {torch.conv1d: "conv1d", torch.conv3d: "conv3d",
               torch.conv_transpose1d: "conv_transpose1d",
               torch.conv_transpose3d: "conv_transpose3d"}
_CLIPS = {F.hardtanh: (-1.0, 1.0), F.relu6: (0.0, 6.0)}


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], i: int, name: str, default: Any = None
         ) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


@dataclass
class _Chunk:
    """Per-chunk accumulators, filled by the tensor hooks during the backward pass.

    low: (h, w) -> float32 [c, 1, h, w], the rescaled, channel-summed spatial terms of that
    resolution (upsampling is linear, so each resolution is upsampled once, in :meth:`cam`);
    bias_sum: float64 [c], the sum of every bias term per image; spatial: the number of
    spatial bias terms seen.
    """

    rescale: str
    bias_sum: torch.Tensor
    low: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    spatial: int = 0
    reduced_precision: bool = False
    handles: list[Any] = field(default_factory=list)

    def add(self, grad: torch.Tensor, bias: torch.Tensor) -> None:
        """One bias term: grad float [c, C, ...] at the layer output, bias broadcastable."""
        term = grad.float() * bias.float()
        self.bias_sum += term.flatten(1).sum(1).double()
        if term.ndim == 4:
            hw = (int(term.shape[-2]), int(term.shape[-1]))
            t = rescaled_sum(term, self.rescale)
            self.low[hw] = self.low[hw] + t if hw in self.low else t

    def cam(self, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
        """The sum of all spatial terms upsampled to ``size``: float32 [c, 1, H, W]."""
        return sum(upsample(t, size, align_corners) for t in self.low.values())


def rescaled_sum(term: torch.Tensor, rescale: str = "layer") -> torch.Tensor:
    """psi of one term float [c, C, h, w] before upsampling, summed over channels: [c, 1, h, w].

    |term| min-max rescaled to [0, 1] per image over all channels (``"layer"``) or per image
    and channel (``"channel"``).
    """
    t = term.abs().float()
    if rescale == "layer":  # sum_c (t_c - lo) / d = (sum_c t_c - C lo) / d, lo and d per image
        lo, hi = torch.aminmax(t.flatten(1), dim=1)
        lo, d = lo.view(-1, 1, 1, 1), (hi - lo).view(-1, 1, 1, 1) + EPS
        return (t.sum(1, keepdim=True) - t.shape[1] * lo) / d
    lo, hi = torch.aminmax(t.flatten(2), dim=2)  # [c, C] per channel
    w = 1.0 / (hi - lo + EPS)
    shift = (lo * w).sum(1).view(-1, 1, 1, 1)
    return (t * w[:, :, None, None]).sum(1, keepdim=True) - shift


def upsample(t: torch.Tensor, size: tuple[int, int], align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize of float [c, 1, h, w] to ``size`` (unchanged if already that size)."""
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)


class _BiasTracer(TorchFunctionMode):
    """Sees every torch function of the model's forward pass; hooks the bias layers' outputs.

    ``where()`` names the innermost module running (for error messages).
    """

    def __init__(self, chunk: _Chunk, where: Callable[[], str]) -> None:
        super().__init__()
        self.chunk = chunk
        self.where = where

    def _refuse(self, what: str, why: str) -> BadInputError:
        return BadInputError(f"fullgrad: module {self.where()!r} uses {what}; {why}")

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in UNSUPPORTED:
            raise self._refuse(UNSUPPORTED[func], "FullGrad needs a network that is piecewise "
                               "linear between its biases (this operation has an implicit, "
                               "input-dependent bias); see salbench.methods.fullgrad")
        if func in _CONV_OTHER and _arg(args, kwargs, 2, "bias") is not None:
            raise self._refuse(_CONV_OTHER[func], "fullgrad handles only 2-D convolutions' biases")
        if func is F.batch_norm and (_arg(args, kwargs, 5, "training", False)
                                     or _arg(args, kwargs, 1, "running_mean") is None):
            raise self._refuse("batch_norm in training mode or without running statistics",
                               "its bias is not a constant; put the model in eval mode")
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return out
        bias = None
        if func in (torch.conv2d, torch.conv_transpose2d, F.linear):
            bias = _arg(args, kwargs, 2, "bias")
        elif func is F.batch_norm:
            bias = _bn_bias(*(_arg(args, kwargs, i, n) for i, n in
                              enumerate(("input", "running_mean", "running_var", "weight",
                                         "bias"))), _arg(args, kwargs, 7, "eps", 1e-5))
        elif func in _CLIPS:
            lo_default, hi_default = _CLIPS[func]
            lo = float(_arg(args, kwargs, 1, "min_val", lo_default)) if func is F.hardtanh \
                else lo_default
            hi = float(_arg(args, kwargs, 2, "max_val", hi_default)) if func is F.hardtanh \
                else hi_default
            z = out.detach()
            # the output is the constant where the input was clipped (gradient 0 there)
            clipped = (z >= hi).to(z.dtype) * hi
            if lo != 0.0:
                clipped += (z <= lo).to(z.dtype) * lo
            self._hook(out, clipped)
            return out
        if bias is not None:
            shape = [1] * out.ndim
            shape[1] = -1
            self._hook(out, bias.detach().view(shape))
        return out

    def _hook(self, out: torch.Tensor, bias: torch.Tensor) -> None:
        if out.ndim == 4:
            self.chunk.spatial += 1
        if out.dtype in (torch.float16, torch.bfloat16):
            self.chunk.reduced_precision = True
        self.chunk.handles.append(out.register_hook(lambda g: self.chunk.add(g, bias)))


def _bn_bias(_x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None,
             bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Batch-norm's effective bias beta - mean * gamma / sqrt(var + eps), float [C]."""
    gamma = weight if weight is not None else torch.ones_like(mean)
    beta = bias if bias is not None else torch.zeros_like(mean)
    return beta - mean * gamma / torch.sqrt(var + eps)


class _ModuleStack:
    """Forward pre/post hooks on every module that keep the name of the one running."""

    def __init__(self, model: nn.Module) -> None:
        self.stack: list[str] = []
        self.handles = []
        for name, module in model.named_modules():
            label = f"{name or '<model>'} ({type(module).__name__})"
            self.handles.append(module.register_forward_pre_hook(
                lambda _m, _i, label=label: self.stack.append(label)))
            self.handles.append(module.register_forward_hook(self._pop))

    def _pop(self, _m: nn.Module, _i: object, _o: object) -> None:
        self.stack.pop()

    def where(self) -> str:
        return self.stack[-1] if self.stack else "<model>"

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@register("fullgrad", map_reduce="sum", info_columns=("completeness_error",))
def fullgrad(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    rescale: str = "layer",
    align_corners: bool = True,
    score: str = "logit",
    internal_batch_size: int = 64,
) -> Attribution:
    """FullGrad (Srinivas & Fleuret 2019), input- and bias-gradients, the authors' processing.

    Returns float32 [B, 3, H, W], each channel S / 3 with S >= 0 (see the module docstring).

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. ``rescale``: "layer" (the authors'
    code) or "channel" (pytorch-grad-cam); ``align_corners`` of the bilinear upsampling (True
    as the authors; grad-cam's OpenCV resize is False). One forward+backward pass per image.
    """
    if rescale not in RESCALES:
        raise ConfigError(f"fullgrad: rescale must be one of {RESCALES}, got {rescale!r}")
    size = (int(x.shape[-2]), int(x.shape[-1]))
    net = getattr(model, "net", None)
    out = torch.zeros_like(x, dtype=torch.float32)
    err = torch.full((len(x),), float("nan"), dtype=torch.float32, device=x.device)

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xi = x[idx].detach().float().requires_grad_(True)
        chunk = _Chunk(rescale, torch.zeros(len(idx), dtype=torch.float64, device=x.device))
        inner: list[torch.Tensor] = []
        pre = None
        if isinstance(net, nn.Module):
            pre = net.register_forward_pre_hook(lambda _m, args: inner.append(args[0]))
        names = _ModuleStack(model)
        try:
            with _BiasTracer(chunk, names.where):
                logits = model(xi)
            s = target_scores(logits, target[idx], score)
            wrt = [xi] + ([inner[0]] if inner and inner[0].requires_grad else [])
            grads = torch.autograd.grad(s.sum(), wrt)
        finally:
            names.remove()
            if pre is not None:
                pre.remove()
            for h in chunk.handles:
                h.remove()
        if chunk.spatial == 0:
            raise BadInputError(
                "fullgrad: the model has no layer with a spatial bias (a Conv2d bias, a "
                "batch-norm, a clipping activation); its FullGrad map would be |gradient x "
                "input| alone. Use 'gxi' for that.")
        gxi = grads[0] * xi.detach()
        cam = chunk.cam(size, bool(align_corners)) + rescaled_sum(gxi, rescale)
        e = torch.full((len(idx),), float("nan"), device=x.device)
        if score == "logit":
            x0, g0 = (inner[0].detach(), grads[1]) if len(grads) > 1 else (xi.detach(), grads[0])
            inp = (g0 * x0).flatten(1).sum(1).double()
            total = inp + chunk.bias_sum
            f = s.detach().double()
            e = (f - total).abs()
            scale = f.abs() + inp.abs() + chunk.bias_sum.abs() + 1e-12
            bad = (e > COMPLETENESS_TOL * scale) & (not chunk.reduced_precision)
            if bool(bad.any()):
                i = int(torch.nonzero(bad)[0])
                raise BadInputError(
                    f"fullgrad: the bias terms do not add up to the logit (image {int(idx[i])}: "
                    f"logit {float(f[i]):.6g}, input + bias terms {float(total[i]):.6g}); the "
                    "model has an operation with an implicit bias that fullgrad does not "
                    "handle (see salbench.methods.fullgrad for what is supported)")
        return cam, e.float()

    def done(idx: torch.Tensor, result: tuple[torch.Tensor, torch.Tensor]) -> None:
        cam, e = result
        out[idx] = (cam / 3).expand(-1, 3, -1, -1)
        err[idx] = e

    with torch.enable_grad():
        for_chunks(len(x), internal_batch_size, compute, done, device=x.device)
    return Attribution(out, {"completeness_error": err})
