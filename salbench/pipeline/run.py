"""Run orchestration: plan shards, start or join Ray, stream the graph, write tables (SPEC 6).

Output under ``<out>/<run_id>/``: ``samples/shard-*.parquet`` (+ ``_done/`` markers),
``summary.parquet``, ``manifest.json``, ``config.yaml`` and ``run.log``. ``out`` may be a
local directory or a URI (``s3://bucket/runs``; :mod:`salbench.storage`): the driver writes
every file whole under its final name. With a URI, ``run.log`` is kept in a temporary local
file during the run (outside the working directory) and uploaded when the run ends or fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import pyarrow.parquet as pq
import yaml

from salbench import heartbeat, keys, models, storage
from salbench.config import RunConfig, parse_config
from salbench.datasets import open_dataset
from salbench.errors import ConfigError
from salbench.pipeline import interrupt
from salbench.pipeline import manifest as mf
from salbench.pipeline.plan import numerics_record
from salbench.pipeline.progress import ShardProgress
from salbench.pipeline.writer import ShardFormat, ShardWriter
from salbench.results import tables
from salbench.results.rankings import rankings_table
from salbench.results.reuse import PreviousRun
from salbench.results.scan import Shards
from salbench.results.summary import run_counts, summarize_run

log = logging.getLogger("salbench")


@dataclass
class RunResult:
    """Where a run wrote its tables, and its summary. The per-sample rows stay in the run's
    Parquet shards: ``samples`` reads them all when asked (small runs), ``scan`` streams
    them in record batches (any size)."""

    run_dir: Path | str
    summary: pd.DataFrame

    @property
    def samples(self) -> pd.DataFrame:
        """Every row of the run, sorted by (index, model, method): read now, held by the
        caller (for large runs use :meth:`scan`)."""
        return tables.read_samples(self.run_dir)

    def scan(self, columns: list[str] | None = None,
             batch_rows: int = 65536) -> Iterator[pd.DataFrame]:
        """The run's rows as DataFrames of at most ``batch_rows`` rows, one batch in memory
        at a time (shard order, not sorted); ``columns``: only these."""
        yield from Shards.of_run(self.run_dir).frames(columns, batch_rows)


def plan_shards(n: int, shard_size: int) -> list[dict[str, int]]:
    """Split rows 0..n-1 into consecutive shards of ``shard_size`` rows."""
    return [
        {"shard": i, "start": start, "stop": min(n, start + shard_size)}
        for i, start in enumerate(range(0, n, shard_size))
    ]


def new_run_dir(config: RunConfig, today: dt.date | None = None) -> Path | str:
    """``<out>/<name>-<YYYYMMDD>-<config hash>``; a suffix -2, -3, ... if that exists.

    A ``Path`` for a local ``out``, a URI ``str`` for a URI (on an object store a run
    directory exists once any object is under it).
    """
    day = (today or dt.date.today()).strftime("%Y%m%d")
    name = f"{config.name}-{day}-{config.hash()}"
    path, k = storage.join(config.out, name), 1
    while storage.exists(path):
        k += 1
        path = storage.join(config.out, f"{name}-{k}")
    return path


def ensure_ray(address: str | None) -> None:
    """Join the Ray cluster at ``address`` ("auto" = a local ``ray start``), or start one.

    Without an address: inside a Ray job (``ray job submit``, which sets ``RAY_ADDRESS``)
    the job's cluster is joined; otherwise a new local Ray is always started
    (``address="local"``): a cluster left behind by an earlier ``ray start`` is joined only
    when asked for, and a stale one can never make the run hang.
    """
    import ray

    if ray.is_initialized():
        return
    ctx_args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    try:
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", **ctx_args)
        interrupt.checkpoint("ray_init")  # a signal while Ray's own handlers are in place
    except BaseException as exc:
        raise (interrupt.interrupted(exc) or exc) from None
    finally:  # ray.init replaced the SIGTERM handler (interrupt's module docstring)
        interrupt.reinstall()


def _configure_ray_data(progress: bool) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.enable_operator_progress_bars = progress
    detector = getattr(getattr(ctx, "issue_detectors_config", None),
                       "high_memory_detector_config", None)
    if hasattr(ctx, "execution_no_progress_timeout_s"):
        # Ray Data ends a dataset whose blocks have not moved for 30 min; a model stage's
        # block is a whole shard, which with many methods on a CPU can take longer (the
        # demo's first shard on a loaded 2-core machine). Placement is checked up front,
        # and the cells counter shows whether work moves.
        ctx.execution_no_progress_timeout_s = -1
    if detector is not None and not progress:
        # a 13-line warning every 30 s that a model actor uses more memory than Ray's
        # default estimate: true and expected (a model plus its methods' batches); shown
        # with --verbose only
        detector.detection_time_interval_s = -1


def _file_logger(run_dir: Path | str) -> logging.FileHandler:
    """A handler appending to ``run_dir/run.log``; for a URI run, to a temporary local file
    that :func:`_close_logger` uploads (object stores cannot append)."""
    if storage.is_uri(run_dir):
        fd, target = tempfile.mkstemp(prefix="salbench-run-", suffix=".log")
        os.close(fd)
    else:
        target = str(storage.join(run_dir, "run.log"))
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


def _load_models(config: RunConfig) -> tuple[list[tuple[tuple[int, int], float]],
                                              dict[str, str]]:
    """Load every model once (fails fast on missing weights): per model (input_size,
    crop_fraction), and model label -> model key."""
    geometries, model_keys = [], {}
    for i, comp in enumerate(config.models):
        m = models.load(comp.name, weights=comp.params.get("weights"))
        geometries.append((m.input_size, m.crop_fraction))
        model_keys[comp.label] = keys.model_key(comp.name, m, m.input_size, m.crop_fraction,
                                                config.model_numerics(i))
    return geometries, model_keys


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _close_logger(handler: logging.FileHandler, run_dir: Path | str) -> None:
    """Detach the run's log handler; for a URI run, upload the earlier log plus this one."""
    log.removeHandler(handler)
    handler.close()
    if not storage.is_uri(run_dir):
        return
    local = Path(handler.baseFilename)
    try:
        remote = storage.join(run_dir, "run.log")
        earlier = storage.read_bytes(remote) if storage.is_file(remote) else b""
        storage.write_bytes(remote, earlier + local.read_bytes())
    except OSError as exc:  # the run's tables are written; a lost log must not fail it
        log.warning("cannot upload run.log to %s: %s (kept at %s)", run_dir, exc, local)
        return
    local.unlink(missing_ok=True)


