"""Case "gpu": cases 1-3 and 5 on CUDA for ResNet-50 (random weights) and EfficientNet-Lite0
at each precision, in one command that ends within 8 minutes.

    python -m benchmarks gpu                      # on a GPU machine, as it is
    python -m benchmarks gpu --device cpu --tiny  # the same code on CPU, a tiny model

``--tiny`` (tiny_cnn at 32 px, vg and ig, one repetition) runs case 1 at every precision and
cases 2, 3 and 5 once each: it checks that the code runs, its figures mean nothing.

For every model and precision (``fp32``, ``tf32``, ``bf16`` as :mod:`salbench.models.numerics`
defines them; the model gets the setting through ``Settings.precision``, and the process's
TF32 / determinism flags are set around each case, backward passes included):

1. floor: each method of :data:`FLOOR_METHODS` (fast profile, plus the paper profile of the
   path methods the SPEC targets) against the bare loop of its passes;
2. refs: salbench against Captum IG and PAIR Guided IG / Blur IG (same model and precision);
3. scaling: IG images/s and peak GPU memory over ``internal_batch_size`` and images per call;
5. pipeline: the bare loop against the Ray graph on the short workload (6 methods, the
   bundled photos, ``precision`` in the run config), one repetition.

Each figure comes with images/s and the share of the GPU's bf16 peak it reaches
(docs/SIZING.md, "GPU utilisation"): ``(f+b passes x FLOPs per f+b + forward passes x FLOPs
per forward) x images/s / peak``, the FLOPs counted once per model by
``torch.utils.flop_counter`` at batch 1 (input gradients only: the weights are frozen), the
peak from :data:`PEAK_BF16_TFLOPS` by the device's name (dense, no sparsity; None for a
device not listed, and on CPU). The cases run in order of cost: 1 and 3 for every model and
precision first, then 5, then 2 (one repetition: PAIR's references make one model call per
path point); a step that would start after the :data:`BUDGET_S` deadline is listed as
skipped, so that the command ends within 8 minutes whatever the GPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import floor, pipeline, refs, scaling
from benchmarks.common import PassCounter, Settings, load_model, median, photos
from salbench.datasets import open_dataset
from salbench.models import numerics

MODELS = (("resnet50", "random"), ("efficientnet_lite0", None))
TINY_MODELS = (("tiny_cnn", None),)
PRECISIONS = ("fp32", "tf32", "bf16")
FLOOR_METHODS = ("vg", "gxi", "ig", "idgi_ig", "smoothgrad", "gig", "blurig", "gradcam")
TINY_FLOOR_METHODS = ("vg", "ig")
#: The deadline for starting work (seconds from the case's start); the longest single step
#: (case 2 or 5 on ResNet-50; estimated at about a minute on an H100, not measured: no GPU
#: was lent when this was written) must fit in the rest of the 8 minutes.
BUDGET_S = 360.0
#: Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's datasheets, matched
#: in this order against ``torch.cuda.get_device_name()`` (more specific names first).
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.4), ("H200", 989.4),
    ("H100", 989.4), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0),
    ("A10", 125.0),
)


def peak_tflops(device_name: str | None) -> float | None:
    """The bf16 dense peak of a device by name (:data:`PEAK_BF16_TFLOPS`), or None."""
    if not device_name:
        return None
    return next((tf for key, tf in PEAK_BF16_TFLOPS if key in device_name), None)


def pass_flops(model: torch.nn.Module, size: tuple[int, int], device: str) -> dict[str, float]:
    """FLOPs of one image's forward pass and of its forward + input-gradient backward pass
    (``torch.utils.flop_counter``, batch 1, float32 arithmetic: a count of operations, the
    same at any precision)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, *size, device=device)
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        model(x)
    xg = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as fb:
        model(xg)[:, 0].sum().backward()  # the weights are frozen: input gradients only
    return {"forward": float(fwd.get_total_flops()), "fb": float(fb.get_total_flops())}


def share(fb: float, f: float, images_per_s: float, flops: dict[str, float],
          peak: float | None) -> float | None:
    """The share of the bf16 peak: (fb x FLOPs per f+b + f x FLOPs per forward) per image
    x images/s / peak (``fb``, ``f``: passes per image)."""
    if peak is None or images_per_s <= 0:
        return None
    return (fb * flops["fb"] + f * flops["forward"]) * images_per_s / (peak * 1e12)


