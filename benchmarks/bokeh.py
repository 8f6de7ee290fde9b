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

The floor: what any implementation that reproduces PAIR's bokeh images must spend per pair on
one core, timed on its own: building the bokeh image of every threshold (one Delaunay
triangulation + linear interpolation each) and, for SIC/AIC, their lossless WebP sizes.
reference seconds / floor seconds bounds the one-core speedup of such an implementation.
"""

from __future__ import annotations

import time
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


def _floor(items: list[Any]) -> dict[str, float]:
    """Seconds per pair of building PAIR's bokeh images and of their WebP sizes, one core."""
    build = webp = 0.0
    n = 0
    for img, maps, mask in items:
        for smap in maps:
            n += 1
            for pixel_mask in pic.threshold_masks(smap, mask, pic.DEFAULT_THRESHOLDS):
                t0 = time.perf_counter()
                bokeh = pic.bokeh_image(img, pixel_mask)
                t1 = time.perf_counter()
                pic.webp_size(bokeh)
                build, webp = build + t1 - t0, webp + time.perf_counter() - t1
    return {"bokeh_s": build / n, "webp_s": webp / n}


def run(s: Settings) -> dict[str, Any]:
    """Seconds per (image, method) of the CPU stage, salbench vs reference, and agreement."""
    items = _inputs(s)
    n = sum(len(maps) for _, maps, _ in items)
    ppic = _pair_pic()
    rows = []
    with pic.single_threaded_blas():
        # one floor timing serves both levels: MS-SSIM's floor is its bokeh part
        floors = [_floor(items) for _ in range(s.reps)]
        refs = {"webp": _pair_webp(ppic, items), "msssim": _reference_msssim(ppic, items)}
        for info, reference in refs.items():
            fns = {"salbench_1": _ours(items, info, 1), "salbench_2": _ours(items, info, 2),
                   "reference": reference}
            times = interleaved(fns, s.reps, warmup=False)
            floor = median([f["bokeh_s"] + (f["webp_s"] if info == "webp" else 0.0)
                            for f in floors])
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
                "speedup_2_workers": round(per["reference"] / per["salbench_2"], 2),
                "floor_s_per_pair": round(floor, 4),
                "floor_parts": floors,
                "max_speedup_1_core": round(per["reference"] / floor, 2),
                "max_abs_diff": float(max(diffs)) if diffs else None,
                "agree_1e-3": bool(diffs) and max(diffs) <= 1e-3,
                "times": times,
            })
    return {"case": "bokeh", "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The case's table: info level, seconds per pair, speedup, agreement."""
    lines = ["| information level | (image, method) pairs | salbench s/pair (1 core) | "
             "salbench s/pair (2 workers) | reference s/pair | speedup (1 core) | speedup "
             "(2 workers) | target | met | floor s/pair (PAIR's images, 1 core) | largest "
             "1-core speedup | max abs diff (AUC / level) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in result["rows"]:
        met = "yes" if r["speedup_1_core"] >= TARGET and r["agree_1e-3"] else "no"
        diff = "n/a" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        lines.append(f"| {r['info']} | {r['pairs']} | {r['salbench_1_s_per_pair']} | "
                     f"{r['salbench_2_s_per_pair']} | {r['reference_s_per_pair']} | "
                     f"{r['speedup_1_core']}x | {r['speedup_2_workers']}x | >= {TARGET}x | "
                     f"{met} | {r['floor_s_per_pair']} | {r['max_speedup_1_core']}x | {diff} |")
    return "\n".join(lines)
