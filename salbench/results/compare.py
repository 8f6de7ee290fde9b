"""Compare two runs: per model x method x metric deltas with 95% intervals (SPEC 6).

Usage::

    salbench compare RUN_A RUN_B                       # B relative to A (delta = B - A)
    salbench compare runs/old runs/new --metric insertion_auc --metric deletion_auc
    salbench compare runs/old runs/new --metric insertion        # a metric's scalar columns
    salbench compare runs/old runs/new --csv delta.csv           # also write the full table

It prints what differs between the two runs' manifests first (config keys, config hash,
dataset fingerprint, package versions, git commit, unfinished runs), then one line per
model x method x metric: the two means, ``delta = mean_b - mean_a`` (4 significant digits),
its 95% confidence interval, the numbers of values used and ``*`` where the interval
excludes 0. Each metric has a direction (the metric registry's: higher or lower is better, or
neutral for diagnostics such as completeness error), so a significant change is listed as
worse, better or (neutral) changed; ``--fail-on-change`` exits 1 only on a worse one.
Otherwise it exits 0 whatever changed; a path that is not a run directory (no
``manifest.json``, no finished shard) exits 2 with one line naming the path.

Statistics. A metric is every float column of the per-sample table (``target_prob``, method
diagnostics, metric scalars; not curves), plus the dataset-level figures found only in
``summary.parquet`` (``sic_aggregate_auc``, ...). Only rows with a result (status ``ok``,
``metric_error`` or ``degenerate_map``) and a finite value count. When both runs hold the
same ``sample_id`` set for a model x method (a rerun of the same data) the comparison is
*paired*: samples whose value is missing or without a result in either run are dropped,
``mean_a``/``mean_b``/``n_a``/``n_b`` describe the remaining pairs, and the interval is the
Student t interval of the mean per-sample difference. Otherwise it is Welch's t interval
from the two runs' values. Dataset-level figures get the delta of the two summary values and
no interval. A model x method x metric that only one run has is listed with ``only_in`` =
``"a"`` or ``"b"``; one with no value in either run (a diagnostic of another method) is left
out.

From Python::

    from salbench.results.compare import compare_runs
    table = compare_runs(Path("runs/old"), Path("runs/new"))
    table.attrs["differences"]        # the manifest differences, one string each
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from salbench.errors import ConfigError
from salbench.metrics.registry import direction
from salbench.results.groups import TARGET_STATUSES, status_in
from salbench.results.samples import RunData, load_run
from salbench.results.summary import t_interval

#: Columns of the table :func:`compare_runs` returns, in order.
COLUMNS = [
    "model", "method", "metric", "mean_a", "mean_b", "delta", "ci95_low", "ci95_high",
    "n_a", "n_b", "paired", "significant", "direction", "change", "only_in", "n_error_a",
    "n_error_b",
]
GROUP = ["model", "method"]


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; lists and scalars are leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


_MISSING = object()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "<missing>"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def config_differences(manifest_a: dict[str, Any], manifest_b: dict[str, Any]) -> list[str]:
    """What differs between two manifests, one ``"key: A -> B"`` string each.

    Compared: ``config_hash``, ``dataset.fingerprint``, ``dataset.rows``, ``source_hash``,
    ``git_commit``, every package version and every (flattened) config key.
    """
    def pick(m: dict[str, Any]) -> dict[str, Any]:
        dataset = m.get("dataset") or {}
        out = {"config_hash": m.get("config_hash", _MISSING),
               "dataset.fingerprint": dataset.get("fingerprint", _MISSING),
               "dataset.rows": dataset.get("rows", _MISSING),
               "source_hash": m.get("source_hash", _MISSING),
               "git_commit": m.get("git_commit", _MISSING)}
        out.update(_flatten(m.get("packages") or {}, "packages"))
        out.update(_flatten(m.get("config") or {}, "config"))
        return out

    a, b = pick(manifest_a), pick(manifest_b)
    fixed = ["config_hash", "dataset.fingerprint", "dataset.rows", "source_hash", "git_commit"]
    lines = []
    for key in [*fixed, *sorted((set(a) | set(b)) - set(fixed))]:
        va, vb = a.get(key, _MISSING), b.get(key, _MISSING)
        if va != vb:
            lines.append(f"{key}: {_show(va)} -> {_show(vb)}")
    return lines


def _status_notes(run: RunData, label: str) -> list[str]:
    status = run.manifest.get("status")
    if status in (None, "complete"):
        return []
    total = run.manifest.get("shards", "?")
    note = run.manifest.get("status_note")
    why = f"; {note}" if note else ""
    return [f"run {label} is not complete (status {status}, {run.shards_finished} of {total} "
            f"shards finished{why}); only finished shards are compared"]


@dataclass(frozen=True)
class _Side:
    """One run's rows of one model x method, sorted by ``sample_id``, as Arrow (no Python
    object per row; a column becomes numpy when a metric asks for it)."""

    table: pa.Table  # sample_id, status and metric columns, sorted by sample_id

    @cached_property
    def target(self) -> np.ndarray:
        """bool [rows]: the row has a target (its values count)."""
        return status_in(self.table.column("status"), TARGET_STATUSES)

    def values(self, col: str) -> np.ndarray:
        """float64 [rows]: ``col`` in the table's order."""
        return self.table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)


