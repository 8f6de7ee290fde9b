"""Case 2: salbench against the reference implementations, same model, inputs and steps.

Four bundled photos (one in ``--quick``), each method on all of them, per side:

- IG vs Captum's ``IntegratedGradients`` (riemann_right, black baseline), Captum's
  ``internal_batch_size`` tuned fairly: every candidate is timed on a shorter path and the
  fastest is used.
- Guided IG vs PAIR ``saliency.core.GuidedIG`` (one path point per model call, its design).
- Blur IG vs PAIR ``saliency.core.BlurIG`` (``batch_size=1``, its default).

speedup = reference seconds / salbench seconds (> 1: salbench is faster). The references are
test-only dependencies (extra ``[test]`` / ``[ref]``); a missing one gives a "skipped" row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import salbench.methods as methods
from benchmarks.common import Settings, interleaved, load_model, median, photos, sync
from salbench.methods.engine import default_chunk

#: Images per call: salbench batches them (the pipeline hands a model actor 8 at a time);
#: PAIR's API takes one image per call, so it loops over them; Captum batches them too.
IMAGES = 4


class _NumpyForPair:
    """numpy with ``quantile(..., interpolation=)`` (removed in NumPy 2.4) mapped to
    ``method=``, for PAIR's guided_ig module, which still passes ``interpolation``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def quantile(a: Any, q: Any, interpolation: str | None = None, **kw: Any) -> Any:
        if interpolation is not None:
            kw["method"] = interpolation
        return np.quantile(a, q, **kw)


def _pair_call(model: torch.nn.Module, cls: int, device: str) -> Callable[..., dict[str, Any]]:
    """PAIR's call_model_function: float [N, H, W, C] -> gradients of the target logit."""
    import saliency.core as sal

    def call(xb: np.ndarray, call_model_args: Any = None, expected_keys: Any = None) -> dict:
        xt = torch.as_tensor(np.asarray(xb), dtype=torch.float32, device=device)
        xt = xt.permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xt)[:, cls].sum(), xt)
        return {sal.INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).cpu().numpy()}

    return call


def _row(name: str, reference: str, steps: int, images: int, times: dict[str, list[float]],
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ours, ref = median(times["salbench"]), median(times["reference"])
    return {"method": name, "reference": reference, "steps": steps, "images": images,
            "salbench_s": round(ours, 3), "reference_s": round(ref, 3),
            "speedup": round(ref / ours, 3), "times": times, **(extra or {})}


def _captum_ig(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, steps: int,
               s: Settings) -> list[dict[str, Any]]:
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)

    def captum(ibs: int, n: int) -> Callable[[], Any]:
        return lambda: ig.attribute(x, baselines=torch.zeros_like(x), target=t, n_steps=n,
                                    method="riemann_right", internal_batch_size=ibs)

    tune_steps = min(steps, 16 if s.quick else 64)
    tuning = {}
    for ibs in ((4, 16) if s.quick else (16, 32, 64, 128)):
        sync()
        t0 = time.perf_counter()
        captum(ibs, tune_steps)()
        sync()
        tuning[ibs] = time.perf_counter() - t0
    best = min(tuning, key=tuning.get)
    default_ibs = default_chunk(methods.get("ig").params()["internal_batch_size"], x.device)
    times = interleaved({
        "salbench": lambda: methods.attribute("ig", model, x, t, steps=steps),
        "salbench_same": lambda: methods.attribute("ig", model, x, t, steps=steps,
                                                   internal_batch_size=best),
        "reference": captum(best, steps),
    }, s.reps, warmup=False)
    extra = {"captum_tuning_s": {str(k): round(v, 3) for k, v in tuning.items()}}
    ref = f"Captum IntegratedGradients (internal_batch_size={best})"
    return [
        _row("ig", ref + f"; salbench at its default {default_ibs}", steps, len(x),
             {"salbench": times["salbench"], "reference": times["reference"]}, extra),
        _row("ig", ref + f"; salbench at the same {best}", steps, len(x),
             {"salbench": times["salbench_same"], "reference": times["reference"]}, extra),
    ]


def run(s: Settings) -> dict[str, Any]:
    """Speedups over Captum IG, PAIR Guided IG and PAIR Blur IG on :data:`IMAGES` photos."""
    model = load_model(s)
    x, t = photos(model, 1 if s.quick else IMAGES, s)
    rows: list[dict[str, Any]] = []
    ig_steps, gig_steps, blur_steps = (16, 16, 16) if s.quick else (200, 200, 100)
    try:
        rows += _captum_ig(model, x, t, ig_steps, s)
    except ImportError as exc:
        rows.append({"method": "ig", "reference": "Captum", "skipped": str(exc)})
    try:
        import saliency.core as sal
        from saliency.core import guided_ig as pair_gig
    except ImportError as exc:
        rows.append({"method": "gig / blurig", "reference": "PAIR saliency", "skipped": str(exc)})
        return {"case": "refs", "rows": rows}
    pair_gig.np = _NumpyForPair()
    images = [(x[i].permute(1, 2, 0).double().cpu().numpy(), _pair_call(model, int(t[i]),
                                                                        s.device))
              for i in range(len(x))]

    def pair_gig_all() -> None:
        for xi, call in images:
            sal.GuidedIG().GetMask(xi, call, None, x_baseline=np.zeros_like(xi),
                                   x_steps=gig_steps)

    def pair_blurig_all() -> None:
        for xi, call in images:
            sal.BlurIG().GetMask(xi, call, None, steps=blur_steps)

    times = interleaved({
        "salbench": lambda: methods.attribute("gig", model, x, t, steps=gig_steps),
        "reference": pair_gig_all,
    }, s.reps, warmup=False)
    rows.append(_row("gig", "PAIR GuidedIG", gig_steps, len(x), times))
    times = interleaved({
        "salbench": lambda: methods.attribute("blurig", model, x, t, steps=blur_steps),
        "reference": pair_blurig_all,
    }, s.reps, warmup=False)
    rows.append(_row("blurig", "PAIR BlurIG (batch_size=1)", blur_steps, len(x), times))
    return {"case": "refs", "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The case's table: method, reference, steps, seconds, speedup, target, met."""
    targets = {"ig": 1.0, "gig": 1.5, "blurig": 1.5}  # as fast as Captum; clearly faster than PAIR
    lines = ["| method | reference | images | steps | salbench s | reference s | speedup | "
             "target | met |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['method']} | {r['reference']} | | | | | skipped: "
                         f"{r['skipped']} | | |")
            continue
        target = targets[r["method"]]
        met = "yes" if r["speedup"] >= target else "no"
        lines.append(f"| {r['method']} | {r['reference']} | {r['images']} | {r['steps']} | "
                     f"{r['salbench_s']} | {r['reference_s']} | {r['speedup']}x | >= {target}x "
                     f"| {met} |")
    return "\n".join(lines)
