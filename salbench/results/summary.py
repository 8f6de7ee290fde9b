"""The summary table, computed out of core from a run's Parquet shards (SPEC 6).

The driver never holds a run's rows. :func:`summarize_run` reads the run once, file by file,
splitting the columns the statistics need by model x method
(:class:`~salbench.results.groups.Groups`: one local spill file per group, counts of rows,
statuses and per-metric ``metric_error`` lines on the way), then computes each group's rows
from its own file: exact medians and intervals over its values, and each metric's
dataset-level figure (SIC's median curve, the pointing game's class mean) over its columns.
Memory is bounded by one group (at most the dataset's images), time is linear in rows, and
each shard is read once (see :mod:`salbench.results.groups` for why not DuckDB or a scan
per group).

Which rows count: the method's diagnostics (``completeness_error``, ...) and ``target_prob``
use every row with a target (``ok``, ``metric_error``, ``degenerate_map``); a metric uses the
rows with a usable map (``ok``, ``metric_error``) and a finite value. ``n_error`` counts the
rows without a result for that column (error statuses, and ``metric_error`` rows that name
that metric); ``n_degenerate`` the rows whose map was constant or non-finite.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from salbench import methods, metrics
from salbench.metrics.registry import BINARY_COLUMNS, bounds
from salbench.results.groups import TARGET_STATUSES, GroupCounts, Groups, status_in
from salbench.results.scan import Shards
from salbench.results.tables import MAP_STATUSES

if TYPE_CHECKING:
    from salbench.config import RunConfig

SUMMARY_COLUMNS = [
    "model", "method", "metric", "n", "n_rows", "n_error", "n_degenerate", "mean", "std",
    "median", "ci95_low", "ci95_high", "ci_method",
]


def wilson(hits: float, n: int) -> tuple[float, float]:
    """Wilson's score 95% interval of the rate ``hits / n`` (within [0, 1]); NaN when n is 0."""
    from scipy import stats  # imported when used: scipy.stats takes 0.25 s

    if n <= 0:
        return math.nan, math.nan
    z = float(stats.norm.ppf(0.975))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """Student's t 95% interval of the mean of ``values`` (1-D); NaN with fewer than 2."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean = float(values.mean())
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean - half, mean + half


def interval(v: np.ndarray, column: str) -> tuple[float, float, str]:
    """95% interval of the mean of the finite values ``v`` of ``column`` and its method:
    Wilson's score interval for 0/1 hit columns, Student's t otherwise, clipped to the range
    the column can take ("t_clipped"); NaN with fewer than 2 values."""
    if len(v) < 2:
        return math.nan, math.nan, "none"
    if column in BINARY_COLUMNS:
        return (*wilson(float(v.sum()), len(v)), "wilson")
    raw = t_interval(v)
    lo, hi = bounds(column)
    low, high = max(lo, raw[0]), min(hi, raw[1])
    return low, high, ("t_clipped" if (low, high) != raw else "t")


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

    @property
    def columns(self) -> list[str]:
        """Every column the summary reads of a group."""
        info = [c for cols in self.method_info.values() for c in cols]
        extra = [c for _, _, cols in self.summaries for c in ("label", "target", *cols)]
        return list(dict.fromkeys(["status", "target_prob", *info,
                                   *(c for c, _ in self.metric_cols), *extra]))


def summarize(samples: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """The summary of an in-memory samples table (a run uses :func:`summarize_run` on its
    shard files, without loading them)."""
    table = pa.Table.from_pandas(samples, preserve_index=False)
    return summarize_run(Shards(table=table), config)[0]


def run_counts(counts: dict[tuple[str, str], GroupCounts]) -> dict[str, int]:
    """The manifest's row counts: rows, ok and error rows, degenerate maps, filtered rows."""
    def total(status: str) -> int:
        return sum(g.statuses.get(status, 0) for g in counts.values())

    rows = sum(g.rows for g in counts.values())
    ok, degenerate, filtered = total("ok"), total("degenerate_map"), total("filtered")
    return {"rows": rows, "ok": ok, "errors": rows - ok - degenerate - filtered,
            "degenerate_maps": degenerate, "filtered": filtered}


def summarize_run(source: Shards | Groups, config: RunConfig
                  ) -> tuple[pd.DataFrame, dict[tuple[str, str], GroupCounts]]:
    """model x method x metric statistics of a run's rows (see the module docstring).

    ``source``: the run's shards (split by group here, the spill removed at the end), or
    groups already split with every column :class:`_Layout` needs (the report's).
    Returns the summary (:data:`SUMMARY_COLUMNS`, plus ``<metric>_aggregate`` rows of the
    metrics with a dataset-level figure, whose ``mean`` holds it and ``n`` the rows it used)
    and the per-group counts.
    """
    if isinstance(source, Shards):
        layout = _Layout(config, source.schema)
        with Groups(source, layout.columns) as groups:
            return _summarize(groups, layout)
    return _summarize(source, _Layout(config, source.schema))


def _summarize(groups: Groups, layout: _Layout
               ) -> tuple[pd.DataFrame, dict[tuple[str, str], GroupCounts]]:
    out: list[dict[str, Any]] = []
    for model, method in sorted(groups.counts):
        out += _group_rows(groups, model, method, layout)
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS), groups.counts


def _group_rows(groups: Groups, model: str, method: str,
                layout: _Layout) -> list[dict[str, Any]]:
    """The summary rows of one model x method, from its group file (as Arrow, then numpy
    views; nothing per row in Python)."""
    count = groups.counts[(model, method)]
    table = groups.read(model, method, [c for c in layout.columns if c in groups.columns])
    with_target = status_in(table.column("status"), TARGET_STATUSES)
    with_map = status_in(table.column("status"), MAP_STATUSES)

    def values(col: str, rows: np.ndarray) -> np.ndarray:
        return table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)[rows]

    degenerate = count.statuses.get("degenerate_map", 0)
    info = layout.method_info.get(method, [])
    out = [_stat_row(model, method, col, values(col, with_target), count.rows, count.errors,
                     0)
           for col in ["target_prob", *info]]
    for col, label in layout.metric_cols:
        out.append(_stat_row(model, method, col, values(col, with_map), count.rows,
                             count.errors + count.metric_fails.get(label, 0), degenerate))
    for label, summary, mcols in layout.summaries:
        rows = table.select(list(dict.fromkeys(["label", "target", *mcols]))).filter(
            pa.array(with_map)).to_pandas()
        for name, (value, n) in summary(rows).items():
            out.append({
                "model": model, "method": method, "metric": name, "n": n,
                "n_rows": count.rows,
                "n_error": count.errors + count.metric_fails.get(label, 0),
                "n_degenerate": degenerate, "mean": value, "std": math.nan,
                "median": math.nan, "ci95_low": math.nan, "ci95_high": math.nan,
                "ci_method": "none",
            })
    return out