def _finite_ok(side: _Side, col: str) -> np.ndarray:
    v = side.values(col)[side.target]
    return v[np.isfinite(v)]


def paired_interval(diff: np.ndarray) -> tuple[float, float]:
    """Student t 95% interval of the mean of paired differences (NaN when fewer than 2)."""
    return t_interval(diff)


def welch_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Welch's t 95% interval of ``mean(b) - mean(a)`` (NaN when a side has fewer than 2)."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return math.nan, math.nan
    delta = float(b.mean() - a.mean())
    va, vb = float(a.var(ddof=1)) / na, float(b.var(ddof=1)) / nb
    se2 = va + vb
    if se2 == 0.0:
        return delta, delta
    df = se2**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(stats.t.ppf(0.975, df) * math.sqrt(se2))
    return delta - half, delta + half


def _unique_sorted(ids: pa.ChunkedArray) -> bool:
    return len(ids) < 2 or not pc.any(pc.equal(ids[1:], ids[:-1])).as_py()


def _is_paired(ga: _Side | None, gb: _Side | None) -> bool:
    """Both runs have exactly the same samples, each once (then, both sorted by sample_id,
    row i of one is row i of the other)."""
    if ga is None or gb is None:
        return False
    ids_a, ids_b = ga.table.column("sample_id"), gb.table.column("sample_id")
    return bool(len(ids_a) == len(ids_b) and _unique_sorted(ids_a) and _unique_sorted(ids_b)
                and (len(ids_a) == 0 or pc.all(pc.equal(ids_a, ids_b)).as_py()))


def _compare_metric(ga: _Side, gb: _Side, col: str,
                    paired: bool) -> dict[str, Any] | None:
    """One row for a metric both runs have in this model x method; None if neither has values."""
    if len(_finite_ok(ga, col)) == 0 and len(_finite_ok(gb, col)) == 0:
        return None
    if paired:
        va, vb = ga.values(col), gb.values(col)
        keep = ga.target & gb.target & np.isfinite(va) & np.isfinite(vb)
        va, vb = va[keep], vb[keep]
        low, high = paired_interval(vb - va)
    else:
        va, vb = _finite_ok(ga, col), _finite_ok(gb, col)
        low, high = welch_interval(va, vb)
    mean_a = float(va.mean()) if len(va) else math.nan
    mean_b = float(vb.mean()) if len(vb) else math.nan
    return {"mean_a": mean_a, "mean_b": mean_b, "delta": mean_b - mean_a,
            "ci95_low": low, "ci95_high": high, "n_a": len(va), "n_b": len(vb)}


def _one_side(group: _Side, col: str, side: str) -> dict[str, Any] | None:
    v = _finite_ok(group, col)
    if len(v) == 0:
        return None
    mean = float(v.mean())
    return {f"mean_{side}": mean, f"n_{side}": len(v)}


def _aggregate(summary: pd.DataFrame | None, model: str, method: str,
               metric: str) -> tuple[float, int] | None:
    if summary is None:
        return None
    hit = summary[(summary["model"] == model) & (summary["method"] == method)
                  & (summary["metric"] == metric)]
    if hit.empty:
        return None
    return float(hit["mean"].iloc[0]), int(hit["n"].iloc[0])


def resolve_metrics(names: Iterable[str], available: Sequence[str]) -> list[str]:
    """``--metric`` names -> metric columns: a column name, or a registered metric's scalar
    columns (``insertion`` -> ``insertion_auc``, ...); a ConfigError for any other name."""
    from salbench import metrics

    out: list[str] = []
    for name in names:
        if name in available:
            found = [name]
        elif name in metrics.names():
            found = [c for c in metrics.get(name).columns if c in available]
            found += [c for c in available if c.startswith(f"{name}_") and c not in found]
        else:
            found = []
        if not found:
            raise ConfigError(f"--metric {name!r} is in neither run; the runs have: "
                              f"{', '.join(sorted(available))}")
        out += [c for c in found if c not in out]
    return out


