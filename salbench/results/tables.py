"""The per-sample table: its schema, its rows' statuses, and its shard files (SPEC 6).

The one definition that the writer (:mod:`salbench.pipeline.writer`, which builds and
commits shards with :func:`rows_to_table`, :func:`join_parts` and :func:`write_shard`) and
the readers (:mod:`salbench.results`) share. It needs no registry: what the schema depends
on comes as a :class:`TableLayout` (a RunConfig, or the writer's plain-data ShardFormat).

``samples/shard-NNNNN.parquet`` holds one row per sample x model x method. The run directory
may be local or a URI (``s3://...``; :mod:`salbench.storage`). Commit protocol, the same on
both: the shard is written whole under its final name (on local disk via a hidden temporary,
fsync and rename; on an object store as one upload, visible only once complete), then its
completion marker ``_done/shard-NNNNN.json`` (its row count). A shard counts as finished only
when both exist and the row counts agree, so a shard rewritten by a resumed run, or one whose
marker was never written, is never half-counted. Locally ``samples/`` holds only finished
Parquet files and hidden temporaries, so ``pandas.read_parquet(run_dir / "samples")`` reads it
as one dataset.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from salbench import storage

BASE_FIELDS = [
    ("run_id", pa.string()), ("sample_id", pa.string()), ("sample_key", pa.string()),
    ("cell_key", pa.string()), ("shard", pa.int32()),
    ("index", pa.int64()), ("model", pa.string()), ("method", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("label", pa.int64()),
    ("target", pa.int64()), ("pred", pa.int64()), ("target_prob", pa.float64()),
]
SORT_KEYS = ["index", "model", "method"]


#: Statuses whose rows carry a usable map for the later stages' metrics ("metric_error":
#: some metric failed; the row keeps its map and its other metrics).
MAP_STATUSES = ("ok", "metric_error")


def failed_metrics(error: str) -> set[str]:
    """The metric labels named by a ``metric_error`` row's ``error`` lines (one
    ``<metric label>: Type: message`` line each: :func:`salbench.runner.metric_error_line`)."""
    return {line.split(": ", 1)[0] for line in (error or "").splitlines() if ": " in line}


class TableLayout(Protocol):
    """What the per-sample table's schema depends on: a :class:`~salbench.config.RunConfig`,
    or the same as plain data (:class:`~salbench.pipeline.writer.ShardFormat`)."""

    @property
    def save_maps(self) -> bool:
        """Whether the rows carry their maps and input images."""

    def value_columns(self) -> dict[str, str]:
        """Column -> "float" | "curve" for every method diagnostic and metric output."""


def samples_schema(layout: TableLayout) -> pa.Schema:
    """Arrow schema of the per-sample table of ``layout``.

    With ``save_maps``: ``map`` (float16 bytes, [map_height, map_width]) on every ok row, and
    ``input_png`` (the model's input crop as PNG) on the first row of each sample x model
    (null on its other rows), so that a report can show the maps over their images.
    """
    fields = list(BASE_FIELDS)
    for col, kind in layout.value_columns().items():
        fields.append((col, pa.list_(pa.float32()) if kind == "curve" else pa.float64()))
    if layout.save_maps:
        fields += [("map", pa.binary()), ("map_height", pa.int32()), ("map_width", pa.int32()),
                   ("input_png", pa.binary())]
    return pa.schema(fields)


def rows_to_table(rows: list[dict[str, Any]], layout: TableLayout, run_id: str) -> pa.Table:
    """Stage output rows (with a JSON ``values`` column) -> a sorted table in the schema."""
    schema = samples_schema(layout)
    cols = layout.value_columns()
    records = []
    have_input: set[tuple[int, str]] = set()
    for r in sorted(rows, key=lambda r: tuple(r[k] for k in SORT_KEYS)):
        values = json.loads(r["values"])
        rec = {name: r.get(name) for name, _ in BASE_FIELDS}
        rec["run_id"] = run_id
        for col, kind in cols.items():
            v = values.get(col)
            if v is None:
                rec[col] = None
            elif kind == "curve":
                rec[col] = [float(t) for t in v]
            else:
                rec[col] = float(v)
        if layout.save_maps:
            rec.update(map=stored_map(r), map_height=int(r["height"]),
                       map_width=int(r["width"]), input_png=None)
            crop, key = r.get("crop") or b"", (r["index"], r["model"])
            if key not in have_input and r.get("input_png"):  # a row copied by --reuse
                have_input.add(key)
                rec["input_png"] = r["input_png"]
            elif key not in have_input and len(crop) == 3 * int(r["height"]) * int(
                    r["width"]) > 0:
                have_input.add(key)
                rec["input_png"] = crop_png(crop, int(r["height"]), int(r["width"]))
        records.append(rec)
    return pa.Table.from_pylist(records, schema=schema)


def join_parts(parts: list[pa.Table], layout: TableLayout) -> pa.Table:
    """One shard's table from its parts (each made by :func:`rows_to_table` from some of
    its rows): the rows in :func:`rows_to_table`'s order and, with ``save_maps``, the input
    image on the first row of each sample x model that has one, as if the shard's rows had
    come in one part."""
    table = pa.concat_tables(parts).sort_by([(k, "ascending") for k in SORT_KEYS])
    if not layout.save_maps or len(parts) == 1:
        return table
    png = table.column("input_png")
    index = table.column("index").to_numpy()
    model = table.column("model").to_pylist()
    keep = np.zeros(len(table), dtype=bool)
    seen: set[tuple[int, str]] = set()
    for i in np.flatnonzero(png.is_valid().to_numpy(zero_copy_only=False)).tolist():
        if (int(index[i]), model[i]) not in seen:
            seen.add((int(index[i]), model[i]))
            keep[i] = True
    kept = pc.if_else(pa.array(keep), png, pa.nulls(len(table), png.type))
    return table.set_column(table.schema.get_field_index("input_png"), "input_png", kept)


def stored_map(row: dict[str, Any]) -> bytes | None:
    """A stage row's map as stored with ``save_maps``: float16 bytes (for galleries; every
    metric was computed from the full-precision map before this point), or None."""
    if not row["map"]:
        return None
    dtype = np.dtype(row.get("map_dtype") or "float16")
    return np.frombuffer(row["map"], dtype).astype(np.float16).tobytes()


def crop_png(crop: bytes, height: int, width: int) -> bytes:
    """The model's input crop (uint8 [height, width, 3] bytes) as a lossless PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.frombuffer(crop, np.uint8).reshape(height, width, 3)).save(buf, "PNG")
    return buf.getvalue()


