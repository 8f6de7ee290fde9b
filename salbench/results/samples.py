"""A run's per-sample rows, read from its Parquet shards only as needed (SPEC 6, "Scale"),
and :func:`load_run`, the one reader of a run directory that ``salbench report`` and
``salbench compare`` share.

The report and ``salbench compare`` ask for one model x method's rows, a few columns at a
time; the first time they do, the run is split by group in one scan
(:class:`~salbench.results.groups.Groups`, every column but the maps and images), and each
later question reads one group's file. The gallery's first samples, the error rows and the
like are streaming scans that keep only their answer. So memory follows the answer (at most
one group of rows), not the run: a 5 M-row run is read like a 4,000-row one, only longer.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from salbench import heartbeat, storage
from salbench.errors import ConfigError
from salbench.results import tables
from salbench.results.groups import GroupCounts, Groups
from salbench.results.scan import Shards, plain
from salbench.results.tables import BASE_FIELDS

#: Columns of the per-sample table that are neither metrics nor method diagnostics: the one
#: definition that the summary's readers (report, compare) share.
NOT_VALUES = frozenset(name for name, _ in BASE_FIELDS if name != "target_prob") | {
    "map", "map_height", "map_width", "input_png"}

#: Columns split by group besides the numeric ones: what the report's and compare's
#: per-group questions use (sample identity and status). Text such as ``error`` and the
#: rows' keys are read by streaming scans instead, maps and images by sample.
GROUPED_TEXT = ("sample_id", "status")


class RunSamples:
    """The rows of a run, read on demand.

    Args:
        shards: the run's shards (:meth:`Shards.of_run`) or an in-memory table.
    """

    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    @property
    def columns(self) -> list[str]:
        """The table's column names (its schema; nothing is read)."""
        return list(self.shards.schema.names)

    def value_columns(self) -> list[str]:
        """The scalar (float) columns that hold values: ``target_prob``, method diagnostics
        and metric scalars, in schema order."""
        return [f.name for f in self.shards.schema
                if f.name not in NOT_VALUES and pa.types.is_floating(f.type)]

    def curve_columns(self) -> list[str]:
        """The list<float> (curve) columns, in schema order."""
        return [f.name for f in self.shards.schema
                if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)]

    @cached_property
    def groups(self) -> Groups:
        """The run split by model x method (one scan, on first use): :data:`GROUPED_TEXT`
        and every numeric or list-of-numbers column except the maps."""
        def numeric(t: pa.DataType) -> bool:
            return pa.types.is_integer(t) or pa.types.is_floating(t)

        keep = [f.name for f in self.shards.schema if f.name not in ("map", "input_png") and (
            numeric(f.type) or (pa.types.is_list(f.type) and numeric(f.type.value_type)))]
        return Groups(self.shards, [*GROUPED_TEXT, *keep])

    def close(self) -> None:
        """Remove the group files, if the run was split (also done when collected or at
        exit)."""
        if "groups" in self.__dict__:
            self.groups.close()

    @property
    def counts(self) -> dict[tuple[str, str], GroupCounts]:
        """Rows and statuses per (model, method)."""
        return self.groups.counts

    def __len__(self) -> int:
        return sum(g.rows for g in self.counts.values())

    @property
    def models(self) -> list[str]:
        """Model labels, sorted."""
        return sorted({m for m, _ in self.counts})

    @property
    def methods(self) -> set[str]:
        """Method labels present."""
        return {k for _, k in self.counts}

    def group(self, model: str, method: str,
              columns: Sequence[str] | None = None) -> pd.DataFrame:
        """One model x method's rows (only ``columns``, which must exist and not be maps;
        default all that are kept), sorted by sample index."""
        cols = list(dict.fromkeys(["index", *(columns or self.groups.columns)]))
        frame = self.groups.read(model, method, cols).to_pandas()
        return frame.sort_values("index", kind="stable").reset_index(drop=True)

    def curve_blocks(self, model: str, method: str, column: str, statuses: Sequence[str],
                     skip_column: str | None = None) -> Iterator[np.ndarray]:
        """float64 [k, points] blocks of one model x method's curves in ``column``, a few
        thousand rows at a time (each read as one flat Arrow buffer, no Python object per
        curve): the rows whose status is in ``statuses`` (and whose ``skip_column`` is 0)
        and whose curve is non-empty and finite. Blocks may differ in ``points`` when the
        curves have different lengths (one block per length)."""
        skip = skip_column if skip_column is not None and skip_column in self.columns else None
        for table in self.groups.batches(model, method,
                                         [column, "status", *([skip] if skip else [])]):
            keep = pc.and_(pc.is_in(table.column("status"),
                                    value_set=pa.array(list(statuses))),
                           pc.is_valid(table.column(column)))
            if skip:
                keep = pc.and_(keep, pc.equal(table.column(skip), 0.0))
            lists = table.column(column).filter(pc.fill_null(keep, False)).combine_chunks()
            lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
            for points in np.unique(lengths[lengths > 0]).tolist():
                same = lists.filter(pa.array(lengths == points))
                flat = pc.list_flatten(same).to_numpy(zero_copy_only=False)
                curves = flat.astype(np.float64).reshape(-1, points)
                curves = curves[np.isfinite(curves).all(axis=1)]
                if len(curves):
                    yield curves

    def curves(self, model: str, method: str, column: str, statuses: Sequence[str],
               skip_column: str | None = None) -> np.ndarray:
        """float64 [n, points]: every curve of :meth:`curve_blocks` of the longest length
        (curves of another length are left out); [0, 0] when there is none."""
        blocks = list(self.curve_blocks(model, method, column, statuses, skip_column))
        if not blocks:
            return np.empty((0, 0))
        longest = max(b.shape[1] for b in blocks)
        return np.concatenate([b for b in blocks if b.shape[1] == longest])

    def has_values(self, column: str) -> bool:
        """True when some row has a non-null ``column`` (stops at the first)."""
        if column not in self.columns:
            return False
        return any(batch.column(0).null_count < batch.num_rows
                   for batch in self.shards.batches([column]))

    def first_samples(self, n: int) -> list[tuple[int, str]]:
        """(index, sample_id) of the ``n`` samples first in dataset order, streaming the two
        columns (at most n kept)."""
        best: list[tuple[int, str]] = []  # a max-heap of (-index, sample_id)
        seen: set[int] = set()
        for batch in self.shards.batches(["index", "sample_id"]):
            for idx, sid in zip(batch.column("index").to_pylist(),
                                batch.column("sample_id").to_pylist(), strict=True):
                if idx in seen:
                    continue
                if len(best) < n:
                    heapq.heappush(best, (-idx, sid))
                    seen.add(idx)
                elif idx < -best[0][0]:
                    seen.discard(-heapq.heappushpop(best, (-idx, sid))[0])
                    seen.add(idx)
        return sorted((-i, s) for i, s in best)

    def n_samples(self) -> int:
        """The number of distinct sample indices (one int per sample held while counting)."""
        seen: set[int] = set()
        for batch in self.shards.batches(["index"]):
            seen.update(np.unique(batch.column("index").to_numpy()).tolist())
        return len(seen)

    def rows_of_samples(self, indices: Sequence[int], model: str) -> pd.DataFrame:
        """Every row of ``model`` for the sample ``indices`` (the gallery's few samples)."""
        wanted = (pc.field("model") == model) & pc.field("index").isin(list(indices))
        parts = [t for t in (plain(b).filter(wanted) for b in self.shards.batches())
                 if t.num_rows]
        if not parts:
            return pd.DataFrame(columns=self.columns)
        return pa.concat_tables(parts).to_pandas()

    def error_rows(self, statuses: Sequence[str], limit: int,
                   columns: Sequence[str]) -> pd.DataFrame:
        """The first ``limit`` rows (in shard order) whose status is not in ``statuses``."""
        wanted = ~pc.field("status").isin(list(statuses))
        read = list(dict.fromkeys([*columns, "status"]))
        parts, n = [], 0
        for batch in self.shards.batches(read):
            rows = plain(batch).filter(wanted).select(list(columns))
            if rows.num_rows:
                parts.append(rows.to_pandas())
                n += rows.num_rows
            if n >= limit:
                break
        if not parts:
            return pd.DataFrame(columns=list(columns))
        return pd.concat(parts, ignore_index=True).head(limit)


