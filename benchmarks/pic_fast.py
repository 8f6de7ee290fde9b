"""PIC ``bokeh: fast`` against the exact mode (``interp``): CPU throughput per core and AUCs.

Maps: the 7 bundled photos and 33 synthetic images (``salbench.datasets.synthetic``, seed 0)
x 5 methods (vg, gxi, gradcam, smoothgrad, ig; fast profiles) = 200 (image, method) maps on
EfficientNet-Lite0, at the model's crop or ``--size``. Per map, one after the other on one
core (``num_workers=1``, one BLAS thread, the bokeh cache cleared as for a new sample): the
CPU half of the split form (``pic_prepare``: bokeh images + WebP levels, what the
BokehActor runs) in each mode, timed in CPU seconds of this process (so a machine shared
with other work slows the ratio little); then both image sets are scored by the model and
finalized as SIC (softmax) and AIC (top-1).

Reported: CPU seconds per map of each mode and their ratio (throughput per core), the
dataset-level AUCs (PAIR's aggregation: SIC the median curve, AIC the mean curve, over the
maps both modes score "ok") of each mode and their difference, and the per-map AUC
difference distribution (median, p95, max of |fast - exact|); each also per map kind
(smooth maps: gradcam; gradient maps: the rest).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

import salbench.methods as methods
from benchmarks.common import Settings, load_model, photos
from salbench.datasets.synthetic import SyntheticParams, generate
from salbench.metrics import pic

MAP_METHODS = ("vg", "gxi", "gradcam", "smoothgrad", "ig")
SYNTHETIC = 33
TARGET_SPEEDUP = 3.0
TARGET_AUC = 1e-3
#: the exact mode, the fast mode, and the exact mode on the transposed image (tie noise)
MODES = ("interp", "fast", "transposed")


def inputs(s: Settings) -> tuple[list[np.ndarray], list[tuple[int, str, np.ndarray]], list[int]]:
    """(uint8 images [H, W, 3], (image index, method, map float [H, W]) per map, targets)."""
    model = load_model(s)
    x, t = photos(model, 2 if s.quick else 7, s)
    syn = [generate(SyntheticParams(seed=0), i)[0] for i in range(1 if s.quick else SYNTHETIC)]
    xs = torch.stack([model.preprocess(a) for a in syn]).to(s.device)
    if s.size and tuple(xs.shape[-2:]) != (s.size, s.size):
        xs = torch.nn.functional.interpolate(xs, size=(s.size, s.size), mode="bilinear",
                                             align_corners=False).clamp(0, 1)
    with torch.no_grad():
        ts = model(xs).argmax(1)
    xa, ta = torch.cat([x, xs]), torch.cat([t, ts])
    images = list((xa.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8))
    maps = []
    for meth in MAP_METHODS[:2] if s.quick else MAP_METHODS:
        reduce = methods.get(meth).map_reduce or "abs_sum"
        for start in range(0, len(xa), 8):
            a = methods.attribute(meth, model, xa[start:start + 8], ta[start:start + 8],
                                  profile="fast")
            for j, m in enumerate(methods.to_map(a, reduce).cpu().numpy()):
                maps.append((start + j, meth, m))
    return images, maps, [int(v) for v in ta]


def _prepare(image: np.ndarray, smap: np.ndarray, bokeh: str) -> tuple[float, Any, np.ndarray]:
    pic.BOKEH_CACHE.clear()
    t0 = time.process_time()
    if bokeh == "transposed":
        state, imgs = _transposed(image, smap)
    else:
        state, imgs = pic.pic_prepare(image, smap, bokeh=bokeh, num_workers=1)
    return time.process_time() - t0, state, imgs


def _transposed(image: np.ndarray, smap: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """The exact mode's images built on the transposed image and mask, transposed back: the
    same Delaunay interpolation, but Qhull meets the points in another order and may split
    cocircular pixels' cells the other way. Its AUCs against the exact mode's are the
    protocol's own tie noise, the floor for any mode that is not the exact one."""
    mask = pic.image_mask(image)
    masks = [mask, *pic.threshold_masks(smap, mask, pic.DEFAULT_THRESHOLDS)]
    timg = np.ascontiguousarray(image.transpose(1, 0, 2))
    imgs = [image] + [np.ascontiguousarray(pic.bokeh_image(timg, m.T).transpose(1, 0, 2))
                      for m in masks]
    sizes = [float(pic.webp_size(im)) for im in imgs]
    state = {"thresholds": pic.DEFAULT_THRESHOLDS, "normalize": True, "message": "",
             "level_original": sizes[0], "level_blurred": sizes[1],
             "levels": np.asarray(sizes[2:])}
    return state, np.stack(imgs)


def run(s: Settings, photos_only: bool = False,
        progress: Any = None) -> dict[str, Any]:
    """Exact vs fast (and the exact mode transposed) per map, then the figures (see the
    module docstring); ``progress(result so far)`` every 10 maps."""
    model = load_model(s)
    images, maps, targets = inputs(s)
    if photos_only:
        maps = [m for m in maps if m[0] < len(images) - (1 if s.quick else SYNTHETIC)]
    per: list[dict[str, Any]] = []
    with pic.single_threaded_blas():
        for n, (i, meth, smap) in enumerate(maps):
            rec: dict[str, Any] = {"image": i, "method": meth}
            for bokeh in MODES:
                sec, state, imgs = _prepare(images[i], smap, bokeh)
                prob, top1 = pic.model_scores(model, list(imgs), [targets[i]] * len(imgs))
                rec[f"{bokeh}_s"] = sec
                rec[f"{bokeh}_curves"] = {k: pic.pic_finalize(state, p) for k, p in
                                          (("sic", prob), ("aic", top1))}
                rec[f"{bokeh}_images"] = imgs
            exact = rec.pop("interp_images")
            for other in MODES[1:]:
                rec[f"{other}_differing_pixels"] = int((rec.pop(f"{other}_images") != exact)
                                                       .any(-1).sum())
            per.append(rec)
            if progress is not None and (n % 10 == 9 or n == len(maps) - 1):
                progress(_result(per, images))
    return _result(per, images)