def run(
    config: RunConfig,
    *,
    run_dir: Path | None = None,
    progress: TextIO | None = sys.stderr,
    ray_progress_bars: bool = False,
    reuse: str | Path | None = None,
    in_process: bool = False,
) -> RunResult:
    """Run ``config`` (or finish the unfinished shards of ``run_dir``) and write the tables.

    Everything that can be checked is checked before the run directory is created: the
    config, the dataset (it opens and has rows), the models' weights, the ``reuse`` run,
    and (with Ray) that the cluster is reachable. A run that fails after that gets
    ``status: failed`` and the reason (``error``) in its manifest.

    Resuming (``run_dir`` given): with every shard finished and the run complete, nothing
    is written (a message says so). Otherwise the missing shards are computed; the manifest
    keeps the first ``started``, adds this attempt to ``attempts`` and merges the timings.

    Progress on ``progress`` (None: none): live cells (sample x model x method) done, rate
    and ETA (a bar on a terminal, a line every 15 s otherwise), and a line per written
    shard. ``ray_progress_bars``: also Ray Data's per-operator bars.
    reuse: an earlier run's directory; cells whose key (sample content, model weights,
    method and metric parameters and code) it already has are copied, not recomputed.
    in_process: run the graph's stages in this process without Ray
    (:mod:`salbench.pipeline.local`); the tables are the same.

    SIGTERM / SIGINT (in the main thread) stop the run with RunInterrupted after marking
    its manifest failed (:mod:`salbench.pipeline.interrupt`). While it runs, the driver
    keeps a heartbeat in the run directory (:mod:`salbench.heartbeat`); resuming a
    run that another live driver holds raises LiveRunError, one whose driver is gone is
    taken over.
    """
    with interrupt.handling():
        return _run(config, run_dir, progress, ray_progress_bars, reuse, in_process)