def _ig_passes(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[float, float]:
    """Passes per image of the scaling case's IG call (counted, not assumed)."""
    counter = PassCounter(model)
    scaling._ig(model, x[:1], t[:1], 64, Settings())
    counter.remove()
    return float(counter.fb), float(counter.f)


def _pipeline_config(s: Settings, weights: str | None, precision: str) -> dict[str, Any]:
    cfg = pipeline.config(s)
    cfg["models"] = [{"name": s.model, **({"weights": weights} if weights else {})}]
    cfg["precision"] = precision
    cfg["resources"] = {**cfg["resources"], "device": s.device}
    return cfg


def run(s: Settings) -> dict[str, Any]:
    """Every (model, precision) through cases 1, 3, 5 and 2 until the deadline."""
    t_start = time.perf_counter()
    device = s.device
    if device == "cuda":  # deterministic cuBLAS (the fp32 default), before its first handle
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    gpu_name = torch.cuda.get_device_name(0) if device == "cuda" else None
    peak = peak_tflops(gpu_name)
    tiny = s.tiny
    combos = [(m, w, p) for m, w in (TINY_MODELS if tiny else MODELS) for p in PRECISIONS]
    base = Settings(device=device, reps=1 if tiny else s.reps, quick=tiny, threads=s.threads,
                    tiny=tiny)

    def settings_of(model: str, weights: str | None, precision: str) -> Settings:
        return replace(base, model=model, weights=weights, precision=precision,
                       methods=TINY_FLOOR_METHODS if tiny else FLOOR_METHODS)

    flops: dict[str, dict[str, float]] = {}
    ig_passes: dict[str, tuple[float, float]] = {}
    for model_name, weights, _ in combos[::len(PRECISIONS)]:
        m = load_model(Settings(model=model_name, weights=weights, device=device))
        flops[model_name] = pass_flops(m, m.input_size, device)
        x, t = photos(m, 1, Settings(model=model_name, device=device))
        ig_passes[model_name] = _ig_passes(m, x, t)
        del m
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []

    def step(case: str, model_name: str, precision: str, fn: Callable[[], dict[str, Any]],
             ) -> dict[str, Any] | None:
        label = f"case {case} {model_name} {precision}"
        if time.perf_counter() - t_start > BUDGET_S:
            skipped.append(label)
            return None
        with numerics.numeric_mode(numerics.Numerics(precision=precision)):
            t0 = time.perf_counter()
            try:
                out = fn()
            except Exception as exc:  # one case's failure is a row, the others still run
                out = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            out["wall_s"] = round(time.perf_counter() - t0, 1)
        if device == "cuda":
            torch.cuda.empty_cache()
        return out

    for model_name, weights, precision in combos:  # cases 1 and 3: cheap, every combo
        s_c = settings_of(model_name, weights, precision)
        got = step("1", model_name, precision, lambda s_c=s_c: floor.run(s_c))
        if got is not None:
            rows += _floor_rows(got, model_name, precision, flops[model_name], peak)
        if tiny and (model_name, precision) != combos[0][::2]:
            continue  # on CPU each case-3 setting is a fresh process: once is enough there
        got = step("3", model_name, precision, lambda s_c=s_c: scaling.run(s_c))
        if got is not None:
            rows += _scaling_rows(got, model_name, precision, flops[model_name],
                                  ig_passes[model_name], peak)
    out_dir = Path(tempfile.mkdtemp(prefix="salbench-gpu-bench-"))
    for model_name, weights, precision in combos:  # case 5: the Ray graph, once per combo
        if tiny and (model_name, precision) != (combos[-1][0], combos[-1][2]):
            continue  # tiny: the last precision (bf16) of the last model only
        s_c = settings_of(model_name, weights, precision)
        cfg = _pipeline_config(s_c, weights, precision)
        got = step("5", model_name, precision, lambda s_c=s_c, cfg=cfg: _case5(s_c, cfg,
                                                                              out_dir))
        if got is not None:
            rows.append(_pipeline_row(got, model_name, precision))
    for model_name, weights, precision in combos:  # case 2: the references
        if tiny and (model_name, precision) != combos[0][::2]:
            continue
        s_c = replace(settings_of(model_name, weights, precision), reps=1)
        got = step("2", model_name, precision, lambda s_c=s_c: refs.run(s_c))
        if got is not None:
            rows += _refs_rows(got, model_name, precision)
    return {"case": "gpu", "device": device, "gpu": gpu_name, "peak_bf16_tflops": peak,
            "tiny": tiny, "flops": flops, "ig_passes": ig_passes, "rows": rows,
            "skipped": skipped, "budget_s": BUDGET_S,
            "elapsed_s": round(time.perf_counter() - t_start, 1)}


def _case5(s: Settings, cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    res = pipeline._compare(s, cfg, out)
    res["images"] = len(open_dataset(cfg["dataset"]))
    return res


def _row(case: str, model: str, precision: str, **kw: Any) -> dict[str, Any]:
    return {"case": case, "model": model, "precision": precision, **kw}


def _floor_rows(got: dict[str, Any], model: str, precision: str, flops: dict[str, float],
                peak: float | None) -> list[dict[str, Any]]:
    if "error" in got:
        return [_row("1", model, precision, what="floor", error=got["error"])]
    out = []
    for r in got["rows"]:
        sec = median(r["times"]["method"])  # unrounded; one photo per call
        ips = 1.0 / sec if sec > 0 else 0.0
        out.append(_row("1", model, precision, what=f"{r['method']} ({r['profile']})",
                        images_per_s=round(ips, 3 if ips < 1000 else 0),
                        share_of_bf16_peak=share(r["fb_passes"], r["f_passes"], ips, flops,
                                                 peak),
                        detail=f"ratio to floor {r['ratio']}"))
    return out


def _scaling_rows(got: dict[str, Any], model: str, precision: str, flops: dict[str, float],
                  passes: tuple[float, float], peak: float | None) -> list[dict[str, Any]]:
    if "error" in got:
        return [_row("3", model, precision, what="scaling", error=got["error"])]
    return [_row("3", model, precision,
                 what=f"ig {r['images_per_call']} images x ibs {r['internal_batch_size']}",
                 images_per_s=r["images_per_s"],
                 share_of_bf16_peak=share(*passes, r["images_per_s"], flops, peak),
                 detail=f"peak extra {r['peak_extra_mib']} MiB") for r in got["rows"]]


def _refs_rows(got: dict[str, Any], model: str, precision: str) -> list[dict[str, Any]]:
    if "error" in got:
        return [_row("2", model, precision, what="refs", error=got["error"])]
    out = []
    for r in got["rows"]:
        if "skipped" in r:
            out.append(_row("2", model, precision, what=f"{r['method']} vs {r['reference']}",
                            error=f"skipped: {r['skipped']}"))
            continue
        ips = r["images"] / r["salbench_s"] if r.get("salbench_s") else 0.0
        out.append(_row("2", model, precision, what=f"{r['method']} vs {r['reference']}",
                        images_per_s=round(ips, 3), share_of_bf16_peak=None,
                        detail=f"speedup {r['speedup']}"))
    return out


def _pipeline_row(got: dict[str, Any], model: str, precision: str) -> dict[str, Any]:
    if "error" in got:
        return _row("5", model, precision, what="pipeline (short)", error=got["error"])
    ips = got["images"] / got["pipeline_s"] if got["pipeline_s"] > 0 else 0.0
    return _row("5", model, precision, what="pipeline (short)", images_per_s=round(ips, 3),
                share_of_bf16_peak=None,
                detail=f"loop {got['loop_s']} s, graph {got['pipeline_s']} s, ratio "
                       f"{got['ratio']} ({got['ratio_after_startup']} after start-up)")


def markdown(result: dict[str, Any]) -> str:
    """One row per measurement: case, model, precision, what, images/s, share of peak."""
    where = result["gpu"] or f"{result['device']} (no GPU: no bf16 peak, no share)"
    lines = [
        f"Device: {where}; bf16 peak {result['peak_bf16_tflops'] or 'unknown'} TFLOP/s; "
        f"{'TINY models (figures meaningless); ' if result['tiny'] else ''}"
        f"{result['elapsed_s']} s in all (deadline for starting a step: "
        f"{result['budget_s']:.0f} s). FLOPs per image: " + "; ".join(
            f"{m}: {v['forward'] / 1e9:.2f} G forward, {v['fb'] / 1e9:.2f} G f+b"
            for m, v in result["flops"].items()) + ".",
        "",
        "| case | model | precision | what | images/s | share of bf16 peak | detail |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['model']} | {r['precision']} | "
                         f"{r.get('what', '')} | | | {r['error']} |")
            continue
        sh = r.get("share_of_bf16_peak")
        lines.append(f"| {r['case']} | {r['model']} | {r['precision']} | {r['what']} | "
                     f"{r['images_per_s']} | {'' if sh is None else f'{100 * sh:.1f} %'} | "
                     f"{r.get('detail', '')} |")
    if result["skipped"]:
        lines += ["", "Skipped (past the deadline): " + ", ".join(result["skipped"]) + "."]
    return "\n".join(lines)
