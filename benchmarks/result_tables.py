"""Generated result tables: a finished run directory of any size, with no model run, written
the way the pipeline writes one (for the driver-memory case, BENCHMARKS.md).

A run of a :class:`Shape` (models x methods; the metrics insertion, deletion with 21-point
curves (profile ``paper``) and the pointing game) over ``rows / (models x methods)``
synthetic images. Each shard holds the rows of ``shard_size`` images (the pipeline's
default 16), sorted by (index, model, method) and committed with
:func:`salbench.results.tables.write_shard` (the file whole under its final name, then its
``_done`` marker), as :class:`salbench.pipeline.writer.ShardWriter`
does. The fast path builds each shard's Arrow table column-wise in the schema of
:func:`salbench.results.tables.samples_schema`; ``via_rows=True`` instead feeds the same
values as stage rows (JSON ``values``) to a ``ShardWriter`` (``tables.rows_to_table``), i.e.
the writer's whole path, at ~1,000 rows/s. Both write equal shards (tests/
test_benchmarks_driver_memory.py), and the fast table's schema equals a real run's. The
summary (``summary.parquet``), ``config.yaml`` and the manifest are written as a run writes
them.

Values are seeded per shard (``seed``, shard number): insertion AUC ~ Beta(2, 5) + ``shift``
(clipped to [0, 1]), deletion AUC ~ Beta(2, 8), ratio AUCs 1.5 x those, curves that
integrate to about the AUC, pointing game hits with rate 0.6, the methods' diagnostics
(``completeness_error``, ...) uniform on their own method's rows and null on the others.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from salbench.config import ResourceConfig, RunConfig

METRICS = ("insertion", "deletion", "pointing_game")
#: Above this many rows the generator's summary reads the rows' scalar columns kept in
#: memory (see :func:`generate`).
SUMMARY_IN_MEMORY_ABOVE = 200_000
_NOT_SUMMARISED = {"run_id", "sample_id", "sample_key", "cell_key"}
#: Every method registered today, the production run's 20 methods.
ALL_METHODS = ("blurig", "dga", "g3", "geg", "ggig", "gig", "gradcam", "gxi", "idgi_blurig",
               "idgi_gig", "idgi_ig", "ig", "igos", "rise", "samp", "samp_pp", "smoothgrad",
               "smoothgrad_sq", "vg", "xrai")


@dataclass(frozen=True)
class Shape:
    """What a generated run holds per image: ``models`` x ``methods`` rows; ``shard_size``
    images per shard file (default: the pipeline's)."""

    models: tuple[str, ...]
    methods: tuple[str, ...]
    shard_size: int = ResourceConfig().shard_size

    @property
    def groups(self) -> int:
        """Rows per image (model x method groups)."""
        return len(self.models) * len(self.methods)


#: The issue's measurement: tiny_cnn, vg + gxi.
TWO_METHOD = Shape(("tiny_cnn",), ("vg", "gxi"))
#: The production run: 50,000 ImageNet images x 5 models x 20 methods = 5 M rows.
PRODUCTION = Shape(("efficientnet_lite0", "inception_v3", "resnet101", "resnet50", "vgg16"),
                   ALL_METHODS)


def config(shape: Shape, images: int, name: str = "mem") -> dict[str, Any]:
    """The run config of ``images`` synthetic 32 px images in ``shape`` (a real run of it
    writes the same schema). Profile ``paper``: the metrics' protocol parameters, i.e.
    insertion and deletion curves of 20 steps (21 points), as a production run has."""
    return {
        "name": name, "seed": 0, "profile": "paper",
        "dataset": {"kind": "synthetic", "n": images, "size": 32},
        "models": list(shape.models), "methods": list(shape.methods),
        "metrics": list(METRICS), "resources": {"shard_size": shape.shard_size},
    }


def curve_points(cfg: RunConfig) -> dict[str, int]:
    """Points of each curve column a run of ``cfg`` writes (its metric's ``steps`` + 1)."""
    from salbench import metrics

    out = {}
    for comp in cfg.metrics:
        spec = metrics.get(comp.name)
        steps = cfg.params_for(comp, spec).get("steps")
        out.update({col: int(steps) + 1 for col, kind in spec.columns.items()
                    if kind == "curve" and steps is not None})
    return out


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64 ``x`` (a stable stand-in for the content keys' hashes)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _hex16(x: np.ndarray) -> pa.Array:
    """uint64 [n] -> their 16 hex digits as an Arrow string array (no Python str per row)."""
    shifts = np.arange(60, -4, -4, dtype=np.uint64)
    nibbles = ((x[:, None] >> shifts) & np.uint64(15)).astype(np.uint8)
    chars = np.frombuffer(b"0123456789abcdef", np.uint8)[nibbles]
    offsets = np.arange(0, 16 * (len(x) + 1), 16, dtype=np.int32)
    return pa.StringArray.from_buffers(len(x), pa.py_buffer(offsets), pa.py_buffer(chars))


class _Shard:
    """The values of one shard's rows, in the writer's order (index, model, method), as
    numpy arrays: ``base`` (the BASE_FIELDS but run_id) and ``values`` (column -> (values,
    present) where ``present`` is None or a bool mask of the rows that have the column)."""

    def __init__(self, cfg: RunConfig, shard: int, start: int, stop: int, seed: int,
                 shift: float) -> None:
        from salbench import methods

        models = sorted(c.label for c in cfg.models)
        labels = sorted(c.label for c in cfg.methods)
        name_of = {c.label: c.name for c in cfg.methods}
        images, per = stop - start, len(models) * len(labels)
        n = images * per
        rng = np.random.default_rng([seed, shard])
        image = np.arange(start, stop, dtype=np.int64)
        index = np.repeat(image, per)
        group = np.tile(np.arange(per), images)
        self.n, self.models, self.methods = n, models, labels
        self.model_i, self.method_i = group // len(labels), group % len(labels)
        label = index % 1000
        pred = np.where(rng.random(n) < 0.75, label, rng.integers(0, 1000, n))
        self.sample_ids = [f"synthetic-{i:05d}" for i in image]
        self.image_i = np.repeat(np.arange(images), per)
        self.sample_keys = _mix(image.astype(np.uint64))
        self.cell_keys = _mix(index.astype(np.uint64) * np.uint64(per) + group.astype(np.uint64)
                              + np.uint64(seed << 48))
        self.base: dict[str, np.ndarray] = {
            "shard": np.full(n, shard, np.int32), "index": index, "label": label,
            "target": label, "pred": pred, "target_prob": rng.random(n)}
        ins = np.clip(rng.beta(2, 5, n) + shift, 0.0, 1.0)
        dele = rng.beta(2, 8, n)
        x = {c: np.linspace(0.0, 1.0, k)[None, :] for c, k in curve_points(cfg).items()}
        metric_values = {
            "insertion_auc": ins, "insertion_ratio_auc": ins * 1.5,
            "insertion_curve": x["insertion_curve"] ** (1 - ins[:, None]),
            "deletion_auc": dele, "deletion_ratio_auc": dele * 1.5,
            "deletion_curve": (1 - x["deletion_curve"]) ** (1 / np.maximum(dele, 1e-3))[:, None],
            "pointing_game_hit": (rng.random(n) < 0.6).astype(np.float64),
        }
        self.values: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for col in cfg.value_columns():
            if col in metric_values:
                self.values[col] = (metric_values[col], None)
                continue
            owners = [i for i, m in enumerate(labels)
                      if col in methods.get(name_of[m]).info_columns]
            if not owners:
                raise ValueError(f"the generator has no values for column {col!r}; "
                                 f"it knows {sorted(metric_values)} and methods' diagnostics")
            self.values[col] = (rng.random(n), np.isin(self.method_i, owners))

    def table(self, cfg: RunConfig, run_id: str) -> pa.Table:
        """The shard as the writer stores it: an Arrow table in ``samples_schema(cfg)``."""
        from salbench.results import tables

        schema = tables.samples_schema(cfg)
        n = self.n
        strings = {
            "run_id": pa.array([run_id]).take(np.zeros(n, np.int64)),
            "sample_id": pa.array(self.sample_ids).take(self.image_i),
            "sample_key": _hex16(self.sample_keys).take(self.image_i),
            "cell_key": _hex16(self.cell_keys),
            "model": pa.array(self.models).take(self.model_i),
            "method": pa.array(self.methods).take(self.method_i),
            "status": pa.array(["ok"]).take(np.zeros(n, np.int64)),
            "error": pa.array([""]).take(np.zeros(n, np.int64)),
        }
        arrays = []
        for f in schema:
            if f.name in strings:
                arrays.append(strings[f.name])
            elif f.name in self.base:
                arrays.append(pa.array(self.base[f.name], type=f.type))
            elif pa.types.is_list(f.type):
                curves = self.values[f.name][0]
                flat = pa.array(curves.ravel(), type=f.type.value_type)
                k = curves.shape[1]
                offsets = pa.array(np.arange(0, k * (n + 1), k, dtype=np.int32))
                arrays.append(pa.ListArray.from_arrays(offsets, flat, type=f.type))
            else:
                v, present = self.values[f.name]
                mask = None if present is None else ~present
                arrays.append(pa.array(v, type=f.type, mask=mask))
        return pa.Table.from_arrays(arrays, schema=schema)

    def rows(self) -> list[dict[str, Any]]:
        """The same rows as the stages hand them to the writer (JSON ``values``)."""
        out = []
        keys = (_hex16(self.sample_keys).to_pylist(), _hex16(self.cell_keys).to_pylist())
        for i in range(self.n):
            values = {}
            for col, (v, present) in self.values.items():
                if present is None or present[i]:
                    values[col] = v[i].tolist()
            out.append({
                "shard": int(self.base["shard"][i]), "index": int(self.base["index"][i]),
                "sample_id": self.sample_ids[self.image_i[i]],
                "sample_key": keys[0][self.image_i[i]],
                "cell_key": keys[1][i], "model": self.models[self.model_i[i]],
                "method": self.methods[self.method_i[i]], "status": "ok", "error": "",
                "label": int(self.base["label"][i]), "target": int(self.base["target"][i]),
                "pred": int(self.base["pred"][i]),
                "target_prob": float(self.base["target_prob"][i]),
                "values": json.dumps(values), "seconds": 0.0,
            })
        return out


def generate(shape: Shape, rows: int, out: Path, seed: int = 0, shift: float = 0.0,
             via_rows: bool = False, summary_in_memory: bool | None = None) -> dict[str, Any]:
    """Write a finished run directory of ``rows`` rows at ``out`` (which must not exist or
    be empty); returns what it took: rows, shards, write_s (the shards), rows_per_s,
    summary_s (the run's summary) and bytes on disk.

    ``rows`` must be a multiple of ``shape.groups``. ``shift`` is added to the insertion
    AUCs (a run B for compare, with a change to find). ``via_rows``: through the
    ShardWriter's row path (slow; see the module docstring). The summary is the pipeline's
    ``summarize_dataset``, as a run computes it, either over the shard files (a scan of the
    whole run per model x method: minutes for 100 groups of 5 M rows) or, with
    ``summary_in_memory`` (default: above :data:`SUMMARY_IN_MEMORY_ABOVE` rows), over the
    same rows' scalar columns kept in memory as they are written (the same figures; ~150
    bytes a row).
    """
    from salbench.config import parse_config
    from salbench.pipeline import manifest as mf
    from salbench.pipeline.run import plan_shards
    from salbench.pipeline.writer import ShardFormat, ShardWriter
    from salbench.results import tables

    if rows <= 0 or rows % shape.groups:
        raise ValueError(f"rows must be a positive multiple of {shape.groups} "
                         f"({len(shape.models)} models x {len(shape.methods)} methods), "
                         f"got {rows}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    images = rows // shape.groups
    cfg = parse_config(config(shape, images))
    run_id = out.name
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    shards = plan_shards(images, shape.shard_size)
    writer = ShardWriter(ShardFormat.of(cfg), out, run_id, shards) if via_rows else None
    if summary_in_memory is None:
        summary_in_memory = rows > SUMMARY_IN_MEMORY_ABOVE
    kept: list[pa.Table] = []
    t0 = time.perf_counter()
    for s in shards:
        part = _Shard(cfg, s["shard"], s["start"], s["stop"], seed, shift)
        if writer is not None:
            writer.add(part.rows())
        else:
            table = part.table(cfg, run_id)
            tables.write_shard(out, s["shard"], table)
            if summary_in_memory:
                kept.append(_scalars(table))
    write_s = time.perf_counter() - t0
    if summary_in_memory and writer is not None:
        kept = [_scalars(pq.read_table(f)) for f in sorted((out / "samples").glob("*.parquet"))]
    t1 = time.perf_counter()
    counts = _summarize(out, cfg, pa.concat_tables(kept) if summary_in_memory else None)
    del kept
    summary_s = time.perf_counter() - t1
    took = {"rows": rows, "images": images, "shards": len(shards), "write_s": write_s,
            "rows_per_s": rows / write_s, "summary_s": summary_s,
            "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}
    mf.write_manifest(out, {
        "run_id": run_id, "status": "complete", "config": cfg.to_dict(),
        "config_hash": cfg.hash(), "packages": mf.package_versions(),
        "dataset": {"spec": cfg.dataset, "rows": images, "fingerprint": f"generated-{seed}"},
        "seed": cfg.seed, "shards": len(shards), "counts": counts, "timings": {},
        "generator": {"models": list(shape.models), "methods": list(shape.methods),
                      "shard_size": shape.shard_size, "seed": seed, "shift": shift,
                      "via_rows": via_rows, **took},
    })
    return took


def _scalars(table: pa.Table) -> pa.Table:
    """The columns a summary can read: all but the curves and the per-row id strings."""
    return table.select([f.name for f in table.schema if f.name not in _NOT_SUMMARISED
                         and not pa.types.is_list(f.type)])


def _summarize(run_dir: Path, cfg: RunConfig, rows: pa.Table | None) -> dict[str, int]:
    """Write ``summary.parquet`` as a run does (``pipeline.run``), from the shard files or
    from ``rows`` (their scalar columns); the manifest's counts."""
    from salbench.results.summary import run_counts
    from salbench.results.tables import write_table

    try:
        from salbench.results.scan import Shards
        from salbench.results.summary import summarize_run
    except ImportError:  # before the streaming summary (for before / after figures)
        import pyarrow.dataset as ds

        from salbench.results.summary import run_dataset, summarize_dataset

        summary, counts = summarize_dataset(
            run_dataset(run_dir) if rows is None else ds.dataset(rows), cfg)
    else:
        summary, counts = summarize_run(
            Shards.of_run(run_dir) if rows is None else Shards(table=rows), cfg)
    write_table(summary, run_dir / "summary.parquet")
    return run_counts(counts)


def generated(run_dir: Path) -> dict[str, Any] | None:
    """The generator's record of a finished generated run at ``run_dir`` (its parameters and
    what generating took), or None when there is none."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("status") != "complete":
        return None
    return manifest.get("generator")