def _run(config: RunConfig, run_dir: Path | None, progress: TextIO | None,
         ray_progress_bars: bool, reuse: str | Path | None, in_process: bool) -> RunResult:
    t_start, started = time.time(), _now()
    dataset = open_dataset(config.dataset)
    shards = plan_shards(len(dataset), config.resources.shard_size)
    if not shards:
        raise ConfigError(f"dataset {config.dataset} has no rows")
    geometries, model_keys = _load_models(config)
    previous = PreviousRun(reuse) if reuse is not None else None
    interrupt.checkpoint("checks")
    fresh = run_dir is None
    run_dir = storage.normalize(run_dir) if run_dir is not None else new_run_dir(config)
    # resuming: take the run over (a live driver's is refused) before anything else
    before = heartbeat.read(run_dir) if not fresh else None
    beat = heartbeat.Heartbeat(run_dir).claim() if not fresh else None
    if before is not None and progress is not None:  # claim() refused a live one
        print(f"[salbench] taking over {storage.display(run_dir)}: its driver stopped "
              f"({before.describe()})", file=progress, flush=True)
    old = mf.read_manifest(run_dir) if not fresh else {}
    try:
        done = tables.finished_shards(run_dir) if not fresh else set()
        pending = [s for s in shards if s["shard"] not in done]
        summary_path = storage.join(run_dir, "summary.parquet")
        if not pending and old.get("status") == "complete" and storage.is_file(summary_path):
            if progress is not None:
                print(f"[salbench] {storage.display(run_dir)} is complete: all {len(shards)} "
                      "shards finished; nothing to resume, nothing written", file=progress,
                      flush=True)
            with storage.open_input_file(summary_path) as fh:
                result = RunResult(run_dir, pq.read_table(fh).to_pandas())
            if beat is not None:
                _stop_quietly(beat)
            return result
        plan = None  # the Ray graph's placement plan (None: in process)
        if pending and not in_process:
            import ray

            from salbench.pipeline.graph import largest_node_cpus
            from salbench.pipeline.plan import make_plan

            ensure_ray(config.resources.address)
            # a run that cannot fit stops here
            plan = make_plan(config, ray.cluster_resources(), largest_node_cpus())
    except BaseException as exc:
        if beat is not None:  # a resumed run records why this attempt stopped
            handler = _file_logger(run_dir)
            try:
                _mark_failed(run_dir, old, exc)
            finally:
                _stop_quietly(beat)
                _close_logger(handler, run_dir)
        raise
    run_id = storage.basename(run_dir)
    storage.makedirs(storage.join(run_dir, "samples"))
    handler = _file_logger(run_dir)
    manifest: dict[str, Any] = {}
    try:
        if beat is None:
            beat = heartbeat.Heartbeat(run_dir).claim()
        if fresh:
            storage.write_text(storage.join(run_dir, "config.yaml"),
                               yaml.safe_dump(config.to_dict(), sort_keys=False))
        if previous is not None:
            log.info("reusing up to %d cells of %s", len(previous), previous.run_dir)
        manifest = {
            "run_id": run_id, "status": "running", "config": config.to_dict(),
            "config_hash": config.hash(), "packages": mf.package_versions(),
            **mf.provenance(), "host": mf.host_info(),
            "dataset": {"spec": config.dataset, "rows": len(dataset),
                        "fingerprint": dataset.fingerprint()},
            "seed": config.seed, "shards": len(shards),
            "numerics": numerics_record(config, plan),
            "keys": {"models": model_keys, "metrics": keys.metrics_key(config),
                     "methods": {c.label: keys.method_key(config, c) for c in config.methods}},
            "reuse_from": str(previous.run_dir) if previous is not None else None,
            "started": old.get("started", started), "attempts": mf.attempts(old),
            "driver": beat.record(),
        }
        mf.write_manifest(run_dir, manifest)
        log.info("run %s: %d shards, %d pending", run_id, len(shards), len(pending))
        fmt = ShardFormat.of(config)
        shard_progress = ShardProgress(progress, pending, fmt.cells_per_image)
        total_cells = shard_progress.total_cells
        if progress is not None and pending:
            print(f"[salbench] {run_dir}: {len(pending)} of {len(shards)} shards to compute, "
                  f"{total_cells} cells (sample x model x method); starting the "
                  "model actors", file=progress, flush=True)
        reused = 0
        if not pending:
            timings: dict[str, Any] = {}
        elif in_process:
            from salbench.pipeline.local import execute_local

            writer = ShardWriter(fmt, run_dir, run_id, pending, previous,
                                 announce=shard_progress.shard_written)
            timings = execute_local(config, writer, shard_progress, pending, geometries,
                                    previous)
            reused = writer.reused
        else:
            timings, reused = _execute(config, fmt, run_dir, run_id, shard_progress, pending,
                                       geometries, ray_progress_bars, previous)
        interrupt.checkpoint("summary")
        summary, counts = summarize_run(Shards.of_run(run_dir), config)
        tables.write_table(summary, storage.join(run_dir, "summary.parquet"))
        tables.write_table(rankings_table(summary), storage.join(run_dir, "rankings.parquet"))
        finished = _now()
        manifest["attempts"].append({
            "started": started, "finished": finished,
            "wall_seconds": round(time.time() - t_start, 3), "shards_run": len(pending),
            "cells_reused": reused, "timings": timings,
        })
        manifest.update(
            status="complete", finished=finished, timings=mf.merge_timings(manifest["attempts"]),
            wall_seconds=round(sum(a["wall_seconds"] for a in manifest["attempts"]), 3),
            counts={**run_counts(counts), "shards_run_now": len(pending),
                    "cells_reused_now": reused},
        )
        if previous is not None and progress is not None:
            print(f"[salbench] reused {reused} of {total_cells} cells from "
                  f"{previous.run_dir}; computed {total_cells - reused}",
                  file=progress, flush=True)
        mf.write_manifest(run_dir, manifest)
        return RunResult(run_dir, summary)
    except BaseException as exc:
        _mark_failed(run_dir, manifest or {"run_id": run_id, "config": config.to_dict()}, exc)
        with contextlib.suppress(AttributeError):  # for the CLI: where Ray's output goes
            exc.salbench_run_dir = run_dir  # type: ignore[attr-defined]
        raise
    finally:
        if beat is not None:
            _stop_quietly(beat)
        _close_logger(handler, run_dir)


