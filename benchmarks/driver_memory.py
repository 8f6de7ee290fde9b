"""Case 7: driver memory at scale: the peak RSS of the summary, ``salbench report`` and
``salbench compare`` on generated run tables of any size, and of a real ``salbench run``
(SPEC 6, "Scale"; issue 20; BENCHMARKS.md "Driver memory at scale").

Every figure comes from a fresh Python process that first imports what the operation needs
(torch's ~0.7 GB of libraries would otherwise dominate), then resets the kernel's peak-RSS
mark (VmHWM, via ``/proc/self/clear_refs``), runs the operation once and reports the mark's
growth over the resident set it started from: the operation's own peak. With the Ray
executor that is the driver's alone: the read, model and CPU-stage workers are other
processes, not counted.

Tables (:mod:`benchmarks.result_tables`, written the way the pipeline writes them): the
2-method shape (tiny_cnn, vg + gxi; insertion, deletion with 21-point curves, pointing game;
16 images per shard) and the production shape (5 models x 20 methods, 100 groups; 5 M rows
are 50,000 images in 3,125 shards). Run B of each size (insertion AUCs shifted) is what
compare compares run A with.

    python -m benchmarks driver_memory --data-dir /tmp/mem          # the whole case
    python -m benchmarks.driver_memory generate --rows 40000 --out /tmp/mem/two-40000-a
    python -m benchmarks.driver_memory generate --shape production --rows 5000000 --out DIR
    python -m benchmarks.driver_memory measure DIR [DIR_B] --what summary|report|compare
    python -m benchmarks.driver_memory run --rows 4000 --executor ray --out /tmp/mem/runs
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import result_tables as rt
from benchmarks.common import ROOT, Settings

#: Sizes of the 2-method tables, of the production table, and of the real runs (rows).
TABLE_ROWS = (4_000, 40_000, 160_000)
PRODUCTION_ROWS = 5_000_000
RUN_ROWS = (4_000, 40_000)
QUICK_TABLE_ROWS, QUICK_PRODUCTION_ROWS, QUICK_RUN_ROWS = (40,), 100, (40,)
OPERATIONS = ("summary", "report", "compare")
EXECUTORS = ("in_process", "ray")
#: Seconds one measured operation may take before it is recorded as timed out.
TIMEOUT_S = 3600
#: run B's insertion AUCs are this much higher (compare finds a change)
SHIFT_B = 0.05


def _status(key: str, pid: int | str = "self") -> int:
    """A field of /proc/<pid>/status in KB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/{pid}/status")


def _peak(op: Callable[[], Any]) -> dict[str, float]:
    """Run ``op`` once with the peak-RSS mark reset just before it: {rss_before_mb,
    peak_growth_mb (the mark's growth over the resident set before), peak_mb (the whole
    process's mark), seconds, private_growth_mb / shared_growth_mb}. The last two split
    the resident set, sampled every 20 ms: private (anonymous) memory's peak growth, and
    that of shared memory mapped into the process (Ray's object store, whose pages a Ray
    driver that reads a block maps; they are the store's, counted once per node)."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    parts = {k: _status(k) for k in ("RssAnon", "RssShmem")}
    peaks, done = dict(parts), threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            for k in peaks:
                peaks[k] = max(peaks[k], _status(k))

    sampler = threading.Thread(target=sample, daemon=True)
    print(json.dumps({"rss_before_mb": round(before / 1024, 1)}), flush=True)  # see _subprocess
    t0 = time.perf_counter()
    sampler.start()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            op()
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - t0
    hwm = _status("VmHWM")
    return {"rss_before_mb": round(before / 1024, 1),
            "peak_growth_mb": round((hwm - before) / 1024, 1),
            "peak_mb": round(hwm / 1024, 1), "seconds": round(wall, 2),
            "private_growth_mb": round((peaks["RssAnon"] - parts["RssAnon"]) / 1024, 1),
            "shared_growth_mb": round((peaks["RssShmem"] - parts["RssShmem"]) / 1024, 1)}


def _writer_actor_peak(done: threading.Event, out: dict[str, float]) -> None:
    """Until ``done``: the peak resident set (VmHWM, MB) of the run's writer actor process
    (``ray::WriterActor``, the Ray graph's ShardWriter), read every 0.5 s into
    ``out["writer_actor_peak_mb"]``: its whole life's peak, imports included."""
    while not done.wait(0.5):
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError, RuntimeError):
                if (proc / "cmdline").read_bytes().startswith(b"ray::WriterActor"):
                    mb = round(_status("VmHWM", proc.name) / 1024, 1)
                    out["writer_actor_peak_mb"] = max(out.get("writer_actor_peak_mb", 0), mb)