def compare_runs(run_a: Path, run_b: Path,
                 metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Compare run B with run A, per model x method x metric (see the module docstring).

    Returns a DataFrame with :data:`COLUMNS`, sorted by model, method, metric: ``mean_a``,
    ``mean_b``, ``delta`` (= mean_b - mean_a), ``ci95_low``/``ci95_high`` (95% interval of
    the delta: paired Student t or Welch t; NaN for dataset-level figures and fewer than
    2 values), ``n_a``/``n_b`` (values used), ``paired``, ``significant`` (the interval
    excludes 0), ``only_in`` (``""``, ``"a"`` or ``"b"``), ``n_error_a``/``n_error_b``
    (rows whose status is not ok). ``attrs`` holds ``run_a``, ``run_b`` (run ids) and
    ``differences`` (:func:`config_differences` plus notes on unfinished runs).
    ``metrics`` restricts the metrics (see :func:`resolve_metrics`).
    """
    a, b = load_run(run_a), load_run(run_b)
    try:
        return _compare(a, b, metrics)
    finally:
        a.samples.close()
        b.samples.close()


def _compare(a: RunData, b: RunData, metrics: Sequence[str] | None) -> pd.DataFrame:
    cols_a, cols_b = a.metric_columns(), b.metric_columns()
    agg_a, agg_b = a.aggregate_metrics(), b.aggregate_metrics()
    sample_cols = sorted(set(cols_a) | set(cols_b))
    agg_cols = sorted((set(agg_a) | set(agg_b)) - set(sample_cols))
    if metrics is not None:
        wanted = set(resolve_metrics(metrics, sample_cols + agg_cols))
        sample_cols = [c for c in sample_cols if c in wanted]
        agg_cols = [c for c in agg_cols if c in wanted]

    rows: list[dict[str, Any]] = []
    for key in sorted(set(a.samples.counts) | set(b.samples.counts)):
        model, method = key
        ga = _group(a, key, [c for c in sample_cols if c in cols_a])
        gb = _group(b, key, [c for c in sample_cols if c in cols_b])
        paired = _is_paired(ga, gb)
        base = {"model": model, "method": method, "paired": paired,
                "n_error_a": _errors(a, key), "n_error_b": _errors(b, key)}
        for col in sample_cols:
            in_a = ga is not None and col in cols_a
            in_b = gb is not None and col in cols_b
            if in_a and in_b:
                stat = _compare_metric(ga, gb, col, paired)
                only = ""
            elif in_a:
                stat, only = _one_side(ga, col, "a"), "a"
            elif in_b:
                stat, only = _one_side(gb, col, "b"), "b"
            else:
                stat = None
            if stat is not None:
                rows.append({**base, "metric": col, "only_in": only, **stat})
        for col in agg_cols:
            va = _aggregate(a.summary, model, method, col) if ga is not None else None
            vb = _aggregate(b.summary, model, method, col) if gb is not None else None
            if va is None and vb is None:
                continue
            stat = {"ci95_low": math.nan, "ci95_high": math.nan}
            if va is not None:
                stat.update(mean_a=va[0], n_a=va[1])
            if vb is not None:
                stat.update(mean_b=vb[0], n_b=vb[1])
            if va is not None and vb is not None:
                stat["delta"] = vb[0] - va[0]
            only = "" if va is not None and vb is not None else ("a" if va is not None else "b")
            rows.append({**base, "metric": col, "only_in": only, **stat})

    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("mean_a", "mean_b", "delta", "ci95_low", "ci95_high"):
        table[col] = table[col].astype(np.float64)
    for col in ("n_a", "n_b"):
        table[col] = table[col].fillna(0).astype(np.int64)
    table["paired"] = table["paired"].astype(bool)
    table["significant"] = ((table["ci95_low"] > 0) | (table["ci95_high"] < 0)).astype(bool)
    table["direction"] = [direction(m) for m in table["metric"]]
    table["change"] = [_change(sig, delta, d) for sig, delta, d in
                       zip(table["significant"], table["delta"], table["direction"],
                           strict=True)]
    table = table.sort_values(["model", "method", "metric"], kind="stable")
    table = table.reset_index(drop=True)
    table.attrs.update(
        run_a=a.run_id, run_b=b.run_id,
        differences=[*config_differences(a.manifest, b.manifest), *_status_notes(a, "A"),
                     *_status_notes(b, "B")],
    )
    return table


def _group(run: RunData, key: tuple[str, str], columns: list[str]) -> _Side | None:
    """One model x method's rows of ``run`` (sample_id, status and ``columns``), or None."""
    if key not in run.samples.counts:
        return None
    table = run.samples.groups.read(*key, ["sample_id", "status", *columns])
    return _Side(table.take(pc.sort_indices(table, [("sample_id", "ascending")])))


def _errors(run: RunData, key: tuple[str, str]) -> int:
    """Rows of model x method without a result (an error status; degenerate maps and
    filtered rows are not errors)."""
    count = run.samples.counts.get(key)
    return 0 if count is None else count.errors


def _change(significant: bool, delta: float, way: str) -> str:
    """"worse", "better" or "changed" (a neutral metric) for a significant delta, else ""."""
    if not significant:
        return ""
    if way == "neutral":
        return "changed"
    return "better" if (delta > 0) == (way == "higher") else "worse"


__all__ = ["COLUMNS", "GROUP", "RunData", "compare_runs", "config_differences", "load_run",
           "paired_interval", "resolve_metrics", "welch_interval"]