def _stop_quietly(beat: heartbeat.Heartbeat) -> None:
    """End the heartbeat; a store that fails now only leaves a beat that goes stale."""
    try:
        beat.stop()
    except OSError as exc:
        log.warning("cannot remove the heartbeat of %s: %s", beat.run_dir, exc)


def _mark_failed(run_dir: Path | str, manifest: dict[str, Any], exc: BaseException) -> None:
    """Record in the manifest that the run failed, and why (the resume command included)."""
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    signalled = interrupt.interrupted(exc)
    if signalled is not None:  # SIGTERM, Ctrl-C
        reason = f"{signalled}; the finished shards are kept"
    elif isinstance(exc, SystemExit):
        reason = f"interrupted ({reason}); the finished shards are kept"
    log.error("run failed: %s", reason)
    manifest.update(status="failed", error=reason, failed_at=_now(),
                    resume=f"salbench resume {run_dir}")
    try:
        mf.write_manifest(run_dir, manifest)
    except OSError as write_exc:  # the original error matters more; say both in run.log
        log.error("could not mark the manifest failed: %s", write_exc)


def _execute(
    config: RunConfig,
    fmt: ShardFormat,
    run_dir: Path | str,
    run_id: str,
    progress: ShardProgress,
    pending: list[dict[str, int]],
    geometries: list[tuple[tuple[int, int], float]],
    ray_progress_bars: bool,
    previous: PreviousRun | None,
) -> tuple[dict[str, Any], int]:
    """The Ray graph's run of the ``pending`` shards: the writer actor writes them, the
    driver only announces them on ``progress``. Returns the timings and the cells reused."""
    import ray

    from salbench.actors.journal import start_journal
    from salbench.actors.progress import start_counter
    from salbench.pipeline.graph import build_graph
    from salbench.pipeline.writer_actor import (
        remote_call,
        start_writer,
        stop_writer,
        write_dataset,
    )

    ensure_ray(config.resources.address)
    _configure_ray_data(ray_progress_bars)
    reuse_ref = ray.put(previous.cell_keys()) if previous is not None else None
    journal = start_journal(run_id)
    counter = start_counter(run_id) if progress.stream is not None else None
    remote = start_writer(fmt, run_dir, run_id, pending, previous)
    interrupt.checkpoint("actor_pools")
    windows: list[dict[str, dict[str, float]]] = []
    try:  # the plan in build_graph may stop the run (ConfigError): the actors go too
        for items in run_windows(pending, config.resources.window_images):
            ds = build_graph(config, items, geometries, reuse=reuse_ref, journal=journal,
                             progress=counter)
            if counter is not None and progress.monitor is None:
                progress.start(lambda: ray.get(counter.snapshot.remote(), timeout=10))
            write_dataset(ds, remote, progress)
            windows.append(stage_stats(ds))
            del ds  # Ray Data's bookkeeping of the window's blocks goes with it
        timings, reused = remote_call(remote.finish.remote())
    finally:
        progress.stop()
        stop_writer(remote)
        for actor in (journal, counter):
            if actor is not None:
                ray.kill(actor)
    return {**timings, "stages": merge_stage_stats(windows)}, reused