def _driver_allocator() -> None:
    """Arrow's memory pool as the CLI's driver sets it (``salbench.cli.main``), for the
    operations measured without the CLI; nothing in versions before that setting."""
    for module in ("salbench.memory", "salbench.pipeline.memory", "salbench.pipeline.scan"):
        with contextlib.suppress(ImportError, AttributeError):
            __import__(module, fromlist=["_"]).use_system_allocator()
            return


def _operation(what: str, run_a: Path, run_b: Path | None) -> Callable[[], Any]:
    """The measured call, with every import done beforehand. Works with the salbench
    versions before the streaming summary (``summarize_dataset`` over a pyarrow dataset)
    and before the out-of-core one (``read_samples`` + ``summarize``) too, so that this
    harness gives before / after figures (and before the results layer: ``salbench.results``
    was ``salbench.pipeline``)."""
    from salbench import cli
    from salbench.pipeline import manifest as mf

    parse_config = _first("salbench.config:parse_config", "salbench.pipeline:parse_config")
    cfg = parse_config(mf.read_manifest(run_a)["config"])
    if what == "summary":
        _driver_allocator()
        shards = _first("salbench.results.scan:Shards", "salbench.pipeline.scan:Shards")
        if shards is not None:
            summarize_run = _first("salbench.results.summary:summarize_run",
                                   "salbench.pipeline.summary:summarize_run")
            return lambda: summarize_run(shards.of_run(run_a), cfg)
        summarize_dataset = _first("salbench.pipeline.summary:summarize_dataset")
        if summarize_dataset is not None:
            run_dataset = _first("salbench.pipeline.summary:run_dataset")
            return lambda: summarize_dataset(run_dataset(run_a), cfg)
        tables = _first("salbench.pipeline:tables")
        return lambda: tables.summarize(tables.read_samples(run_a), cfg)
    if what == "report":
        import salbench.report  # noqa: F401
        return lambda: cli.main(["report", str(run_a)])
    _first("salbench.results.compare:compare_runs", "salbench.pipeline.compare:compare_runs")
    return lambda: cli.main(["compare", str(run_a), str(run_b or run_a)])


def _first(*names: str) -> Any:
    """The first of the objects ``module:attribute`` that this salbench has (its own
    place first, then where earlier versions had it); None when it has none."""
    for name in names:
        module, _, attr = name.partition(":")
        with contextlib.suppress(ImportError, AttributeError):
            return getattr(importlib.import_module(module), attr)
    return None


def measure(run_a: Path, run_b: Path | None, what: str) -> dict[str, float]:
    """Peak RSS growth of one operation (``what``: summary | report | compare of ``run_a``,
    compare with ``run_b``) in this process (see :func:`_peak`); prints it as a JSON line."""
    out = _peak(_operation(what, run_a, run_b))
    print(json.dumps({"run": str(run_a), "what": what, **out}), flush=True)
    return out


def measure_run(rows: int, executor: str, out: Path,
                window_images: int | None = None) -> dict[str, float]:
    """Peak RSS growth of this process over a real run of ``rows`` rows (the 2-method shape
    on the synthetic dataset, ``rows / 2`` images) with ``executor`` (in_process | ray; Ray
    is started before the mark is reset, as a long-lived cluster would be) and
    ``resources.window_images``; prints it as a JSON line with rows/s over the run and,
    with Ray, the writer actor's peak resident set (``writer_actor_peak_mb``)."""
    from salbench.pipeline import local  # noqa: F401

    parse_config = _first("salbench.config:parse_config", "salbench.pipeline:parse_config")
    run = _first("salbench.pipeline.run:run")
    _first("salbench.results.summary:summarize_run", "salbench.pipeline.summary:summarize_run")

    if rows <= 0 or rows % rt.TWO_METHOD.groups:
        raise ValueError(f"rows must be a positive multiple of {rt.TWO_METHOD.groups}")
    raw = rt.config(rt.TWO_METHOD, rows // rt.TWO_METHOD.groups, name=f"mem-run-{executor}")
    if window_images is not None:
        raw["resources"] = {**raw.get("resources", {}), "window_images": window_images}
    cfg = parse_config({**raw, "out": str(out)})
    _driver_allocator()
    if executor == "ray":
        import ray
        import ray.data  # noqa: F401

        from salbench.pipeline import graph  # noqa: F401

        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    result: dict[str, Any] = {}
    writer: dict[str, float] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_writer_actor_peak, args=(done, writer), daemon=True)

    def go() -> None:
        result["run"] = run(cfg, progress=None, in_process=executor == "in_process")

    if executor == "ray":
        watcher.start()
    try:
        took = _peak(go)
    finally:
        done.set()
    took.update(writer)
    written = json.loads((result["run"].run_dir / "manifest.json").read_text())["counts"]
    took.update(rows=int(written["rows"]), rows_per_s=round(written["rows"] / took["seconds"], 1))
    print(json.dumps({"rows": rows, "executor": executor, "window_images": window_images,
                      **took}), flush=True)
    return took


