"""DeepLIFT with the rescale rule (Shrikumar, Greenside, Kundaje, ICML 2017; SPEC 4).

DeepLIFT explains the difference f_c(x) - f_c(x') of the target logit between the input x and
a reference x' (black by default, as in papers 003 and 004). Every module is back-propagated
with a *multiplier* instead of its gradient:

- linear modules (convolution, linear, batch-norm in eval mode, average pooling, the
  residual additions and the Classifier's normalisation): the gradient, unchanged;
- element-wise non-linearities (ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Sigmoid, Tanh,
  Softplus, Hardswish, Hardtanh): the rescale rule m = (y - y') / (z - z') for the
  difference of the pre-activation z - z' and of the activation y - y' between the input
  and the reference, with the plain gradient where |z - z'| < ``eps`` (Captum's choice);
- max pooling: the difference of the pooled outputs is routed to the window maxima of the
  input and of the reference, max(y, y') - y' to the input's and y - max(y, y') to the
  reference's, then divided by the difference of the inputs (Captum's ``maxpool`` rule).

The attribution is (x - x') * m(x), float32 [B, 3, H, W] in the [0, 1] input space; its sum is
f_c(x) - f_c(x') (summation-to-delta) up to float rounding, reported per image as
``completeness_error`` = |sum(attr) - (f_c(x) - f_c(x'))| with ``score_delta`` =
f_c(x) - f_c(x'). A non-linearity that is not a module (``F.relu`` in a forward, an attention
product) gets its gradient, and shows up there.

Why not Captum's ``DeepLift``: it keeps each module's input and output as module attributes,
so a module that is called twice in one forward pass (torchvision's ResNet blocks call their
``relu`` twice) fails ("your module is being used more than once"). Here the activations are
kept per call, on a stack, so ResNets work. The rules are Captum's; the test suite checks the
result against Captum's ``DeepLift`` on a network without re-used modules. One deliberate
difference: where max-pooling windows overlap (ResNet's 3x3 / stride 2 stem) the multipliers
of the windows that share a pixel are added (scatter-add), as a gradient is; Captum's
``max_unpool`` keeps one of them, which breaks summation-to-delta.

Batching: input and reference go through the model together (a batch of 2c rows for c
images, ``internal_batch_size`` rows at most); cost per image: one forward pass on 2 rows and
one backward pass (one "forward+backward pass" on a doubled batch). The hooks are registered
for the call and removed afterwards, also on error; the model's weights are not touched.

Numeric settings: the network runs eagerly in float32 (``Classifier.logits``), whatever the
model's ``precision`` / ``compile`` settings say: the rules are module hooks, which a compiled
graph would skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from salbench.methods.baselines import model_baseline
from salbench.methods.engine import for_chunks
from salbench.methods.registry import Attribution, register
from salbench.models.base import Classifier

INFO_COLUMNS = ("completeness_error", "score_delta")

#: Element-wise non-linearities that get the rescale rule.
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh,
    nn.Softplus, nn.Hardswish, nn.Hardtanh,
)


def _halves(t: torch.Tensor) -> torch.Tensor:
    """[2c, ...] (input rows, then reference rows) -> the difference, repeated: [2c, ...]."""
    a, b = t.chunk(2)
    d = a - b
    return torch.cat([d, d])


class _Rescale(torch.autograd.Function):
    """Value of ``y``; backward: the rescale multiplier (y - y') / (z - z')."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, y: torch.Tensor, module: nn.Module,
                eps: float) -> torch.Tensor:
        ctx.save_for_backward(z, y)
        ctx.module, ctx.eps = module, eps
        return y.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, y = ctx.saved_tensors
        dz, dy = _halves(z), _halves(y)
        small = dz.abs() < ctx.eps
        rescaled = g * dy / torch.where(small, torch.ones_like(dz), dz)
        if not small.any():
            return rescaled, None, None, None
        with torch.enable_grad():  # the plain gradient where input and reference agree
            zz = z.detach().requires_grad_(True)
            (plain,) = torch.autograd.grad(ctx.module.forward(zz * 1.0), zz, g)
        return torch.where(small, plain, rescaled), None, None, None


