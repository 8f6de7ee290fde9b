"""The summary table, computed out of core from a run's Parquet shards (SPEC 6).

The driver never holds a run's rows. :func:`summarize_dataset` scans a ``pyarrow.dataset``
(the finished shard files, local or on object storage; or an in-memory table) twice:
1. the columns ``model, method, status, error`` in record batches, counting rows, statuses
   and per-metric ``metric_error`` lines of every model x method;
2. the value columns, a few model x method groups at a time (as many as fit
   ``budget_values`` numbers), filtered in the scan, so that exact medians and the metrics'
   dataset-level figures (SIC's median curve, the pointing game's class mean) see one group's
   values and nothing more.
Memory is bounded by the largest group (or the budget), not by the run; time is linear in
rows. pyarrow.dataset was chosen over DuckDB because it is already a dependency, reads the
same filesystems as the rest of salbench (local, S3, GCS), and the statistics need at most
one group's values at a time; DuckDB's exact median would still hold a group's values.

Which rows count: the method's diagnostics (``completeness_error``, ...) and ``target_prob``
use every row with a target (``ok``, ``metric_error``, ``degenerate_map``); a metric uses the
rows with a usable map (``ok``, ``metric_error``) and a finite value. ``n_error`` counts the
rows without a result for that column (error statuses, and ``metric_error`` rows that name
that metric); ``n_degenerate`` the rows whose map was constant or non-finite.
"""

from __future__ import annotations

import functools
import math
import operator
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from salbench import methods, metrics
from salbench.metrics.registry import BINARY_COLUMNS, bounds
from salbench.pipeline.config import RunConfig
from salbench.runner import MAP_STATUSES, failed_metrics

#: Statuses whose rows have a target and the method's diagnostics.
TARGET_STATUSES = (*MAP_STATUSES, "degenerate_map")

SUMMARY_COLUMNS = [
    "model", "method", "metric", "n", "n_rows", "n_error", "n_degenerate", "mean", "std",
    "median", "ci95_low", "ci95_high", "ci_method",
]

#: Columns read by the counting scan; values beyond these are read per group.
_COUNT_COLUMNS = ["model", "method", "status", "error"]


@dataclass
class GroupCounts:
    """Row counts of one model x method."""

    rows: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    metric_fails: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def errors(self) -> int:
        """Rows without a result (error statuses; not those left out by dataset.filter)."""
        return self.rows - sum(self.statuses.get(s, 0) for s in (*TARGET_STATUSES, "filtered"))


def count_groups(dataset: ds.Dataset,
                 batch_rows: int = 65536) -> dict[tuple[str, str], GroupCounts]:
    """Pass 1: per (model, method), rows, statuses and failing metrics' counts."""
    counts: dict[tuple[str, str], GroupCounts] = defaultdict(GroupCounts)
    for batch in dataset.to_batches(columns=_COUNT_COLUMNS, batch_size=batch_rows):
        frame = batch.to_pandas()
        for (model, method, status), n in frame.groupby(
                ["model", "method", "status"], sort=False).size().items():
            g = counts[(model, method)]
            g.rows += int(n)
            g.statuses[status] += int(n)
        bad = frame[frame["status"] == "metric_error"]
        for model, method, error in zip(bad["model"], bad["method"], bad["error"], strict=True):
            for label in failed_metrics(error):
                counts[(model, method)].metric_fails[label] += 1
    return dict(counts)


