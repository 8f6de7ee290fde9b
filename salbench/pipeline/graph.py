"""The Ray Data graph (SPEC 6). Per model: shards -> read -> decode/crop -> AttributeActor
(model: methods, model-stage metrics) -> BokehActor (CPU: model-free metrics, PIC bokeh images
and information levels) -> ScoreActor (model: predictions on the bokeh images); then the
models' branches are united -> FinalizeActor (CPU: PIC curves and AUCs) -> the writer actor
(:mod:`salbench.pipeline.writer_actor`), which writes finished shards. The Score and
Finalize stages exist only when a split metric (PIC) is configured.

Data between stages: images travel as the model's uint8 crop, maps as float16; the bokeh
images go from the BokehActor to the ScoreActor as lossless WebP (2 + T per PIC protocol and
(sample, method), metrics with the same protocol share them: ``sic`` and ``aic`` score one
set; an image two protocols send is encoded once) and are dropped once scored, so only the
scores reach the FinalizeActor. Rebuilding them on the model side instead would put the
griddata work (~1 s per bokeh set) on the GPU actor.

Each block holds whole shards from reading on (one, or several small ones:
``resources.block_images``, :func:`salbench.pipeline.plan.block_shards`), the model stages
take whole blocks (``batch_size=None``; on GPU stages, where Ray Data requires a batch size,
the block's images), and the AttributeActor batches each shard's images on their own, so
results do not depend on how Ray schedules or bundles work.

Each stage's actor pool (actors, GPUs and CPUs per actor) comes from the placement plan
(:mod:`salbench.pipeline.plan`), made and checked against the cluster before any work starts.
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any

import ray
import ray.data

from salbench.actors.attribute import AttributeActor
from salbench.actors.cpu import BokehActor, FinalizeActor
from salbench.actors.score import ScoreActor
from salbench.config import RunConfig
from salbench.datasets.shards import block_items, decode_batch, read_block
from salbench.memory import worker_env
from salbench.pipeline.plan import (
    DECODE_NUM_CPUS,
    READ_NUM_CPUS,
    Pool,
    actor_config,
    block_shards,
    make_plan,
)

log = logging.getLogger("salbench")


def model_compute(pool: Pool) -> tuple[ray.data.ActorPoolStrategy, bool]:
    """The actor pool of a model stage, and whether its batches run on the actor's main thread.

    By default Ray Data runs an actor's batches in a worker thread of its own; with
    ``enable_true_multi_threading`` and one call at a time they run on the actor's main
    thread, whose malloc arena the actor's constructor tunes (``salbench.memory``):
    no per-block page faults and no arena shared between torch's threads (the demo's graph
    ran faster so: docs/PIPELINE.md). Ray versions without the option get the environment
    instead (second value False).
    """
    params = inspect.signature(ray.data.ActorPoolStrategy).parameters
    if "enable_true_multi_threading" in params:
        return ray.data.ActorPoolStrategy(**pool.strategy_args(),
                                          enable_true_multi_threading=True), True
    return ray.data.ActorPoolStrategy(**pool.strategy_args()), False


def pool_args(pool: Pool) -> dict[str, Any]:
    """``map_batches`` resource arguments of a pool's actors."""
    args: dict[str, Any] = {"num_cpus": pool.num_cpus}
    if pool.num_gpus:
        args["num_gpus"] = pool.num_gpus
    return args


def largest_node_cpus() -> float:
    """The most CPUs one alive node of the connected Ray cluster has (0 when none)."""
    return max((float(n["Resources"].get("CPU", 0.0)) for n in ray.nodes() if n["Alive"]),
               default=0.0)


def build_graph(
    config: RunConfig,
    shard_items: list[dict[str, int]],
    geometries: list[tuple[tuple[int, int], float]],
    reuse: Any = None,
    journal: Any = None,
    progress: Any = None,
) -> ray.data.Dataset:
    """The lazy Ray Dataset of output rows for ``shard_items`` ({shard, start, stop}).

    geometries: per model, (input_size, crop_fraction) for decoding.
    reuse: ObjectRef of the sorted cell keys an earlier run has (``--reuse``), or None.
    journal: the run's CrashJournal (bounded retries of samples that kill a model actor).
    progress: the run's ProgressCounter (live progress), or None.
    """
    res = config.resources
    # ConfigError at once if it cannot fit
    plan = make_plan(config, ray.cluster_resources(), largest_node_cpus())
    log.info("placement plan:\n%s", plan.describe())
    if plan.cpu_scale < 1:
        log.warning("actor CPU requests scaled by %.3f to fit the cluster's CPUs", plan.cpu_scale)
    use_gpu, split = plan.use_gpu, plan.split
    cfg = actor_config(config, plan)

    def cpu_args(pool: Pool) -> dict[str, Any]:
        return {"batch_format": "pandas", "batch_size": None,
                "fn_constructor_kwargs": {"config": cfg},
                "compute": ray.data.ActorPoolStrategy(**pool.strategy_args()),
                **pool_args(pool)}

    per_block = block_shards(config, len(shard_items))
    if per_block > 1:
        log.info("%d shards per Ray Data block (resources.block_images)", per_block)
    # Ray Data needs a batch size for GPU stages; a block's rows are at most per_block x
    # shard_size, and the AttributeActor batches each shard on its own, so results do not
    # depend on bundling.
    model_batch = res.shard_size * per_block if use_gpu else None
    env = worker_env()
    blocks = block_items(shard_items, per_block)
    items = ray.data.from_items(blocks, override_num_blocks=len(blocks))
    rows = items.flat_map(
        read_block, fn_kwargs={"dataset_json": json.dumps(config.dataset, sort_keys=True)},
        num_cpus=READ_NUM_CPUS,
    )
    branches = []
    for i, comp in enumerate(config.models):
        size, crop_fraction = geometries[i]
        decoded = rows.map_batches(
            decode_batch, batch_format="pandas", batch_size=None, num_cpus=DECODE_NUM_CPUS,
            fn_kwargs={"input_size": tuple(size), "crop_fraction": crop_fraction},
        )
        attribute_pool = plan.pool("attribute", comp.label)
        gpu_args = pool_args(attribute_pool)
        compute, main_thread = model_compute(attribute_pool)
        if env and not main_thread:  # the allocator settings for the batches' worker thread
            gpu_args["runtime_env"] = {"env_vars": env}
        attributed = decoded.map_batches(
            AttributeActor, batch_format="pandas", batch_size=model_batch,
            fn_constructor_kwargs={"config": cfg, "model_index": i, "reuse": reuse,
                                   "journal": journal, "progress": progress},
            compute=compute, **gpu_args,
        )
        branch = attributed.map_batches(BokehActor, **cpu_args(plan.pool("bokeh", comp.label)))
        if split:
            score_pool = plan.pool("score", comp.label)
            branch = branch.map_batches(
                ScoreActor, batch_format="pandas", batch_size=model_batch,
                fn_constructor_kwargs={"config": cfg, "model_index": i},
                compute=model_compute(score_pool)[0],
                **{**gpu_args, **pool_args(score_pool)},
            )
        branches.append(branch)
    merged = branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0]
    return merged.map_batches(FinalizeActor, **cpu_args(plan.pool("finalize"))) if split \
        else merged
