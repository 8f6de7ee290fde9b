"""Bounded retries for samples that kill their worker process.

Ray restarts a dead actor and retries its task without limit (Ray Data's defaults), which is
right for a lost node but loops forever on a sample that crashes the process every time (a
segfault in native code, the OS's out-of-memory killer). The journal, one small named actor
per run, counts the attempts that began and never ended: a model actor asks it before a
batch; if that batch's work died before, the actor processes the batch one sample at a time,
and a sample whose attempts died ``max_sample_crashes`` times becomes an error row.
"""

from __future__ import annotations

from typing import Any

import ray


@ray.remote(num_cpus=0, max_restarts=-1)
class CrashJournal:
    """key -> number of attempts begun and not ended (so, died)."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}

    def begin(self, key: str) -> int:
        """Record an attempt at ``key``; return how many earlier attempts died."""
        died = self.open.get(key, 0)
        self.open[key] = died + 1
        return died

    def end(self, key: str) -> None:
        """The attempt at ``key`` finished: forget it."""
        self.open.pop(key, None)


class Journal:
    """The model actor's view of the run's CrashJournal (a no-op without one)."""

    def __init__(self, handle: Any = None) -> None:
        self.handle = handle

    def begin(self, key: str) -> int:
        """How many earlier attempts at ``key`` died (0 without a journal)."""
        return int(ray.get(self.handle.begin.remote(key))) if self.handle is not None else 0

    def end(self, key: str) -> None:
        """Mark the attempt at ``key`` finished (waits, so a later crash cannot undo it)."""
        if self.handle is not None:
            ray.get(self.handle.end.remote(key))


def start_journal(run_id: str) -> Any:
    """The run's CrashJournal actor (created, or the existing one after a driver restart)."""
    return CrashJournal.options(name=f"salbench-crash-journal-{run_id}",
                                get_if_exists=True).remote()
