"""A run's per-sample rows, read from its Parquet shards only as needed (SPEC 6, "Scale"),
and :func:`load_run`, the one reader of a run directory that ``salbench report`` and
``salbench compare`` share.

The report and ``salbench compare`` ask for one model x method's rows, a few columns at a
time, or for the first samples of the dataset (the gallery), or for the error rows; each
such question is a filtered ``pyarrow.dataset`` scan, so memory follows the answer (at most
one group of rows), not the run. A 5 M-row run is read like a 4,000-row one, only longer.
"""

from __future__ import annotations

import heapq
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from salbench import storage
from salbench.errors import ConfigError
from salbench.pipeline import tables
from salbench.pipeline.summary import SCAN, GroupCounts, count_groups, run_dataset
from salbench.pipeline.tables import BASE_FIELDS

#: Columns of the per-sample table that are neither metrics nor method diagnostics: the one
#: definition that the summary's readers (report, compare) share.
NOT_VALUES = frozenset(name for name, _ in BASE_FIELDS if name != "target_prob") | {
    "map", "map_height", "map_width", "input_png"}

#: How many model x method groups a RunSamples keeps (the report asks for the same group's
#: columns several times in a row).
CACHED_GROUPS = 1


class RunSamples:
    """The rows of a run (a ``pyarrow.dataset`` of its finished shards), read on demand.

    Args:
        dataset: the shards (``salbench.pipeline.summary.run_dataset``) or an in-memory
            table (``ds.dataset(table)``).
    """

    def __init__(self, dataset: ds.Dataset) -> None:
        self.dataset = dataset
        self._cache: OrderedDict[tuple[Any, ...], pd.DataFrame] = OrderedDict()

    @property
    def columns(self) -> list[str]:
        """The table's column names (its schema; nothing is read)."""
        return list(self.dataset.schema.names)

    def value_columns(self) -> list[str]:
        """The scalar (float) columns that hold values: ``target_prob``, method diagnostics
        and metric scalars, in schema order."""
        return [f.name for f in self.dataset.schema
                if f.name not in NOT_VALUES and pa.types.is_floating(f.type)]

    def curve_columns(self) -> list[str]:
        """The list<float> (curve) columns, in schema order."""
        return [f.name for f in self.dataset.schema
                if pa.types.is_list(f.type) and pa.types.is_floating(f.type.value_type)]

    @cached_property
    def counts(self) -> dict[tuple[str, str], GroupCounts]:
        """Rows and statuses per (model, method) (one scan of four columns)."""
        return count_groups(self.dataset)

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
        """One model x method's rows (only ``columns``, which must exist; default all),
        sorted by sample index."""
        cols = list(dict.fromkeys(["index", *(columns or self.columns)]))
        key = (model, method, tuple(cols))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        wanted = (pc.field("model") == model) & (pc.field("method") == method)
        frame = self.dataset.to_table(columns=cols, filter=wanted, **SCAN).to_pandas()
        frame = frame.sort_values("index", kind="stable").reset_index(drop=True)
        self._cache[key] = frame
        while len(self._cache) > CACHED_GROUPS:
            self._cache.popitem(last=False)
        return frame

    def curves(self, model: str, method: str, column: str, statuses: Sequence[str],
               skip_column: str | None = None) -> np.ndarray:
        """float64 [n, points]: one model x method's curves in ``column`` of the rows whose
        status is in ``statuses`` (and whose ``skip_column`` is 0), read as one flat Arrow
        buffer (no Python object per curve); curves of another length than the longest, or
        with a non-finite point, are left out."""
        wanted = ((pc.field("model") == model) & (pc.field("method") == method)
                  & pc.field("status").isin(list(statuses)) & pc.field(column).is_valid())
        if skip_column is not None and skip_column in self.columns:
            wanted = wanted & (pc.field(skip_column) == 0.0)
        lists = self.dataset.to_table(columns=[column], filter=wanted,
                                      **SCAN).column(column).combine_chunks()
        if len(lists) == 0:
            return np.empty((0, 0))
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        longest = int(lengths.max())
        if longest == 0:
            return np.empty((0, 0))
        same = lists.filter(pa.array(lengths == longest))
        flat = pc.list_flatten(same).to_numpy(zero_copy_only=False)
        curves = flat.astype(np.float64).reshape(-1, longest)
        return curves[np.isfinite(curves).all(axis=1)]

    def has_values(self, column: str) -> bool:
        """True when some row has a non-null ``column`` (stops at the first)."""
        if column not in self.columns:
            return False
        for batch in self.dataset.to_batches(columns=[column],
                                             filter=pc.field(column).is_valid()):
            if batch.num_rows:
                return True
        return False

    def first_samples(self, n: int) -> list[tuple[int, str]]:
        """(index, sample_id) of the ``n`` samples first in dataset order, streaming the two
        columns (at most n kept)."""
        best: list[tuple[int, str]] = []  # a max-heap of (-index, sample_id)
        seen: set[int] = set()
        for batch in self.dataset.to_batches(columns=["index", "sample_id"]):
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
        for batch in self.dataset.to_batches(columns=["index"]):
            seen.update(np.unique(batch.column("index").to_numpy()).tolist())
        return len(seen)

    def rows_of_samples(self, indices: Sequence[int], model: str) -> pd.DataFrame:
        """Every row of ``model`` for the sample ``indices`` (the gallery's few samples)."""
        wanted = (pc.field("model") == model) & pc.field("index").isin(list(indices))
        return self.dataset.to_table(filter=wanted).to_pandas()

    def error_rows(self, statuses: Sequence[str], limit: int,
                   columns: Sequence[str]) -> pd.DataFrame:
        """The first ``limit`` rows (in shard order) whose status is not in ``statuses``."""
        wanted = ~pc.field("status").isin(list(statuses))
        parts, n = [], 0
        for batch in self.dataset.to_batches(columns=list(columns), filter=wanted):
            if batch.num_rows:
                parts.append(batch.to_pandas())
                n += batch.num_rows
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
    done = tables.finished_shards(path)
    if not done:
        raise ConfigError(f"{path} has no finished shards (samples/ with _done/ markers); "
                          f"finish it with `salbench resume {path}`")
    samples = RunSamples(run_dataset(path))
    summary = None
    summary_path = storage.join(path, "summary.parquet")
    if storage.is_file(summary_path):
        with storage.open_input_file(summary_path) as fh:
            summary = pq.read_table(fh).to_pandas()
    return RunData(path, manifest, samples, summary, len(done))
