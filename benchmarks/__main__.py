"""The benchmark harness: ``python -m benchmarks [CASE ...] [options]``.

Cases (SPEC 8, all by default): floor, refs, scaling, bokeh, pipeline, throughput,
driver_memory; on request only: pic_transport and pic_fast (PIC's images between stages,
``bokeh: fast``; each also ``python -m benchmarks.<case>``), precision (each numeric
setting's fidelity against fp32)
and gpu (cases 1-3 and 5 on CUDA for ResNet-50 and EfficientNet-Lite0 at each precision,
within 8 minutes; ``--device cpu --tiny`` checks it on CPU). Each runs in this
process, one after another; run the harness alone on the machine (two torch-heavy
processes on two cores slow each other down many times). Writes ``results.json`` (every
timing) and ``results.md`` (one table per case, with the machine and date) into ``--out``.

    python -m benchmarks                      # every case, embedded model at 224, 3 reps
    python -m benchmarks floor refs --reps 5
    python -m benchmarks --quick --model tiny_resnet   # seconds: checks the harness runs
    python -m benchmarks floor scaling --device cuda --autocast bf16 --channels-last
    python -m benchmarks throughput --rows 160000 --reps 1
    python -m benchmarks driver_memory --data-dir /tmp/mem   # tables kept there, reused
    python -m benchmarks precision                # fidelity of bf16 / channels_last vs fp32
    python -m benchmarks gpu                      # on a GPU machine: one command, < 8 min
    python -m benchmarks gpu --device cpu --tiny  # the same code on CPU, tiny model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import (
    bokeh,
    driver_memory,
    floor,
    gpu,
    pic_fast,
    pic_transport,
    pipeline,
    precision,
    refs,
    scaling,
    throughput,
)
from benchmarks.common import Settings, machine
from salbench.memory import keep_freed_memory

CASES = {
    "floor": (floor.run, floor.markdown, "1. Method time vs the forward/backward floor"),
    "refs": (refs.run, refs.markdown, "2. Versus the reference implementations"),
    "scaling": (scaling.run, scaling.markdown, "3. Batch scaling and peak memory"),
    "bokeh": (bokeh.run, bokeh.markdown, "4. CPU stage: bokeh + WebP / MS-SSIM vs PAIR"),
    "pipeline": (pipeline.run_case, pipeline.markdown, "5. Pipeline vs bare loop"),
    "throughput": (throughput.run_case, throughput.markdown,
                   "6. Machinery throughput: Ray graph vs in-process executor"),
    "driver_memory": (driver_memory.run_case, driver_memory.markdown,
                      "7. Driver memory at scale: summary, report, compare and run"),
    "precision": (precision.run, precision.markdown,
                  "Numeric settings: fidelity against fp32"),
    "gpu": (gpu.run, gpu.markdown, "GPU: cases 1-3 and 5 per model and precision"),
    "pic_transport": (pic_transport.run, pic_transport.markdown,
                      "PIC images between stages: raw pixels vs lossless WebP"),
    "pic_fast": (pic_fast.run, pic_fast.markdown, "PIC bokeh: fast vs the exact mode"),
}
#: What ``python -m benchmarks`` runs without cases named.
DEFAULT_CASES = [c for c in CASES if c not in ("precision", "gpu", "pic_transport", "pic_fast")]


def _sizes(p: argparse.ArgumentParser, option: str, text: str | None) -> tuple[int, ...] | None:
    """A comma-separated list of row counts (each >= 0), or None when not given."""
    if text is None:
        return None
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        p.error(f"{option}: comma-separated row counts, got {text!r}")
    if any(n < 0 for n in sizes):
        p.error(f"{option}: row counts must be >= 0, got {text!r}")
    return sizes


def parse(argv: list[str] | None = None) -> tuple[list[str], Settings, Path]:
    """The cases to run, their settings and the output folder."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help=f"cases to run (default: all): {', '.join(CASES)}")
    p.add_argument("--model", default="efficientnet_lite0", help="a registered model name")
    p.add_argument("--weights", default=None,
                   help="model weights (e.g. 'random' for a ResNet-50-sized random model)")
    p.add_argument("--size", type=int, default=None, help="input side (default: the model's)")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median)")
    p.add_argument("--quick", action="store_true", help="tiny workloads: checks, not figures")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"],
                   help="default: cuda for the gpu case, else cpu")
    p.add_argument("--tiny", action="store_true",
                   help="gpu case: a tiny model and workloads (checks the case runs)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--autocast", choices=["bf16", "fp16"], default=None)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods for the floor case (default: all)")
    p.add_argument("--rows", type=int, default=None,
                   help=f"output rows of the throughput case (default {throughput.ROWS})")
    p.add_argument("--data-dir", default=None,
                   help="driver_memory: keep its generated tables here and reuse them")
    p.add_argument("--mem-rows", default=None,
                   help="driver_memory: comma-separated rows of the 2-method tables "
                   f"(default {','.join(map(str, driver_memory.TABLE_ROWS))})")
    p.add_argument("--production-rows", type=int, default=None,
                   help="driver_memory: rows of the production table (5 models x 20 methods; "
                   f"0: none; default {driver_memory.PRODUCTION_ROWS})")
    p.add_argument("--run-rows", default=None,
                   help="driver_memory: comma-separated rows of the real runs "
                   f"(default {','.join(map(str, driver_memory.RUN_ROWS))})")
    p.add_argument("--mem-timeout", type=int, default=None,
                   help="driver_memory: seconds one measurement may take (default "
                   f"{driver_memory.TIMEOUT_S}; a stopped one reports its peak so far)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = p.parse_args(argv)
    unknown = sorted(set(a.cases) - set(CASES))
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    if a.methods:
        import salbench.methods

        bad = sorted(set(a.methods.split(",")) - set(salbench.methods.names()))
        if bad:
            p.error(f"--methods: unknown {bad}; registered: {', '.join(salbench.methods.names())}")
    if a.reps < 1:
        p.error("--reps must be >= 1")
    if a.rows is not None and a.rows < 2:
        p.error("--rows must be >= 2")
    if a.production_rows is not None and a.production_rows < 0:
        p.error("--production-rows must be >= 0")
    if a.mem_timeout is not None and a.mem_timeout < 1:
        p.error("--mem-timeout must be >= 1")
    mem_rows, run_rows = _sizes(p, "--mem-rows", a.mem_rows), _sizes(p, "--run-rows", a.run_rows)
    try:
        driver_memory.check_sizes(mem_rows or (), a.production_rows or 0, run_rows or ())
    except ValueError as exc:
        p.error(str(exc))
    device = a.device or ("cuda" if "gpu" in a.cases else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible (the gpu case on CPU: --device cpu "
                "--tiny)")
    settings = Settings(model=a.model, weights=a.weights, size=a.size, reps=a.reps, quick=a.quick,
                        device=device, threads=a.threads, autocast=a.autocast,
                        channels_last=a.channels_last, compile=a.compile,
                        methods=tuple(a.methods.split(",")) if a.methods else None,
                        rows=a.rows, data_dir=a.data_dir,
                        mem_rows=mem_rows, production_rows=a.production_rows,
                        run_rows=run_rows,
                        mem_timeout_s=a.mem_timeout, tiny=a.tiny)
    return list(a.cases) or DEFAULT_CASES, settings, a.out


def render(results: dict[str, Any]) -> str:
    """The markdown report: machine and settings, then each case's table."""
    m, s = results["machine"], results["settings"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB"
        + (f", {m['gpu']}" if m["gpu"] else ", no GPU") + f"), torch {m['torch']} with "
        f"{m['torch_threads']} threads, commit {m['git_commit'] or 'unknown'}; load average at "
        f"start {m['load_avg_at_start']}.",
        f"Settings: model {s['model']}"
        + (f" (weights {s['weights']})" if s["weights"] else "")
        + f", device {s['device']}, {s['reps']} interleaved repetitions (medians)"
        + (", QUICK (figures meaningless)" if s["quick"] else "")
        + (f", autocast {s['autocast']}" if s["autocast"] else "")
        + (", channels_last" if s["channels_last"] else "")
        + (", torch.compile" if s["compile"] else "") + ".",
    ]
    for name, result in results["cases"].items():
        title = CASES[name][2]
        lines += ["", f"## {title}", "",
                  f"({result['wall_s']} s; load average after: {result['load_avg_after']})", "",
                  CASES[name][1](result)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the cases, write results.json and results.md, print the markdown."""
    cases, s, out = parse(argv)
    keep_freed_memory()  # as salbench's actors do; glibc's defaults cost 3x at batch 64 here
    if s.threads:
        torch.set_num_threads(s.threads)
    results: dict[str, Any] = {"machine": machine(), "settings": s.__dict__, "cases": {}}
    out.mkdir(parents=True, exist_ok=True)
    for name in cases:
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        result = CASES[name][0](s)
        result["wall_s"] = round(time.perf_counter() - t0, 1)
        result["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
        results["cases"][name] = result
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (out / "results.md").write_text(render(results))
    text = render(results)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
