"""AttributeActor: the Ray actor of a model stage, a thin shell around
:class:`salbench.runner.ModelRunner`.

Ray Data calls it with a pandas batch of decoded rows (see ``salbench.datasets.shards``) and
gets one output row per (sample, method), with ``status`` "ok" or an error code. The runner
does the work; the actor adds the device, torch's threads, its placement and the crash
journal (bounded retries of a batch or sample that kills the process). An error that leaves
the accelerator unusable (a CUDA error, a device-side assert) ends the process, so that Ray
restarts the actor and the journal retries the batch, instead of failing every later batch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any

import pandas as pd
import torch

from salbench.actors.journal import Journal
from salbench.actors.progress import report_cells
from salbench.config import RunConfig, parse_config
from salbench.memory import keep_freed_memory
from salbench.runner import OUTPUT_COLUMNS, DeviceLost, ModelRunner

log = logging.getLogger(__name__)

__all__ = ["OUTPUT_COLUMNS", "AttributeActor", "pick_device", "placement", "set_threads"]


def pick_device(requested: str) -> torch.device:
    """"auto" -> CUDA when this process sees a GPU, else CPU; "cpu"/"cuda" as asked."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("resources.device is 'cuda' but this worker sees no CUDA device")
    return torch.device(requested)


def placement(model: str, device: torch.device) -> str:
    """Where this actor runs (JSON: model, pid, Ray's GPU ids, device), carried by its rows
    through the stages (not written to the tables, whose rows must not depend on it)."""
    import ray

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []  # never start Ray for this
    return json.dumps({"model": model, "pid": os.getpid(), "gpu_ids": gpu_ids,
                       "device": str(device)})


def set_threads(config: RunConfig, device: torch.device) -> None:
    """torch threads of a model actor: ``resources.torch_threads``, which both executors
    set to the same number for their actors (``salbench.pipeline.plan.model_threads``:
    equal threads, equal maps); else (an actor built by hand) on CPU, in a Ray actor, the
    CPUs Ray assigned to it (its pool's ``num_cpus``, at least 1), and outside one the
    node's cores divided among the models.

    A Ray actor with more threads than its CPUs oversubscribes the cores that the other
    stages' actors and read tasks run on, and torch's threads then wait for each other:
    tiny_cnn on 2 cores took 2-5 ms per image with 2 threads against 0.5 ms with 1
    (BENCHMARKS.md, case 6). Also keeps freed memory in the process
    (``salbench.memory``)."""
    keep_freed_memory()
    res = config.resources
    if res.torch_threads:
        torch.set_num_threads(res.torch_threads)
    elif device.type == "cpu":
        torch.set_num_threads(_actor_cpus() or max(1, (os.cpu_count() or 1)
                                                   // len(config.models)))


def _actor_cpus() -> int | None:
    """The whole CPUs Ray assigned to this actor (at least 1); None outside a Ray actor."""
    import ray

    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _resolve(reuse: Any) -> Any:
    """The reusable cell keys themselves, fetching them from Ray's object store if needed."""
    import ray

    return ray.get(reuse) if isinstance(reuse, ray.ObjectRef) else reuse


class AttributeActor:
    """Model stage of the pipeline for one model (GPU when available, else CPU).

    Args:
        config: the run config as a dict (``RunConfig.to_dict()``).
        model_index: which entry of ``config.models`` this actor serves.
        reuse: the cell keys (see ``salbench.keys``) whose results an earlier run
            already has, a sorted ``S16`` array or a Ray ObjectRef to one; those cells are
            not computed but emitted with status "reused", for the driver to copy.
        journal: the run's CrashJournal actor handle (see ``salbench.actors.journal``), which
            bounds the retries of a sample that kills this actor's process; None: no bound.
        exit_on_device_loss: end the process on a lost device (Ray restarts the actor); the
            in-process executor passes False and gets the error raised instead.
        progress: the run's cell counter (``salbench.actors.progress``), told after each
            method's batch; None: no live progress.
    """

    def __init__(self, config: dict[str, Any], model_index: int, reuse: Any = None,
                 journal: Any = None, exit_on_device_loss: bool = True,
                 progress: Any = None) -> None:
        self.config: RunConfig = parse_config(config)
        self.device = pick_device(self.config.resources.device)
        set_threads(self.config, self.device)
        label = self.config.models[model_index].label
        self.runner = ModelRunner(self.config, model_index, self.device,
                                  reuse=_resolve(reuse) if reuse is not None else None,
                                  placement=placement(label, self.device))
        self.model_label = label
        if progress is not None:
            self.runner.on_cells = functools.partial(report_cells, progress)
        self.journal = Journal(journal)
        self.exit_on_device_loss = exit_on_device_loss

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        todo, out = self.runner.plan(batch)
        # batch and sample keys live in separate namespaces: a one-sample batch must not
        # share its count with the sample's own attempts
        batch_key = f"{self.model_label}/batch/" + ",".join(str(r["index"]) for r in todo)
        try:
            if todo and self.journal.begin(batch_key):  # this batch's work killed the process
                out += self._one_at_a_time(todo)
            else:
                out += self.runner.run(todo)
        except DeviceLost as exc:
            if not self.exit_on_device_loss:
                raise
            # the batch stays open in the journal: the restarted actor redoes it, and a
            # batch that keeps killing the device ends as worker_crash rows
            log.error("model %s: the device is unusable (%s); ending this actor's process "
                      "so that Ray restarts it", self.model_label, exc)
            os._exit(1)
        if todo:
            self.journal.end(batch_key)
        return self.runner.frame(out)

    def _one_at_a_time(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of a batch whose work died before, one sample at a time; a sample that died
        ``max_sample_crashes`` times alone becomes ``worker_crash`` rows."""
        limit = self.config.resources.max_sample_crashes
        out: list[dict[str, Any]] = []
        for r in rows:
            key = f"{self.model_label}/sample/{r['index']}"
            died = self.journal.begin(key)
            if died >= limit:
                log.warning("sample %s killed its worker %d times; error row", r["sample_id"],
                            died)
                msg = (f"the worker process died {died} times on this sample alone (a crash "
                       "in native code, the OS's out-of-memory killer or a lost device); not "
                       "retried further")
                out += [self.runner.row(r, m.label, "worker_crash", msg) for m, _ in r["todo"]]
            else:
                out += self.runner.attribute([r])
            self.journal.end(key)
        return out
