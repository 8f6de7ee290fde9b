"""The Python entry point: ``salbench.evaluate(config or keys) -> Results``.

``evaluate`` runs the same pipeline as ``salbench run``: on Ray (``ray=True``, the Ray Data
graph of :mod:`salbench.pipeline.graph`) or in this process (``ray=False``, the same stages
and actors without Ray, :mod:`salbench.pipeline.local`); both write the same run directory
and give the same tables for the same config and seed. :class:`Results` holds the per-sample
and summary tables as pandas DataFrames and Arrow tables.

Plugins: a model, method, metric or dataset registered with ``@register`` in an importable
module (not ``__main__``) is named in the run's config by its import path
``"module:function"`` with its registered name as ``alias``, so Ray workers (and ``salbench
resume``) import the module, which registers it there too; the tables show the registered
name. With ``ray=True``, one Ray task first imports every such path on a worker, so a module
the workers cannot import fails before any work with a message saying how to ship it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from salbench import datasets, heartbeat, methods, metrics, models, storage
from salbench.config import RunConfig, load_config, parse_config
from salbench.errors import ConfigError
from salbench.pipeline import manifest as mf
from salbench.pipeline.run import ensure_ray, run
from salbench.registry import Registry
from salbench.results import tables
from salbench.results.scan import Shards

ConfigLike = RunConfig | Mapping[str, Any] | str | os.PathLike

#: What each kind of plugin name resolves with (the same calls the actors make).
_RESOLVERS = {
    "model": models.REGISTRY.get,
    "method": methods.get,
    "metric": metrics.get,
    "dataset": datasets.REGISTRY.get,
}


@dataclass
class Results:
    """The tables of one run.

    Attributes:
        run_dir: the run directory (``<out>/<name>-<date>-<hash>``, absolute), see README
            "Output".
        config: the validated config the run used.
        summary: one row per model x method x metric: n, n_rows, n_error, n_degenerate,
            mean, std, median, ci95_low, ci95_high, ci_method.
        samples: (read when first asked for) one row per sample x model x method (status,
            target, metric columns and curves), sorted by (index, model, method); for a
            large run, :meth:`scan` streams the rows instead.
    """

    run_dir: Path | str  # a local Path, or the URI of a run on object storage
    config: RunConfig = field(repr=False)
    summary: pd.DataFrame = field(repr=False)

    @cached_property
    def samples(self) -> pd.DataFrame:
        """Every row of the run (read from its shards on first use, then kept)."""
        return tables.read_samples(self.run_dir)

    def scan(self, columns: list[str] | None = None,
             batch_rows: int = 65536) -> Iterator[pd.DataFrame]:
        """The run's rows as DataFrames of at most ``batch_rows`` rows, one batch in memory
        at a time (shard order, not sorted); ``columns``: only these."""
        yield from Shards.of_run(self.run_dir).frames(columns, batch_rows)

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> Results:
        """The Results of a finished run directory (e.g. one made by ``salbench run``)."""
        path = _absolute(run_dir)
        summary = storage.join(path, "summary.parquet")
        if not storage.is_file(summary):
            why = ""
            if storage.is_file(storage.join(path, "manifest.json")):
                status, note = heartbeat.status(path, mf.read_manifest(path))
                why = f"; it is {status}" + (f": {note}" if note else "")
            raise ConfigError(f"{path} is not a finished salbench run (no summary.parquet"
                              f"{why})")
        config = parse_config(mf.read_manifest(path)["config"])
        return cls(path, config, _read_parquet(summary))

    @cached_property
    def samples_arrow(self) -> pa.Table:
        """The per-sample table as Arrow, in the files' schema (curves list<float32>)."""
        table = Shards.of_run(self.run_dir).read()
        return table.sort_by([(k, "ascending") for k in tables.SORT_KEYS])

    @cached_property
    def summary_arrow(self) -> pa.Table:
        """The summary table as Arrow."""
        return pa.Table.from_pandas(self.summary, preserve_index=False)

    def means(self, metrics: list[str] | None = None) -> pd.DataFrame:
        """Mean of each metric (columns) per model x method (rows), from the summary.

        metrics: the summary's metric names to keep (e.g. ``["insertion_auc"]``), in this
        order; default all.
        """
        table = self.summary.pivot_table(index=["model", "method"], columns="metric",
                                         values="mean", dropna=False)
        table.columns.name = None
        return table if metrics is None else table[list(metrics)]

    def report(self) -> Path | str:
        """Write the run's HTML report (``salbench.report``); the path of its index.html."""
        try:
            from salbench.report import write_report
        except ImportError as exc:
            raise RuntimeError(f"this salbench has no HTML report ({exc})") from exc
        return write_report(self.run_dir)