def _result(per: list[dict[str, Any]], images: list[np.ndarray]) -> dict[str, Any]:
    out = {"case": "pic_fast", "maps": len(per), "size": int(images[0].shape[0]),
           "groups": {}}
    groups = {"all": per, "smooth maps (gradcam)": [r for r in per if r["method"] == "gradcam"],
              "gradient maps": [r for r in per if r["method"] != "gradcam"]}
    for name, recs in groups.items():
        if recs:
            out["groups"][name] = _figures(recs)
    out["per_map"] = [{"image": r["image"], "method": r["method"],
                       **{k: v for k, v in r.items() if k.endswith(("_s", "_pixels"))},
                       **{f"{b}_{k}_{f}": getattr(r[f"{b}_curves"][k], f) for b in MODES
                          for k in ("sic", "aic") for f in ("auc", "status")}} for r in per]
    return out


def _figures(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One map group's figures: CPU seconds per map of each mode, the fast mode's speedup,
    and per other mode and kind the AUCs against the exact mode's."""
    secs = {m: float(np.sum([r[f"{m}_s"] for r in recs])) for m in MODES}
    fig: dict[str, Any] = {"maps": len(recs),
                           **{f"{m}_cpu_s_per_map": secs[m] / len(recs) for m in MODES},
                           "speedup_per_core": secs["interp"] / secs["fast"]}
    for other in MODES[1:]:
        fig[f"{other}_differing_pixels_per_map"] = float(np.mean(
            [r[f"{other}_differing_pixels"] for r in recs]))
        for kind in pic.KINDS:
            pairs = [(r["interp_curves"][kind], r[f"{other}_curves"][kind]) for r in recs
                     if r["interp_curves"][kind].ok and r[f"{other}_curves"][kind].ok]
            changed = sum(r["interp_curves"][kind].status != r[f"{other}_curves"][kind].status
                          for r in recs)
            entry: dict[str, Any] = {"ok": len(pairs), "status_changed": changed}
            if pairs:
                d = np.abs([b.auc - a.auc for a, b in pairs])
                exact = pic.aggregate([a for a, _ in pairs], kind)[2]
                mode = pic.aggregate([b for _, b in pairs], kind)[2]
                entry.update(exact_auc=exact, auc=mode, dataset_diff=mode - exact,
                             per_map_median=float(np.median(d)),
                             per_map_p95=float(np.quantile(d, 0.95)),
                             per_map_max=float(d.max()))
            fig[f"{other}_{kind}"] = entry
    return fig


def markdown(result: dict[str, Any]) -> str:
    """The case's tables: CPU seconds and speedup per map group; AUC differences against the
    exact mode of the fast mode and of the exact mode transposed (the tie noise)."""
    lines = [f"{result['maps']} (image, method) maps at {result['size']} px; CPU seconds of "
             "the split form's CPU half per map, one core.", "",
             "| maps | n | exact s/map | fast s/map | speedup per core |",
             "|---|---:|---:|---:|---:|"]
    for name, g in result["groups"].items():
        lines.append(f"| {name} | {g['maps']} | {g['interp_cpu_s_per_map']:.3f} | "
                     f"{g['fast_cpu_s_per_map']:.3f} | {g['speedup_per_core']:.2f}x |")
    lines += ["", "| maps | against exact | kind | ok (status changed) | dataset AUC exact | "
              "this mode | diff | per-map abs diff median | p95 | max |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, g in result["groups"].items():
        for other in MODES[1:]:
            for kind in pic.KINDS:
                k = g[f"{other}_{kind}"]
                if not k["ok"]:
                    continue
                lines.append(
                    f"| {name} | {other} | {kind} | {k['ok']} ({k['status_changed']}) | "
                    f"{k['exact_auc']:.4f} | {k['auc']:.4f} | {k['dataset_diff']:+.1e} | "
                    f"{k['per_map_median']:.1e} | {k['per_map_p95']:.1e} | "
                    f"{k['per_map_max']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.pic_fast [--size N] [--quick] [--out DIR]``: run the case, print
    its table, write ``pic_fast.json`` (every map's figures) and ``pic_fast.md`` into DIR."""
    import argparse
    import json
    from pathlib import Path

    from benchmarks.common import machine

    p = argparse.ArgumentParser(prog="python -m benchmarks.pic_fast")
    p.add_argument("--size", type=int, default=None, help="image side (default: the model's)")
    p.add_argument("--quick", action="store_true", help="a few maps: checks the harness runs")
    p.add_argument("--photos-only", action="store_true", help="the bundled photos' maps only")
    p.add_argument("--out", default="benchmarks/results/pic", help="output folder")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    where = machine()

    def write(result: dict[str, Any]) -> str:
        result = {"machine": where, **result}
        (out / "pic_fast.json").write_text(json.dumps(result, indent=1, default=float))
        table = f"{where}\n\n{markdown(result)}\n"
        (out / "pic_fast.md").write_text(table)
        return table

    print(write(run(Settings(size=a.size, quick=a.quick), a.photos_only, progress=write)))


if __name__ == "__main__":
    main()
