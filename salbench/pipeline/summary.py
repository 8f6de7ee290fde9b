"""The summary table, computed out of core from a run's Parquet shards (SPEC 6).

The driver never holds a run's rows. :func:`summarize_dataset` scans a ``pyarrow.dataset``
(the finished shard files, local or on object storage; or an in-memory table):
1. the columns ``model, method, status, error`` in record batches, counting rows, statuses
   and per-metric ``metric_error`` lines of every model x method (in Arrow);
2. per model x method, its scalar columns (filtered in the scan, kept as Arrow and numpy,
   never as Python objects per row), so that exact medians see one group's values and
   nothing more; a metric's dataset-level figure (SIC's median curve, the pointing game's
   class mean) reads that metric's columns of the group.
Memory is bounded by one group's scalar values, not by the run; time is linear in rows
(one scan per group). pyarrow.dataset was chosen over DuckDB because it is already a
dependency, reads the same filesystems as the rest of salbench (local, S3, GCS), and the
statistics need at most one group's values at a time; DuckDB's exact median would still
hold a group's values.

Which rows count: the method's diagnostics (``completeness_error``, ...) and ``target_prob``
use every row with a target (``ok``, ``metric_error``, ``degenerate_map``); a metric uses the
rows with a usable map (``ok``, ``metric_error``) and a finite value. ``n_error`` counts the
rows without a result for that column (error statuses, and ``metric_error`` rows that name
that metric); ``n_degenerate`` the rows whose map was constant or non-finite.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from salbench import methods, metrics
from salbench.config import RunConfig
from salbench.metrics.registry import BINARY_COLUMNS, bounds
from salbench.runner import MAP_STATUSES, failed_metrics

#: Statuses whose rows have a target and the method's diagnostics.
TARGET_STATUSES = (*MAP_STATUSES, "degenerate_map")
#: Statuses that are not errors: rows with a result, and those ``dataset.filter`` left out.
NOT_ERROR_STATUSES = (*TARGET_STATUSES, "filtered")

SUMMARY_COLUMNS = [
    "model", "method", "metric", "n", "n_rows", "n_error", "n_degenerate", "mean", "std",
    "median", "ci95_low", "ci95_high", "ci_method",
]

#: Columns read by the counting scan; values beyond these are read per group.
_COUNT_COLUMNS = ["model", "method", "status", "error"]

#: Shards are read with their few distinct strings as dictionaries (a code per row).
PARQUET = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(
    dictionary_columns=["model", "method", "status"]))

#: Scans read one file and one batch at a time, on this thread: the driver's memory stays
#: that of the data asked for (parallel readahead held several files' buffers at once).
SCAN = {"use_threads": False, "fragment_readahead": 1, "batch_readahead": 1}


@dataclass
class GroupCounts:
    """Row counts of one model x method."""

    rows: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    metric_fails: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def errors(self) -> int:
        """Rows without a result (error statuses; not those left out by dataset.filter)."""
        return self.rows - sum(self.statuses.get(s, 0) for s in NOT_ERROR_STATUSES)


def count_groups(dataset: ds.Dataset,
                 batch_rows: int = 16384) -> dict[tuple[str, str], GroupCounts]:
    """Pass 1: per (model, method), rows, statuses and failing metrics' counts."""
    counts: dict[tuple[str, str], GroupCounts] = defaultdict(GroupCounts)
    for batch in dataset.to_batches(columns=_COUNT_COLUMNS, batch_size=batch_rows, **SCAN):
        table = pa.Table.from_batches([batch])  # counted in Arrow: no Python string per row
        agg = table.group_by(["model", "method", "status"]).aggregate([("status", "count")])
        for model, method, status, n in zip(*(agg.column(c).to_pylist() for c in (
                "model", "method", "status", "status_count")), strict=True):
            g = counts[(model, method)]
            g.rows += int(n)
            g.statuses[status] += int(n)
        bad = table.filter(pc.field("status") == "metric_error")
        for model, method, error in zip(*(bad.column(c).to_pylist() for c in (
                "model", "method", "error")), strict=True):
            for label in failed_metrics(error):
                counts[(model, method)].metric_fails[label] += 1
    return dict(counts)


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
def run_dataset(run_dir: Any) -> ds.Dataset:
    """The finished shards of a run directory as one ``pyarrow.dataset`` (nothing read yet)."""
    from salbench import storage
    from salbench.pipeline import tables

    files = [tables.shard_paths(run_dir, s)[0] for s in sorted(tables.finished_shards(run_dir))]
    fs = storage.resolve(run_dir)[0]
    return ds.dataset([storage.resolve(f)[1] for f in files], format=PARQUET, filesystem=fs)


