"""The metric registry: each metric runs on the model stage or the CPU stage (SPEC 5, 6).

A ``model`` metric needs forward passes: ``fn(model, x, target, maps, **params)`` with
x float [B, 3, H, W] in [0, 1], target int64 [B], maps float32 [B, H, W]; it returns a dict
column -> B values (numbers or 1-D float arrays for curves).
A ``cpu`` metric is model-free: ``fn(sample, **params)`` where ``sample`` has ``map`` float32
[H, W], ``image`` uint8 [H, W, 3], ``boxes`` float32 [N, 4] (x0, y0, x1, y1 in map pixels),
``label`` and ``target``; it returns a dict column -> value.
``columns`` maps each output column to "float" (scalar) or "curve" (list of float32).
A ``model`` metric may also come in a *split* form that the pipeline runs on three stages:
``prepare(sample, **params) -> (key, state, images)`` on the CPU (``images`` uint8
[N, H, W, 3] to score; metrics whose ``key`` is equal share the images), the model stage
scores the images (softmax probability of the target and "target is top-1"), and
``finalize(state, prob, top1, **params) -> columns`` on the CPU again. A metric whose
dataset-level figure is not a mean of per-sample values (SIC: AUC of the median curve) has
``summary(rows) -> {name: (value, n)}``, given one model x method's rows that have a map
(status ok or metric_error; a DataFrame with the metric's columns, ``label`` and ``target``).
Each scalar column has a direction (``directions``, else :data:`BUILTIN_DIRECTIONS`, else
neutral) that ``salbench compare --fail-on-change`` uses. ``fn`` and the split
form give the same results (tested for each such metric).
A model metric whose function has a keyword parameter ``attr`` also receives the method's
full attribution (float32 [B, 3, H, W]), e.g. for Sensitivity-N, which needs signed values;
one with a ``method`` parameter receives ``method(model, x=None, target=None) -> maps
float32 [N, H, W]``, which re-runs the attribution method (same parameters, same map
reduction) on another model (``mprt``: ``method(randomised)``, the batch's own inputs) and/or
on other inputs x float [N, 3, H, W] (robustness metrics: every perturbation of the batch
in one call, sample i's K = N / B perturbations in rows i*K .. i*K + K - 1; ``target``
int64 [N], by default the batch's targets repeated K times each). The callable runs the
method on chunks of ``resources.internal_batch_size`` images (:mod:`salbench.metrics.rerun`).

Registration checks each function's signature, and the registered ``fn`` / ``prepare`` /
``finalize`` check what they return (a dict of exactly the declared columns; on the model
stage B values per column; numbers for "float" columns, 1-D sequences for "curve" columns):
a plugin that breaks the contract raises BadInputError saying what was expected, which the
pipeline turns into ``metric_error`` rows. The user's function stays ``fn.__wrapped__``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from salbench.errors import BadInputError, ConfigError
from salbench.registry import Registry, check_signature, decorator, merge_params

STAGES = ("model", "cpu")
COLUMN_KINDS = ("float", "curve")
DIRECTIONS = ("higher", "lower", "neutral")

#: Which way is better for the built-in metrics' scalar columns (and their dataset-level
#: aggregate rows): "higher", "lower", or "neutral" for diagnostics and properties that have
#: no better side (skip flags, concentration, similarity to a reference). A column not
#: named here, and not given by its metric's ``directions``, is neutral.
BUILTIN_DIRECTIONS: dict[str, str] = {
    **{f"insertion{p}_{k}": "higher" for p in ("", "_igos", "_samp")
       for k in ("auc", "ratio_auc")},
    **{f"deletion{p}_{k}": "lower" for p in ("", "_igos", "_samp")
       for k in ("auc", "ratio_auc")},
    **{f"{m}_{k}": "higher" for m in ("sic", "aic", "sic_msssim", "aic_msssim")
       for k in ("auc", "aggregate_auc")},
    "pic_blur_sic_auc": "higher", "pic_blur_aic_auc": "higher",
    "pixel_flip_lerf_auc": "higher", "pixel_flip_morf_auc": "lower",
    "pointing_game_hit": "higher", "pointing_game_class_mean_hit": "higher",
    "wsol_f1": "higher", "wsol_iou": "higher", "wsol_roc_auc": "higher", "wsol_mae": "lower",
    "sensitivity_n": "higher",
    # a method that passes the randomisation check changes its map: low similarity is good
    "mprt_spearman": "lower", "mprt_ssim": "lower",
    "completeness": "lower", "completeness_relative": "lower",
}

#: The range a built-in scalar column can take, for confidence intervals that respect it.
BUILTIN_BOUNDS: dict[str, tuple[float, float]] = {
    # probabilities, hit rates and areas under curves of them; the SAMP protocol's curves
    # are peak-normalised logits, which can be negative
    **{c: (0.0, 1.0) for c in BUILTIN_DIRECTIONS if "ratio" not in c and "_samp" not in c
       and not c.startswith(("sensitivity", "mprt", "completeness"))},
    **{c: (0.0, float("inf")) for c in BUILTIN_DIRECTIONS if "ratio" in c
       and "_samp" not in c},
    "mprt_spearman": (-1.0, 1.0), "sensitivity_n": (-1.0, 1.0), "mprt_ssim": (-1.0, 1.0),
    # the Quantus / LATEC families, where the range holds whatever the parameters: a
    # correlation, a fraction, a Gini coefficient, a distance or a count
    **{c: (-1.0, 1.0) for c in ("faithfulness_correlation", "faithfulness_estimate",
                                "monotonicity_correlation", "random_logit")},
    **{c: (0.0, 1.0) for c in ("monotonicity", "increase_in_confidence", "input_invariance",
                               "road", "road_lerf", "sufficiency", "average_drop",
                               "consistency", "relevance_mass_accuracy",
                               "relevance_rank_accuracy", "sparseness")},
    **{c: (0.0, float("inf")) for c in ("infidelity", "max_sensitivity", "avg_sensitivity",
                                        "local_lipschitz", "continuity",
                                        "relative_input_stability",
                                        "relative_output_stability",
                                        "relative_representation_stability", "complexity",
                                        "effective_complexity", "non_sensitivity",
                                        # a fraction unless weighted by the box's size
                                        "topk_intersection", "attribution_localisation")},
}

#: Columns whose per-sample values are 0/1 hits (Wilson intervals for their mean).
BINARY_COLUMNS = frozenset({"pointing_game_hit", "monotonicity", "increase_in_confidence",
                            "input_invariance"})


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric (see the module docstring for ``fn``'s signature per stage)."""

    name: str
    fn: Callable[..., dict[str, Any]]
    stage: str
    columns: dict[str, str]
    defaults: dict[str, Any]
    fast: dict[str, Any]
    description: str = ""
    needs_attr: bool = False
    needs_method: bool = False
    prepare: Callable[..., tuple[Any, Any, Any]] | None = None
    finalize: Callable[..., dict[str, Any]] | None = None
    summary: Callable[[Any], dict[str, tuple[float, int]]] | None = None
    directions: dict[str, str] | None = None

    def params(self, profile: str = "paper", **overrides: Any) -> dict[str, Any]:
        """Defaults, then the fast profile (if chosen), then ``overrides`` (validated)."""
        return merge_params("metric", self.name, self.defaults, self.fast, profile, overrides)


