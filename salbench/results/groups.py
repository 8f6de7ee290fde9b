"""A run's rows split by model x method in one scan, each group read back on its own.

The summary's statistics (exact medians, SIC's median curve, the pointing game's class
mean) and the report's plots need one model x method's values together; nothing needs two
groups at once. :class:`Groups` reads the run once (:class:`~salbench.results.scan.Shards`,
file by file), counts each group's rows and statuses, and appends each group's rows of the
asked-for columns to that group's own Arrow IPC file in a local temporary folder (``TMPDIR``;
removed on :meth:`Groups.close`). Reading a group back reads its file only.

So the driver's memory is one scan batch plus one group's columns (at most the dataset's
images: 50,000 rows for ImageNet's validation set, whatever the number of models and
methods), the time is linear in rows, and every shard is read once, which matters on object
storage (a scan per group would read every object once per model x method). This is the
partition-then-aggregate plan a database would run (DuckDB was the alternative: it would
add a dependency, and its exact median still holds a group's values).
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import weakref
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from salbench.results.scan import Shards, plain
from salbench.results.tables import MAP_STATUSES, failed_metrics

#: Statuses whose rows have a target and the method's diagnostics.
TARGET_STATUSES = (*MAP_STATUSES, "degenerate_map")
#: Statuses that are not errors: rows with a result, and those ``dataset.filter`` left out.
NOT_ERROR_STATUSES = (*TARGET_STATUSES, "filtered")

#: Columns every scan reads to count and route rows (``error`` where the table has it).
KEY_COLUMNS = ("model", "method", "status", "error")


def status_in(status: pa.ChunkedArray | pa.Array, statuses: Sequence[str]) -> np.ndarray:
    """bool [rows]: each row's ``status`` is one of ``statuses``."""
    return pc.is_in(status, value_set=pa.array(list(statuses))).to_numpy(zero_copy_only=False)


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

    def add(self, status: pa.Array, error: pa.Array | None) -> None:
        """Count one slice of this group's rows (its ``status`` and ``error`` columns;
        without ``error``, failing metrics are not counted)."""
        self.rows += len(status)
        counts = pc.value_counts(status)
        for value, n in zip(counts.field("values").to_pylist(),
                            counts.field("counts").to_pylist(), strict=True):
            self.statuses[value] += int(n)
        if error is None:
            return
        failed = pc.equal(status, "metric_error")
        for text in pc.filter(error, failed).to_pylist():
            for label in failed_metrics(text):
                self.metric_fails[label] += 1