def plain(data: pa.Table | pa.RecordBatch) -> pa.Table:
    """A table or batch read with :data:`PARQUET` with its dictionary columns decoded back
    to the strings the shards hold (for callers that sort, join or hand rows to users)."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, pc.cast(table.column(i), f.type.value_type))
    return table


def scan_rows(run_dir: Any, columns: list[str] | None = None,
              batch_rows: int = 65536) -> Iterator[pd.DataFrame]:
    """A run's rows as DataFrames of at most ``batch_rows`` rows, one batch in memory at a
    time (shard order, not sorted); ``columns``: only these."""
    for batch in run_dataset(run_dir).to_batches(columns=columns, batch_size=batch_rows):
        yield plain(batch).to_pandas()


def run_counts(counts: dict[tuple[str, str], GroupCounts]) -> dict[str, int]:
    """The manifest's row counts: rows, ok and error rows, degenerate maps, filtered rows."""
    def total(status: str) -> int:
        return sum(g.statuses.get(status, 0) for g in counts.values())

    rows = sum(g.rows for g in counts.values())
    ok, degenerate, filtered = total("ok"), total("degenerate_map"), total("filtered")
    return {"rows": rows, "ok": ok, "errors": rows - ok - degenerate - filtered,
            "degenerate_maps": degenerate, "filtered": filtered}


def summarize_dataset(dataset: ds.Dataset,
                      config: RunConfig) -> tuple[pd.DataFrame, dict[tuple[str, str],
                                                                  GroupCounts]]:
    """model x method x metric statistics of a run's rows (see the module docstring).

    Returns the summary (:data:`SUMMARY_COLUMNS`, plus ``<metric>_aggregate`` rows of the
    metrics with a dataset-level figure, whose ``mean`` holds it and ``n`` the rows it used)
    and the per-group counts.
    """
    counts = count_groups(dataset)
    layout = _Layout(config, dataset.schema)
    out: list[dict[str, Any]] = []
    for model, method in sorted(counts):
        out += _group_rows(dataset, model, method, counts[(model, method)], layout)
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS), counts


def _in(column: pa.ChunkedArray, statuses: tuple[str, ...]) -> np.ndarray:
    """bool [rows]: the status column's values in ``statuses``."""
    plain = pc.cast(column, pa.string()) if pa.types.is_dictionary(column.type) else column
    return pc.is_in(plain, value_set=pa.array(statuses)).to_numpy(zero_copy_only=False)


def _group_rows(dataset: ds.Dataset, model: str, method: str, count: GroupCounts,
                layout: _Layout) -> list[dict[str, Any]]:
    """The summary rows of one model x method: its scalar columns read in one scan (as
    Arrow, then numpy views; nothing per row in Python), each dataset-level figure from a
    scan of its own metric's columns."""
    wanted = (pc.field("model") == model) & (pc.field("method") == method)
    info = layout.method_info.get(method, [])
    cols = list(dict.fromkeys(["status", "target_prob", *info,
                               *(c for c, _ in layout.metric_cols)]))
    table = dataset.to_table(columns=cols, filter=wanted, **SCAN)
    with_target = _in(table.column("status"), TARGET_STATUSES)
    with_map = _in(table.column("status"), MAP_STATUSES)

    def values(col: str, rows: np.ndarray) -> np.ndarray:
        return table.column(col).to_numpy(zero_copy_only=False).astype(np.float64)[rows]

    degenerate = count.statuses.get("degenerate_map", 0)
    out = [_stat_row(model, method, col, values(col, with_target), count.rows, count.errors,
                     0)
           for col in ["target_prob", *info]]
    for col, label in layout.metric_cols:
        out.append(_stat_row(model, method, col, values(col, with_map), count.rows,
                             count.errors + count.metric_fails.get(label, 0), degenerate))
    for label, summary, mcols in layout.summaries:
        rows = dataset.to_table(
            columns=list(dict.fromkeys(["label", "target", *mcols])),
            filter=wanted & pc.field("status").isin(list(MAP_STATUSES)), **SCAN).to_pandas()
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