def _unpool_add(v: torch.Tensor, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Values v [N, C, h, w] added at the flat positions idx of planes shaped like ``like``."""
    out = torch.zeros(like.shape[0], like.shape[1], like.shape[2] * like.shape[3],
                      dtype=v.dtype, device=v.device)
    out.scatter_add_(2, idx.flatten(2), v.flatten(2))
    return out.view_as(like)


class _MaxPoolRule(torch.autograd.Function):
    """2-D max pooling of ``z`` (the module's settings); backward: Captum's maxpool rule."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, module: nn.MaxPool2d, eps: float) -> torch.Tensor:
        out, idx = F.max_pool2d(z, module.kernel_size, module.stride, module.padding,
                                module.dilation, module.ceil_mode, return_indices=True)
        ctx.save_for_backward(z, out, idx)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        z, out, idx = ctx.saved_tensors
        y, y_ref = out.chunk(2)
        top = torch.max(y, y_ref)
        routed = _unpool_add(g * torch.cat([top - y_ref, y - top]), idx, z)
        part_in, part_ref = routed.chunk(2)
        both = part_in + part_ref
        dz = _halves(z)
        small = dz.abs() < ctx.eps
        rescaled = torch.cat([both, both]) / torch.where(small, torch.ones_like(dz), dz)
        return torch.where(small, _unpool_add(g, idx, z), rescaled), None, None


@contextmanager
def deeplift_hooks(model: nn.Module, eps: float = 1e-10) -> Iterator[None]:
    """Replace, for the duration, the backward pass of every element-wise non-linearity and
    2-D max pooling of ``model`` by DeepLIFT's rules (inputs: [2c, ...], the c input rows
    followed by their c reference rows). Hooks are per call, so re-used modules work; all
    are removed on exit."""
    stacks: dict[int, list[torch.Tensor]] = {}
    handles = []

    def pre(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        # the pre-activation, kept before an in-place module overwrites it
        stacks.setdefault(id(module), []).append(inputs[0].clone())

    def post_elementwise(module: nn.Module, _inputs: Any, output: torch.Tensor
                         ) -> torch.Tensor:
        z = stacks[id(module)].pop()
        return _Rescale.apply(z, output.detach(), module, eps)

    def post_maxpool(module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        z = stacks[id(module)].pop()
        return _MaxPoolRule.apply(z, module, eps)

    try:
        for module in model.modules():
            if isinstance(module, ELEMENTWISE):
                post = post_elementwise
            elif isinstance(module, nn.MaxPool2d):
                post = post_maxpool
            else:
                continue
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
        yield
    finally:
        for h in handles:
            h.remove()


@register("deeplift", info_columns=INFO_COLUMNS)
def deeplift(
    model: Classifier,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    baseline: str | float = "black",
    eps: float = 1e-10,
    internal_batch_size: int = 64,
) -> Attribution:
    """DeepLIFT, rescale rule (Shrikumar 2017), on the target logit: float32 [B, 3, H, W].

    x: float [B, 3, H, W] in [0, 1]; target int64 [B]. ``baseline``: the reference x', any
    :func:`~salbench.methods.baselines.model_baseline` kind ("black", "preprocessed_zero",
    "blur", a number, ...). ``eps``: below this |z - z'| a non-linearity passes its gradient.
    ``internal_batch_size``: rows per forward/backward pass (input and reference rows count
    both). Reports ``completeness_error`` and ``score_delta`` per image (module docstring).
    """
    x = x.detach().float()
    ref = model_baseline(model, x, baseline).float()
    attr = torch.empty_like(x)
    delta = torch.empty(len(x), dtype=torch.float64, device=x.device)
    per_chunk = max(1, int(internal_batch_size) // 2)
    forward = getattr(model, "logits", model)  # eager float32, past the numeric settings

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = len(idx)
        pts = torch.cat([x[idx], ref[idx]]).requires_grad_(True)
        with deeplift_hooks(model, eps):
            logits = forward(pts)
        t = target[idx].repeat(2)
        s = logits.gather(1, t.view(-1, 1)).squeeze(1)
        (grad,) = torch.autograd.grad(s.sum(), pts)
        return (x[idx] - ref[idx]) * grad[:c], (s[:c] - s[c:]).detach().double()

    def done(idx: torch.Tensor, result: tuple[torch.Tensor, torch.Tensor]) -> None:
        attr[idx], delta[idx] = result[0].float(), result[1]

    with torch.enable_grad():
        for_chunks(len(x), per_chunk, compute, done, device=x.device)
    err = (attr.double().sum(dim=(1, 2, 3)) - delta).abs()
    return Attribution(attr, {"completeness_error": err.float(), "score_delta": delta.float()})
