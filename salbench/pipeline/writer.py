"""The ShardWriter: output rows in, each shard's Parquet file out as soon as it is complete
(SPEC 6). Both executors feed one; in the Ray graph it runs in a writer actor on the
driver's node (:mod:`salbench.pipeline.writer_actor`), so that the driver itself never
handles rows: it counts and announces the shards
(:class:`~salbench.pipeline.progress.ShardProgress`). The shards' schema and commit are
:mod:`salbench.results.tables`'; this module imports no registry and no torch.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from salbench.memory import release_freed_memory
from salbench.pipeline.parts import ShardParts
from salbench.pipeline.progress import shard_cells
from salbench.results import tables

if TYPE_CHECKING:
    from salbench.config import RunConfig
    from salbench.results.reuse import PreviousRun


#: Seconds between two returns of the writer's freed memory to the system while shards are
#: written (:func:`~salbench.memory.release_freed_memory`: a few ms each).
TRIM_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ShardFormat:
    """What the writer needs of a run's config, as plain data: the per-sample table's layout
    (a :class:`~salbench.results.tables.TableLayout`) and the cells per image. The writer
    actor gets this, not the config, so that it imports no registry and no torch."""

    columns: dict[str, str]  # column -> "float" | "curve" (RunConfig.value_columns)
    save_maps: bool
    cells_per_image: int  # models x methods

    @classmethod
    def of(cls, config: RunConfig) -> ShardFormat:
        """``config``'s format."""
        return cls(config.value_columns(), config.save_maps,
                   len(config.models) * len(config.methods))

    def value_columns(self) -> dict[str, str]:
        """Column -> "float" | "curve" (the TableLayout protocol)."""
        return dict(self.columns)


class ShardWriter:
    """Collects output rows (any order, any batching) and writes each shard once complete.

    Both executors feed one (the Ray graph's in a writer actor); it keeps the per-method
    timing statistics. Rows of shards not complete yet wait as Arrow parts on local disk
    (:class:`~salbench.pipeline.parts.ShardParts`), so its memory does not grow with how far
    one model's rows run ahead of another's.

    announce: called with each shard written (the in-process executor's
    :meth:`ShardProgress.shard_written <salbench.pipeline.progress.ShardProgress.shard_written>`;
    the writer actor collects them for the driver's). None: nobody is told.
    """

    def __init__(self, fmt: ShardFormat, run_dir: Path | str, run_id: str,
                 pending: list[dict[str, int]], previous: PreviousRun | None = None,
                 announce: Callable[[int], None] | None = None) -> None:
        self.format, self.run_dir, self.run_id = fmt, run_dir, run_id
        self.announce = announce
        self.previous, self.reused = previous, 0
        self.expected = shard_cells(pending, fmt.cells_per_image)
        self.received: dict[int, int] = defaultdict(int)  # rows in, per incomplete shard
        self.parts = ShardParts(run_id)
        #: per (model, method): [seconds summed, ok rows] (a running sum, not a row list)
        self.seconds: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        self.t0 = time.time()
        self.trimmed_at = self.t0

    def add_block(self, block: pa.Table | pd.DataFrame) -> None:
        """Take a Ray Data block of output rows (an Arrow table or a pandas frame)."""
        frame = block.to_pandas() if isinstance(block, pa.Table) else block
        self.add(frame.to_dict("records"))

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Take output rows; write every shard whose rows are now all in."""
        by_shard: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_shard[int(row["shard"])].append(self._filled(row))
            if row["status"] == "ok":
                acc = self.seconds[(row["model"], row["method"])]
                acc[0] += float(row["seconds"])
                acc[1] += 1
        for shard, part in by_shard.items():
            self.received[shard] += len(part)
            table = tables.rows_to_table(part, self.format, self.run_id)
            if self.received[shard] == self.expected[shard]:
                self._write(shard, [*self.parts.pop(shard), table])
            else:
                self.parts.add(shard, table)

    def _filled(self, row: dict[str, Any]) -> dict[str, Any]:
        """A "reused" row with the earlier run's results; other rows as they are."""
        if row["status"] != "reused":
            return row
        if self.previous is None:
            raise RuntimeError("a stage reused a cell but this run reuses no earlier run")
        self.reused += 1
        return self.previous.fill(row, self.format.columns)

    def _write(self, shard: int, parts: list[pa.Table]) -> None:
        del self.received[shard]
        table = tables.join_parts(parts, self.format)
        tables.write_shard(self.run_dir, shard, table)
        if self.announce is not None:
            self.announce(shard)
        if time.time() - self.trimmed_at >= TRIM_INTERVAL_S:
            release_freed_memory()
            self.trimmed_at = time.time()

    def finish(self) -> dict[str, Any]:
        """Check that every shard was written; the timings for the manifest."""
        self.parts.close()
        if self.received:
            missing = {s: f"{n}/{self.expected[s]}" for s, n in self.received.items()}
            raise RuntimeError(f"pipeline ended with incomplete shards (rows seen): {missing}")
        return {
            "execute_seconds": round(time.time() - self.t0, 3),
            "method_seconds_per_image": {
                f"{m}/{k}": round(total / n, 4) for (m, k), (total, n) in sorted(
                    self.seconds.items())
            },
            "method_images": {f"{m}/{k}": int(n) for (m, k), (_, n) in sorted(
                self.seconds.items())},
        }

