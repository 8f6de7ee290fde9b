"""``parquet``: Parquet shards, the unit of distribution and resume; and ``salbench shard``.

Shard schema (:data:`SCHEMA`): ``sample_id`` string, ``image`` binary (encoded image
bytes), ``label`` int64, ``boxes`` list<list<float32>> (each box x0, y0, x1, y1),
``source`` string (a shard that is unreadable or lacks a column stands for one row whose
``error`` says why, so one poisoned file never stops a run), and an optional nullable
``error`` string (the reason a source row could
not be read; such rows keep their place with ``image = b""``). Other columns are passed
through as row keys.

Reading: ``path`` is a shard file, a directory (its ``*.parquet`` files, sorted by name,
not recursive), a glob pattern (``.../validation-*.parquet``) or a list of files; each may be
a local path or a URI (``s3://``, ``gs://``, ...; see :mod:`salbench.storage`). Row counts
come from the Parquet footers, so ``len`` is cheap; ``read(start, stop)`` fetches only the
row groups that overlap the range (byte ranges of the object), retrying transient failures.
A missing dataset path raises ConfigError; a shard without a required column, unreadable or
gone, becomes one error row whose ``error`` names its path or URI.

Hugging Face image datasets are read as they are published: a file with an ``image``
column (``struct<bytes: binary, path: string>``, or plain binary) and no ``sample_id`` has
``sample_id`` = the image's ``path`` (else ``<file name>:<row in file>``), ``label`` = its
integer ``label`` column (a class-label column is stored as int; -1 when absent), no boxes,
and ``source`` = ``<file>#<row in file>``.

Writing: :func:`write_shards` writes ``shard-00000.parquet``, ``shard-00001.parquet``, ...
each whole under its final name (local: a hidden temp file, then renamed; object store: one
upload, visible only once complete), so a reader never sees a partial shard. Array images
are stored as PNG (``encode_png``; non-uint8 or non-RGB arrays go through ``decode_image``
first), bytes as they are.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from salbench import storage
from salbench.datasets.base import Dataset, Row
from salbench.datasets.decode import decode_image, encode_png
from salbench.datasets.folder import check_limit, check_range, listing_fingerprint
from salbench.datasets.registry import open_dataset, register
from salbench.errors import BadInputError, ConfigError

SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("image", pa.binary()),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("boxes", pa.list_(pa.list_(pa.float32()))),
        pa.field("source", pa.string()),
        pa.field("error", pa.string()),
    ]
)
REQUIRED = ("sample_id", "image", "label", "boxes", "source")
SHARD_PATTERN = "shard-{:05d}.parquet"


def _check_types(path: Path | str, schema: pa.Schema) -> None:
    def bad(col: str, want: str) -> ConfigError:
        return ConfigError(
            f"parquet shard {path}: column {col!r} has type {schema.field(col).type}, "
            f"expected {want}"
        )

    t = schema.field("image").type
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise bad("image", "binary")
    if not pa.types.is_integer(schema.field("label").type):
        raise bad("label", "int64")
    for col in ("sample_id", "source"):
        t = schema.field(col).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise bad(col, "string")
    t = schema.field("boxes").type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not (
        pa.types.is_list(t.value_type) or pa.types.is_large_list(t.value_type)
    ):
        raise bad("boxes", "list<list<float32>>")


def _shard_files(path: storage.Location | Sequence[storage.Location]) -> list[Path | str]:
    try:
        if isinstance(path, str | os.PathLike):
            return _expand(path)
        files = [storage.normalize(f) for f in path]
        if not files:
            raise ConfigError("dataset.path: empty list of parquet files")
        present = storage.map_threads(storage.is_file, files, any(map(storage.is_uri, files)))
        for f, ok in zip(files, present, strict=True):
            if not ok:
                raise ConfigError(f"dataset.path: parquet file {str(f)!r} does not exist")
        return files
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:  # no access, an unknown scheme, an unreachable store
        raise ConfigError(f"dataset.path: cannot list {path!r}: {exc}") from exc


def _expand(path: storage.Location) -> list[Path | str]:
    """A file, a directory's ``*.parquet`` files or a glob pattern's files, sorted."""
    p = storage.normalize(path)
    if storage.has_glob(p):
        files = storage.glob(p)
        if not files:
            raise ConfigError(f"dataset.path: no files match {str(p)!r}")
        return files
    kind = storage.info(p).type
    if kind == pafs.FileType.Directory:
        files = storage.list_files(p, "*.parquet")
        if not files:
            raise ConfigError(f"dataset.path: no *.parquet files in {str(p)!r}")
        return files
    if kind == pafs.FileType.File:
        return [p]
    raise ConfigError(f"dataset.path: {str(p)!r} does not exist")


def _layout(path: Path | str, schema: pa.Schema) -> dict[str, Any]:
    """How a file's columns map to rows: salbench's own shards, or a Hugging Face image
    dataset (see the module docstring). ConfigError naming the file when neither fits."""
    names = schema.names
    if "sample_id" in names or "image" not in names:
        missing = [col for col in REQUIRED if col not in names]
        if missing:
            raise ConfigError(
                f"parquet shard {path}: missing column {missing[0]!r} (has {names}); expected "
                f"columns {list(REQUIRED)}, or a Hugging Face image dataset (an 'image' "
                "column and an integer 'label')"
            )
        _check_types(path, schema)
        return {"kind": "salbench"}
    t = schema.field("image").type
    if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
        image = "struct"
        has_path = t.get_field_index("path") >= 0
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        image, has_path = "binary", False
    else:
        raise ConfigError(f"parquet shard {path}: column 'image' has type {t}, expected "
                          "binary or struct<bytes: binary, path: string>")
    has_label = "label" in names
    if has_label and not pa.types.is_integer(schema.field("label").type):
        raise ConfigError(f"parquet shard {path}: column 'label' has type "
                          f"{schema.field('label').type}, expected an integer (class index)")
    return {"kind": "hf", "image": image, "path": has_path, "label": has_label}


def _inspect(path: Path | str) -> tuple[pq.FileMetaData | None, dict[str, Any] | str, int]:
    """(footer, layout, size in bytes) of one file; footer None and the reason when unusable."""
    try:
        with storage.open_input_file(path) as fh:
            meta = pq.ParquetFile(fh).metadata
            size = fh.size()
        return meta, _layout(path, meta.schema.to_arrow_schema()), size
    except ConfigError as exc:
        return None, str(exc), -1
    except (OSError, pa.ArrowException) as exc:
        return None, f"parquet shard {path}: not a readable Parquet file ({exc})", -1


log = logging.getLogger(__name__)


@register("parquet")
class ParquetDataset(Dataset):
    """Rows of Parquet shards or Hugging Face image Parquet files (see the module docstring).

    Args:
        path: a file, a directory of ``*.parquet`` files, a glob pattern, or a list of
            files; local paths or URIs.
        limit: keep only the first ``limit`` rows.
    """

    kind = "parquet"

    def __init__(
        self,
        path: storage.Location | Sequence[storage.Location],
        limit: int | None = None,
    ) -> None:
        self.files = _shard_files(path)
        self.limit = check_limit(limit)
        # One entry per row group: (file index, row group index); starts[k] = first row,
        # offsets[k] = its first row within its file.
        self._groups: list[tuple[int, int]] = []
        self._starts: list[int] = []
        self._sizes: list[int] = []
        self._offsets: list[int] = []
        self._file_meta: list[tuple[str, int, int]] = []
        self._layouts: list[dict[str, Any]] = []
        # A shard that cannot be used (unreadable, wrong schema) becomes one error row, so one
        # poisoned file never stops a run; entries of _groups with g == -1 stand for those.
        self._bad: dict[int, str] = {}
        remote = any(storage.is_uri(f) for f in self.files)
        total = 0
        for fi, (f, (meta, layout, size)) in enumerate(
                zip(self.files, storage.map_threads(_inspect, self.files, remote), strict=True)):
            name = storage.basename(f)
            if meta is None:
                log.warning("%s; it becomes one error row", layout)
                self._bad[fi] = str(layout)
                self._layouts.append({"kind": "bad"})
                self._groups.append((fi, -1))
                self._starts.append(total)
                self._sizes.append(1)
                self._offsets.append(0)
                total += 1
                self._file_meta.append((name, -1, size))
                continue
            self._layouts.append(dict(layout))
            offset = 0
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n:
                    self._groups.append((fi, g))
                    self._starts.append(total)
                    self._sizes.append(n)
                    self._offsets.append(offset)
                    total += n
                    offset += n
            self._file_meta.append((name, meta.num_rows, size))
        self._total = total if self.limit is None else min(total, self.limit)

    def __len__(self) -> int:
        return self._total

    def _group_slices(self, start: int, stop: int) -> Iterator[tuple[int, list[int], int, int,
                                                                     int]]:
        """(file index, row groups, offset, count, first row in file) per file covering rows
        [start, stop)."""
        k = bisect.bisect_right(self._starts, start) - 1
        cur_file, groups, first, count, row0 = -1, [], 0, 0, 0
        while k < len(self._groups) and self._starts[k] < stop:
            fi, g = self._groups[k]
            if fi != cur_file:
                if cur_file >= 0:
                    yield cur_file, groups, first, count, row0
                cur_file, groups, count = fi, [], 0
                first = max(start - self._starts[k], 0)
                row0 = self._offsets[k] + first
            groups.append(g)
            end = self._starts[k] + self._sizes[k]
            count += min(end, stop) - max(self._starts[k], start)
            k += 1
        if cur_file >= 0:
            yield cur_file, groups, first, count, row0

    def _read_groups(self, fi: int, groups: list[int], first: int, count: int,
                     columns: list[str] | None) -> pa.Table:
        """Rows of row groups ``groups`` of file ``fi`` (only their byte ranges are fetched;
        transient failures retried; a vanished object raises FileNotFoundError naming it)."""
        f = self.files[fi]

        def read() -> pa.Table:
            with storage.open_input_file(f) as fh, pq.ParquetFile(fh) as pf:
                return pf.read_row_groups(groups, columns=columns)

        return storage.retry(read, f).slice(first, count)

    def _read_table(self, start: int, stop: int,
                    columns: dict[str, list[str] | None]) -> Iterator[tuple[int, pa.Table, int]]:
        """(file index, table, first row in file) per file covering rows [start, stop);
        ``columns`` per layout kind (None: all)."""
        start, stop = check_range(start, stop, self._total)
        if start == stop:
            return
        for fi, groups, first, count, row0 in self._group_slices(start, stop):
            if fi in self._bad:
                yield fi, self._error_table(fi, columns.get("salbench")), 0
                continue
            cols = columns.get(self._layouts[fi]["kind"])
            yield fi, self._read_groups(fi, groups, first, count, cols), row0

    def _error_table(self, fi: int, columns: list[str] | None) -> pa.Table:
        """The one-row stand-in of an unusable shard: empty image, the reason in ``error``."""
        row = {"sample_id": [storage.basename(self.files[fi])], "image": [b""], "label": [-1],
               "boxes": [[]], "source": [str(self.files[fi])], "error": [self._bad[fi]]}
        table = pa.table(row)
        return table.select(columns) if columns else table

    def _hf_columns(self, fi: int, with_image: bool) -> list[str]:
        lay = self._layouts[fi]
        cols = (["image"] if with_image else ["image.path"] if lay.get("path") else [])
        return cols + (["label"] if lay.get("label") else [])

    def _hf_rows(self, fi: int, table: pa.Table, row0: int) -> Iterator[Row]:
        """Rows of a Hugging Face image Parquet file (see the module docstring)."""
        lay, f = self._layouts[fi], self.files[fi]
        images = table.column("image").to_pylist() if "image" in table.column_names else None
        labels = table.column("label").to_pylist() if lay["label"] else [None] * table.num_rows
        for i in range(table.num_rows):
            image = images[i] if images is not None else None
            path = image.get("path") if isinstance(image, dict) else None
            data = image.get("bytes") if isinstance(image, dict) else image
            yield {
                "sample_id": path or f"{storage.basename(f)}:{row0 + i}",
                "image": bytes(data) if data is not None else b"",
                "label": int(labels[i]) if labels[i] is not None else -1,
                "boxes": [],
                "source": f"{f}#{row0 + i}",
            }

    def _hf_ids(self, fi: int, table: pa.Table, row0: int) -> list[str]:
        f = self.files[fi]
        paths = (table.column("image").combine_chunks().field("path").to_pylist()
                 if self._layouts[fi].get("path") else [None] * table.num_rows)
        return [p or f"{storage.basename(f)}:{row0 + i}" for i, p in enumerate(paths)]

    def read(self, start: int, stop: int) -> Iterator[Row]:
        for fi, table, row0 in self._read_table(start, stop, {"salbench": None}):
            if self._layouts[fi]["kind"] == "hf":
                yield from self._hf_rows(fi, table, row0)
                continue
            cols = {name: table.column(name).to_pylist() for name in table.column_names}
            for i in range(table.num_rows):
                row: Row = {
                    "sample_id": cols["sample_id"][i],
                    "image": cols["image"][i] if cols["image"][i] is not None else b"",
                    "label": int(cols["label"][i]) if cols["label"][i] is not None else -1,
                    "boxes": [
                        [float(v) for v in b] for b in (cols["boxes"][i] or []) if b is not None
                    ],
                    "source": cols["source"][i] or "",
                }
                for name in cols:
                    if name not in row and not (name == "error" and cols[name][i] is None):
                        row[name] = cols[name][i]
                yield row

    def _columns(self, salbench: list[str], hf_image: bool) -> dict[str, list[str] | None]:
        hf = [i for i, lay in enumerate(self._layouts) if lay["kind"] == "hf"]
        out: dict[str, list[str] | None] = {"salbench": salbench}
        if hf:  # every Hugging Face file of one dataset shares its layout in practice
            out["hf"] = self._hf_columns(hf[0], hf_image)
        return out

    def sample_ids(self) -> list[str]:
        out: list[str] = []
        for fi, table, row0 in self._read_table(0, self._total,
                                                self._columns(["sample_id"], False)):
            if self._layouts[fi]["kind"] == "hf":
                out += self._hf_ids(fi, table, row0)
            else:
                out += table.column("sample_id").to_pylist()
        return out

    def fingerprint(self) -> str:
        """Hash of shard names/sizes/row counts and the id, label and boxes columns (for a
        Hugging Face file: the image paths and labels, not the image bytes)."""

        def entries() -> Iterator[Any]:
            yield self._file_meta
            yield self._total
            try:
                cols = self._columns(["sample_id", "label", "boxes"], False)
                for fi, table, row0 in self._read_table(0, self._total, cols):
                    if self._layouts[fi]["kind"] == "hf":
                        labels = (table.column("label").to_pylist()
                                  if "label" in table.column_names else [])
                        yield {"sample_id": self._hf_ids(fi, table, row0), "label": labels}
                    else:
                        yield table.to_pydict()
            except (OSError, pa.ArrowException) as exc:  # corrupt pages: still a fingerprint
                yield f"unreadable: {exc}"

        return listing_fingerprint(self.kind, entries())


def _image_bytes(image: Any) -> bytes:
    if image is None:
        return b""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    arr = np.asarray(image)
    if not (arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[-1] == 3):
        arr = decode_image(arr, min_size=1)
    return encode_png(arr)


def _row_record(row: Row) -> dict[str, Any]:
    err = row.get("error")
    try:
        image = _image_bytes(row.get("image"))
    except BadInputError as exc:
        image, err = b"", err or str(exc)
    boxes = [[float(v) for v in b] for b in (row.get("boxes") or [])]
    return {
        "sample_id": str(row["sample_id"]),
        "image": image,
        "label": int(row.get("label", -1)),
        "boxes": boxes,
        "source": str(row.get("source", "")),
        "error": None if err is None else str(err),
    }


def write_shards(
    dataset: Dataset,
    dst: storage.Location,
    rows_per_shard: int = 256,
    *,
    row_group_size: int = 32,
    overwrite: bool = False,
) -> list[Path | str]:
    """Write every row of ``dataset`` into Parquet shards under ``dst``.

    Args:
        dataset: any Dataset; rows keep their order and sample ids.
        dst: output directory (created if needed) or URI (``s3://bucket/shards``).
        rows_per_shard: rows per ``shard-NNNNN.parquet`` file (the last may hold fewer).
        row_group_size: rows per Parquet row group (the unit ``read`` fetches).
        overwrite: replace existing ``shard-*.parquet`` files in ``dst`` (stale ones beyond
            the new count are removed); without it, existing shards raise ConfigError.

    Returns:
        The shard paths (URIs for a URI ``dst``), in order.
    """
    if (
        isinstance(rows_per_shard, bool)
        or not isinstance(rows_per_shard, int)
        or (rows_per_shard < 1)
    ):
        raise ConfigError(f"rows_per_shard must be an integer >= 1, got {rows_per_shard!r}")
    out = storage.normalize(dst)
    storage.makedirs(out)
    try:
        existing = storage.list_files(out, "shard-*.parquet")
    except FileNotFoundError:
        existing = []
    if existing and not overwrite:
        raise ConfigError(
            f"{str(out)!r} already holds {len(existing)} shard(s); choose an empty directory "
            "or pass overwrite=True"
        )
    paths: list[Path | str] = []
    n = len(dataset)
    for k, start in enumerate(range(0, n, rows_per_shard)):
        records = [_row_record(r) for r in dataset.read(start, min(start + rows_per_shard, n))]
        rg = max(1, min(row_group_size, rows_per_shard))
        # one Arrow chunk per row group keeps each binary chunk far below its 2 GiB limit
        table = pa.concat_tables(
            [
                pa.Table.from_pylist(records[i : i + rg], schema=SCHEMA)
                for i in range(0, max(len(records), 1), rg)
            ]
        )
        path = storage.join(out, SHARD_PATTERN.format(k))
        storage.write_parquet(table, path, row_group_size=rg, compression="zstd")
        paths.append(path)
    for stale in existing:
        if stale not in paths:
            storage.delete(stale)
    return paths


def shard_command(src: str, dst: str, rows_per_shard: int = 256, *, overwrite: bool = False,
                  kind: str | None = None) -> int:
    """``salbench shard SRC DST``: convert a folder or a named dataset into Parquet shards.

    Args:
        src: a directory, or a dataset kind with default parameters (``sample``,
            ``synthetic``, ``digits``).
        dst: output directory for ``shard-NNNNN.parquet``.
        rows_per_shard: rows per shard.
        kind: how to read a directory ``src``: ``imagenet`` (``src`` is the ImageNet root:
            labels and boxes are kept), ``folder`` (an image folder with an optional labels
            CSV), or None: ``imagenet`` when the ImageNet reader recognises ``src``, else
            ``folder``.

    Returns:
        The number of rows written (a summary line is printed).
    """
    from salbench.datasets.registry import REGISTRY

    if kind not in (None, "imagenet", "folder"):
        raise ConfigError(f"shard: --kind must be imagenet or folder, got {kind!r}")
    if storage.is_dir(src):
        if kind == "imagenet":
            ds = open_dataset({"kind": "imagenet", "root": src})
        elif kind == "folder":
            ds = open_dataset({"kind": "folder", "path": src})
        else:
            try:
                ds = open_dataset({"kind": "imagenet", "root": src})
            except ConfigError:
                ds = open_dataset({"kind": "folder", "path": src})
    elif src in REGISTRY:
        ds = open_dataset(src)
    else:
        raise ConfigError(
            f"shard: SRC {src!r} is neither a directory nor a dataset kind "
            f"({', '.join(REGISTRY.names())})"
        )
    paths = write_shards(ds, dst, rows_per_shard, overwrite=overwrite)
    n = len(ds)
    errors = 0
    for p in paths:
        with storage.open_input_file(p) as fh:
            col = pq.read_table(fh, columns=["error"]).column("error")
        errors += len(col) - col.null_count
    print(
        f"wrote {n} rows ({errors} with errors) in {len(paths)} shard(s) to {dst} "
        f"(source {ds.kind}, fingerprint {ds.fingerprint()})"
    )
    return n