def shard_paths(run_dir: storage.Location, shard: int) -> tuple[str | Path, str | Path]:
    """(parquet file, completion marker) of shard ``shard``: Paths, or URIs for a URI run."""
    name = f"shard-{shard:05d}"
    return (storage.join(run_dir, "samples", f"{name}.parquet"),
            storage.join(run_dir, "_done", f"{name}.json"))


def write_shard(run_dir: storage.Location, shard: int, table: pa.Table) -> str | Path:
    """Write a shard whole under its final name, then its completion marker."""
    path, marker = shard_paths(run_dir, shard)
    storage.write_parquet(table, path)
    storage.write_text(marker, json.dumps({"shard": shard, "rows": table.num_rows}))
    return path


def _finished(marker: str | Path, run_dir: storage.Location) -> int | None:
    try:
        shard = int(storage.basename(marker).split(".")[0].split("-")[1])
        rows = json.loads(storage.read_text(marker))["rows"]
        with storage.open_input_file(shard_paths(run_dir, shard)[0]) as fh:
            return shard if pq.ParquetFile(fh).metadata.num_rows == rows else None
    except (OSError, ValueError, KeyError, IndexError, pa.ArrowException):
        return None


def finished_shards(run_dir: storage.Location) -> set[int]:
    """Shards whose parquet file and marker both exist and whose row counts agree."""
    try:
        markers = storage.list_files(storage.join(run_dir, "_done"), "shard-*.json")
    except FileNotFoundError:
        return set()
    found = storage.map_threads(lambda m: _finished(m, run_dir), markers,
                                storage.is_uri(run_dir))
    return {s for s in found if s is not None}


def _read_shard_table(path: str | Path) -> pa.Table:
    with storage.open_input_file(path) as fh:
        return pq.read_table(fh)


def read_samples(run_dir: storage.Location) -> pd.DataFrame:
    """All finished shards of a run as one DataFrame, sorted by (index, model, method)."""
    files = [shard_paths(run_dir, s)[0] for s in sorted(finished_shards(run_dir))]
    if not files:
        return pd.DataFrame(columns=[name for name, _ in BASE_FIELDS])
    parts = storage.map_threads(_read_shard_table, files, storage.is_uri(run_dir))
    frame = pd.concat([t.to_pandas() for t in parts], ignore_index=True)
    return frame.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)


def write_table(frame: pd.DataFrame, path: storage.Location) -> None:
    """Write a DataFrame as one whole Parquet file or object (see :mod:`salbench.storage`)."""
    storage.write_parquet(pa.Table.from_pandas(frame, preserve_index=False), path)
