"""PIC's one orchestrator and the entry points that compose it.

:func:`run_pic` is the protocol for a list of (image, map) jobs: base images and levels,
one scoring pass over [original, fully blurred] of every job (it decides the skips, so
skipped samples cost no bokeh images), bokeh images and levels of the jobs some kind still
needs, one scoring pass over them, then each job's curve (:func:`finish_curve`). The
single-image :func:`pic_curve` and the batch :func:`pic_batch` are :func:`run_pic` with a
different scorer; the split form is its two CPU halves around the pipeline's model stage:
:func:`pic_prepare` (base, bokeh images and levels of every threshold, as the skips are not
known yet) and :func:`pic_finalize` (:func:`finish_curve`). Every entry point takes one
:class:`PicSettings` (or its fields by name).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from salbench.methods.engine import for_chunks
from salbench.metrics.pic.curve import (
    KINDS,
    SKIP_STATUSES,
    PicCurve,
    curve_from_levels,
    invalid_curve,
    skip_status,
)
from salbench.metrics.pic.engine import Job, PicEngine
from salbench.metrics.pic.images import check_inputs, image_mask
from salbench.metrics.pic.settings import INTERPOLATED, PicSettings, settings_with
from salbench.metrics.pic.transport import EncodedImages
from salbench.models.base import to_uint8

#: images uint8 [H, W, C] each, and the index of the job each belongs to ->
#: kind -> prediction float64 [len(images)].
Scorer = Callable[[list[np.ndarray], np.ndarray], dict[str, np.ndarray]]


def finish_curve(state: dict[str, Any], pred_original: float, pred_blurred: float,
                 preds: Sequence[float], settings: PicSettings) -> PicCurve:
    """One sample's curve from its :meth:`Job.state` and predictions (empty ``preds`` when
    its bokeh images were not scored); the state's thresholds and level normalisation win
    over ``settings``', which give the skip and curve options."""
    if state["message"]:
        return invalid_curve(state["message"], state["thresholds"], settings.num_points)
    return curve_from_levels(
        state["level_original"], state["level_blurred"], state["levels"], pred_original,
        pred_blurred, preds, thresholds=state["thresholds"],
        normalize_levels=state["normalize"], **settings.curve_options(),
    )


def run_pic(jobs: list[Job], score: Scorer, kinds: Sequence[str],
            settings: PicSettings) -> dict[str, list[PicCurve]]:
    """The PIC curves of ``jobs`` for every kind of prediction ``score`` gives (see the
    module docstring): kind -> one PicCurve per job, invalid jobs as ``invalid_input``."""
    engine = PicEngine(settings)
    valid = [j for j in jobs if j.valid]
    engine.prepare(valid)
    pre = {k: np.zeros((0, 2)) for k in kinds}
    if valid:
        got = score([im for j in valid for im in (j.image, j.base)],  # type: ignore[misc]
                    np.repeat(np.arange(len(valid)), 2))
        pre = {k: np.asarray(p, np.float64).reshape(-1, 2) for k, p in got.items()}
    need = [v for v, j in enumerate(valid)
            if any(skip_status(j.level_original, j.level_blurred, *pre[k][v],
                               settings.min_pred)[0] not in SKIP_STATUSES for k in kinds)]
    engine.bokeh_images([valid[v] for v in need])
    nt = len(settings.thresholds)
    preds = {k: np.zeros((0, nt)) for k in kinds}
    if need:
        got = score([im for v in need for im in valid[v].bokeh],
                    np.repeat(np.asarray(need), nt))
        preds = {k: np.asarray(p, np.float64).reshape(-1, nt) for k, p in got.items()}
    row = {v: r for r, v in enumerate(need)}
    states = [j.state(settings) for j in jobs]
    out: dict[str, list[PicCurve]] = {}
    for k in kinds:
        curves, v = [], 0
        for j, state in zip(jobs, states, strict=True):
            if not j.valid:
                curves.append(finish_curve(state, np.nan, np.nan, [], settings))
                continue
            curves.append(finish_curve(state, *pre[k][v],
                                       preds[k][row[v]] if v in row else [], settings))
            v += 1
        out[k] = curves
    return out