def _subprocess(args: list[str], timeout: float) -> dict[str, Any]:
    """``python -m benchmarks.driver_memory ARGS`` in a fresh process: its last JSON line,
    or {"error": why} when it failed or timed out; a timed-out measurement also gets
    ``peak_growth_mb_at_timeout`` (its peak-RSS mark when stopped, over its start)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "benchmarks.driver_memory", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    hwm = None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError, RuntimeError):
            hwm = _status("VmHWM", proc.pid)
        proc.kill()
        out, err = proc.communicate()
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    if hwm is not None:
        rec: dict[str, Any] = {"error": f"timed out after {timeout:.0f} s",
                               "timeout_s": timeout}
        if lines and "rss_before_mb" in lines[0]:
            rec["peak_growth_mb_at_timeout"] = round(hwm / 1024 - lines[0]["rss_before_mb"], 1)
        return rec
    if proc.returncode != 0 or not lines:
        tail = (err or out).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return lines[-1]


def _log(record: dict[str, Any]) -> None:
    """One measurement as a JSON line on stderr as soon as it is taken (a long case that
    is stopped keeps its figures in its log)."""
    print(f"[driver_memory] {json.dumps(record)}", file=sys.stderr, flush=True)


def ensure_tables(shape: rt.Shape, name: str, rows: int,
                  data_dir: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Runs A and B of ``rows`` rows in ``shape`` under ``data_dir`` (``<name>-<rows>-a``,
    ``-b``), generated unless already there with the same parameters; returns their paths
    and the generator's record of run A (``reused``: whether this call found it)."""
    records = []
    paths = []
    for suffix, seed, shift in (("a", 0, 0.0), ("b", 1, SHIFT_B)):
        path = data_dir / f"{name}-{rows}-{suffix}"
        want = {"models": list(shape.models), "methods": list(shape.methods),
                "shard_size": shape.shard_size, "seed": seed, "shift": shift, "rows": rows}
        have = rt.generated(path)
        if have is not None and all(have.get(k) == v for k, v in want.items()):
            records.append({**have, "reused": True})
        else:
            if path.exists():
                shutil.rmtree(path)
            print(f"[driver_memory] generating {path} ({rows} rows)", file=sys.stderr,
                  flush=True)
            records.append({**rt.generate(shape, rows, path, seed=seed, shift=shift),
                            "reused": False})
            _log({"generated": path.name, **records[-1]})
        paths.append(path)
    return paths[0], paths[1], records[0]


def check_sizes(table_rows: tuple[int, ...], production: int,
                run_rows: tuple[int, ...]) -> None:
    """ValueError unless every size is >= 0 and a multiple of its shape's rows per image."""
    for rows, shape in [*((r, rt.TWO_METHOD) for r in (*table_rows, *run_rows)),
                        (production, rt.PRODUCTION)]:
        if rows < 0 or rows % shape.groups:
            raise ValueError(f"driver_memory: {rows} rows is not a multiple of "
                             f"{shape.groups} (models x methods of its shape)")