def _build(
    name: str,
    fn: Callable[..., Any],
    *,
    stage: str,
    columns: dict[str, str],
    defaults: dict[str, Any] | None = None,
    fast: dict[str, Any] | None = None,
    prepare: Callable[..., tuple[Any, Any, Any]] | None = None,
    finalize: Callable[..., dict[str, Any]] | None = None,
    summary: Callable[[Any], dict[str, tuple[float, int]]] | None = None,
    directions: dict[str, str] | None = None,
) -> MetricSpec:
    if (prepare is None) != (finalize is None) or (prepare is not None and stage != "model"):
        raise ValueError(f"metric {name!r}: a split metric is a model metric with both "
                         "prepare and finalize")
    if stage not in STAGES:
        raise ValueError(f"metric {name!r}: stage must be one of {STAGES}, got {stage!r}")
    bad = {c: k for c, k in columns.items() if k not in COLUMN_KINDS}
    if bad:
        raise ValueError(f"metric {name!r}: column kinds must be in {COLUMN_KINDS}, got {bad}")
    if defaults is None:
        skip = 4 if stage == "model" else 1
        params = list(inspect.signature(fn).parameters.values())[skip:]
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    sig_params = inspect.signature(fn).parameters
    needs_attr, needs_method = "attr" in sig_params, "method" in sig_params
    defaults.pop("attr", None)
    defaults.pop("method", None)
    unknown_fast = sorted(set(fast or {}) - set(defaults))
    if unknown_fast:
        raise TypeError(f"metric {name!r}: fast={fast} names {unknown_fast}, which are not "
                        f"parameters of the function (its parameters: {sorted(defaults)})")
    extra = {k: None for k, used in (("attr", needs_attr), ("method", needs_method)) if used}
    if stage == "model":
        check_signature("metric", name, fn, ("model", "x", "target", "maps"),
                        {**defaults, **extra}, "fn(model, x, target, maps, **params)")
    else:
        check_signature("metric", name, fn, ("sample",), defaults, "fn(sample, **params)")
    if prepare is not None and finalize is not None:
        check_signature("metric", f"{name}.prepare", prepare, ("sample",), defaults,
                        "prepare(sample, **params) -> (key, state, images)")
        check_signature("metric", f"{name}.finalize", finalize, ("state", "prob", "top1"),
                        defaults, "finalize(state, prob, top1, **params) -> columns")
        prepare, finalize = _checked_prepare(name, prepare), _checked(name, "cpu", columns,
                                                                       finalize)
    bad_dir = {c: d for c, d in (directions or {}).items() if d not in DIRECTIONS}
    if bad_dir:
        raise ValueError(f"metric {name!r}: directions must be in {DIRECTIONS}, got {bad_dir}")
    scalars = [c for c, k in columns.items() if k == "float"]
    dirs = {c: BUILTIN_DIRECTIONS.get(c, "neutral") for c in scalars}
    dirs.update(directions or {})
    doc = (inspect.getdoc(fn) or "").split("\n", 1)[0]
    return MetricSpec(name, _checked(name, stage, columns, fn), stage, dict(columns),
                      dict(defaults), dict(fast or {}), doc, needs_attr, needs_method, prepare,
                      finalize, summary, dirs)


