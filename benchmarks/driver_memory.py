"""Driver memory at scale: peak RSS of the summary, ``salbench report`` and ``salbench
compare`` on generated run tables of any size (SPEC 6, "Scale"; BENCHMARKS.md case 6).

No model runs: :func:`generate` writes a run directory of ``rows`` rows (``rows / methods``
samples x ``methods`` methods of one model) through the pipeline's own writer
(:class:`salbench.pipeline.run.ShardWriter`, i.e. ``tables.rows_to_table`` and the atomic
shard commit), with seeded random values for insertion / deletion (AUCs and 21-point curves)
and the pointing game, and the manifest and config a real run has. ``measure`` then runs one
operation in this process after its imports and reports the growth of the kernel's peak-RSS
mark over the resident set it started from (see :func:`measure`).

    python -m benchmarks.driver_memory generate --rows 40000 --out /tmp/mem/r40k
    python -m benchmarks.driver_memory measure /tmp/mem/r40k [/tmp/mem/r40k-b]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = {
    "name": "mem", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 1, "size": 32},
    "models": ["tiny_cnn"], "methods": ["vg", "gxi"],
    "metrics": ["insertion", "deletion", "pointing_game"],
    "resources": {"shard_size": 1000},
}
CURVE_POINTS = 21


def generate(rows: int, out: Path, seed: int = 0, shift: float = 0.0) -> Path:
    """Write a finished run directory of ``rows`` rows under ``out``; returns it.

    ``shift`` is added to run B's insertion AUCs, so that compare has a change to find.
    """
    from salbench.pipeline import manifest as mf
    from salbench.pipeline import parse_config
    from salbench.pipeline.run import ShardWriter, plan_shards
    from salbench.pipeline.summary import run_counts, run_dataset, summarize_dataset
    from salbench.pipeline.tables import write_table

    methods = CONFIG["methods"]
    n = rows // len(methods)
    cfg = parse_config({**CONFIG, "dataset": {**CONFIG["dataset"], "n": n}})
    run_dir = out
    (run_dir / "samples").mkdir(parents=True, exist_ok=True)
    shards = plan_shards(n, cfg.resources.shard_size)
    writer = ShardWriter(cfg, run_dir, run_dir.name, shards, progress=None)
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 1.0, CURVE_POINTS)
    for s in shards:
        batch: list[dict[str, Any]] = []
        for index in range(s["start"], s["stop"]):
            for method in methods:
                ins = float(np.clip(rng.beta(2, 5) + shift, 0, 1))
                dele = float(rng.beta(2, 8))
                values = {
                    "insertion_auc": ins, "insertion_ratio_auc": ins * 1.5,
                    "insertion_curve": (x ** (1 - ins)).tolist(),
                    "deletion_auc": dele, "deletion_ratio_auc": dele * 1.5,
                    "deletion_curve": ((1 - x) ** (1 / max(dele, 1e-3))).tolist(),
                    "pointing_game_hit": float(rng.random() < 0.6),
                }
                batch.append({
                    "shard": s["shard"], "index": index, "sample_id": f"img-{index:08d}",
                    "sample_key": f"{index:016x}", "cell_key": f"{index:08x}{method:>8}",
                    "model": "tiny_cnn", "method": method, "status": "ok", "error": "",
                    "label": index % 1000, "target": index % 1000, "pred": index % 1000,
                    "target_prob": float(rng.random()), "values": json.dumps(values),
                    "seconds": 0.0,
                })
        writer.add(batch)
    summary, counts = summarize_dataset(run_dataset(run_dir), cfg)
    write_table(summary, run_dir / "summary.parquet")
    mf.write_manifest(run_dir, {
        "run_id": run_dir.name, "status": "complete", "config": cfg.to_dict(),
        "config_hash": cfg.hash(), "packages": mf.package_versions(),
        "dataset": {"spec": cfg.dataset, "rows": n, "fingerprint": f"generated-{seed}"},
        "seed": seed, "shards": len(shards), "counts": run_counts(counts), "timings": {},
    })
    return run_dir


def _status(key: str) -> int:
    """A field of /proc/self/status in KB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def _operation(what: str, run_a: Path, run_b: Path | None) -> Callable[[], Any]:
    """The measured call, with every import done beforehand (torch's ~1 GB of libraries
    would otherwise dominate the peak). Works with salbench versions before the
    out-of-core summary too (then: read_samples + summarize)."""
    from salbench import cli
    from salbench.pipeline import manifest as mf
    from salbench.pipeline import parse_config, tables

    cfg = parse_config(mf.read_manifest(run_a)["config"])
    if what == "summary":
        try:
            from salbench.pipeline.summary import run_dataset, summarize_dataset
        except ImportError:
            return lambda: tables.summarize(tables.read_samples(run_a), cfg)
        return lambda: summarize_dataset(run_dataset(run_a), cfg)
    if what == "report":
        import salbench.report  # noqa: F401
        return lambda: cli.main(["report", str(run_a)])
    import salbench.pipeline.compare  # noqa: F401
    return lambda: cli.main(["compare", str(run_a), str(run_b or run_a)])


def measure(run_a: Path, run_b: Path | None, what: str) -> dict[str, float]:
    """Peak RSS growth of one operation (``what``: summary | report | compare) in this
    process: the kernel's high-water mark (VmHWM) is reset after the imports
    (``/proc/self/clear_refs``), so the figure is the operation's own peak over the resident
    set it started from. Prints and returns {rss_before_mb, peak_growth_mb, seconds}."""
    op = _operation(what, run_a, run_b)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        op()
    wall = time.perf_counter() - t0
    out = {"rss_before_mb": round(before / 1024, 1),
           "peak_growth_mb": round((_status("VmHWM") - before) / 1024, 1),
           "seconds": round(wall, 2)}
    print(json.dumps({"run": str(run_a), "what": what, **out}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """``generate`` or ``measure`` (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.driver_memory")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--rows", type=int, required=True)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--shift", type=float, default=0.0)
    m = sub.add_parser("measure")
    m.add_argument("run_a", type=Path)
    m.add_argument("run_b", type=Path, nargs="?")
    m.add_argument("--what", choices=["summary", "report", "compare"], required=True)
    a = p.parse_args(argv)
    if a.cmd == "generate":
        t0 = time.perf_counter()
        path = generate(a.rows, a.out, a.seed, a.shift)
        print(f"{path}: {a.rows} rows in {time.perf_counter() - t0:.1f} s")
    else:
        measure(a.run_a, a.run_b, a.what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