def interval(v: np.ndarray, column: str) -> tuple[float, float, str]:
    """95% interval of the mean of the finite values ``v`` of ``column`` and its method:
    Wilson's score interval for 0/1 hit columns, Student's t otherwise, clipped to the range
    the column can take ("t_clipped"); NaN with fewer than 2 values."""
    from scipy import stats  # imported when used: scipy.stats takes 0.25 s

    n = len(v)
    if n < 2:
        return math.nan, math.nan, "none"
    if column in BINARY_COLUMNS:
        z = float(stats.norm.ppf(0.975))
        p = float(v.mean())
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return centre - half, centre + half, "wilson"
    mean, std = float(v.mean()), float(v.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    lo, hi = bounds(column)
    low, high = max(lo, mean - half), min(hi, mean + half)
    return low, high, ("t_clipped" if (low, high) != (mean - half, mean + half) else "t")


def _stat_row(model: str, method: str, column: str, v: np.ndarray, n_rows: int,
              n_error: int, n_degenerate: int) -> dict[str, Any]:
    v = v[np.isfinite(v)]
    n = len(v)
    low, high, how = interval(v, column)
    return {
        "model": model, "method": method, "metric": column, "n": n, "n_rows": n_rows,
        "n_error": n_error, "n_degenerate": n_degenerate,
        "mean": float(v.mean()) if n else math.nan,
        "std": float(v.std(ddof=1)) if n > 1 else math.nan,
        "median": float(np.median(v)) if n else math.nan,
        "ci95_low": low, "ci95_high": high, "ci_method": how,
    }


class _Layout:
    """Which columns a run's summary reads, and which metric owns each."""

    def __init__(self, config: RunConfig, schema: pa.Schema) -> None:
        names = set(schema.names)
        self.method_info = {c.label: [col for col in methods.get(c.name).info_columns
                                      if col in names] for c in config.methods}
        self.metric_cols: list[tuple[str, str]] = []  # (column, metric label)
        self.summaries: list[tuple[str, Any, list[str]]] = []
        for comp in config.metrics:
            spec = metrics.get(comp.name)
            self.metric_cols += [(col, comp.label) for col, kind in spec.columns.items()
                                 if kind == "float" and col in names]
            if spec.summary is not None:
                self.summaries.append((comp.label, spec.summary,
                                       [c for c in spec.columns if c in names]))
        info = sorted({c for cols in self.method_info.values() for c in cols})
        self.scalars = ["target_prob", *info, *(c for c, _ in self.metric_cols)]
        extra = {c for _, _, cols in self.summaries for c in cols}
        self.columns = ["model", "method", "status", "label", "target",
                        *dict.fromkeys([*self.scalars, *sorted(extra - set(self.scalars))])]
        self.width = len(self.scalars) + 128 * len(extra - set(self.scalars))


def run_dataset(run_dir: Any) -> ds.Dataset:
    """The finished shards of a run directory as one ``pyarrow.dataset`` (nothing read yet)."""
    from salbench.pipeline import tables

    files = [str(tables.shard_paths(run_dir, s)[0])
             for s in sorted(tables.finished_shards(run_dir))]
    return ds.dataset(files, format="parquet")


def run_counts(counts: dict[tuple[str, str], GroupCounts]) -> dict[str, int]:
    """The manifest's row counts: rows, ok and error rows, degenerate maps, filtered rows."""
    def total(status: str) -> int:
        return sum(g.statuses.get(status, 0) for g in counts.values())

    rows = sum(g.rows for g in counts.values())
    ok, degenerate, filtered = total("ok"), total("degenerate_map"), total("filtered")
    return {"rows": rows, "ok": ok, "errors": rows - ok - degenerate - filtered,
            "degenerate_maps": degenerate, "filtered": filtered}


def summarize_dataset(dataset: ds.Dataset, config: RunConfig,
                      budget_values: int = 2_000_000) -> tuple[pd.DataFrame,
                                                                 dict[tuple[str, str],
                                                                      GroupCounts]]:
    """model x method x metric statistics of a run's rows (see the module docstring).

    Returns the summary (:data:`SUMMARY_COLUMNS`, plus ``<metric>_aggregate`` rows of the
    metrics with a dataset-level figure, whose ``mean`` holds it and ``n`` the rows it used)
    and the per-group counts.
    """
    counts = count_groups(dataset)
    layout = _Layout(config, dataset.schema)
    groups = sorted(counts)
    out: list[dict[str, Any]] = []
    for chunk in _chunks(groups, counts, max(1, budget_values // max(1, layout.width))):
        wanted = functools.reduce(operator.or_, [
            (pc.field("model") == model) & (pc.field("method") == method)
            for model, method in chunk])
        frame = dataset.to_table(columns=layout.columns, filter=wanted).to_pandas()
        for (model, method), rows in frame.groupby(["model", "method"], sort=True):
            out += _group_rows(model, method, rows, counts[(model, method)], layout)
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS), counts


def _chunks(groups: list[tuple[str, str]], counts: dict[tuple[str, str], GroupCounts],
            max_rows: int) -> Iterable[list[tuple[str, str]]]:
    """Consecutive groups whose rows add up to at most ``max_rows`` (at least one group)."""
    chunk: list[tuple[str, str]] = []
    rows = 0
    for g in groups:
        if chunk and rows + counts[g].rows > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(g)
        rows += counts[g].rows
    if chunk:
        yield chunk


def _group_rows(model: str, method: str, rows: pd.DataFrame, count: GroupCounts,
                layout: _Layout) -> list[dict[str, Any]]:
    with_target = rows[rows["status"].isin(TARGET_STATUSES)]
    with_map = rows[rows["status"].isin(MAP_STATUSES)]
    degenerate = count.statuses.get("degenerate_map", 0)
    out = [_stat_row(model, method, col, with_target[col].to_numpy(np.float64), count.rows,
                     count.errors, 0)
           for col in ["target_prob", *layout.method_info.get(method, [])]]
    for col, label in layout.metric_cols:
        out.append(_stat_row(model, method, col, with_map[col].to_numpy(np.float64),
                             count.rows, count.errors + count.metric_fails.get(label, 0),
                             degenerate))
    for label, summary, _ in layout.summaries:
        for name, (value, n) in summary(with_map).items():
            out.append({
                "model": model, "method": method, "metric": name, "n": n,
                "n_rows": count.rows,
                "n_error": count.errors + count.metric_fails.get(label, 0),
                "n_degenerate": degenerate, "mean": value, "std": math.nan,
                "median": math.nan, "ci95_low": math.nan, "ci95_high": math.nan,
                "ci_method": "none",
            })
    return out
