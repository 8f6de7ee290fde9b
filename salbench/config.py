"""Run configuration: YAML (safe_load) validated into typed objects (SPEC 6).

Every error names the bad key (``methods[1].steps``, ``dataset.kind``, ...). Example::

    out: runs
    seed: 0
    profile: fast                       # fast | paper
    dataset: {kind: sample}             # any registered dataset kind with its parameters
    models: [efficientnet_lite0]        # or [{name: resnet50, weights: /path/resnet50.pth}]
    methods: [vg, ig]                   # or [{name: ig, steps: 200}], or all
    metrics: [insertion, deletion, pointing_game]  # or all (every registered metric)
    precision: fp32                     # fp32 | tf32 | bf16 (salbench.models.numerics);
                                        # also channels_last, compile, deterministic;
                                        # each may be set per model too
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from salbench import datasets, methods, metrics, models
from salbench.errors import ConfigError, UnknownNameError
from salbench.models import numerics

DEFAULT_METRICS = ["insertion", "deletion", "pointing_game"]
#: ``dataset.filter``: "all" images, or only those the model classifies "correct"ly (top-1
#: = label; images without a label are kept): the rest become ``filtered`` rows.
DATASET_FILTERS = ("all", "correct")

# An actor pool's size: a fixed number, "auto", or an autoscaling (min, max) range.
PoolSize = int | str | tuple[int, int]
POOL_KEYS = ("attribute_actors", "cpu_actors")


@dataclass(frozen=True)
class Component:
    """A model, method or metric: its registry name and its parameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name used in output tables (``alias`` if given, else ``name``)."""
        return str(self.params.get("alias", self.name))

    def call_params(self) -> dict[str, Any]:
        """Parameters without the table-only ``alias`` and a method's ``map_reduce`` (the
        channel reduction of its maps, :meth:`RunConfig.map_reduce_for`)."""
        return {k: v for k, v in self.params.items() if k not in ("alias", "map_reduce")}


@dataclass(frozen=True)
class ResourceConfig:
    """Ray resources and batching.

    address: None (start a local Ray), "auto" (join a running ``ray start --head``) or a
    cluster address. device: "auto" (CUDA when the cluster has GPUs), "cpu" or "cuda".
    batch_size: images per model call (a shard is split into batches of this size).
    score_batch_size: images per forward pass when the ScoreActor scores PIC bokeh images.
    shard_size: images per shard, the unit of streaming, output files and resume.
    torch_threads: torch threads of each model actor (AttributeActor, ScoreActor); None =
    on CPU, the whole CPUs the placement plan gives a model actor (at least 1; more would
    oversubscribe the other stages' cores), the same number for the in-process executor
    (the plan a local Ray would make on this machine), so that both executors compute the
    same maps: torch's CPU kernels split their sums by thread, and maps move at float
    rounding with the thread count (``salbench.pipeline.plan.model_threads``). Recorded
    per model in the manifest (``numerics``).
    internal_batch_size: images per forward/backward pass for every method whose own
    parameters do not set one; None = the method's default, capped on CPU at
    ``salbench.methods.engine.CPU_INTERNAL_BATCH_SIZE`` (16) by ``methods.attribute``.
    max_sample_crashes: how often a sample may kill its model actor's process (a crash in
    native code, the OS's OOM killer) before it becomes a ``worker_crash`` error row.
    window_images: the Ray graph runs the pending shards in windows of at most this many
    images, one Ray Data execution each (its actor pools start anew), so that the driver's
    per-block bookkeeping stays bounded; None: the whole run in one.
    block_images: images per Ray Data block from reading on (whole shards, at least one): a
    number, or ``"auto"`` (:func:`salbench.pipeline.plan.block_shards`: one shard per block
    with split (PIC) metrics, whose bokeh images make blocks large, and in runs of under
    256 shards; else up to 64 images). Fewer, larger blocks cost the driver and Ray's
    scheduler less per image; results do not depend on it (the model stage batches each
    shard on its own).

    Placement (``salbench.pipeline.plan`` turns these into each stage's actor pools):
    attribute_actors / cpu_actors: actors per model of the model stage / of each CPU stage: a
    number (a fixed pool), ``"auto"`` (an autoscaling pool of 1 up to what the cluster
    holds when the run starts) or ``(min, max)`` (an autoscaling pool; YAML ``[min, max]``).
    attribute_num_gpus: GPUs of one model slot, i.e. one AttributeActor and, with split (PIC)
    metrics, its ScoreActor, which share it (half each); ``"auto"``: the cluster's GPUs
    divided among the models' slots (at most 1 each). A model's own ``num_gpus`` overrides it.
    attribute_num_cpus: CPUs of one model actor on a cluster without GPUs; ``"auto"``: with
    fixed pools, the CPUs the read/decode tasks and the CPU stages' actors leave, shared
    equally among the model actors (on an 8-core laptop the demo's one model actor gets 7);
    with autoscaling pools (``auto`` / ``[min, max]``) 1 each, the pool growing instead.
    """

    address: str | None = None
    device: str = "auto"
    batch_size: int = 8
    score_batch_size: int = 64
    shard_size: int = 16
    attribute_actors: PoolSize = 1
    attribute_num_gpus: float | str = "auto"
    attribute_num_cpus: float | str = "auto"
    cpu_actors: PoolSize = 1
    cpu_num_cpus: float = 0.5
    torch_threads: int | None = None
    internal_batch_size: int | None = None
    max_sample_crashes: int = 2
    window_images: int | None = None
    block_images: int | str = "auto"


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration."""

    dataset: dict[str, Any]
    models: tuple[Component, ...]
    methods: tuple[Component, ...]
    metrics: tuple[Component, ...]
    out: str = "runs"
    seed: int = 0
    profile: str = "fast"
    map_reduce: str = "abs_sum"
    save_maps: bool = False
    name: str = "run"
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = True

    def model_numerics(self, model_index: int) -> numerics.Numerics:
        """Model ``model_index``'s numeric settings: the run's, with the model's own
        ``precision`` / ``channels_last`` / ``compile`` / ``deterministic`` on top."""
        params = self.models[model_index].params
        return numerics.Numerics(**{k: params.get(k, getattr(self, k)) for k in numerics.KEYS})

    def to_dict(self) -> dict[str, Any]:
        """A plain dict that :func:`parse_config` turns back into an equal RunConfig."""
        d = asdict(self)
        for key in ("models", "methods", "metrics"):
            d[key] = [{"name": c["name"], **c["params"]} for c in d[key]]
        for key in POOL_KEYS:  # YAML (safe_dump) has lists, not tuples
            if isinstance(d["resources"][key], tuple):
                d["resources"][key] = list(d["resources"][key])
        return d

    def params_for(self, comp: Component, spec: Any, *, merged: bool = True) -> dict[str, Any]:
        """``comp``'s parameters for ``spec`` (a MethodSpec or MetricSpec): the run's seed
        unless ``comp`` sets one (for specs that take a seed); with ``merged``, on top of the
        spec's defaults and this run's profile."""
        params = comp.call_params()
        if "seed" in spec.defaults and "seed" not in params:
            params["seed"] = self.seed
        return spec.params(self.profile, **params) if merged else params

    def map_reduce_for(self, comp: Component, spec: Any) -> str:
        """The channel reduction of method ``comp``'s maps (see ``methods.to_map``): the
        method entry's own ``map_reduce`` key, else the one its MethodSpec registers (e.g.
        Grad-CAM's "sum"), else the run's ``map_reduce``."""
        return comp.params.get("map_reduce") or spec.map_reduce or self.map_reduce

    def value_columns(self) -> dict[str, str]:
        """Column -> "float" | "curve" for every method diagnostic and metric output, in the
        per-sample table's order (:mod:`salbench.results.tables`)."""
        cols: dict[str, str] = {}
        for comp in self.methods:
            cols.update({c: "float" for c in methods.get(comp.name).info_columns})
        for comp in self.metrics:
            cols.update(metrics.get(comp.name).columns)
        return cols

    def hash(self) -> str:
        """A short stable hash of everything that changes results (not ``out``/resources)."""
        d = self.to_dict()
        for key in ("out", "resources", "name"):
            d.pop(key)
        d["resources"] = {"batch_size": self.resources.batch_size}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


_TOP_KEYS = {
    "dataset", "models", "methods", "metrics", "out", "seed", "profile", "map_reduce",
    "save_maps", "name", "resources", *numerics.KEYS,
}
_MODEL_KEYS = ("weights", "alias", "num_gpus", *numerics.KEYS)


def _components(raw: Any, key: str, check: Any) -> tuple[Component, ...]:
    if raw == "all" and key in ("methods", "metrics"):  # every registered one
        raw = (methods if key == "methods" else metrics).names()
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{key}: expected a non-empty list of names or {{name: ...}} mappings")
    out = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}: expected a name or a mapping with a 'name' key")
        params = {k: v for k, v in item.items() if k != "name"}
        if "params" in params and isinstance(params["params"], dict):
            params.update(params.pop("params"))
        comp = Component(item["name"], params)
        try:
            check(comp)
        except (UnknownNameError, ConfigError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out.append(comp)
    labels = [c.label for c in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"{key}: {dup} appear more than once; give one an 'alias'")
    return tuple(out)


def _check_model(c: Component) -> None:
    if not c.name.startswith("timm:"):
        models.REGISTRY.get(c.name)
    unknown = set(c.params) - set(_MODEL_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(_MODEL_KEYS)}")
    if "num_gpus" in c.params:
        _gpu_share(c.params["num_gpus"], "num_gpus", allow_auto=False)
    for key in numerics.KEYS:
        if key in c.params and (problem := numerics.check(key, c.params[key])):
            raise ConfigError(f"{key}: {problem}")


def _gpu_share(value: Any, key: str, *, allow_auto: bool = True) -> float | str:
    """A GPU allotment: a positive number (Ray wants whole GPUs above 1), or "auto"."""
    if allow_auto and value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        want = "a positive number or auto" if allow_auto else "a positive number"
        raise ConfigError(f"{key}: expected {want}, got {value!r}")
    if value > 1 and value != int(value):
        raise ConfigError(f"{key}: {value} GPUs: above 1, Ray gives only whole GPUs; use "
                          f"{int(value)} or {int(value) + 1}, or a fraction <= 1")
    return float(value)


def _cpu_share(value: Any, key: str) -> float | str:
    """A CPU request: a positive number, or "auto"."""
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}: expected a positive number or auto, got {value!r}")
    return float(value)


def _pool_size(value: Any, key: str) -> PoolSize:
    """A pool size: a positive int, "auto", or [min, max] with 1 <= min <= max."""
    if value == "auto":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        lo, hi = value
        if not 1 <= lo <= hi:
            raise ConfigError(f"{key}: [min, max] needs 1 <= min <= max, got {list(value)}")
        return (lo, hi)
    raise ConfigError(f"{key}: expected a positive int, auto or [min, max], got {value!r}")


def _check_method(c: Component) -> None:
    if c.params.get("map_reduce", "abs_sum") not in methods.REDUCTIONS:
        raise ConfigError(f"map_reduce: expected one of {methods.REDUCTIONS}, got "
                          f"{c.params['map_reduce']!r}")
    methods.get(c.name).params("paper", **c.call_params())


def _check_metric(c: Component) -> None:
    metrics.get(c.name).params("paper", **c.call_params())


def _typed(raw: dict[str, Any], key: str, name: str, kind: type | tuple[type, ...]) -> Any:
    value = raw[name]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{key}{name}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{key}{name}: expected {want}, got {value!r}")
    return value


_OPTIONAL = ("torch_threads", "internal_batch_size", "window_images")


def _resources(raw: Any) -> ResourceConfig:
    if raw is None:
        return ResourceConfig()
    if not isinstance(raw, dict):
        raise ConfigError("resources: expected a mapping")
    defaults = ResourceConfig()
    allowed = set(asdict(defaults))
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"resources: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    values: dict[str, Any] = {}
    for name in raw:
        if (name in _OPTIONAL or name == "address") and raw[name] is None:
            values[name] = None
            continue
        if name in POOL_KEYS:
            values[name] = _pool_size(raw[name], f"resources.{name}")
            continue
        if name == "attribute_num_gpus":
            values[name] = _gpu_share(raw[name], f"resources.{name}")
            continue
        if name == "attribute_num_cpus":
            values[name] = _cpu_share(raw[name], f"resources.{name}")
            continue
        if name == "block_images" and isinstance(raw[name], str):
            if raw[name] != "auto":
                raise ConfigError(f"resources.block_images: expected a number of images or "
                                  f"auto, got {raw[name]!r}")
            values[name] = "auto"
            continue
        kind = {"address": str, "device": str}.get(name)
        if kind is None:
            kind = int if isinstance(getattr(defaults, name), int) or name in (
                *_OPTIONAL, "block_images") else (int, float)
        values[name] = _typed(raw, "resources.", name, kind)
        if kind is not str and values[name] <= 0:
            raise ConfigError(f"resources.{name}: must be positive, got {values[name]}")
    if values.get("device", "auto") not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"resources.device: expected auto, cpu or cuda, got {values['device']!r}")
    return ResourceConfig(**values)


def parse_config(raw: Any) -> RunConfig:
    """Validate a config mapping into a RunConfig; ConfigError names the bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    for key in ("dataset", "models", "methods"):
        if key not in raw:
            raise ConfigError(f"missing required key {key!r}")
    ds = raw["dataset"]
    if isinstance(ds, str):
        ds = {"kind": ds}
    if not isinstance(ds, dict) or "kind" not in ds:
        raise ConfigError("dataset: expected a mapping with a 'kind' key, e.g. {kind: sample}")
    try:
        datasets.REGISTRY.get(ds["kind"])
    except UnknownNameError as exc:
        raise ConfigError(f"dataset.kind: {exc}") from None
    if ds.get("filter", "all") not in DATASET_FILTERS:
        raise ConfigError(f"dataset.filter: expected one of {DATASET_FILTERS}, got "
                          f"{ds['filter']!r}")
    kw: dict[str, Any] = {}
    for name, kind in (("out", str), ("seed", int), ("profile", str), ("map_reduce", str),
                       ("save_maps", bool), ("name", str)):
        if name in raw:
            kw[name] = _typed(raw, "", name, kind)
    if kw.get("profile", "fast") not in ("fast", "paper"):
        raise ConfigError(f"profile: expected fast or paper, got {kw['profile']!r}")
    if kw.get("map_reduce", "abs_sum") not in methods.REDUCTIONS:
        raise ConfigError(f"map_reduce: expected one of {methods.REDUCTIONS}")
    for key in numerics.KEYS:
        if key in raw:
            if problem := numerics.check(key, raw[key]):
                raise ConfigError(f"{key}: {problem}")
            kw[key] = raw[key]
    return RunConfig(
        dataset=copy.deepcopy(ds),
        models=_components(raw["models"], "models", _check_model),
        methods=_components(raw["methods"], "methods", _check_method),
        metrics=_components(raw.get("metrics", DEFAULT_METRICS), "metrics", _check_metric),
        resources=_resources(raw.get("resources")),
        **kw,
    )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (value parsed as YAML) to a raw config mapping."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a mapping")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file (safe_load), apply ``overrides`` and validate it."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    return parse_config(apply_overrides(raw or {}, overrides or []))
