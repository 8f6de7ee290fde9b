"""Numeric settings of a model's passes: precision, memory format, compilation, determinism.

A run sets them for every model (``precision: bf16``) or per model
(``models: [{name: resnet50, precision: tf32}]``); they are part of the model's cell key
(:func:`salbench.keys.model_key`), so ``--reuse`` never mixes a bf16 cell into an fp32 run,
and the manifest records them per model with the model stage's torch threads.

- ``precision``:

  - ``fp32`` (the default): strict float32. TF32 is off for cuDNN convolutions and CUDA
    matmuls (``torch.backends.cudnn.allow_tf32`` / ``torch.backends.cuda.matmul.allow_tf32``
    False), so a GPU run computes what a CPU run computes, to float32 rounding.
  - ``tf32``: TF32 on for both (Ampere and later GPUs: a 10-bit mantissa inside
    convolutions and matmuls, float32 everywhere else). On CPU it equals ``fp32``.
  - ``bf16``: the model's forward runs under ``torch.autocast`` with bfloat16 (on the
    model's device type: CUDA, or CPU's oneDNN), and its logits come back as float32.
    What stays float32: the input and everything the methods compute around the model (the
    path points and their interpolation, the baselines, IDGI's and every path method's
    accumulation of gradients, SmoothGrad's noise and means), the input gradients autograd
    returns (the input is float32), the logits and softmax the metrics read, and the maps.
    Inside the forward (and its backward), autocast's op lists decide: convolutions,
    matmuls and linear layers in bfloat16, normalisations, reductions and softmax in
    float32.

- ``channels_last``: the model's weights and its input in channels-last memory format
  (NHWC): faster convolutions on GPUs with tensor cores, the same arithmetic up to the
  order of float32 sums (maps move ~1e-3 relative on EfficientNet-Lite0; BENCHMARKS.md).
- ``compile``: the model's forward through ``torch.compile`` (compiled once per model
  object and input shape; the first call of each shape pays the compilation).
- ``deterministic``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` around the
  model's passes (on by default): where torch has a deterministic kernel (cuDNN's
  convolutions, scatter/index operations on CUDA) it is used, and an operation without one
  warns instead of failing. On CPU torch's kernels are deterministic either way. torch's
  filling of new tensors with NaN in that mode (``fill_uninitialized_memory``, a debugging
  aid) is turned off: it costs a write of every allocation and changes no result.

The settings apply in two places: :func:`forward` (what :meth:`Classifier.forward` calls once
:func:`apply` gave the model its settings) sets them around each forward pass, so a
forward-only caller (PIC's ScoreActor) needs nothing else; :func:`numeric_mode` sets the
process-wide flags (TF32, determinism) around a whole attribution, so that the backward
passes, which autograd runs after the forward has returned, use them too
(``salbench.runner.ModelRunner`` wraps each batch in it). Both restore the previous flags.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.utils.deterministic

if TYPE_CHECKING:
    from salbench.models.base import Classifier

#: The precisions a run may ask for.
PRECISIONS = ("fp32", "tf32", "bf16")
#: The config keys of the numeric settings (run level, and per model).
KEYS = ("precision", "channels_last", "compile", "deterministic")


@dataclass(frozen=True)
class Numerics:
    """A model's numeric settings (see the module docstring)."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = True

    def __post_init__(self) -> None:
        problem = check("precision", self.precision) or next(
            (p for k in KEYS[1:] if (p := check(k, getattr(self, k)))), None)
        if problem:
            raise ValueError(problem)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (manifest, keys)."""
        return asdict(self)


def check(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for numeric setting ``key``, or None when it is valid."""
    if key == "precision":
        if value not in PRECISIONS:
            return f"expected one of {', '.join(PRECISIONS)}, got {value!r}"
        return None
    if key in KEYS:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    return f"unknown numeric setting {key!r}; allowed: {', '.join(KEYS)}"


@contextmanager
def numeric_mode(settings: Numerics) -> Iterator[None]:
    """Process-wide flags for ``settings`` inside the block, restored afterwards: TF32 of
    cuDNN and CUDA matmuls (on only for ``tf32``), and deterministic algorithms."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    det = torch.utils.deterministic
    old = (cudnn.allow_tf32, matmul.allow_tf32, torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled(), det.fill_uninitialized_memory)
    tf32 = settings.precision == "tf32"
    cudnn.allow_tf32 = tf32
    matmul.allow_tf32 = tf32
    torch.use_deterministic_algorithms(settings.deterministic, warn_only=True)
    # deterministic mode would also fill every new tensor's memory with NaN (a debugging
    # aid that costs a write of every allocation); our kernels overwrite what they allocate
    det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = old[0], old[1]
        torch.use_deterministic_algorithms(old[2], warn_only=old[3])
        det.fill_uninitialized_memory = old[4]


def apply(model: Classifier, settings: Numerics) -> Classifier:
    """Give ``model`` its numeric settings (in place; returns it): the weights move to
    channels-last memory format if asked, and its forward runs through :func:`forward`."""
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    if settings.deterministic and any(p.is_cuda for p in model.parameters()):
        # cuBLAS is deterministic only with this workspace setting, read when its first
        # handle is made (this process's first CUDA matmul, still to come)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    model.numerics = settings
    return model


#: Compiled forwards, one per model object (a deep copy compiles its own).
_COMPILED: weakref.WeakKeyDictionary[Any, Callable[[torch.Tensor], torch.Tensor]] = \
    weakref.WeakKeyDictionary()


def _compiled(model: Classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    fn = _COMPILED.get(model)
    if fn is None:
        fn = _COMPILED[model] = torch.compile(model.logits)
    return fn


def forward(model: Classifier, x: torch.Tensor, settings: Numerics) -> torch.Tensor:
    """``model``'s logits of ``x`` under ``settings``.

    x: float32 [B, 3, H, W] in [0, 1]. Returns float32 logits [B, K] (bfloat16 logits of an
    autocast forward are cast back; the cast is part of the autograd graph, so input
    gradients stay float32).
    """
    if settings.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fn = _compiled(model) if settings.compile else model.logits
    with numeric_mode(settings):
        if settings.precision == "bf16":
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                out = fn(x)
            return out.float()
        return fn(x)