def run_windows(pending: list[dict[str, int]],
                window_images: int | None) -> Iterator[list[dict[str, int]]]:
    """The pending shards in consecutive windows of at most ``window_images`` images (at
    least one shard each); all in one when ``window_images`` is None. Each window is one
    Ray Data execution: the driver's per-block bookkeeping (some KB a block, kept while a
    dataset lives) is then bounded by the window, not the run (BENCHMARKS.md, "Driver
    memory at scale")."""
    if window_images is None:
        yield pending
        return
    window: list[dict[str, int]] = []
    images = 0
    for item in pending:
        size = item["stop"] - item["start"]
        if window and images + size > window_images:
            yield window
            window, images = [], 0
        window.append(item)
        images += size
    if window:
        yield window


def merge_stage_stats(windows: list[dict[str, dict[str, float]]]
                      ) -> dict[str, dict[str, float]]:
    """One run's stage statistics from its windows' (:func:`stage_stats`): work, rows and
    bytes summed; start / end the earliest / latest, in seconds after the first operator
    started."""
    out: dict[str, dict[str, float]] = {}
    for stats in windows:
        for op, entry in stats.items():
            acc = out.setdefault(op, {})
            for key, value in entry.items():
                pick = {"start_s": min, "end_s": max}.get(key)
                acc[key] = value if key not in acc else (
                    pick(acc[key], value) if pick else acc[key] + value)
    starts = [e["start_s"] for e in out.values() if "start_s" in e]
    origin = min(starts) if starts else 0.0
    for entry in out.values():
        for key in ("start_s", "end_s"):
            if key in entry:
                entry[key] = entry[key] - origin
        for key, value in entry.items():
            entry[key] = round(value, 4) if isinstance(value, float) else value
    return out


def stage_stats(ds: Any) -> dict[str, dict[str, float]]:
    """Per Ray Data operator: ``time_total_s`` (seconds of work), ``start_s`` / ``end_s``
    (its first start and last end, Ray's clock readings; :func:`merge_stage_stats` makes
    them relative), ``rows`` and ``bytes`` it produced (from Ray's stats).

    Ray's stats API is internal and changes between releases; anything it does not provide
    is left out rather than guessed.
    """
    out: dict[str, dict[str, float]] = {}
    try:
        summary = ds.get_stats_summary()
        ops = _flatten(summary)
    except Exception as exc:  # stats are diagnostics; never fail a finished run for them
        log.info("Ray Data stats unavailable: %s", exc)
        return out
    for op in ops:
        entry: dict[str, float] = {}
        if isinstance(getattr(op, "time_total_s", None), (int, float)):
            entry["time_total_s"] = round(float(op.time_total_s), 4)
        for key, name in (("earliest_start_time", "start_s"), ("latest_end_time", "end_s")):
            if isinstance(getattr(op, key, None), (int, float)):
                entry[name] = float(getattr(op, key))
        rows = getattr(getattr(op, "output_num_rows", None), "sum", None)
        size = getattr(getattr(op, "output_size_bytes", None), "sum", None)
        if rows is not None:
            entry["rows"] = int(rows)
        if size is not None:
            entry["bytes"] = int(size)
        out[str(getattr(op, "operator_name", "op"))] = entry
    return out


def _flatten(summary: Any) -> list[Any]:
    ops = list(getattr(summary, "operators_stats", []))
    for parent in getattr(summary, "parents", []):
        ops = _flatten(parent) + ops
    return ops


def resume(run_dir: str | Path, **kwargs: Any) -> RunResult:
    """Finish a run from its directory (a path or a URI): reads the config from the manifest,
    skips done shards."""
    run_dir = storage.normalize(run_dir)
    if not storage.is_file(storage.join(run_dir, "manifest.json")):
        raise ConfigError(f"{run_dir} is not a salbench run directory (no manifest.json)")
    manifest = mf.read_manifest(run_dir)
    config = parse_config(manifest["config"])
    if manifest.get("reuse_from") and "reuse" not in kwargs:
        kwargs["reuse"] = manifest["reuse_from"]
    return run(config, run_dir=run_dir, **kwargs)