def check_columns(name: str, columns: dict[str, str], out: Any,
                  batch: int | None = None) -> dict[str, Any]:
    """Check a metric's output against its declared ``columns``; BadInputError otherwise.

    ``batch`` None: one sample's columns (CPU stage, ``finalize``); each value a number
    ("float") or a 1-D sequence of numbers ("curve"); returned as plain floats and lists.
    ``batch`` B: a model-stage batch; each value B such entries (a sequence, array or tensor
    of length B); returned unchanged.
    """
    if not isinstance(out, Mapping):
        raise BadInputError(f"metric {name!r} returned {type(out).__name__}; expected a dict "
                            f"column -> value with the columns {sorted(columns)}")
    missing, extra = sorted(set(columns) - set(out)), sorted(set(out) - set(columns))
    if missing or extra:
        raise BadInputError(
            f"metric {name!r} returned the columns {sorted(out)}; expected exactly the declared "
            f"{sorted(columns)} (missing {missing}, undeclared {extra})"
        )
    if batch is None:
        return {col: _value(name, col, kind, out[col]) for col, kind in columns.items()}
    for col, kind in columns.items():
        values = out[col]
        n = len(values) if hasattr(values, "__len__") else None
        if n != batch:
            raise BadInputError(f"metric {name!r}: column {col!r} has {n} values for a batch "
                                f"of {batch} images; expected one {kind} per image")
        for v in values:
            _value(name, col, kind, v)
    return dict(out)


