"""Streaming reads of a run's rows: one shard file and one record batch at a time.

Every out-of-core reader (the summary, the report, ``salbench compare``, ``Results.scan``)
reads a run through :class:`Shards`. Each shard file is opened, read in batches of the
asked-for columns and closed before the next one, so the reader's memory is one batch plus
one file's footer, whatever the number of files. (A ``pyarrow.dataset`` over the same files
keeps every file's metadata once it has scanned it: measured on this project's shards, a
scan of 80 files grew the process by 12.5 MB against 4.5 MB file by file.)

Shards are read with their few distinct strings (``model``, ``method``, ``status``) as
dictionary columns (a code per row); :func:`plain` turns them back into strings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from salbench import storage
from salbench.results import tables

#: Columns read as dictionaries: a run has a handful of distinct values in each.
DICTIONARY_COLUMNS = ("model", "method", "status")

#: Rows per record batch of a scan: a few MB of a wide row (curves, strings), so that the
#: scan's transient copies stay small next to one group's columns.
BATCH_ROWS = 8192


def plain(data: pa.Table | pa.RecordBatch) -> pa.Table:
    """A table or batch with its dictionary columns decoded back to the strings the shards
    hold (for callers that sort, join, write or hand rows to users)."""
    table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, pc.cast(table.column(i), f.type.value_type))
    return table


class Shards:
    """The rows of a run's finished shard files (or of an in-memory table), read on demand.

    Args:
        files: shard files (local paths or object-store paths of ``filesystem``), in order.
        filesystem: the pyarrow filesystem the files are on.
        table: instead of files, an in-memory table (tests,
            :func:`~salbench.results.summary.summarize`).
    """

    def __init__(self, files: Sequence[str] = (), filesystem: Any = None,
                 table: pa.Table | None = None) -> None:
        self.files = list(files)
        self.filesystem = filesystem
        self.table = table
        self._schema: pa.Schema | None = None

    @classmethod
    def of_run(cls, run_dir: storage.Location) -> Shards:
        """The finished shards of a run directory (local or a URI), in shard order."""
        files = [tables.shard_paths(run_dir, s)[0]
                 for s in sorted(tables.finished_shards(run_dir))]
        fs = storage.resolve(run_dir)[0]
        return cls([storage.resolve(f)[1] for f in files], fs)

    @property
    def schema(self) -> pa.Schema:
        """The first file's schema (dictionary columns as read), or the table's; the
        schema every batch is given (a column a file lacks is read as nulls)."""
        if self._schema is None:
            if self.table is not None:
                self._schema = self.table.schema
            elif not self.files:
                self._schema = pa.schema([])
            else:
                with self._open(self.files[0]) as pf:
                    self._schema = pf.schema_arrow
        return self._schema

    @contextlib.contextmanager
    def _open(self, path: str) -> Iterator[pq.ParquetFile]:
        """The file, closed when the block ends (its handle too, not when collected)."""
        with storage.retry(lambda: self.filesystem.open_input_file(path), path) as fh:
            meta = pq.read_metadata(fh)
            names = _top_level_names(meta)
            with pq.ParquetFile(fh, metadata=meta, read_dictionary=[
                    c for c in DICTIONARY_COLUMNS if c in names]) as pf:
                yield pf

    def batches(self, columns: Sequence[str] | None = None,
                batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The rows' ``columns`` (default all), file by file, at most ``batch_rows`` per
        batch, in the schema's types."""
        names = list(columns) if columns is not None else list(self.schema.names)
        target = pa.schema([self.schema.field(n) for n in names])
        if self.table is not None:
            yield from self.table.select(names).to_batches(max_chunksize=batch_rows)
            return
        for path in self.files:
            with self._open(path) as pf:
                have = set(pf.schema_arrow.names)
                for batch in pf.iter_batches(batch_size=batch_rows, use_threads=False,
                                             columns=[n for n in names if n in have]):
                    yield _conform(batch, target)

    def frames(self, columns: Sequence[str] | None = None,
               batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        """:meth:`batches` as DataFrames with plain string columns (shard order)."""
        for batch in self.batches(columns, batch_rows):
            yield plain(batch).to_pandas()

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Every row's ``columns`` as one plain table (asked for explicitly: the whole run)."""
        names = list(columns) if columns is not None else list(self.schema.names)
        parts = [plain(b) for b in self.batches(names)]
        if not parts:
            return plain(pa.Table.from_batches([], pa.schema(
                [self.schema.field(n) for n in names])))
        return pa.concat_tables(parts)


def _top_level_names(meta: pq.FileMetaData) -> set[str]:
    """A Parquet file's top-level column names, from its column chunks: ``meta.schema``
    would make a reference cycle per file that only the cyclic garbage collector frees
    (measured: a scan of 1,250 files grew the driver by 13 MB more than one of 125)."""
    if meta.num_row_groups == 0:
        return set()
    group = meta.row_group(0)
    return {group.column(i).path_in_schema.split(".")[0] for i in range(meta.num_columns)}


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns in its order: missing ones as nulls, others cast
    when a file's type differs from the first file's."""
    arrays = []
    for field in schema:
        i = batch.schema.get_field_index(field.name)
        if i < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
        else:
            col = batch.column(i)
            arrays.append(col if col.type == field.type else col.cast(field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
