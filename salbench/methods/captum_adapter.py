"""``captum:<Name>``: any Captum attribution class run through salbench (optional extra).

``captum:DeepLift``, ``captum:Occlusion``, ``captum:GradientShap``, ``captum:LRP``, ... are
built as ``captum.attr.<Name>(model)`` and called with the target and the parameters of its
``attribute`` method (names and defaults read from Captum's signature, so a config key that
Captum does not know is rejected). ``baselines`` may also be "black", "white" or "blur"
(see :func:`salbench.methods.baselines.make_baseline`). Captum is not a core dependency:
install ``salbench[ref]`` or ``captum``. :func:`captum_method` gives the function, its
parameters and a description; the method registry makes them a MethodSpec.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from salbench.errors import UnknownNameError
from salbench.methods.baselines import make_baseline
from salbench.models.base import Classifier

PREFIX = "captum:"
_SKIP = {"self", "inputs", "target", "additional_forward_args", "return_convergence_delta"}


def _captum_class(name: str) -> type:
    try:
        import captum.attr as attr
    except ImportError as exc:
        raise UnknownNameError(
            f"method {PREFIX}{name} needs Captum: pip install captum (or salbench[ref])"
        ) from exc
    cls = getattr(attr, name, None)
    if not inspect.isclass(cls) or not hasattr(cls, "attribute"):
        valid = sorted(n for n, c in vars(attr).items()
                       if inspect.isclass(c) and hasattr(c, "attribute") and not n.startswith(
                           ("Layer", "Neuron", "_")))
        raise UnknownNameError(
            f"unknown method {PREFIX}{name}; Captum attribution classes: {', '.join(valid)}"
        )
    return cls


def captum_method(name: str) -> tuple[str, Callable[..., torch.Tensor], dict[str, Any], str]:
    """``captum:<name>`` (or ``<name>``): its full name, the method
    ``fn(model, x, target, **params) -> float32 [B, 3, H, W]``, its parameters' defaults
    (Captum's) and a one-line description."""
    cls_name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    cls = _captum_class(cls_name)
    sig = inspect.signature(cls.attribute)
    defaults = {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values()
        if p.name not in _SKIP and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }

    def run(
        model: Classifier, x: torch.Tensor, target: torch.Tensor, **params: Any
    ) -> torch.Tensor:
        kwargs = {k: v for k, v in params.items() if v is not None}
        if isinstance(kwargs.get("baselines"), str):
            kwargs["baselines"] = make_baseline(x, kwargs["baselines"])
        with torch.enable_grad():
            out = cls(model).attribute(x.detach().clone(), target=target, **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        return out.detach().float()

    doc = (inspect.getdoc(cls) or cls_name).split("\n", 1)[0]
    return f"{PREFIX}{cls_name}", run, defaults, f"Captum {cls_name}: {doc}"