def evaluate(
    config: ConfigLike | None = None,
    /,
    *,
    ray: bool = True,
    out: str | os.PathLike | None = None,
    progress: TextIO | None = None,
    **settings: Any,
) -> Results:
    """Run a benchmark and return its tables.

    Args:
        config: a RunConfig, a mapping with the YAML config's keys, or the path of a YAML
            config; None: the config is ``settings`` alone.
        ray: True: the Ray Data pipeline (joining ``resources.address`` or starting a local
            Ray, which stays up for later calls); False: the same stages in this process.
        out: where run directories go (overrides the config's ``out``, default ``runs``).
        progress: a stream for one line per finished shard (e.g. ``sys.stderr``); None:
            quiet.
        **settings: top-level config keys (``dataset``, ``models``, ``methods``,
            ``metrics``, ``seed``, ``profile``, ``name``, ``map_reduce``, ``save_maps``,
            ``resources``) that replace the config's; ``resources`` is merged key by key.

    Raises:
        ConfigError: a bad key or value (the message names it), a plugin the Ray workers
            cannot import (``ray=True``; the message says how to ship it).

    Example::

        res = salbench.evaluate(dataset={"kind": "sample"}, models=["efficientnet_lite0"],
                                methods=["vg", "ig"], metrics=["insertion", "deletion"],
                                ray=False)
        res.means(["insertion_auc", "deletion_auc"])
    """
    raw = _raw_config(config)
    for key, value in settings.items():
        if key == "resources" and isinstance(value, Mapping) and isinstance(
                raw.get("resources"), Mapping):
            raw["resources"] = {**raw["resources"], **value}
        else:
            raw[key] = value
    if out is not None:
        raw["out"] = os.fspath(out)
    run_config = portable(parse_config(raw), strict=ray)
    if ray:
        check_workers_import(run_config)
    result = run(run_config, progress=progress, ray_progress_bars=False, in_process=not ray)
    return Results(_absolute(result.run_dir), run_config, result.summary)


def _absolute(run_dir: str | os.PathLike) -> Path | str:
    """A local run directory as an absolute Path; a URI (``s3://...``) as it is."""
    loc = storage.normalize(run_dir)
    return loc if isinstance(loc, str) else loc.resolve()


def _read_parquet(loc: Path | str) -> pd.DataFrame:
    """A small Parquet file (the summary), local or at a URI."""
    fs, path = storage.resolve(loc)
    return pq.read_table(path, filesystem=fs).to_pandas()


def _raw_config(config: ConfigLike | None) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, RunConfig):
        return config.to_dict()
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config).to_dict()
    raise ConfigError(f"config must be a RunConfig, a mapping or a YAML path, got "
                      f"{type(config).__name__}")


def _components(config: dict[str, Any]) -> list[tuple[str, Registry[Any], dict[str, Any]]]:
    """(kind, registry, component dict) of every model, method and metric of a config dict."""
    regs = (("model", models.REGISTRY, "models"), ("method", methods.REGISTRY, "methods"),
            ("metric", metrics.REGISTRY, "metrics"))
    return [(kind, reg, comp) for kind, reg, key in regs for comp in config[key]]


def portable(config: RunConfig, *, strict: bool) -> RunConfig:
    """``config`` with every plugin registered from a user's module named by its import path
    (and its registered name as ``alias``), so that other processes can import it.

    strict: raise ConfigError for a plugin that no other process can import (defined in
    ``__main__`` or inside a function); otherwise leave its name as is (fine in process).
    """
    d = config.to_dict()

    def path_of(registry: Registry[Any], name: str) -> str | None:
        try:
            return registry.portable_name(name)
        except ConfigError:
            if strict:
                raise
            return None

    for _, registry, comp in _components(d):
        path = path_of(registry, comp["name"])
        if path is not None:
            comp.setdefault("alias", comp["name"])
            comp["name"] = path
    path = path_of(datasets.REGISTRY, d["dataset"]["kind"])
    if path is not None:
        d["dataset"]["kind"] = path
    return parse_config(d)


def check_workers_import(config: RunConfig) -> None:
    """Start or join Ray and resolve every import-path name of ``config`` on a Ray worker;
    ConfigError listing the ones that fail there, and how to ship the code."""
    d = config.to_dict()
    names = [(kind, comp["name"]) for kind, _, comp in _components(d)]
    names.append(("dataset", d["dataset"]["kind"]))
    paths = [(k, n) for k, n in names if ":" in n and not n.startswith(("timm:", "captum:"))]
    if not paths:
        return
    import ray

    ensure_ray(config.resources.address)
    errors = ray.get(ray.remote(num_cpus=0)(resolve_all).remote(paths))
    if errors:
        raise ConfigError(
            "Ray workers cannot load these plugins: " + "; ".join(errors) + ". The workers "
            "import a plugin's module by name: with a local Ray, keep the module in the "
            "directory you start Python from; on a cluster, `ray job submit --working-dir .`, "
            "ray.init(runtime_env={'py_modules': [...]}) or `pip install` it on every node "
            "(see docs/API.md); or run in this process with ray=False"
        )


def resolve_all(names: list[tuple[str, str]]) -> list[str]:
    """Resolve (kind, name) pairs as the actors do; a message for each that fails."""
    errors = []
    for kind, name in names:
        try:
            _RESOLVERS[kind](name)
        except Exception as exc:
            errors.append(f"{kind} {name!r}: {type(exc).__name__}: {exc}")
    return errors