@dataclass(frozen=True)
class RunData:
    """What a comparison reads from one run directory."""

    path: Path | str
    manifest: dict[str, Any]
    samples: RunSamples  # read one model x method at a time, never whole
    summary: pd.DataFrame | None  # summary.parquet, None when the run has none
    shards_finished: int

    @property
    def run_id(self) -> str:
        """The run's id (its manifest's ``run_id``, else the directory name)."""
        return str(self.manifest.get("run_id") or storage.basename(self.path))

    def metric_columns(self) -> list[str]:
        """The scalar (float) value columns of the per-sample table (from its schema)."""
        return self.samples.value_columns()

    def aggregate_metrics(self) -> list[str]:
        """Metrics that only ``summary.parquet`` holds (dataset-level figures such as SIC)."""
        if self.summary is None:
            return []
        cols = set(self.metric_columns())
        return sorted(m for m in self.summary["metric"].unique() if m not in cols)


def load_run(path: Path | str) -> RunData:
    """Read a run directory; a ConfigError naming ``path`` when it is not one."""
    path = storage.normalize(path)
    manifest_path = storage.join(path, "manifest.json")
    if not storage.is_dir(path):
        raise ConfigError(f"{path} is not a salbench run directory (no such directory)")
    if not storage.is_file(manifest_path):
        raise ConfigError(f"{path} is not a salbench run directory (no manifest.json)")
    try:
        manifest = json.loads(storage.read_text(manifest_path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{manifest_path} is not readable JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ConfigError(f"{manifest_path} does not hold a JSON object")
    status, note = heartbeat.status(path, manifest)
    if note is not None:  # a "running" run whose driver is gone (SIGKILL, a lost node)
        manifest = {**manifest, "status": status, "status_note": note}
    done = tables.finished_shards(path)
    if not done:
        why = f" ({note})" if note is not None else ""
        raise ConfigError(f"{path} has no finished shards (samples/ with _done/ markers)"
                          f"{why}; finish it with `salbench resume {path}`")
    samples = RunSamples(Shards.of_run(path))
    summary = None
    summary_path = storage.join(path, "summary.parquet")
    if storage.is_file(summary_path):
        with storage.open_input_file(summary_path) as fh:
            summary = pq.read_table(fh).to_pandas()
    return RunData(path, manifest, samples, summary, len(done))
