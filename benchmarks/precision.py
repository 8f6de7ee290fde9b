"""Case "precision": what each numeric setting costs in fidelity, against strict float32.

On the bundled photos (7; ``--quick``: 2) and the benchmark's model (EfficientNet-Lite0 by
default), every method in the fast profile runs once per setting of
:mod:`salbench.models.numerics` (fp32, bf16, channels_last, compile; tf32 only where CUDA
is, since on CPU it is fp32), each on its own freshly loaded model, with the same targets
(fp32's top-1 classes) and seeds, so that only the arithmetic differs. Against fp32:

- map relative L2: ``||m - m_fp32|| / ||m_fp32||`` per image (median and max over images);
- rank: the smallest Spearman correlation of a map's pixel ranking with fp32's;
- completeness (path methods): the median relative completeness error
  ``|sum(attr) - (f(x) - f(x'))| / |f(x) - f(x')|`` at fp32 and at the setting;
- insertion / deletion AUC (fast profile, 10 steps): the largest per-image change and the
  change of the mean over images (the dataset-level figure), both with the maps *and* the
  metric's forward passes at the setting ("run"), and with the setting's maps scored at
  fp32 ("map only"), which separates what the map moved from what the scoring moved;
- SIC (PAIR's softmax information curve, the default ``interp`` bokeh) for the methods of
  :data:`SIC_METHODS` that run: the largest per-image AUC change and the change of the
  dataset-level AUC (the AUC of the median curve, PAIR's aggregate), maps and scoring at
  the setting;
- time: seconds per image of the method (map and insertion/deletion excluded) relative to
  fp32's, one pass each (noisy on a shared machine).

A method or setting that raises is reported with its error, not dropped.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

import salbench.methods as methods
import salbench.metrics as metrics
from benchmarks.common import Settings, photos
from salbench.models import load, numerics

#: The methods measured by default: the demo's methods (``methods: all``) less the ones
#: whose fast profile still costs minutes per setting on a 2-core CPU.
SLOW = ("ggig", "igos", "meaningful_perturbation", "scorecam", "ablationcam", "samp",
        "samp_pp", "xrai")
QUICK_METHODS = ("vg", "ig", "gradcam")
#: Methods whose SIC is measured too (its CPU stage costs ~2 s a map on one core).
SIC_METHODS = ("vg", "ig", "gradcam")


def settings_for(device: str, with_compile: bool) -> dict[str, numerics.Numerics]:
    """The settings compared against fp32 (the first)."""
    out = {"fp32": numerics.Numerics(), "bf16": numerics.Numerics(precision="bf16"),
           "channels_last": numerics.Numerics(channels_last=True)}
    if device == "cuda":
        out["tf32"] = numerics.Numerics(precision="tf32")
    if with_compile:
        out["compile"] = numerics.Numerics(compile=True)
    return out


def _model(s: Settings, settings: numerics.Numerics) -> torch.nn.Module:
    return numerics.apply(load(s.model, weights=s.weights).to(s.device), settings)


def _auc(model: torch.nn.Module, settings: numerics.Numerics, x: torch.Tensor,
         target: torch.Tensor, maps: torch.Tensor) -> dict[str, np.ndarray]:
    """Insertion and deletion AUCs (fast profile) of ``maps`` [B, H, W] under ``settings``."""
    out = {}
    with numerics.numeric_mode(settings):
        for name in ("insertion", "deletion"):
            spec = metrics.get(name)
            cols = spec.fn(model, x, target, maps, **spec.params("fast"))
            out[name] = np.asarray(cols[f"{name}_auc"], np.float64)
    return out


def _sic(model: torch.nn.Module, settings: numerics.Numerics, x: torch.Tensor,
         target: torch.Tensor, maps: torch.Tensor) -> dict[str, Any]:
    """Per-image SIC curves of ``maps`` [B, H, W] (scores under ``settings``): AUCs [B],
    curves [B, P] (NaN rows for skipped images), their x grid [P]."""
    from salbench.metrics.pic import image_mask, pic_curve, predictor
    from salbench.models.base import to_uint8

    aucs, ys, grid = [], [], None
    with numerics.numeric_mode(settings):
        for i in range(len(x)):
            img = to_uint8(x[i])
            curve = pic_curve(img, maps[i].double().cpu().numpy(), image_mask(img),
                              predictor(model, int(target[i]), "sic"))
            aucs.append(curve.auc)
            ys.append(curve.y)
            grid = curve.x
    return {"auc": np.asarray(aucs, np.float64), "y": np.asarray(ys, np.float64),
            "x": np.asarray(grid, np.float64)}


def _aggregate(sic: dict[str, Any]) -> float:
    """PAIR's dataset-level SIC: the AUC of the median of the usable curves."""
    ok = np.isfinite(sic["y"]).all(axis=1)
    if not ok.any():
        return float("nan")
    return float(np.trapezoid(np.median(sic["y"][ok], axis=0), sic["x"]))


