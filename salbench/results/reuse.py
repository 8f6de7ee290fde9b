"""Incremental reruns: copy the cells an earlier run already computed (``--reuse RUN_DIR``).

The earlier run's finished shards are indexed by their ``cell_key`` column (see
``salbench.keys``): only the key columns are read up front, so the index of a
full-ImageNet run (millions of rows) stays small. The AttributeActor skips every cell whose
key is in the index and emits it with status "reused"; when the driver writes a shard it
replaces those rows by the earlier run's rows, read from its Parquet files on demand.
Only rows with status "ok" are reused; errors are always recomputed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from salbench import storage
from salbench.datasets.base import KEY_CHARS
from salbench.errors import ConfigError
from salbench.results import tables

log = logging.getLogger("salbench")

#: Columns taken from the earlier run's row; position and identity come from the new row.
COPIED_FROM_NEW = ("shard", "index", "sample_id", "sample_key", "cell_key", "model", "method",
                   "label")


class PreviousRun:
    """The reusable (status "ok") rows of an earlier run, by cell key."""

    def __init__(self, run_dir: storage.Location) -> None:
        self.run_dir = storage.normalize(run_dir)
        if not storage.is_file(storage.join(self.run_dir, "manifest.json")):
            raise ConfigError(f"--reuse {run_dir}: not a salbench run directory "
                              "(no manifest.json)")
        keys, files, positions = [], [], []  # numpy arrays, one per shard file
        self.files: list[Path | str] = []
        for shard in sorted(tables.finished_shards(self.run_dir)):
            path = tables.shard_paths(self.run_dir, shard)[0]
            with storage.open_input_file(path) as fh:
                pf = pq.ParquetFile(fh)
                if "cell_key" not in pf.schema_arrow.names:
                    raise ConfigError(f"--reuse {run_dir}: its tables have no cell keys "
                                      "(written by a salbench without incremental reruns); "
                                      "run it afresh")
                cols = pf.read(columns=["cell_key", "status"])
            ok = np.flatnonzero(pc.equal(cols.column("status"), "ok").to_numpy(
                zero_copy_only=False))
            keys.append(np.asarray(cols.column("cell_key").take(pa.array(ok)).to_numpy(
                zero_copy_only=False), dtype=f"S{KEY_CHARS}"))
            files.append(np.full(len(ok), len(self.files), dtype=np.int32))
            positions.append(ok.astype(np.int32))
            self.files.append(path)
        all_keys = np.concatenate(keys) if keys else np.empty(0, f"S{KEY_CHARS}")
        order = np.argsort(all_keys, kind="stable")
        # 24 bytes per reusable row: the sorted keys and where each row is
        self.keys = all_keys[order]
        self.file_of = (np.concatenate(files) if files else np.empty(0, np.int32))[order]
        self.row_of = (np.concatenate(positions) if positions else np.empty(0, np.int32))[order]
        self._cache: tuple[int, list[dict[str, Any]]] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def cell_keys(self) -> np.ndarray:
        """Every reusable cell key: a sorted bytes array (dtype ``S16``, 16 bytes a key, so a
        million cells take 16 MB in Ray's object store), for :func:`keys.contains`."""
        return self.keys

    def _file_rows(self, file: int) -> list[dict[str, Any]]:
        if self._cache is None or self._cache[0] != file:
            with storage.open_input_file(self.files[file]) as fh:
                self._cache = (file, pq.read_table(fh).to_pylist())
        return self._cache[1]

    def lookup(self, key: str) -> dict[str, Any]:
        """The earlier run's row (a dict of its table's columns) with cell key ``key``."""
        k = key.encode()
        i = int(np.searchsorted(self.keys, k))
        if i >= len(self.keys) or self.keys[i] != k:
            raise KeyError(f"cell {key} is not in {self.run_dir}")
        return self._file_rows(int(self.file_of[i]))[int(self.row_of[i])]

    def fill(self, row: dict[str, Any], value_columns: dict[str, str]) -> dict[str, Any]:
        """The output row for a "reused" stage row: the earlier results in the stage-row
        format (``values`` as JSON, ``map`` bytes) that ``tables.rows_to_table`` takes."""
        prev = self.lookup(row["cell_key"])
        out = dict(row)
        out.update({k: v for k, v in prev.items() if k not in COPIED_FROM_NEW
                    and k not in value_columns})
        out["values"] = json.dumps({c: prev[c] for c in value_columns
                                    if prev.get(c) is not None})
        out["height"], out["width"] = prev.get("map_height") or 0, prev.get("map_width") or 0
        out["map"] = prev.get("map") or b""
        out["status"], out["error"] = "ok", ""
        return out
