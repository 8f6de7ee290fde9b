"""``parquet``: Parquet shards, the unit of distribution and resume; and ``salbench shard``.

Shard schema (:data:`SCHEMA`): ``sample_id`` string, ``image`` binary (encoded image
bytes), ``label`` int64, ``boxes`` list<list<float32>> (each box x0, y0, x1, y1),
``source`` string (a shard that is unreadable or lacks a column stands for one row whose
``error`` says why, so one poisoned file never stops a run), and an optional nullable
``error`` string (the reason a source row could
not be read; such rows keep their place with ``image = b""``). Other columns are passed
through as row keys.

Reading: ``path`` is a shard file, a directory (its ``*.parquet`` files, sorted by name,
not recursive) or a list of files. Row counts come from the Parquet footers, so ``len`` is
cheap; ``read(start, stop)`` opens only the files and row groups that overlap the range.
A shard without a required column raises ConfigError naming the column and the file.

Writing: :func:`write_shards` writes ``shard-00000.parquet``, ``shard-00001.parquet``, ...
each first to a hidden temp file in ``dst`` and then renamed (``os.replace``), so a reader
never sees a partial shard. Array images are stored as PNG (``encode_png``; non-uint8 or
non-RGB arrays go through ``decode_image`` first), bytes as they are.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from salbench.datasets import open_dataset, register
from salbench.datasets.base import Dataset, Row
from salbench.datasets.decode import decode_image, encode_png
from salbench.datasets.folder import check_limit, check_range, listing_fingerprint
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


def _check_types(path: Path, schema: pa.Schema) -> None:
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


def _shard_files(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(path, str | os.PathLike):
        p = Path(path).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.glob("*.parquet") if f.is_file())
            if not files:
                raise ConfigError(f"dataset.path: no *.parquet files in {str(p)!r}")
            return files
        if p.is_file():
            return [p]
        raise ConfigError(f"dataset.path: {str(p)!r} does not exist")
    files = [Path(f).expanduser() for f in path]
    if not files:
        raise ConfigError("dataset.path: empty list of parquet files")
    for f in files:
        if not f.is_file():
            raise ConfigError(f"dataset.path: parquet file {str(f)!r} does not exist")
    return files


log = logging.getLogger(__name__)


@register("parquet")
class ParquetDataset(Dataset):
    """Rows of Parquet shards (see the module docstring).

    Args:
        path: a shard file, a directory of ``*.parquet`` shards, or a list of shard files.
        limit: keep only the first ``limit`` rows.
    """

    kind = "parquet"

    def __init__(
        self,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        limit: int | None = None,
    ) -> None:
        self.files = _shard_files(path)
        self.limit = check_limit(limit)
        # One entry per row group: (file index, row group index); starts[k] = first row.
        self._groups: list[tuple[int, int]] = []
        self._starts: list[int] = []
        self._sizes: list[int] = []
        self._file_meta: list[tuple[str, int, int]] = []
        # A shard that cannot be used (unreadable, wrong schema) becomes one error row, so one
        # poisoned file never stops a run; entries of _groups with g == -1 stand for those.
        self._bad: dict[int, str] = {}
        total = 0
        for fi, f in enumerate(self.files):
            try:
                meta = pq.read_metadata(f)
                schema = meta.schema.to_arrow_schema()
                missing = [col for col in REQUIRED if col not in schema.names]
                if missing:
                    raise ConfigError(
                        f"parquet shard {f}: missing column {missing[0]!r} (has "
                        f"{schema.names}); expected columns {list(REQUIRED)}"
                    )
                _check_types(f, schema)
            except (OSError, pa.ArrowException, ConfigError) as exc:
                reason = str(exc) if isinstance(exc, ConfigError) else (
                    f"parquet shard {f}: not a readable Parquet file ({exc})")
                log.warning("%s; it becomes one error row", reason)
                self._bad[fi] = reason
                self._groups.append((fi, -1))
                self._starts.append(total)
                self._sizes.append(1)
                total += 1
                self._file_meta.append((f.name, -1, f.stat().st_size if f.exists() else -1))
                continue
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                if n:
                    self._groups.append((fi, g))
                    self._starts.append(total)
                    self._sizes.append(n)
                    total += n
            self._file_meta.append((f.name, meta.num_rows, f.stat().st_size))
        self._total = total if self.limit is None else min(total, self.limit)

    def __len__(self) -> int:
        return self._total

    def _group_slices(self, start: int, stop: int) -> Iterator[tuple[int, list[int], int, int]]:
        """(file index, row groups, offset, count) per file covering rows [start, stop)."""
        k = bisect.bisect_right(self._starts, start) - 1
        cur_file, groups, first, count = -1, [], 0, 0
        while k < len(self._groups) and self._starts[k] < stop:
            fi, g = self._groups[k]
            if fi != cur_file:
                if cur_file >= 0:
                    yield cur_file, groups, first, count
                cur_file, groups, count = fi, [], 0
                first = max(start - self._starts[k], 0)
            groups.append(g)
            end = self._starts[k] + self._sizes[k]
            count += min(end, stop) - max(self._starts[k], start)
            k += 1
        if cur_file >= 0:
            yield cur_file, groups, first, count

    def _read_table(self, start: int, stop: int, columns: list[str] | None) -> Iterator[pa.Table]:
        start, stop = check_range(start, stop, self._total)
        if start == stop:
            return
        for fi, groups, first, count in self._group_slices(start, stop):
            if fi in self._bad:
                yield self._error_table(fi, columns)
                continue
            with pq.ParquetFile(self.files[fi]) as pf:
                table = pf.read_row_groups(groups, columns=columns)
            yield table.slice(first, count)

    def _error_table(self, fi: int, columns: list[str] | None) -> pa.Table:
        """The one-row stand-in of an unusable shard: empty image, the reason in ``error``."""
        row = {"sample_id": [self.files[fi].name], "image": [b""], "label": [-1],
               "boxes": [[]], "source": [str(self.files[fi])], "error": [self._bad[fi]]}
        table = pa.table(row)
        return table.select(columns) if columns else table

    def read(self, start: int, stop: int) -> Iterator[Row]:
        for table in self._read_table(start, stop, None):
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

    def sample_ids(self) -> list[str]:
        out: list[str] = []
        for table in self._read_table(0, self._total, ["sample_id"]):
            out += table.column("sample_id").to_pylist()
        return out

    def fingerprint(self) -> str:
        """Hash of shard names/sizes/row counts and the id, label and boxes columns."""

        def entries() -> Iterator[Any]:
            yield self._file_meta
            yield self._total
            try:
                for table in self._read_table(0, self._total, ["sample_id", "label", "boxes"]):
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


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(table: pa.Table, path: Path, row_group_size: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600; a shard is shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_shards(
    dataset: Dataset,
    dst: str | os.PathLike[str],
    rows_per_shard: int = 256,
    *,
    row_group_size: int = 32,
    overwrite: bool = False,
) -> list[Path]:
    """Write every row of ``dataset`` into Parquet shards under ``dst``.

    Args:
        dataset: any Dataset; rows keep their order and sample ids.
        dst: output directory (created if needed).
        rows_per_shard: rows per ``shard-NNNNN.parquet`` file (the last may hold fewer).
        row_group_size: rows per Parquet row group (the unit ``read`` fetches).
        overwrite: replace existing ``shard-*.parquet`` files in ``dst`` (stale ones beyond
            the new count are removed); without it, existing shards raise ConfigError.

    Returns:
        The shard paths, in order.
    """
    if (
        isinstance(rows_per_shard, bool)
        or not isinstance(rows_per_shard, int)
        or (rows_per_shard < 1)
    ):
        raise ConfigError(f"rows_per_shard must be an integer >= 1, got {rows_per_shard!r}")
    out = Path(dst).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("shard-*.parquet"))
    if existing and not overwrite:
        raise ConfigError(
            f"{str(out)!r} already holds {len(existing)} shard(s); choose an empty directory "
            "or pass overwrite=True"
        )
    paths: list[Path] = []
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
        path = out / SHARD_PATTERN.format(k)
        _write_atomic(table, path, rg)
        paths.append(path)
    for stale in existing:
        if stale not in paths:
            stale.unlink(missing_ok=True)
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
    from salbench.datasets import REGISTRY

    if kind not in (None, "imagenet", "folder"):
        raise ConfigError(f"shard: --kind must be imagenet or folder, got {kind!r}")
    if Path(src).expanduser().is_dir():
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
        col = pq.read_table(p, columns=["error"]).column("error")
        errors += len(col) - col.null_count
    print(
        f"wrote {n} rows ({errors} with errors) in {len(paths)} shard(s) to {dst} "
        f"(source {ds.kind}, fingerprint {ds.fingerprint()})"
    )
    return n