def pic_curve(
    image: np.ndarray,
    saliency_map: np.ndarray,
    random_mask: np.ndarray | None,
    predict: Callable[[np.ndarray], Sequence[float] | np.ndarray],
    settings: PicSettings | None = None,
    **overrides: Any,
) -> PicCurve:
    """One image's Performance Information Curve (SIC or AIC, by ``predict``).

    Args:
        image: uint8 [H, W, 3] (or [H, W] / [H, W, C]).
        saliency_map: float [H, W]; higher = more important (apply abs before if wanted).
        random_mask: bool [H, W], the pixels every bokeh image keeps (PAIR: 1%); unused (may
            be None) with ``bokeh="blur"``. ``bokeh="fast"`` takes it as ``"interp"`` does.
        predict: uint8 [N, H, W, 3] -> float [N]: softmax of the original class (SIC) or
            1.0/0.0 "still top-1" (AIC). Called twice: on [original, fully blurred], then
            (unless skipped) on all bokeh images at once.
        settings: a :class:`PicSettings` (default: PAIR's protocol), with ``overrides`` (its
            field names: ``info``, ``thresholds``, ``min_pred``, ``keep_monotonous``,
            ``num_points``, ``bokeh``, ``blur_radius``, ``num_workers``) replaced;
            ``mask_fraction`` and ``seed`` are unused here (the mask is given).

    Returns:
        PicCurve; status "ok", a skip reason, or "invalid_input" (never raises on bad data).
    """
    st = settings_with(settings, overrides)
    problem = check_inputs(image, saliency_map, random_mask, st.bokeh)
    mask = None if random_mask is None else np.asarray(random_mask, dtype=bool)
    job = Job(image, np.asarray(saliency_map), mask, valid=not problem, message=problem)

    def score(images: list[np.ndarray], _owner: np.ndarray) -> dict[str, np.ndarray]:
        return {"pred": np.asarray(predict(np.stack(images)), np.float64).ravel()}

    return run_pic([job], score, ("pred",), st)["pred"][0]


