"""The ShardWriter: output rows in, each shard's Parquet file out as soon as it is complete
(SPEC 6). Both executors feed one; in the Ray graph it runs in a writer actor on the
driver's node (:mod:`salbench.pipeline.writer_actor`), so that the driver itself never
handles rows.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa

from salbench.config import RunConfig
from salbench.pipeline import interrupt, tables
from salbench.pipeline.memory import release_freed_memory
from salbench.pipeline.parts import ShardParts
from salbench.pipeline.progress import ProgressMonitor, format_seconds
from salbench.pipeline.reuse import PreviousRun

log = logging.getLogger("salbench")


#: Seconds between two returns of the writer's freed memory to the system while shards are
#: written (:func:`~salbench.pipeline.memory.release_freed_memory`: a few ms each).
TRIM_INTERVAL_S = 1.0


class ShardWriter:
    """Collects output rows (any order, any batching) and writes each shard once complete.

    Both executors (the Ray graph and the in-process one) feed it; it owns the progress lines
    and the per-method timing statistics. Rows of shards not complete yet wait as Arrow
    parts on local disk (:class:`~salbench.pipeline.parts.ShardParts`), so its memory does
    not grow with how far one model's rows run ahead of another's.

    announce: called with each shard written instead of :meth:`shard_written` (the writer
    actor collects them for the driver, whose own ShardWriter then counts and announces them
    on one clock: the driver's).
    """

    def __init__(self, config: RunConfig, run_dir: Path | str, run_id: str,
                 pending: list[dict[str, int]], progress: TextIO | None,
                 previous: PreviousRun | None = None,
                 announce: Callable[[int], None] | None = None) -> None:
        self.config, self.run_dir, self.run_id, self.progress = config, run_dir, run_id, progress
        self.announce = announce
        self.previous, self.reused = previous, 0
        self.value_columns = tables.value_columns(config)
        per_row = len(config.models) * len(config.methods)
        self.expected = {s["shard"]: (s["stop"] - s["start"]) * per_row for s in pending}
        self.total_rows = sum(self.expected.values())
        self.received: dict[int, int] = defaultdict(int)  # rows in, per incomplete shard
        self.parts = ShardParts()
        #: per (model, method): [seconds summed, ok rows] (a running sum, not a row list)
        self.seconds: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
        self.t0, self.written, self.rows_done = time.time(), 0, 0
        #: the live display; set by the executor while it runs (None: print shard lines)
        self.monitor: ProgressMonitor | None = None
        self.trimmed_at = self.t0

    def start_progress(self, poll: Callable[[], dict[int, int]]) -> ProgressMonitor | None:
        """Start the live progress display polling ``poll`` (shard -> cells reported), or
        None when this run shows no progress. The executor stops it when done."""
        if self.progress is None:
            return None
        interactive = bool(getattr(self.progress, "isatty", lambda: False)())
        self.monitor = ProgressMonitor(self.progress, self.expected, poll, interactive)
        self.monitor.start()
        return self.monitor

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
            table = tables.rows_to_table(part, self.config, self.run_id)
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
        return self.previous.fill(row, self.value_columns)

    def _write(self, shard: int, parts: list[pa.Table]) -> None:
        del self.received[shard]
        table = tables.join_parts(parts, self.config)
        tables.write_shard(self.run_dir, shard, table)
        (self.announce or self.shard_written)(shard)
        if time.time() - self.trimmed_at >= TRIM_INTERVAL_S:
            release_freed_memory()
            self.trimmed_at = time.time()

    def shard_written(self, shard: int) -> None:
        """Count ``shard`` as written and say so: in the run's log and on the live display,
        or as a line on ``progress``; its elapsed time on the live display's clock."""
        self.rows_done += self.expected[shard]
        self.written += 1
        t0 = self.monitor.t0 if self.monitor is not None else self.t0
        msg = progress_line(shard, self.written, len(self.expected), self.rows_done,
                            self.total_rows, time.time() - t0)
        log.info(msg)
        if self.monitor is not None:
            self.monitor.shard_written(shard, msg)
        elif self.progress is not None:
            print(msg, file=self.progress, flush=True)
        interrupt.checkpoint("mid_run")

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


def progress_line(shard: int, written: int, shards: int, cells: int, total_cells: int,
                  elapsed: float) -> str:
    """The line of a written shard: shards and cells (sample x model x method) done, and the
    elapsed time in the live progress lines' format (their ETA is the run's one ETA)."""
    return (f"[salbench] shard {shard} written: {written}/{shards} shards, {cells}/"
            f"{total_cells} cells, {format_seconds(elapsed)} elapsed")