def run_case(s: Settings) -> dict[str, Any]:
    """Generate (or reuse, with ``s.data_dir``) the tables, then measure summary, report and
    compare on each and real runs with each executor, every one in a fresh process. Sizes:
    ``s.mem_rows``, ``s.production_rows``, ``s.run_rows`` (0: none), else the defaults
    (tiny ones with ``s.quick``)."""
    table_rows = s.mem_rows or (QUICK_TABLE_ROWS if s.quick else TABLE_ROWS)
    production = s.production_rows if s.production_rows is not None else (
        QUICK_PRODUCTION_ROWS if s.quick else PRODUCTION_ROWS)
    run_rows = s.run_rows or (QUICK_RUN_ROWS if s.quick else RUN_ROWS)
    timeout = s.mem_timeout_s or (600 if s.quick else TIMEOUT_S)
    check_sizes(table_rows, production, run_rows)
    temp = s.data_dir is None
    data_dir = Path(s.data_dir or tempfile.mkdtemp(prefix="salbench-memory-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    sizes = [("2-method", rt.TWO_METHOD, "two", r) for r in table_rows if r > 0]
    if production > 0:
        sizes.append(("production", rt.PRODUCTION, "production", production))
    tables = []
    try:
        for label, shape, name, rows in sizes:
            run_a, run_b, gen = ensure_tables(shape, name, rows, data_dir)
            entry: dict[str, Any] = {"shape": label, "rows": rows, "groups": shape.groups,
                                     "shards": gen["shards"], "generation": gen}
            for what in OPERATIONS:
                print(f"[driver_memory] {what} of {run_a.name}", file=sys.stderr, flush=True)
                extra = [str(run_b)] if what == "compare" else []
                entry[what] = _subprocess(["measure", str(run_a), *extra, "--what", what],
                                          timeout)
                _log({"table": run_a.name, "what": what, **entry[what]})
            tables.append(entry)
        runs = []
        for rows in (r for r in run_rows if r > 0):
            for executor in EXECUTORS:
                out = data_dir / "runs" / f"{executor}-{rows}"
                if out.exists():
                    shutil.rmtree(out)
                print(f"[driver_memory] salbench run, {rows} rows, {executor}",
                      file=sys.stderr, flush=True)
                runs.append({"rows": rows, "executor": executor, **_subprocess(
                    ["run", "--rows", str(rows), "--executor", executor, "--out", str(out)],
                    timeout)})
                _log(runs[-1])
    finally:
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
    return {"case": "driver_memory", "data_dir": None if temp else str(data_dir),
            "tables": tables, "runs": runs}


def _mb(r: dict[str, Any]) -> str:
    if "peak_growth_mb_at_timeout" in r:
        return f">= {r['peak_growth_mb_at_timeout']:.1f} MB (stopped)"
    return r["error"] if "error" in r else f"{r['peak_growth_mb']:.1f} MB"


def _s(r: dict[str, Any]) -> str:
    if "timeout_s" in r:
        return f"> {r['timeout_s']:.0f}"
    return "" if "error" in r else f"{r['seconds']:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The case's tables: generation, the operations' peak-RSS growth and seconds per
    table, and the real runs'."""
    lines = [
        "Peak-RSS growth of each operation over its process's resident set after the "
        "imports (fresh process each; Ray: the driver process only).",
        "",
        "| shape | rows | groups | shards | generated rows/s | summary | s | report | s | "
        "compare | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in result["tables"]:
        gen = t["generation"]
        lines.append(
            f"| {t['shape']} | {t['rows']:,} | {t['groups']} | {t['shards']:,} | "
            f"{gen['rows_per_s']:,.0f}{' (reused)' if gen['reused'] else ''} | "
            + " | ".join(f"{_mb(t[w])} | {_s(t[w])}" for w in OPERATIONS) + " |")
    lines += ["", "| salbench run, rows | executor | driver peak growth | of it private / "
              "shared | peak RSS | s | rows/s |", "|---:|---|---:|---:|---:|---:|---:|"]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['rows']:,} | {r['executor']} | {_mb(r)} | | | {_s(r)} | |")
        else:
            lines.append(f"| {r['rows']:,} | {r['executor']} | {r['peak_growth_mb']:.1f} MB | "
                         f"{r['private_growth_mb']:.1f} / {r['shared_growth_mb']:.1f} MB | "
                         f"{r['peak_mb']:.0f} MB | {r['seconds']:.1f} | "
                         f"{r['rows_per_s']:,.0f} |")
    return "\n".join(lines)


def _shape(a: argparse.Namespace) -> rt.Shape:
    base = rt.PRODUCTION if a.shape == "production" else rt.TWO_METHOD
    return rt.Shape(tuple(a.models.split(",")) if a.models else base.models,
                    tuple(a.methods.split(",")) if a.methods else base.methods,
                    a.shard_size or base.shard_size)


def main(argv: list[str] | None = None) -> int:
    """``generate``, ``measure`` or ``run`` (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.driver_memory")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="write a finished run of generated rows")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--shape", choices=["two-method", "production"], default="two-method")
    g.add_argument("--models", default=None, help="comma-separated (default: the shape's)")
    g.add_argument("--methods", default=None, help="comma-separated (default: the shape's)")
    g.add_argument("--shard-size", type=int, default=None, help="images per shard")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--shift", type=float, default=0.0)
    g.add_argument("--via-rows", action="store_true",
                   help="feed the ShardWriter stage rows (slow; the fast path writes the same)")
    m = sub.add_parser("measure", help="peak RSS of summary / report / compare of a run")
    m.add_argument("run_a", type=Path)
    m.add_argument("run_b", type=Path, nargs="?")
    m.add_argument("--what", choices=OPERATIONS, required=True)
    r = sub.add_parser("run", help="peak RSS of the driver over a real salbench run")
    r.add_argument("--rows", type=int, required=True)
    r.add_argument("--executor", choices=EXECUTORS, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--window-images", type=int, default=None,
                   help="resources.window_images (default: none, one Ray Data execution)")
    a = p.parse_args(argv)
    if a.cmd == "generate":
        took = rt.generate(_shape(a), a.rows, a.out, a.seed, a.shift, via_rows=a.via_rows)
        print(json.dumps({"run": str(a.out), **took}), flush=True)
    elif a.cmd == "measure":
        measure(a.run_a, a.run_b, a.what)
    else:
        measure_run(a.rows, a.executor, a.out, a.window_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