def _value(name: str, col: str, kind: str, v: Any) -> float | list[float]:
    """One sample's value as a float or a list of floats (as the pipeline stores it)."""
    try:
        arr = np.asarray(v, np.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise BadInputError(f"metric {name!r}: column {col!r} holds {type(v).__name__} "
                            f"({exc}); expected a {kind} of numbers") from None
    want = 0 if kind == "float" else 1
    if arr.ndim != want:
        what = "a number" if kind == "float" else "a 1-D sequence of numbers"
        raise BadInputError(f"metric {name!r}: column {col!r} holds an array of shape "
                            f"{arr.shape}; expected {what} per image")
    return float(arr) if want == 0 else arr.tolist()


def _checked(name: str, stage: str, columns: dict[str, str],
             fn: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    """``fn`` with its output checked by :func:`check_columns` (model stage: x is the
    second positional argument, and its length is the batch size)."""

    @functools.wraps(fn)
    def checked(*args: Any, **kwargs: Any) -> dict[str, Any]:
        batch = len(args[1] if len(args) > 1 else kwargs["x"]) if stage == "model" else None
        return check_columns(name, columns, fn(*args, **kwargs), batch)

    return checked


def _checked_prepare(name: str, prepare: Callable[..., Any]) -> Callable[..., Any]:
    """``prepare`` with its output checked: (hashable key, state, uint8 [N, H, W, 3])."""

    @functools.wraps(prepare)
    def checked(*args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
        out = prepare(*args, **kwargs)
        if not isinstance(out, tuple) or len(out) != 3:
            raise BadInputError(f"metric {name!r}: prepare returned {type(out).__name__}; "
                                "expected a tuple (key, state, images)")
        key, _, images = out
        try:
            hash(key)
        except TypeError:
            raise BadInputError(f"metric {name!r}: prepare's key {key!r} is not hashable; "
                                "expected e.g. a tuple of the protocol's parameters") from None
        shape = getattr(images, "shape", None)
        if getattr(images, "dtype", None) != np.uint8 or len(shape or ()) != 4 \
                or shape[-1] != 3:
            raise BadInputError(
                f"metric {name!r}: prepare's images are {type(images).__name__} "
                f"{getattr(images, 'dtype', '')} {shape}; expected uint8 [N, H, W, 3]"
            )
        return out

    return checked

REGISTRY: Registry[MetricSpec] = Registry("metric")

#: ``@register("name", stage="model"|"cpu", columns={...}, defaults=..., fast=...)``.
register = decorator(REGISTRY, _build)


def direction(column: str) -> str:
    """Which way is better for a summary metric column: "higher", "lower" or "neutral".

    From the registered metrics' ``directions`` (a plugin's ``register(..., directions=)``),
    then the built-in table; anything else (method diagnostics such as completeness_error,
    timings, target_prob) is neutral.
    """
    for key in REGISTRY.names():
        spec = REGISTRY.get(key)
        if isinstance(spec, MetricSpec) and column in (spec.directions or {}):
            return spec.directions[column]
    return BUILTIN_DIRECTIONS.get(column, "neutral")


def bounds(column: str) -> tuple[float, float]:
    """The range a summary metric column can take ((-inf, inf) when not known)."""
    return BUILTIN_BOUNDS.get(column, (-float("inf"), float("inf")))


def get(name: str) -> MetricSpec:
    """The MetricSpec registered as ``name``, or of an import path ``pkg.mod:fn`` to a
    function registered with ``@register`` (importing its module registers it)."""
    entry = REGISTRY.get(name)
    if callable(entry) and not isinstance(entry, MetricSpec):
        registered = REGISTRY.find(entry)
        entry = REGISTRY.get(registered) if registered else entry
    if not isinstance(entry, MetricSpec):
        raise ConfigError(
            f"metric {name!r} resolves to {type(entry).__name__}; register it with "
            "@salbench.metrics.register(name, stage=..., columns=...)"
        )
    return entry
