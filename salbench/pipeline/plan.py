"""The placement plan: each stage's actor pool (actors, GPUs and CPUs per actor), checked
against the cluster before the run starts (SPEC 6).

Pure functions of the config and the cluster's resources (``ray.cluster_resources()``, a
mapping such as ``{"CPU": 16.0, "GPU": 2.0}``); nothing here calls Ray, so plans for any
cluster can be computed (and tested) anywhere.

Rules:

- Every pool must be able to run at once, at its minimum size: a pool that cannot start
  waits for the pools before it to finish the whole dataset (the stages serialise, and the
  data between them piles up in the object store), or waits forever. So the plan either
  fits every pool's minimum into the cluster or raises a ConfigError with the numbers and
  the fix.
- GPUs: a model *slot* is one AttributeActor and, with split (PIC) metrics, its ScoreActor;
  the two share the slot's GPUs (half each), so one GPU runs both pools of a model. With
  ``attribute_num_gpus: auto`` the cluster's GPUs are divided among the slots: each GPU
  holds ``k`` model actors of ``1/k`` GPU, with ``k`` the fewest that fit every slot at
  the pools' minimum sizes (3 models on 2 GPUs: 2 actors of 0.5 GPU per GPU), at most one
  GPU per slot; with ``attribute_actors: auto`` ``k`` may be larger (up to
  ``MAX_ACTORS_PER_GPU``) when that leaves fewer GPUs idle. Ray keeps a fractional request
  within one GPU, so the check packs the actors' requests into the cluster's GPUs (first
  fit, largest first), not just their sum.
- Pool sizes: a number is a fixed pool; ``(min, max)`` an autoscaling pool (Ray Data's
  ``ActorPoolStrategy(min_size, max_size)``), whose maximum may exceed the cluster of now
  (an autoscaler adds nodes); ``auto`` = ``(1, what the cluster holds now)``: on GPUs the
  slots that fit the GPUs, the model's share of them (2 models on 8 GPUs: 4 each).
- CPUs without GPUs: a model actor asks for ``attribute_num_cpus``; ``auto`` with fixed
  pools: the CPUs the read/decode tasks and one actor of each CPU stage leave, shared
  equally among the model actors, at least 1 and at most one node's CPUs but a CPU-stage
  actor's (a model actor's torch uses the whole CPUs it is given,
  ``salbench.actors.attribute.set_threads``); with autoscaling pools 1 each.
- CPUs: the read and decode tasks keep ``READ_NUM_CPUS + DECODE_NUM_CPUS``; every actor's
  CPU request is scaled by one factor (<= 1) so that all pools at their minimum sizes fit the
  rest (Ray schedules by request; the actors still use the cores they find).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from salbench import metrics
from salbench.config import RunConfig
from salbench.errors import ConfigError

READ_NUM_CPUS = 0.25
DECODE_NUM_CPUS = 0.25
GPU_ACTOR_CPUS = 1.0  # a GPU model actor's CPU request (it feeds its GPU)
QUANTUM = 10_000  # Ray's resource precision: 1e-4
# Auto GPU shares put at most this many model actors on a GPU to use more of the GPUs: each
# holds a model copy and its activations in the GPU's memory, which Ray does not divide.
MAX_ACTORS_PER_GPU = 4


def floor4(x: float) -> float:
    """``x`` rounded down to Ray's resource precision (so that requests never add up to
    more than planned)."""
    return math.floor(x * QUANTUM + 1e-6) / QUANTUM


@dataclass(frozen=True)
class Pool:
    """One stage's actor pool.

    stage: "attribute", "score" (model stages), "bokeh" (CPU, per model) or "finalize" (CPU,
    all models); model: the model's label ("" for finalize); min_size <= max_size actors
    (equal: a fixed pool); num_cpus / num_gpus: Ray's request per actor.
    """

    stage: str
    model: str
    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float = 0.0

    def strategy_args(self) -> dict[str, int]:
        """Keyword arguments of ``ray.data.ActorPoolStrategy`` for this pool."""
        if self.min_size == self.max_size:
            return {"size": self.min_size}
        return {"min_size": self.min_size, "max_size": self.max_size}

    @property
    def size_text(self) -> str:
        return str(self.min_size) if self.min_size == self.max_size else \
            f"{self.min_size}..{self.max_size}"


@dataclass(frozen=True)
class Plan:
    """Every stage's pool for a run on a cluster, and the numbers it was fitted with."""

    use_gpu: bool
    split: bool
    cluster_cpus: float
    cluster_gpus: float
    cpu_scale: float
    pools: tuple[Pool, ...]

    def pool(self, stage: str, model: str = "") -> Pool:
        """The pool of ``stage`` (for ``model``)."""
        for p in self.pools:
            if p.stage == stage and p.model == model:
                return p
        raise KeyError((stage, model))

    def demand(self, size: str = "min_size") -> tuple[float, float]:
        """(CPUs, GPUs) the actors request with every pool at ``size`` ("min_size" or
        "max_size"), plus the read and decode tasks' CPUs."""
        cpus = READ_NUM_CPUS + DECODE_NUM_CPUS
        gpus = 0.0
        for p in self.pools:
            cpus += getattr(p, size) * p.num_cpus
            gpus += getattr(p, size) * p.num_gpus
        return round(cpus, 4), round(gpus, 4)

    def describe(self) -> str:
        """A readable table of the pools and one line of how the plan fits the cluster."""
        lines = [f"{'stage':<9} {'model':<20} {'actors':>7} {'GPU/actor':>9} {'CPU/actor':>9}"]
        for p in self.pools:
            lines.append(f"{p.stage:<9} {p.model or '(all)':<20} {p.size_text:>7} "
                         f"{p.num_gpus:>9g} {p.num_cpus:>9g}")
        cpus, gpus = self.demand()
        cpus_max, gpus_max = self.demand("max_size")
        lines.append(
            f"plan fits: {'GPU' if self.use_gpu else 'CPU'} run; at the pools' minimum sizes "
            f"{gpus:g} of {self.cluster_gpus:g} GPUs and {cpus:g} of {self.cluster_cpus:g} "
            f"CPUs (actor CPU requests x{self.cpu_scale:.3g}); at their maximum {gpus_max:g} "
            f"GPUs, {cpus_max:g} CPUs")
        idle = math.floor(self.cluster_gpus - gpus_max + 1e-6)
        if self.use_gpu and idle >= 1:
            lines.append(f"{idle} GPU(s) stay idle: resources.attribute_actors: auto or "
                         "[min, max] lets the model pools grow into them")
        return "\n".join(lines)


