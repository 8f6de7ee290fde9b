"""Case 6: machinery throughput at scale: the Ray graph vs the in-process executor.

The same ``salbench run`` of many cheap rows, once with the Ray graph (a local Ray already
started, as in a long run) and once with the in-process executor (``in_process=True``,
``salbench.evaluate(ray=False)``), interleaved: the synthetic dataset at 32 px, tiny_cnn,
vg + gxi and the CPU-stage metrics (pointing_game, concentration, wsol). The model work
per row is tiny, so the figures are the machinery's: reading, decoding, the actors' per-row
Python, moving blocks between stages, and the driver writing shards.

rows/s = output rows (sample x model x method) / the writer's execution seconds (first
row in to last shard written; the same clock for both executors). ratio = Ray rows/s /
in-process rows/s, target >= 0.8. Driver CPU share = this process's CPU time (user +
system) / wall over the run: how much of one core the driver itself needs (in-process it
does all the work, so about the cores' share it gets).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Settings, median
from salbench.config import parse_config
from salbench.pipeline.run import run

TARGET = 0.8
ROWS = 40_000
QUICK_ROWS = 200
METHODS = ["vg", "gxi"]
METRICS = ["pointing_game", "concentration", "wsol"]


def config(rows: int) -> dict[str, Any]:
    """The run config of ``rows`` output rows (rows / 2 images x 2 methods)."""
    return {
        "name": "bench-throughput", "seed": 0, "profile": "fast",
        "dataset": {"kind": "synthetic", "n": rows // len(METHODS), "size": 32, "seed": 0},
        "models": ["tiny_cnn"], "methods": METHODS, "metrics": METRICS,
        "resources": {"shard_size": 64, "batch_size": 64},
    }


def timed_run(cfg: dict[str, Any], out: Path, in_process: bool) -> dict[str, float]:
    """One run: rows, its execution and whole wall seconds, and the driver's CPU share."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = run(parse_config({**cfg, "out": str(out)}), progress=None, in_process=in_process)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    timings = json.loads((res.run_dir / "manifest.json").read_text())["timings"]
    execute = float(timings["execute_seconds"])
    rows = len(res.samples)
    return {"rows": rows, "execute_s": execute, "wall_s": wall, "rows_per_s": rows / execute,
            "driver_cpu_s": cpu, "driver_cpu_share": cpu / wall}  # rounded when shown


def run_case(s: Settings) -> dict[str, Any]:
    """Ray vs in-process rows/s at ``s.rows`` rows (``--rows``), ``s.reps`` interleaved
    pairs (medians)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    rows = QUICK_ROWS if s.quick else (s.rows or ROWS)
    cfg = config(rows)
    out = Path(tempfile.mkdtemp(prefix="salbench-throughput-"))
    runs: dict[str, list[dict[str, float]]] = {"ray": [], "in_process": []}
    for _ in range(s.reps):
        runs["in_process"].append(timed_run(cfg, out, in_process=True))
        runs["ray"].append(timed_run(cfg, out, in_process=False))
    summary = {k: {f: median([r[f] for r in v]) for f in v[0]} for k, v in runs.items()}
    ratio = summary["ray"]["rows_per_s"] / summary["in_process"]["rows_per_s"]
    return {"case": "throughput", "rows": int(summary["ray"]["rows"]), "methods": METHODS,
            "metrics": METRICS, "summary": summary, "ratio": ratio,
            "target": TARGET, "met": ratio >= TARGET, "runs": runs}


def markdown(result: dict[str, Any]) -> str:
    """The case's table: rows/s, seconds and the driver's CPU share per executor."""
    lines = [
        f"{result['rows']} rows (synthetic 32 px, tiny_cnn, {' + '.join(result['methods'])}; "
        f"metrics {', '.join(result['metrics'])}). ratio = Ray rows/s / in-process rows/s: "
        f"**{result['ratio']:.3f}** (target >= {result['target']}, "
        f"{'met' if result['met'] else 'not met'}).",
        "",
        "| executor | rows/s | execute s | whole run s | driver CPU s | driver CPU share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["summary"].items():
        lines.append(f"| {name} | {r['rows_per_s']:.1f} | {r['execute_s']:.2f} | "
                     f"{r['wall_s']:.2f} | {r['driver_cpu_s']:.2f} | "
                     f"{r['driver_cpu_share']:.3f} |")
    return "\n".join(lines)
