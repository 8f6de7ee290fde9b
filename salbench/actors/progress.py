"""Live progress of a run: the model actors count the (sample x method) cells they finish.

A shard is one block from reading on, so Ray Data's own progress (blocks done) moves once per
shard; a run with two shards would show nothing for most of its time. Instead the
AttributeActor reports after each method's batch, per shard, to one small counter actor per
run (``ProgressCounter``), fire-and-forget (``add.remote`` is not waited on, so a model
actor never blocks on it); the driver polls ``snapshot`` (see
:mod:`salbench.pipeline.progress`). The in-process executor uses :class:`LocalCounter`, the
same interface without Ray.

A retried batch (a restarted actor) counts its cells again; the driver caps each shard's
count at the shard's size, and a written shard counts as complete.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import ray


class LocalCounter:
    """Cells finished per shard, in this process: ``add`` / ``snapshot``."""

    def __init__(self) -> None:
        self.cells: dict[int, int] = {}

    def add(self, counts: dict[int, int]) -> None:
        """Add ``counts`` (shard -> cells finished now)."""
        for shard, n in counts.items():
            self.cells[shard] = self.cells.get(shard, 0) + int(n)

    def snapshot(self) -> dict[int, int]:
        """shard -> cells finished so far (a copy)."""
        return dict(self.cells)


ProgressCounter = ray.remote(num_cpus=0, max_restarts=-1)(LocalCounter)


def start_counter(run_id: str) -> Any:
    """The run's ProgressCounter actor (created, or the existing one after a driver
    restart)."""
    return ProgressCounter.options(name=f"salbench-progress-{run_id}",
                                   get_if_exists=True).remote()


def report_cells(counter: Any, rows: list[dict[str, Any]]) -> None:
    """Count ``rows`` (one per sample, each with its ``shard``) as finished for one method.

    counter: a ProgressCounter actor handle, a :class:`LocalCounter`, or None (no progress).
    Never raises: progress is a display, never a reason to fail a batch.
    """
    if counter is None or not rows:
        return
    counts = dict(Counter(int(r["shard"]) for r in rows))
    try:
        if isinstance(counter, LocalCounter):
            counter.add(counts)
        else:
            counter.add.remote(counts)
    except Exception:  # a dead counter actor: the run goes on without live progress
        return
