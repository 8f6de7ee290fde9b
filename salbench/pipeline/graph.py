"""The Ray Data graph (SPEC 6): shards -> read -> decode/crop -> AttributeActor pool per model
-> union -> BokehActor pool (CPU metrics) -> the driver, which writes finished shards.

Each shard is one block from reading on, and the model stages take whole blocks
(``batch_size=None``), so a shard's images are always batched together: results do not
depend on how Ray schedules work.
"""

from __future__ import annotations

import json
from typing import Any

import ray
import ray.data

from salbench.actors import AttributeActor, BokehActor
from salbench.pipeline.config import RunConfig
from salbench.pipeline.stages import decode_batch, read_shard

READ_NUM_CPUS = 0.25
DECODE_NUM_CPUS = 0.25


def cluster_has_gpus() -> bool:
    """True when the connected Ray cluster has at least one GPU."""
    return ray.cluster_resources().get("GPU", 0) > 0


def build_graph(
    config: RunConfig,
    shard_items: list[dict[str, int]],
    geometries: list[tuple[tuple[int, int], float]],
) -> ray.data.Dataset:
    """The lazy Ray Dataset of output rows for ``shard_items`` ({shard, start, stop}).

    geometries: per model, (input_size, crop_fraction) for decoding.
    """
    res = config.resources
    cfg = config.to_dict()
    use_gpu = res.device == "cuda" or (res.device == "auto" and cluster_has_gpus())
    items = ray.data.from_items(shard_items, override_num_blocks=len(shard_items))
    rows = items.flat_map(
        read_shard, fn_kwargs={"dataset_json": json.dumps(config.dataset, sort_keys=True)},
        num_cpus=READ_NUM_CPUS,
    )
    branches = []
    for i, comp in enumerate(config.models):
        size, crop_fraction = geometries[i]
        decoded = rows.map_batches(
            decode_batch, batch_format="pandas", batch_size=None, num_cpus=DECODE_NUM_CPUS,
            fn_kwargs={"input_size": tuple(size), "crop_fraction": crop_fraction},
        )
        gpu_args: dict[str, Any] = (
            {"num_gpus": float(comp.params.get("num_gpus", res.attribute_num_gpus)),
             "num_cpus": 1}
            if use_gpu else {"num_cpus": res.attribute_num_cpus}
        )
        branches.append(decoded.map_batches(
            AttributeActor, batch_format="pandas", batch_size=None,
            fn_constructor_kwargs={"config": cfg, "model_index": i},
            compute=ray.data.ActorPoolStrategy(size=res.attribute_actors),
            **gpu_args,
        ))
    merged = branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0]
    return merged.map_batches(
        BokehActor, batch_format="pandas", batch_size=None,
        fn_constructor_kwargs={"config": cfg},
        compute=ray.data.ActorPoolStrategy(size=res.cpu_actors), num_cpus=res.cpu_num_cpus,
    )
