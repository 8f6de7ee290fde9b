"""PIC's registered metrics: ``sic``, ``aic``, ``sic_msssim``, ``aic_msssim`` and ``pic_blur``.

Each one in the batch form (the model stage) and the split form (CPU prepare, model scores,
CPU finalize), with a dataset-level summary. The registered functions keep their keyword
parameters (the registry reads their defaults; configs set them by name) and hand them to
the orchestrator as one :class:`PicSettings`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from salbench.errors import BadInputError
from salbench.metrics.pic.curve import (
    DEFAULT_THRESHOLDS,
    KINDS,
    PIC_BLUR_STEPS,
    SKIP_STATUSES,
    PicCurve,
)
from salbench.metrics.pic.orchestrator import pic_batch, pic_finalize, pic_prepare
from salbench.metrics.pic.settings import INTERPOLATED, PicSettings
from salbench.metrics.pic.transport import EncodedImages
from salbench.metrics.registry import register


def _coarse(curve: PicCurve, points: int) -> np.ndarray:
    """The curve's y at ``points`` evenly spaced x in [0, 1] (float32; NaN when not ok)."""
    n = len(curve.x)
    if (n - 1) % (points - 1) == 0:
        y = curve.y[:: (n - 1) // (points - 1)]
    else:
        y = np.interp(np.linspace(0.0, 1.0, points), curve.x, curve.y)
    return np.asarray(y, np.float32)


def _columns(name: str, curves: list[PicCurve], curve_points: int) -> dict[str, Any]:
    skipped = [1.0 if c.status in SKIP_STATUSES else (0.0 if c.ok else float("nan"))
               for c in curves]
    return {
        f"{name}_auc": np.asarray([c.auc for c in curves], np.float64),
        f"{name}_skipped": np.asarray(skipped, np.float64),
        f"{name}_curve": [_coarse(c, curve_points) for c in curves],
    }


def _pic_metric(kind: str, info: str) -> Callable[..., dict[str, Any]]:
    name = kind if info == "webp" else f"{kind}_msssim"

    def metric(
        model: Any,
        x: torch.Tensor,
        target: torch.Tensor,
        maps: torch.Tensor,
        *,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        min_pred: float = 0.0,
        keep_monotonous: bool = True,
        num_points: int = 1001,
        curve_points: int = 101,
        mask_fraction: float = 0.01,
        seed: int = 0,
        bokeh: str = "interp",
        internal_batch_size: int = 64,
        num_workers: int | None = None,
    ) -> dict[str, Any]:
        settings = PicSettings(info=info, bokeh=_interpolated(name, bokeh),
                               thresholds=tuple(thresholds), min_pred=min_pred,
                               keep_monotonous=keep_monotonous, num_points=num_points,
                               mask_fraction=mask_fraction, seed=seed, num_workers=num_workers)
        curves = pic_batch(model, x, target, maps, kinds=(kind,), settings=settings,
                           internal_batch_size=internal_batch_size)[kind]
        return _columns(name, curves, curve_points)

    level = "normalised lossless-WebP size" if info == "webp" else "MS-SSIM vs the original"
    what = "softmax" if kind == "sic" else "accuracy"
    metric.__doc__ = (
        f"{kind.upper()} ({what} information curve, PAIR protocol) with the {level} as the "
        f"information level; per-sample AUC (NaN when skipped), {name}_skipped (1 skipped, "
        "0 ok, NaN invalid map) and the curve at curve_points evenly spaced levels. bokeh: "
        "'interp' (PAIR's images, the default) or 'fast' (only the boundary of the kept "
        "pixels triangulated; equal up to ties of cocircular pixels)."
    )
    metric.__name__ = name
    return metric


def _interpolated(name: str, bokeh: str) -> str:
    """``bokeh`` checked for sic / aic / sic_msssim / aic_msssim: "interp" or "fast"."""
    if bokeh not in INTERPOLATED:
        raise BadInputError(f"metric {name!r}: bokeh must be one of {INTERPOLATED}, got "
                            f"{bokeh!r} (the blurred base is the pic_blur metric)")
    return bokeh


def _cols(name: str) -> dict[str, str]:
    return {f"{name}_auc": "float", f"{name}_skipped": "float", f"{name}_curve": "curve"}


def _first(columns: dict[str, Any]) -> dict[str, Any]:
    """Columns of a one-sample batch -> that sample's values."""
    return {k: v[0] for k, v in columns.items()}


def _split_parts(kind: str, info: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """prepare / finalize of the split form of sic, aic, sic_msssim, aic_msssim."""
    name = kind if info == "webp" else f"{kind}_msssim"

    def prepare(sample: dict[str, Any], *, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                mask_fraction: float = 0.01, seed: int = 0, bokeh: str = "interp",
                num_workers: int | None = None,
                **_: Any) -> tuple[Any, dict[str, Any], EncodedImages]:
        key = (bokeh, info, tuple(thresholds), mask_fraction, seed)
        settings = PicSettings(info=info, bokeh=_interpolated(name, bokeh),
                               thresholds=tuple(thresholds), mask_fraction=mask_fraction,
                               seed=seed, num_workers=num_workers)
        state, images = pic_prepare(sample["image"], sample["map"], settings, encoded=True)
        return key, state, images

    def finalize(state: dict[str, Any], prob: np.ndarray, top1: np.ndarray, *,
                 min_pred: float = 0.0, keep_monotonous: bool = True, num_points: int = 1001,
                 curve_points: int = 101, **_: Any) -> dict[str, Any]:
        settings = PicSettings(min_pred=min_pred, keep_monotonous=keep_monotonous,
                               num_points=num_points)
        curve = pic_finalize(state, prob if kind == "sic" else top1, settings)
        return _first(_columns(name, [curve], curve_points))

    return prepare, finalize


def _summary(name: str, kind: str) -> Callable[[Any], dict[str, tuple[float, int]]]:
    """Dataset-level PIC of one model x method (PAIR's aggregation): the AUC of the median
    (SIC) or mean (AIC) of the samples' curves that were not skipped. The per-sample curves
    in the tables have ``curve_points`` (101) points, so this is the trapezoid AUC on that
    grid (the 1001-point curves are not stored)."""

    def summary(rows: Any) -> dict[str, tuple[float, int]]:
        ok = rows[rows[f"{name}_skipped"] == 0.0]
        if ok.empty:
            return {f"{name}_aggregate_auc": (float("nan"), 0)}
        ys = np.stack([np.asarray(c, np.float64) for c in ok[f"{name}_curve"]])
        y = np.median(ys, axis=0) if kind == "sic" else ys.mean(axis=0)
        x = np.linspace(0.0, 1.0, ys.shape[1])
        return {f"{name}_aggregate_auc": (float(np.trapezoid(y, x)), len(ok))}

    return summary


def _register_pic(kind: str, info: str) -> Callable[..., dict[str, Any]]:
    name = kind if info == "webp" else f"{kind}_msssim"
    prepare, finalize = _split_parts(kind, info)
    return register(name, _pic_metric(kind, info), stage="model", columns=_cols(name), fast={},
                    prepare=prepare, finalize=finalize, summary=_summary(name, kind))


sic = _register_pic("sic", "webp")
aic = _register_pic("aic", "webp")
sic_msssim = _register_pic("sic", "msssim")
aic_msssim = _register_pic("aic", "msssim")


def _pic_blur(
    model: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    steps: int = PIC_BLUR_STEPS,
    blur_radius: float = 20.0,
    min_pred: float = 0.0,
    keep_monotonous: bool = True,
    num_points: int = 1001,
    curve_points: int = 101,
    internal_batch_size: int = 64,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """pic_blur (paper 001's IDGI replication): Gaussian-blur base (radius 20), 25 bokeh images
    at evenly spaced pixel counts; per-sample SIC and AIC AUCs, plus the raw points (levels,
    p / p_original, top-1) for the paper's 100-bin dataset aggregation (aggregate_binned)."""
    fractions = tuple(j / steps for j in range(1, steps))
    settings = PicSettings(info="webp", bokeh="blur", thresholds=fractions, min_pred=min_pred,
                           keep_monotonous=keep_monotonous, num_points=num_points,
                           blur_radius=blur_radius, num_workers=num_workers)
    res = pic_batch(model, x, target, maps, kinds=KINDS, settings=settings,
                    internal_batch_size=internal_batch_size)
    out: dict[str, Any] = {}
    for kind in KINDS:
        out.update(_columns(f"pic_blur_{kind}", res[kind], curve_points))
    extras = [_pic_blur_points(c_sic, c_aic, steps)
              for c_sic, c_aic in zip(res["sic"], res["aic"], strict=True)]
    for i, key in enumerate(("pic_blur_levels", "pic_blur_prob_ratio", "pic_blur_top1")):
        out[key] = [e[i] for e in extras]
    return out


def _pic_blur_points(c_sic: PicCurve, c_aic: PicCurve,
                     steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample's (normalised levels, p / p_original, top-1) at the steps + 1 pixel counts
    for :func:`aggregate_binned`; NaN when the sample has no usable curve."""
    lo, lb = c_sic.level_original, c_sic.level_blurred
    skipped = c_sic.status in SKIP_STATUSES and c_aic.status in SKIP_STATUSES
    if skipped or not (np.isfinite(c_sic.levels).all() and np.isfinite(c_aic.preds).all()
            and np.isfinite(c_sic.preds).all() and lo > lb):
        nan = np.full(steps + 1, np.nan, np.float32)
        return nan, nan, nan
    lv = np.concatenate([[lb], c_sic.levels, [lo]])
    levels = np.clip((lv - lb) / (lo - lb), 0, 1).astype(np.float32)
    p = np.concatenate([[c_sic.pred_blurred], c_sic.preds, [c_sic.pred_original]])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (p / c_sic.pred_original).astype(np.float32)
    t = np.concatenate([[c_aic.pred_blurred], c_aic.preds, [c_aic.pred_original]])
    return levels, ratio, t.astype(np.float32)


def _pic_blur_prepare(sample: dict[str, Any], *, steps: int = PIC_BLUR_STEPS,
                      blur_radius: float = 20.0, num_workers: int | None = None,
                      **_: Any) -> tuple[Any, dict[str, Any], EncodedImages]:
    fractions = tuple(j / steps for j in range(1, steps))
    settings = PicSettings(info="webp", bokeh="blur", thresholds=fractions,
                           blur_radius=blur_radius, num_workers=num_workers)
    state, images = pic_prepare(sample["image"], sample["map"], settings, encoded=True)
    return ("blur", blur_radius, fractions), state, images


def _pic_blur_finalize(state: dict[str, Any], prob: np.ndarray, top1: np.ndarray, *,
                       steps: int = PIC_BLUR_STEPS, min_pred: float = 0.0,
                       keep_monotonous: bool = True, num_points: int = 1001,
                       curve_points: int = 101, **_: Any) -> dict[str, Any]:
    settings = PicSettings(min_pred=min_pred, keep_monotonous=keep_monotonous,
                           num_points=num_points)
    curves = {k: pic_finalize(state, prob if k == "sic" else top1, settings) for k in KINDS}
    out: dict[str, Any] = {}
    for kind in KINDS:
        out.update(_first(_columns(f"pic_blur_{kind}", [curves[kind]], curve_points)))
    levels, ratio, top = _pic_blur_points(curves["sic"], curves["aic"], steps)
    out.update(pic_blur_levels=levels, pic_blur_prob_ratio=ratio, pic_blur_top1=top)
    return out


pic_blur = register(
    "pic_blur", _pic_blur, stage="model",
    columns={**_cols("pic_blur_sic"), **_cols("pic_blur_aic"), "pic_blur_levels": "curve",
             "pic_blur_prob_ratio": "curve", "pic_blur_top1": "curve"},
    fast={}, prepare=_pic_blur_prepare, finalize=_pic_blur_finalize,
)