def split_by_group(batch: pa.RecordBatch) -> Iterator[tuple[tuple[str, str], pa.Table]]:
    """((model, method), that group's rows of ``batch``, plain strings) for each group
    present in ``batch``, in code order."""
    table = plain(batch)
    model = pc.dictionary_encode(table.column("model")).combine_chunks()
    method = pc.dictionary_encode(table.column("method")).combine_chunks()
    code = (model.indices.to_numpy(zero_copy_only=False).astype(np.int64) * len(method.dictionary)
            + method.indices.to_numpy(zero_copy_only=False))
    order = np.argsort(code, kind="stable")
    code = code[order]
    grouped = table.take(pa.array(order))
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    ends = np.r_[starts[1:], len(code)]
    m_names, k_names = model.dictionary.to_pylist(), method.dictionary.to_pylist()
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        key = (m_names[code[s] // len(k_names)], k_names[code[s] % len(k_names)])
        yield key, grouped.slice(s, e - s)


def _own_buffers(parts: list[pa.RecordBatch], names: list[str]) -> pa.Table:
    """``names`` of ``parts`` copied into buffers of their own: a batch read from an IPC
    file is a view of its whole message body, so a kept column would keep every column's
    bytes (measured: 28.5 MB held for a 1.3 MB column of 80,000 rows)."""
    return pa.Table.from_batches(parts).select(names).combine_chunks()


def _plain_field(f: pa.Field) -> pa.Field:
    return f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f


def _raise_open_files_limit() -> None:
    """One open spill file per group: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Groups:
    """The rows of ``shards`` split by model x method (see the module docstring).

    Args:
        shards: the run's rows.
        columns: the columns kept per group (those of the schema; others are ignored).
        workdir: where the group files go (default: a new folder in ``TMPDIR``).
    """

    def __init__(self, shards: Shards, columns: Sequence[str],
                 workdir: str | None = None) -> None:
        names = set(shards.schema.names)
        self.columns = [c for c in dict.fromkeys(columns) if c in names]
        #: The kept columns' types (dictionary columns as their strings).
        self.schema = pa.schema([_plain_field(shards.schema.field(c)) for c in self.columns])
        self._dir = tempfile.mkdtemp(prefix="salbench-groups-", dir=workdir)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._files: dict[tuple[str, str], str] = {}
        self.counts: dict[tuple[str, str], GroupCounts] = {}
        self._split(shards)

    def _split(self, shards: Shards) -> None:
        _raise_open_files_limit()
        writers: dict[tuple[str, str], pa.ipc.RecordBatchFileWriter] = {}
        sinks: list[pa.NativeFile] = []
        have = set(shards.schema.names)
        read = list(dict.fromkeys([*(c for c in KEY_COLUMNS if c in have), *self.columns]))
        try:
            for batch in shards.batches(read):
                for key, rows in split_by_group(batch):
                    self.counts.setdefault(key, GroupCounts()).add(
                        rows.column("status").combine_chunks(),
                        rows.column("error").combine_chunks() if "error" in have else None)
                    part = rows.select(self.columns)
                    if key not in writers:
                        path = os.path.join(self._dir, f"group-{len(writers):05d}.arrow")
                        self._files[key] = path
                        sinks.append(pa.OSFile(path, "wb"))
                        writers[key] = pa.ipc.new_file(sinks[-1], self.schema)
                    writers[key].write_table(part.cast(self.schema))
        finally:
            for w in writers.values():
                w.close()
            for s in sinks:
                s.close()

    def _names(self, columns: Sequence[str] | None) -> list[str]:
        names = list(dict.fromkeys(columns if columns is not None else self.columns))
        missing = [c for c in names if c not in self.columns]
        if missing:
            raise KeyError(f"columns {missing} were not kept for the groups "
                           f"(kept: {self.columns})")
        return names

    def batches(self, model: str, method: str, columns: Sequence[str] | None = None,
                batch_rows: int = 2048) -> Iterator[pa.Table]:
        """One group's rows (``columns`` of those kept; default all) in scan order, as
        tables of about ``batch_rows`` rows (its file's small batches joined), one at a
        time; nothing when the group has no rows."""
        names = self._names(columns)
        path = self._files.get((model, method))
        if path is None:
            return
        with pa.OSFile(path, "rb") as fh:
            reader = pa.ipc.open_file(fh, options=pa.ipc.IpcReadOptions(
                included_fields=sorted(self.columns.index(c) for c in names)))
            parts: list[pa.RecordBatch] = []
            rows = 0
            for i in range(reader.num_record_batches):
                parts.append(reader.get_batch(i))
                rows += parts[-1].num_rows
                if rows >= batch_rows:
                    yield _own_buffers(parts, names)
                    parts, rows = [], 0
            if parts:
                yield _own_buffers(parts, names)

    def read(self, model: str, method: str, columns: Sequence[str] | None = None) -> pa.Table:
        """One group's rows (``columns`` of those kept; default all), in scan order; an
        empty table when the group has no rows."""
        names = self._names(columns)
        parts = list(self.batches(model, method, names))
        if not parts:
            return self.schema.empty_table().select(names)
        return pa.concat_tables(parts)

    def close(self) -> None:
        """Remove the group files (also done when the object is collected)."""
        self._cleanup()

    def __enter__(self) -> Groups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