@torch.no_grad()
def model_scores(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: Sequence[np.ndarray],
    targets: Sequence[int] | np.ndarray,
    *,
    internal_batch_size: int = 64,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probability of the target and "target is top-1" (1.0/0.0), float64 [N] each.

    images: uint8 [H, W, 3] each (converted to float / 255 as :func:`to_tensor`); chunked by
    ``internal_batch_size``, halved on out-of-memory.
    """
    n = len(images)
    prob, top1 = np.empty(n), np.empty(n)
    if n == 0:
        return prob, top1
    if device is None:
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else "cpu"
    tgt = torch.as_tensor(np.asarray(targets, np.int64), device=device)

    def compute(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = int(idx[0]), int(idx[-1]) + 1
        batch = torch.from_numpy(np.stack(images[start:stop])).to(device)
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        logits = model(x).float()
        t = tgt[start:stop].view(-1, 1)
        p = torch.softmax(logits, dim=1).gather(1, t).squeeze(1)
        return p, (logits.argmax(dim=1, keepdim=True) == t).squeeze(1)

    def done(idx: torch.Tensor, result: tuple[torch.Tensor, torch.Tensor]) -> None:
        start, stop = int(idx[0]), int(idx[-1]) + 1
        prob[start:stop] = result[0].double().cpu().numpy()
        top1[start:stop] = result[1].double().cpu().numpy()

    for_chunks(n, internal_batch_size, compute, done)
    return prob, top1


def predictor(
    model: Callable[[torch.Tensor], torch.Tensor], target: int, kind: str = "sic", *,
    internal_batch_size: int = 64,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``predict`` for :func:`pic_curve`: uint8 [N, H, W, 3] -> float [N] for one target.

    kind "sic": softmax probability of ``target``; "aic": 1.0 if ``target`` is top-1.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def predict(images: np.ndarray) -> np.ndarray:
        prob, top1 = model_scores(model, list(images), [target] * len(images),
                                  internal_batch_size=internal_batch_size)
        return prob if kind == "sic" else top1

    return predict


def pic_batch(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    maps: torch.Tensor,
    *,
    kinds: Sequence[str] = ("sic",),
    settings: PicSettings | None = None,
    internal_batch_size: int = 64,
    **overrides: Any,
) -> dict[str, list[PicCurve]]:
    """PIC curves of a batch: kind -> one PicCurve per sample (same as :func:`pic_curve`).

    x float [B, 3, H, W] in [0, 1] (rounded to uint8 first, as the protocol works on uint8
    images), target int64 [B], maps float [B, H, W]. ``settings`` / ``overrides`` as in
    :func:`pic_curve`; the random mask of each image is :func:`image_mask` (seeded by
    ``seed`` and the image's content, ``mask_fraction`` of the pixels). Two chunked forward
    passes of ``internal_batch_size`` over the whole batch (:func:`run_pic`); one pass serves
    all ``kinds`` (softmax and top-1 together).
    """
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kinds must be in {KINDS}, got {k!r}")
    st = settings_with(settings, overrides)
    maps_np = maps.detach().float().cpu().numpy()
    tgt = target.detach().cpu().numpy().astype(np.int64)
    jobs = []
    for i in range(x.shape[0]):
        img = to_uint8(x[i])
        problem = check_inputs(img, maps_np[i], np.zeros(img.shape[:2], bool), "interp")
        mask = (image_mask(img, st.mask_fraction, st.seed)
                if st.bokeh in INTERPOLATED and not problem else None)
        jobs.append(Job(img, maps_np[i], mask, valid=not problem, message=problem))
    valid_targets = tgt[[i for i, j in enumerate(jobs) if j.valid]]

    def score(images: list[np.ndarray], owner: np.ndarray) -> dict[str, np.ndarray]:
        prob, top1 = model_scores(model, images, valid_targets[owner],
                                  internal_batch_size=internal_batch_size)
        return {"sic": prob, "aic": top1}

    return run_pic(jobs, score, kinds, st)


def pic_prepare(
    image: np.ndarray, saliency_map: np.ndarray, settings: PicSettings | None = None,
    *, encoded: bool = False, **overrides: Any,
) -> tuple[dict[str, Any], np.ndarray | EncodedImages]:
    """The CPU half of PIC before any prediction: bokeh images and information levels.

    image uint8 [H, W, 3], saliency_map float [H, W]; ``settings`` / ``overrides`` as in
    :func:`pic_batch`. Returns (state, images): images uint8 [2 + T, H, W, 3] = the original,
    the fully blurred image and the T bokeh images in threshold order (all of them: which
    samples are skipped is only known after the predictions); state holds the levels for
    :func:`pic_finalize` (or the reason the input is invalid, with no images). Same random
    mask and images as :func:`pic_batch`. With ``encoded`` the images come as
    :class:`EncodedImages` (lossless WebP: the WebP level's own encodings where it computed
    them; a sequence of the same uint8 images), the form the pipeline sends between stages.
    """
    st = settings_with(settings, overrides)
    problem = check_inputs(image, saliency_map, np.zeros(np.shape(image)[:2], bool), "interp")
    if problem:
        return (Job(image, None, None, valid=False, message=problem).state(st),
                EncodedImages([]) if encoded else np.zeros((0, 1, 1, 3), np.uint8))
    mask = image_mask(image, st.mask_fraction, st.seed) if st.bokeh in INTERPOLATED else None
    job = Job(image, np.asarray(saliency_map), mask)
    engine = PicEngine(st)
    engine.prepare([job])
    engine.bokeh_images([job])
    assert job.base is not None
    images = [image, job.base, *job.bokeh]
    if encoded:
        return job.state(st), EncodedImages.encode(images, job.webp or None)
    return job.state(st), np.stack(images)


def pic_finalize(
    state: dict[str, Any], scores: np.ndarray, settings: PicSettings | None = None,
    **overrides: Any,
) -> PicCurve:
    """The CPU half of PIC after the predictions: the curve of one sample.

    scores float [2 + T]: the prediction (softmax of the target for SIC, top-1 hit for AIC)
    on the images of :func:`pic_prepare`, in the same order. The state's thresholds and
    level normalisation are used; ``settings`` / ``overrides`` give ``min_pred``,
    ``keep_monotonous`` and ``num_points``.
    """
    st = settings_with(settings, overrides)
    if state["message"]:
        return finish_curve(state, np.nan, np.nan, [], st)
    s = np.asarray(scores, np.float64)
    return finish_curve(state, s[0], s[1], s[2:], st)
