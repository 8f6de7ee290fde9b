"""Driver memory at scale: peak RSS of the summary, ``salbench report`` and ``salbench
compare`` on generated run tables of any size (SPEC 6, "Scale"; BENCHMARKS.md case 6).

No model runs: :func:`generate` writes a run directory of ``rows`` rows (``rows / methods``
samples x ``methods`` methods of one model) through the pipeline's own writer
(:class:`salbench.pipeline.run.ShardWriter`, i.e. ``tables.rows_to_table`` and the atomic
shard commit), with seeded random values for insertion / deletion (AUCs and 21-point curves)
and the pointing game, and the manifest and config a real run has. Each measured command
then runs in a fresh subprocess, and its peak RSS is read from the kernel
(``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, one child at a time).

    python -m benchmarks.driver_memory generate --rows 40000 --out /tmp/mem/r40k
    python -m benchmarks.driver_memory measure /tmp/mem/r40k [/tmp/mem/r40k-b]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
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


def peak_rss(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``argv`` run as a fresh child process (call once
    per child: RUSAGE_CHILDREN is the maximum over this process's children so far)."""
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0, wall


def measure(run_a: Path, run_b: Path | None, what: str) -> dict[str, float]:
    """One measurement (``what``: summary | report | compare) in this fresh process's
    child; prints and returns {peak_rss_mb, seconds}."""
    py = sys.executable
    if what == "summary":
        code = ("import sys; from pathlib import Path; "
                "from salbench.pipeline import manifest as mf, parse_config; "
                "from salbench.pipeline.summary import run_dataset, summarize_dataset; "
                "d = Path(sys.argv[1]); "
                "summarize_dataset(run_dataset(d), parse_config(mf.read_manifest(d)['config']))")
        argv = [py, "-c", code, str(run_a)]
    elif what == "report":
        argv = [py, "-m", "salbench.cli", "report", str(run_a)]
    else:
        argv = [py, "-m", "salbench.cli", "compare", str(run_a), str(run_b or run_a)]
    rss, wall = peak_rss(argv)
    out = {"peak_rss_mb": round(rss, 1), "seconds": round(wall, 2)}
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
