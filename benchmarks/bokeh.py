"""Case 4: the CPU stage: bokeh images + information levels per (image, method), vs PAIR.

Bundled photos at the model's crop, three methods' maps each (vg, gxi, gradcam: cheap to
compute, different in shape). A cheap NumPy "prediction" (the fraction of the photo's fine
detail an image keeps) stands in for the model, so both sides time only the CPU work the
BokehActor does: bokeh images and normalised WebP sizes (SIC/AIC) or MS-SSIM levels.

- webp: salbench ``pic_curve(info="webp")`` vs PAIR ``compute_pic_metric`` (same images,
  maps, random masks, thresholds); AUCs must agree to 1e-3.
- msssim: salbench ``pic_curve(info="msssim")`` vs a reference loop of PAIR's
  ``create_blurred_image`` + ``pytorch_msssim.ms_ssim`` per threshold; levels must agree
  to 1e-3.

Both sides run on one core (salbench ``num_workers=1``, one BLAS thread); salbench with two
workers is reported too. speedup = reference seconds / salbench seconds; target >= 5.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import salbench.methods as methods
from benchmarks.common import Settings, interleaved, load_model, median, photos
from salbench.metrics import pic
from salbench.metrics.msssim import MIN_SIDE, upsampled_size

TARGET = 5.0
MAP_METHODS = ("vg", "gxi", "gradcam")


def _detail(batch: np.ndarray) -> np.ndarray:
    b = np.asarray(batch, np.float64)
    return np.abs(np.diff(b, axis=2)).mean(axis=(1, 2, 3))


def detail_predict(image: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 [N, H, W, 3] -> the share of ``image``'s fine detail each keeps, in [0, 1]."""
    ref = _detail(image[None])[0]
    return lambda batch: np.minimum(1.0, _detail(batch) / ref)


def _pair_pic() -> Any:
    """PAIR's pic module with NumPy 2 shims (``trapz``, ``quantile(interpolation=)``)."""
    import saliency.metrics.pic as ppic

    def quantile(a: Any, q: Any, *args: Any, interpolation: str | None = None, **kw: Any) -> Any:
        if interpolation is not None:
            kw["method"] = interpolation
        return np.quantile(a, q, *args, **kw)

    shim = types.SimpleNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.trapz, shim.quantile = np.trapezoid, quantile
    ppic.np = shim
    return ppic


def _inputs(s: Settings) -> list[tuple[np.ndarray, list[np.ndarray], np.ndarray]]:
    """(uint8 image [H, W, 3], maps float [H, W] per method, random mask bool [H, W])."""
    model = load_model(s)
    x, t = photos(model, 1 if s.quick else 7, s)
    maps = [methods.to_map(methods.attribute(m, model, x, t), methods.get(m).map_reduce
                           or "abs_sum").cpu().numpy()
            for m in (MAP_METHODS[:1] if s.quick else MAP_METHODS)]
    out = []
    for i in range(len(x)):
        img = (x[i].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        mask = pic.image_mask(img, 0.01, seed=0)
        out.append((img, [mp[i] for mp in maps], mask))
    return out


def _ours(items: list[Any], info: str, workers: int) -> Callable[[], list[pic.PicCurve]]:
    def fn() -> list[pic.PicCurve]:
        pic.BOKEH_CACHE.clear()  # every repetition starts cold, as a new sample does
        return [pic.pic_curve(img, smap, mask, detail_predict(img), info=info,
                              num_workers=workers) for img, maps, mask in items for smap in maps]
    return fn


def _pair_webp(ppic: Any, items: list[Any]) -> Callable[[], list[float]]:
    def fn() -> list[float]:
        return [float(ppic.compute_pic_metric(img, smap, mask, detail_predict(img),
                                              list(pic.DEFAULT_THRESHOLDS),
                                              num_data_points=1000).auc)
                for img, maps, mask in items for smap in maps]
    return fn


def _reference_msssim(ppic: Any, items: list[Any]) -> Callable[[], list[np.ndarray]]:
    """PAIR's bokeh image per threshold, then pytorch_msssim's MS-SSIM against the photo."""
    from pytorch_msssim import ms_ssim

    def level(img: np.ndarray, bokeh: np.ndarray) -> float:
        a, b = (torch.as_tensor(v, dtype=torch.float64).permute(2, 0, 1)[None] for v in
                (img, bokeh))
        if min(img.shape[:2]) < MIN_SIDE:
            size = upsampled_size(*img.shape[:2])
            a, b = (torch.nn.functional.interpolate(v, size=size, mode="bilinear",
                                                    align_corners=False) for v in (a, b))
        return float(ms_ssim(a, b, data_range=255.0))

    def fn() -> list[np.ndarray]:
        out = []
        for img, maps, mask in items:
            for smap in maps:
                levels = []
                for th in pic.DEFAULT_THRESHOLDS:
                    q = np.quantile(smap, 1 - th)
                    pixel_mask = np.logical_or(smap >= q, mask)
                    levels.append(level(img, ppic.create_blurred_image(img, pixel_mask)))
                out.append(np.asarray(levels))
        return out
    return fn


def run(s: Settings) -> dict[str, Any]:
    """Seconds per (image, method) of the CPU stage, salbench vs reference, and agreement."""
    items = _inputs(s)
    n = sum(len(maps) for _, maps, _ in items)
    ppic = _pair_pic()
    rows = []
    with pic.single_threaded_blas():
        refs = {"webp": _pair_webp(ppic, items), "msssim": _reference_msssim(ppic, items)}
        for info, reference in refs.items():
            fns = {"salbench_1": _ours(items, info, 1), "salbench_2": _ours(items, info, 2),
                   "reference": reference}
            times = interleaved(fns, s.reps, warmup=False)
            ours, ref = fns["salbench_1"](), reference()
            if info == "webp":
                diffs = [abs(c.auc - a) for c, a in zip(ours, ref, strict=True)
                         if c.status == "ok"]
            else:
                diffs = [float(np.abs(c.levels - r).max()) for c, r in zip(ours, ref, strict=True)
                         if c.status == "ok"]
            per = {k: median(v) / n for k, v in times.items()}
            rows.append({
                "info": info, "pairs": n, "ok_pairs": len(diffs),
                "salbench_1_s_per_pair": round(per["salbench_1"], 4),
                "salbench_2_s_per_pair": round(per["salbench_2"], 4),
                "reference_s_per_pair": round(per["reference"], 4),
                "speedup_1_core": round(per["reference"] / per["salbench_1"], 2),
                "max_abs_diff": float(max(diffs)) if diffs else None,
                "agree_1e-3": bool(diffs) and max(diffs) <= 1e-3,
                "times": times,
            })
    return {"case": "bokeh", "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The case's table: info level, seconds per pair, speedup, agreement."""
    lines = ["| information level | (image, method) pairs | salbench s/pair (1 core) | "
             "salbench s/pair (2 workers) | reference s/pair | speedup (1 core) | target | met "
             "| max abs diff (AUC / level) |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in result["rows"]:
        met = "yes" if r["speedup_1_core"] >= TARGET and r["agree_1e-3"] else "no"
        diff = "n/a" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        lines.append(f"| {r['info']} | {r['pairs']} | {r['salbench_1_s_per_pair']} | "
                     f"{r['salbench_2_s_per_pair']} | {r['reference_s_per_pair']} | "
                     f"{r['speedup_1_core']}x | >= {TARGET}x | {met} | {diff} |")
    return "\n".join(lines)