def is_split(config: RunConfig) -> bool:
    """True when a split metric (PIC: a CPU half and a model-scoring half) is configured."""
    return any(metrics.get(m.name).prepare is not None for m in config.metrics)


#: ``block_images: auto``: the most images a block gathers, and the fewest blocks a run keeps
#: (so that every actor of a pool still gets work and progress stays fine-grained).
AUTO_BLOCK_IMAGES = 64
AUTO_MIN_BLOCKS = 256


def block_shards(config: RunConfig, shards: int) -> int:
    """Whole shards per Ray Data block of a run of ``shards`` pending shards
    (``resources.block_images``; at least 1).

    Each block costs the driver and Ray's scheduler the same whatever it holds (its tasks,
    references and statistics; measured in BENCHMARKS.md, "Driver memory at scale"), so
    blocks of several small shards cost less per image. ``auto``: one shard per block with
    split (PIC) metrics, whose bokeh images (2.26 MB per sample and method) already make a
    shard's block large, and in runs of fewer than ``AUTO_MIN_BLOCKS`` shards; else as many
    as fit ``AUTO_BLOCK_IMAGES`` images while the run keeps ``AUTO_MIN_BLOCKS`` blocks.
    """
    res = config.resources
    if res.block_images != "auto":
        return max(1, int(res.block_images) // res.shard_size)
    if is_split(config):
        return 1
    return max(1, min(AUTO_BLOCK_IMAGES // res.shard_size, shards // AUTO_MIN_BLOCKS))


def uses_gpu(config: RunConfig, resources: Mapping[str, float]) -> bool:
    """Whether the model stages request GPUs: device "cuda", or "auto" on a cluster with GPUs.

    Raises ConfigError for device "cuda" on a cluster without GPUs (the actors would wait
    for a GPU forever).
    """
    gpus = float(resources.get("GPU", 0.0))
    device = config.resources.device
    if device == "cuda" and gpus <= 0:
        raise ConfigError(
            f"resources.device is cuda but the Ray cluster has no GPUs ({_have(resources)}); "
            "use device: auto or cpu, or start GPU nodes first (scripts/run_imagenet.py "
            "asks the autoscaler and waits for them)")
    return device == "cuda" or (device == "auto" and gpus > 0)


def make_plan(config: RunConfig, resources: Mapping[str, float],
              node_cpus: float | None = None) -> Plan:
    """The pools of ``config``'s stages on a cluster with ``resources``; ConfigError (with
    the numbers and the fix) when they cannot all run at once. ``node_cpus``: the most CPUs
    one node has (an actor runs on one node); None: one node holds them all."""
    cpus = float(resources.get("CPU", 0.0))
    room = cpus - READ_NUM_CPUS - DECODE_NUM_CPUS
    if room <= 0:
        raise ConfigError(f"the Ray cluster has {cpus:g} CPUs; salbench needs at least 1 "
                          f"({_have(resources)})")
    use_gpu = uses_gpu(config, resources)
    split = is_split(config)
    model_pools = _gpu_model_pools(config, resources, split) if use_gpu else \
        _cpu_model_pools(config, room, split, cpus if node_cpus is None else node_cpus)
    cpu_pools = _cpu_stage_pools(config, room - _cpus(model_pools), split)
    pools = model_pools + cpu_pools
    scale = min(1.0, room / _cpus(pools))
    pools = [Pool(p.stage, p.model, p.min_size, p.max_size, floor4(p.num_cpus * scale),
                  p.num_gpus) for p in pools]
    if any(p.num_cpus <= 0 for p in pools):
        raise ConfigError(
            f"the {len(pools)} actor pools need {_cpus(pools):g}+ CPUs at their minimum sizes "
            f"and the cluster has {cpus:g}: fewer models, cpu_actors or attribute_actors")
    return Plan(use_gpu, split, cpus, float(resources.get("GPU", 0.0)), round(scale, 6),
                tuple(pools))


def actor_config(config: RunConfig, plan: Plan) -> dict[str, Any]:
    """``config.to_dict()`` for the actors, with the pool sizes resolved to the plan's
    largest (the config the actors are given; Ray holds the pools themselves) and the model
    actors' torch threads to :func:`model_threads`."""
    d = config.to_dict()
    models = [p for p in plan.pools if p.stage == "attribute"]
    bokeh = [p for p in plan.pools if p.stage == "bokeh"]
    d["resources"]["attribute_actors"] = max(p.max_size for p in models)
    d["resources"]["cpu_actors"] = max(p.max_size for p in bokeh)
    d["resources"]["torch_threads"] = model_threads(config, plan)
    return d


def in_process_config(config: RunConfig) -> dict[str, Any]:
    """``config.to_dict()`` for the in-process executor: one actor per stage and model, with
    the torch threads a local Ray on this machine would give the model actors
    (:func:`local_threads`), so that both executors write the same tables."""
    d = config.to_dict()
    d["resources"]["attribute_actors"] = 1
    d["resources"]["cpu_actors"] = 1
    d["resources"]["torch_threads"] = local_threads(config)
    return d


def model_threads(config: RunConfig, plan: Plan) -> int | None:
    """torch threads of the model actors (AttributeActor, ScoreActor) under ``plan``:
    ``resources.torch_threads`` when set; else, for model actors on CPU, the whole CPUs
    of one model actor's request (at least 1); None on GPUs (torch's default: the model's
    arithmetic runs on the GPU).

    Results depend on it: torch's CPU kernels split their sums by thread, so maps move at
    float rounding with the thread count (EfficientNet-Lite0's input gradients by up to
    5e-4 relative between 1 and 2 threads at some batch sizes), and rank-based per-image
    metrics amplify that; hence one number for both executors."""
    if config.resources.torch_threads:
        return config.resources.torch_threads
    if plan.use_gpu:
        return None
    pool = next(p for p in plan.pools if p.stage == "attribute")
    return max(1, int(pool.num_cpus))


def numerics_record(config: RunConfig, plan: Plan | None) -> dict[str, dict[str, Any]]:
    """The manifest's ``numerics``: per model label, its numeric settings
    (``RunConfig.model_numerics``) and the model stage's torch threads under ``plan`` (None:
    the in-process executor, :func:`local_threads`; a null ``torch_threads``: torch's
    default, on GPUs)."""
    threads = local_threads(config) if plan is None else model_threads(config, plan)
    return {comp.label: {**config.model_numerics(i).as_dict(), "torch_threads": threads}
            for i, comp in enumerate(config.models)}


def local_resources() -> dict[str, float]:
    """The resources a local Ray started on this machine detects: its CPUs
    (``os.cpu_count()``, as Ray's ``multiprocessing.cpu_count()`` outside containers) and
    CUDA devices."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def local_threads(config: RunConfig) -> int | None:
    """:func:`model_threads` of the plan a local Ray on this machine would make; when that
    plan cannot fit (the in-process executor has no pools to fit), the node's cores divided
    among the models."""
    try:
        return model_threads(config, make_plan(config, local_resources()))
    except ConfigError:
        return config.resources.torch_threads or max(1, (os.cpu_count() or 1)
                                                     // len(config.models))


def _have(resources: Mapping[str, float]) -> str:
    return f"cluster: {float(resources.get('CPU', 0)):g} CPUs, " \
           f"{float(resources.get('GPU', 0)):g} GPUs"


def _cpus(pools: list[Pool]) -> float:
    return sum(p.min_size * p.num_cpus for p in pools)


def _size(value: Any, auto_max: int) -> tuple[int, int]:
    """(min, max) of a pool size from the config; ``auto`` -> (1, auto_max)."""
    if value == "auto":
        return 1, max(1, auto_max)
    if isinstance(value, tuple):
        return value
    return int(value), int(value)


def _explicit_share(config: RunConfig, i: int) -> float | None:
    """The GPUs of model ``i``'s slot if the config fixes them, else None (auto)."""
    value = config.models[i].params.get("num_gpus", config.resources.attribute_num_gpus)
    return None if value == "auto" else float(value)


def _gpu_model_pools(config: RunConfig, resources: Mapping[str, float],
                     split: bool) -> list[Pool]:
    gpus = float(resources.get("GPU", 0.0))
    stages = 2 if split else 1
    n = len(config.models)
    value = config.resources.attribute_actors
    lo = _size(value, 1)[0]
    bins = max(1, math.floor(gpus))
    per_gpu = _actors_per_gpu(bins, n * stages, lo, stages, value == "auto")
    auto_actor = floor4(min(1.0, gpus) / per_gpu)
    pools, sizes = [], []
    for i, comp in enumerate(config.models):
        share = _explicit_share(config, i)
        if share is not None and share / stages > 1 and share % stages:
            key = "num_gpus" if "num_gpus" in comp.params else "resources.attribute_num_gpus"
            raise ConfigError(
                f"{key}: {share:g} GPUs cannot be split between model {comp.label}'s "
                f"AttributeActor and ScoreActor (Ray gives whole GPUs above 1); use a "
                f"multiple of {stages} or at most 1")
        actor = auto_actor if share is None else floor4(share / stages)
        slot = actor * stages
        lo_i, hi_i = _size(value, math.floor(gpus / (n * slot) + 1e-6))
        for stage in ("attribute", "score")[:stages]:
            pools.append(Pool(stage, comp.label, lo_i, hi_i, GPU_ACTOR_CPUS, actor))
        sizes += [actor] * (lo_i * stages)
    if not _packs(sizes, gpus):
        lines = ", ".join(f"{p.model} {p.stage} {p.min_size} x {p.num_gpus:g}" for p in pools)
        raise ConfigError(
            f"the model stages need {_gpus_needed(sizes)} GPUs with every pool at its minimum "
            f"size ({lines}; {sum(sizes):.4g} GPUs, but Ray keeps a fractional request within "
            f"one GPU); the cluster has {gpus:g} "
            f"({_have(resources)}). Fix: resources.attribute_num_gpus: auto (and no model "
            "num_gpus), which shares the GPUs among the models, or fewer attribute_actors "
            "(or a smaller min), fewer models, or more GPUs")
    return pools


def _actors_per_gpu(bins: int, pools: int, lo: int, stages: int, auto: bool) -> int:
    """k, the model actors per GPU of the auto GPU shares (1/k GPU each): at least one slot
    (``stages`` actors) per GPU and the fewest that hold every pool's ``lo`` actors; with
    auto pool sizes, up to ``MAX_ACTORS_PER_GPU`` if that leaves fewer GPUs idle once the
    slots are divided evenly among the models (5 models with PIC on 8 GPUs: 4 per GPU
    give each model 3 slots, 7.5 GPUs busy; 2 per GPU would give 1 slot each, 5 GPUs)."""
    least = max(stages, math.ceil(pools * lo / bins))
    if not auto:
        return least

    def busy(k: int) -> float:  # share of the GPUs the evenly divided slots use
        return (bins * k // pools) * pools / (bins * k)

    return max(range(least, max(least, MAX_ACTORS_PER_GPU) + 1), key=lambda k: (busy(k), -k))


def _packs(sizes: list[float], gpus: float) -> bool:
    """Whether actors requesting ``sizes`` GPUs each fit ``gpus`` GPUs as Ray places them:
    a fraction within one GPU, a whole number on that many GPUs of their own."""
    if gpus < 1:  # a fractional logical GPU (tests): one bin of that size
        return sum(sizes) <= gpus + 1e-9 and all(s < 1 for s in sizes)
    return _gpus_needed(sizes) <= math.floor(gpus)


def _gpus_needed(sizes: list[float]) -> int:
    """Whole GPUs that hold actors requesting ``sizes`` GPUs (first fit, largest first)."""
    free: list[float] = []
    for s in sorted(sizes, reverse=True):
        if s >= 1:
            free += [0.0] * int(s)
            continue
        for i, f in enumerate(free):
            if f + 1e-9 >= s:
                free[i] = f - s
                break
        else:
            free.append(1.0 - s)
    return len(free)


def _cpu_model_pools(config: RunConfig, room: float, split: bool,
                     node_cpus: float) -> list[Pool]:
    res = config.resources
    stages = 2 if split else 1
    # what the model actors may take: all but one CPU-stage actor per pool at its request
    cpu_stage = (len(config.models) + (1 if split else 0)) * res.cpu_num_cpus
    left, pools_n = room - cpu_stage, len(config.models) * stages
    per_actor = res.attribute_num_cpus
    if per_actor == "auto" and isinstance(res.attribute_actors, int):  # a fixed pool
        share = min(left / (pools_n * res.attribute_actors), node_cpus - res.cpu_num_cpus)
        per_actor = max(1.0, floor4(share))
    elif per_actor == "auto":  # an autoscaling pool grows in actors instead
        per_actor = 1.0
    lo_hi = _size(res.attribute_actors, math.floor(left / (pools_n * per_actor)))
    return [Pool(stage, comp.label, *lo_hi, per_actor)
            for comp in config.models for stage in ("attribute", "score")[:stages]]


def _cpu_stage_pools(config: RunConfig, free: float, split: bool) -> list[Pool]:
    res = config.resources
    pools_n = len(config.models) + (1 if split else 0)
    lo_hi = _size(res.cpu_actors, math.floor(free / (pools_n * res.cpu_num_cpus) + 1e-6))
    pools = [Pool("bokeh", comp.label, *lo_hi, res.cpu_num_cpus) for comp in config.models]
    if split:
        pools.append(Pool("finalize", "", *lo_hi, res.cpu_num_cpus))
    return pools


def min_gpus(config: RunConfig) -> float:
    """GPUs a cluster needs for ``config`` on CUDA, before any plan can fit: the slots of
    every model at the pools' minimum sizes with their fixed GPUs; 1 for models on ``auto``
    GPUs, which share whatever GPUs there are (for waiting on an autoscaling cluster)."""
    need, auto = 0.0, False
    for i in range(len(config.models)):
        share = _explicit_share(config, i)
        if share is None:
            auto = True
            continue
        need += _size(config.resources.attribute_actors, 1)[0] * share
    return max(need, 1.0 if auto else 0.0)
