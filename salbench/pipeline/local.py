"""The in-process executor: the Ray graph's stages, called in this process without Ray.

``run(config, in_process=True)`` and ``salbench.evaluate(..., ray=False)`` use it (a notebook
on a laptop, a debugger, a test). It calls the same stage functions and actor classes as
:func:`salbench.pipeline.graph.build_graph`, shard by shard, with each shard as one batch
from reading on, exactly as the graph hands them to the actors: per model, ``read_shard`` ->
``decode_batch`` -> ``AttributeActor`` -> ``BokehActor`` (-> ``ScoreActor`` ->
``FinalizeActor`` when a split metric such as PIC is configured), and feeds the rows to the
run's ShardWriter. The same config and seed give the same tables as the Ray graph (tested).

The actors are built once per run (one AttributeActor, and with split metrics one
ScoreActor, per model), so each model is loaded once for attribution and once for scoring,
as in the graph. The actors' process-wide settings apply to this process: torch's thread
count from ``resources`` (the caller's is restored afterwards) and the allocator tuning of
:mod:`salbench.memory` (kept; ``SALBENCH_MALLOC_TUNING=0`` turns it off).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from salbench import metrics
from salbench.actors.attribute import AttributeActor
from salbench.actors.cpu import BokehActor, FinalizeActor
from salbench.actors.progress import LocalCounter
from salbench.actors.score import ScoreActor
from salbench.config import RunConfig
from salbench.datasets.shards import decode_batch, read_shard
from salbench.pipeline.plan import in_process_config

if TYPE_CHECKING:
    from salbench.pipeline.progress import ShardProgress
    from salbench.pipeline.writer import ShardWriter
    from salbench.results.reuse import PreviousRun


def execute_local(
    config: RunConfig,
    writer: ShardWriter,
    progress: ShardProgress,
    pending: list[dict[str, int]],
    geometries: list[tuple[tuple[int, int], float]],
    previous: PreviousRun | None,
) -> dict[str, Any]:
    """Compute the ``pending`` shards ({shard, start, stop}) in this process into ``writer``
    (which announces each shard it writes on ``progress``; its live display runs meanwhile).

    geometries: per model, (input_size, crop_fraction) for decoding; previous: the earlier
    run whose cells are reused (``--reuse``), or None. Returns the timings for the manifest
    (``writer.finish()`` and ``executor: "in_process"``).
    """
    cfg = in_process_config(config)
    split = any(metrics.get(m.name).prepare is not None for m in config.metrics)
    reuse = previous.cell_keys() if previous is not None else None
    counter = LocalCounter()
    dataset_json = json.dumps(config.dataset, sort_keys=True)
    threads = torch.get_num_threads()
    try:
        attribute = [AttributeActor(cfg, i, reuse=reuse, exit_on_device_loss=False,
                                    progress=counter) for i in range(len(config.models))]
        progress.start(counter.snapshot)
        score = [ScoreActor(cfg, i) for i in range(len(config.models))] if split else []
        bokeh, finalize = BokehActor(cfg), (FinalizeActor(cfg) if split else None)
        for item in pending:
            rows = pd.DataFrame(list(read_shard(item, dataset_json=dataset_json)))
            for i, (size, crop_fraction) in enumerate(geometries):
                decoded = decode_batch(rows, input_size=tuple(size), crop_fraction=crop_fraction)
                out = bokeh(attribute[i](decoded))
                if finalize is not None:
                    out = finalize(score[i](out))
                writer.add(out.to_dict("records"))
    finally:
        progress.stop()
        torch.set_num_threads(threads)
    return {**writer.finish(), "executor": "in_process"}