def _attribute(name: str, model: torch.nn.Module, settings: numerics.Numerics,
               x: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    spec = methods.get(name)
    params = {"seed": 0} if "seed" in spec.defaults else {}
    with numerics.numeric_mode(settings):
        t0 = time.perf_counter()
        res = methods.attribute_with_info(name, model, x, target, profile="fast",
                                          finite=False, **params)
        seconds = (time.perf_counter() - t0) / len(x)
    maps = methods.to_map(res.attr, spec.map_reduce or "abs_sum")
    rel = None
    if "completeness_error" in res.info and "score_delta" in res.info:
        err = res.info["completeness_error"].double().cpu().numpy()
        delta = res.info["score_delta"].double().abs().cpu().numpy()
        rel = float(np.median(err / np.maximum(delta, 1e-12)))
    return {"maps": maps.detach(), "seconds": seconds, "completeness": rel}


def _spearman_min(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest Spearman correlation of per-image pixel rankings; a, b: [B, H, W]."""
    out = []
    for u, v in zip(a, b, strict=True):
        ru = np.argsort(np.argsort(u.ravel(), kind="stable"), kind="stable").astype(np.float64)
        rv = np.argsort(np.argsort(v.ravel(), kind="stable"), kind="stable").astype(np.float64)
        out.append(float(np.corrcoef(ru, rv)[0, 1]))
    return min(out)


def run(s: Settings) -> dict[str, Any]:
    """Every setting against fp32 for every method (see the module docstring)."""
    names = list(s.methods) if s.methods else (
        list(QUICK_METHODS) if s.quick else [m for m in methods.names() if m not in SLOW])
    cases = settings_for(s.device, with_compile=s.compile)
    base = _model(s, cases["fp32"])
    x, target = photos(base, 2 if s.quick else 7, s)
    results: dict[str, dict[str, Any]] = {}
    for label, settings in cases.items():
        model = base if label == "fp32" else _model(s, settings)
        per: dict[str, Any] = {}
        t0 = time.perf_counter()
        for name in names:
            try:
                got = _attribute(name, model, settings, x, target)
                got["auc"] = _auc(model, settings, x, target, got["maps"])
                if name in SIC_METHODS and not s.quick:
                    got["sic"] = _sic(model, settings, x, target, got["maps"])
                if label != "fp32":
                    got["auc_fp32_scoring"] = _auc(base, cases["fp32"], x, target, got["maps"])
            except Exception as exc:  # reported in the table, the other methods go on
                got = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            per[name] = got
        results[label] = {"methods": per, "wall_s": round(time.perf_counter() - t0, 1)}
    rows = []
    ref = results["fp32"]["methods"]
    for label in cases:
        if label == "fp32":
            continue
        for name in names:
            a, b = ref[name], results[label]["methods"][name]
            if "error" in a or "error" in b:
                rows.append({"setting": label, "method": name,
                             "error": a.get("error") or b.get("error")})
                continue
            m0, m1 = a["maps"].double().cpu().numpy(), b["maps"].double().cpu().numpy()
            norms = np.linalg.norm(m0.reshape(len(m0), -1), axis=1)
            rel = np.linalg.norm((m1 - m0).reshape(len(m0), -1), axis=1) / np.maximum(norms,
                                                                                       1e-30)
            row: dict[str, Any] = {
                "setting": label, "method": name,
                "map_rel_l2_median": float(np.median(rel)), "map_rel_l2_max": float(rel.max()),
                "rank_spearman_min": _spearman_min(m0, m1),
                "completeness_fp32": a["completeness"], "completeness": b["completeness"],
                "time_ratio": b["seconds"] / a["seconds"] if a["seconds"] > 0 else None,
            }
            for metric in ("insertion", "deletion"):
                d_run = b["auc"][metric] - a["auc"][metric]
                d_map = b["auc_fp32_scoring"][metric] - a["auc"][metric]
                row[f"{metric}_max_abs_delta"] = float(np.abs(d_run).max())
                row[f"{metric}_mean_delta"] = float(d_run.mean())
                row[f"{metric}_map_only_max_abs_delta"] = float(np.abs(d_map).max())
                row[f"{metric}_map_only_mean_delta"] = float(d_map.mean())
            if "sic" in a and "sic" in b:
                d = b["sic"]["auc"] - a["sic"]["auc"]
                both = np.isfinite(d)
                row["sic_images"] = int(both.sum())
                row["sic_max_abs_delta"] = float(np.abs(d[both]).max()) if both.any() else None
                row["sic_aggregate_delta"] = _aggregate(b["sic"]) - _aggregate(a["sic"])
            rows.append(row)
    return {"model": s.model, "images": len(x), "device": s.device, "profile": "fast",
            "settings": {k: v.as_dict() for k, v in cases.items()},
            "setting_wall_s": {k: v["wall_s"] for k, v in results.items()},
            "fp32_auc_mean": {n: {m: float(ref[n]["auc"][m].mean()) for m in ref[n]["auc"]}
                              for n in names if "auc" in ref[n]},
            "rows": rows}


def _e(v: float | None) -> str:
    return "" if v is None else f"{v:.1e}"


def markdown(result: dict[str, Any]) -> str:
    """One row per (setting, method): the figures of the module docstring."""
    lines = [
        f"{result['model']}, {result['images']} bundled photos, device {result['device']}, "
        f"fast profile; each setting against fp32 (wall seconds per setting: "
        + ", ".join(f"{k} {v}" for k, v in result["setting_wall_s"].items()) + ").",
        "",
        "| setting | method | map rel. L2 median / max | min rank rho | completeness rel. "
        "fp32 -> setting | insertion AUC: max abs delta / mean delta (map only: max / mean) "
        "| deletion AUC: max abs delta / mean delta (map only: max / mean) | SIC AUC: max abs "
        "delta (images) / aggregate delta | time vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['setting']} | {r['method']} | failed: {r['error']} | | | | | | |")
            continue
        comp = "" if r["completeness"] is None else \
            f"{r['completeness_fp32']:.2e} -> {r['completeness']:.2e}"
        cells = [r["setting"], r["method"],
                 f"{_e(r['map_rel_l2_median'])} / {_e(r['map_rel_l2_max'])}",
                 f"{r['rank_spearman_min']:.6f}", comp]
        for metric in ("insertion", "deletion"):
            cells.append(f"{_e(r[f'{metric}_max_abs_delta'])} / "
                         f"{r[f'{metric}_mean_delta']:+.1e} "
                         f"({_e(r[f'{metric}_map_only_max_abs_delta'])} / "
                         f"{r[f'{metric}_map_only_mean_delta']:+.1e})")
        cells.append("" if "sic_images" not in r else
                     f"{_e(r['sic_max_abs_delta'])} ({r['sic_images']}) / "
                     f"{r['sic_aggregate_delta']:+.1e}")
        cells.append("" if r["time_ratio"] is None else f"{r['time_ratio']:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
