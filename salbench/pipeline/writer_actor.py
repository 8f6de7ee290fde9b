"""The Ray graph's :class:`~salbench.pipeline.writer.ShardWriter`, in an actor of its own on
the driver's node.

The driver only moves references: it takes each output block's ``ObjectRef`` from Ray Data
(``iter_internal_ref_bundles``, which fetches nothing) and hands it to the writer actor,
which reads the block, writes the shards it completes and returns their numbers; a driver
thread announces each as soon as its call returns, on the driver's clock. So
the driver neither maps the blocks' object-store pages nor allocates and frees rows: what
the driver still grows by over a run is Ray Data's own per-block cost (BENCHMARKS.md,
"Driver memory at scale"), and its CPU stays free for scheduling. At most
``MAX_IN_FLIGHT`` blocks wait for the writer; the driver then waits (back-pressure).

The actor writes where the driver would have: the run directory (local on the driver's
node, which the actor is pinned to, or a URI) and its parts on local disk. Object-store
credentials must be in the cluster's environment, as for reading a dataset from a store.
It gets the table's format as plain data (:class:`~salbench.pipeline.writer.ShardFormat`),
not the config, so that its process imports no registry and no torch (tested).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from salbench.memory import use_system_allocator
from salbench.pipeline.progress import ShardProgress
from salbench.pipeline.writer import ShardFormat, ShardWriter
from salbench.results.reuse import PreviousRun

#: Blocks handed to the writer actor and not yet written before the driver waits.
MAX_IN_FLIGHT = 4


@ray.remote(num_cpus=0)
class WriterActor:
    """A ShardWriter that takes blocks by reference and returns the shards it wrote."""

    def __init__(self, fmt: ShardFormat, run_dir: Path | str, run_id: str,
                 pending: list[dict[str, int]], previous: PreviousRun | None) -> None:
        use_system_allocator()
        self.written: list[int] = []
        self.writer = ShardWriter(fmt, run_dir, run_id, pending, previous,
                                  announce=self.written.append)

    def add_blocks(self, *blocks: Any) -> list[int]:
        """Write the rows of ``blocks`` (Ray resolves the references); the shards this
        completed."""
        for block in blocks:
            self.writer.add_block(block)
        done = list(self.written)
        self.written.clear()
        return done

    def finish(self) -> tuple[dict[str, Any], int]:
        """:meth:`ShardWriter.finish`'s timings, and the cells reused."""
        return self.writer.finish(), self.writer.reused

    def close(self) -> None:
        """Remove the parts of incomplete shards (a failed run: :meth:`finish` never ran, and
        a killed actor would leave them in its temporary folder)."""
        self.writer.parts.close()


def start_writer(fmt: ShardFormat, run_dir: Path | str, run_id: str,
                 pending: list[dict[str, int]], previous: PreviousRun | None) -> Any:
    """A WriterActor of the run ``run_id`` in ``run_dir``, on this (the driver's) node."""
    node = ray.get_runtime_context().get_node_id()
    return WriterActor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
    ).remote(fmt, run_dir, run_id, pending, previous)


def stop_writer(actor: Any) -> None:
    """Close ``actor``'s parts (if it still answers within 30 s) and end it."""
    with contextlib.suppress(ray.exceptions.RayError):
        ray.get(actor.close.remote(), timeout=30)
    ray.kill(actor)


def remote_call(ref: Any) -> Any:
    """``ray.get(ref)``, where a failure inside the writer (a full disk, a denied write) is
    raised as its own exception, not wrapped in Ray's (the run's manifest records it)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from exc
        raise


class _Settler:
    """A driver thread that waits for the writer actor's calls in order and announces each
    shard on ``progress`` as soon as it is written (:meth:`ShardProgress.shard_written`:
    the run's log, the live display), while the main thread waits for Ray Data's next
    block."""

    def __init__(self, progress: ShardProgress) -> None:
        self.progress = progress
        self.in_flight: deque[Any] = deque()
        self.cond = threading.Condition()
        self.failure: BaseException | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="salbench-settle", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.in_flight and not self.closed:
                    self.cond.wait()
                if not self.in_flight:
                    return
                ref = self.in_flight[0]
            try:
                shards = remote_call(ref)
            except BaseException as exc:  # the main thread raises it
                with self.cond:
                    self.failure = exc
                    self.in_flight.clear()
                    self.cond.notify_all()
                return
            with self.cond:
                self.in_flight.popleft()
                self.cond.notify_all()
            for shard in shards:
                self.progress.shard_written(shard)

    def add(self, ref: Any) -> None:
        """Queue a writer call; wait while more than MAX_IN_FLIGHT are queued."""
        with self.cond:
            self._raise()
            self.in_flight.append(ref)
            self.cond.notify_all()
            while len(self.in_flight) > MAX_IN_FLIGHT and self.failure is None:
                self.cond.wait()
            self._raise()

    def _raise(self) -> None:
        if self.failure is not None:
            raise self.failure

    def close(self, wait: bool) -> None:
        """No more calls; with ``wait``, wait until every queued one is announced."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if wait:
            self.thread.join()
            self._raise()


def write_dataset(ds: Any, actor: Any, progress: ShardProgress) -> None:
    """Stream ``ds``'s output blocks through ``actor`` by reference; each shard it writes is
    announced on ``progress`` as it lands (a thread of :class:`_Settler`)."""
    settler = _Settler(progress)
    finished = False
    try:
        for bundle in ds.iter_internal_ref_bundles():
            settler.add(actor.add_blocks.remote(*bundle.block_refs))
            del bundle
        finished = True
    finally:
        settler.close(wait=finished)
