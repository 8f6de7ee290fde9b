"""Case 3: throughput and peak memory against batch size and ``internal_batch_size``.

IG (fast profile: 16 steps) on bundled photos. Two sweeps: ``internal_batch_size`` (path
points per forward+backward pass) at a fixed number of images per call, and images per call
at a fixed ``internal_batch_size``. For each: images/s (median of interleaved repetitions)
and the peak memory of the call above what was held before it (CPU: peak resident set
size, each setting in a fresh process; CUDA: ``torch.cuda.max_memory_allocated``). Memory
should grow with ``internal_batch_size`` and stay bounded by it, while throughput saturates.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import salbench.methods as methods
from benchmarks.common import (
    ROOT,
    Settings,
    autocast,
    interleaved,
    load_model,
    median,
    photos,
    sync,
)
from salbench.memory import keep_freed_memory

STEPS = 16


def peak_extra_bytes(s: Settings, call: Callable[[], Any], images: int, ibs: int) -> int:
    """Peak memory of one IG call (``call``, on ``images`` photos) above what the process
    held before it, in bytes.

    CUDA: ``max_memory_allocated`` around ``call`` in this process. CPU: a fresh process
    (the allocator keeps what earlier calls freed, so an in-process reading would show only
    growth) loads the model and photos, then reports its peak RSS during the same call
    minus its RSS before.
    """
    if s.device.startswith("cuda"):
        sync()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        call()
        sync()
        return int(torch.cuda.max_memory_allocated() - start)
    args = json.dumps({"settings": s.__dict__, "images": images, "ibs": ibs})
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scaling", args], check=True,
                          capture_output=True, text=True, cwd=ROOT)
    return int(proc.stdout.strip().splitlines()[-1])


def _ig(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, ibs: int,
        s: Settings) -> None:
    with autocast(s):
        methods.attribute("ig", model, x, t, steps=STEPS, internal_batch_size=ibs)


def _child(argv: str) -> None:
    """In a fresh process: print the peak RSS increase (bytes) of one IG call."""
    a = json.loads(argv)
    s = Settings(**a["settings"])
    keep_freed_memory()
    if s.threads:
        torch.set_num_threads(s.threads)
    model = load_model(s)
    x, t = photos(model, a["images"], s)
    _ig(model, x[:1], t[:1], 1, Settings(**{**a["settings"], "autocast": None}))  # lazy init
    before = _status_kib("VmRSS") * 1024
    # the kernel's peak RSS of this process, reset now (ru_maxrss would not do: Linux keeps
    # the parent's peak across fork + exec)
    Path("/proc/self/clear_refs").write_text("5")
    _ig(model, x, t, a["ibs"], s)
    print(max(0, _status_kib("VmHWM") * 1024 - before))


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (e.g. VmHWM, the peak resident set size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run(s: Settings) -> dict[str, Any]:
    """Images/s and peak extra memory over internal_batch_size and images per call."""
    model = load_model(s)
    n_images = 2 if s.quick else 4
    x, t = photos(model, 8 if not s.quick else 2, s)

    def call(images: int, ibs: int) -> Callable[[], Any]:
        return lambda: _ig(model, x[:images], t[:images], ibs, s)

    sweeps: dict[str, list[tuple[int, int]]] = {
        "internal_batch_size": [(n_images, b) for b in ((2, 8) if s.quick else (4, 16, 64))],
        "images_per_call": [(b, 64) for b in ((1, 2) if s.quick else (1, 2, 4, 8))],
    }
    rows = []
    for sweep, settings in sweeps.items():
        fns = {f"{i}x{b}": call(i, b) for i, b in settings}
        times = interleaved(fns, s.reps)
        for (images, ibs), key in zip(settings, fns, strict=True):
            sec = median(times[key])
            rows.append({
                "sweep": sweep, "images_per_call": images, "internal_batch_size": ibs,
                "steps": STEPS, "seconds": round(sec, 3),
                "images_per_s": round(images / sec, 3),
                "peak_extra_mib": round(peak_extra_bytes(s, fns[key], images, ibs) / 2**20, 1),
                "times": times[key],
            })
    return {"case": "scaling", "method": "ig", "device": s.device, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    """The case's table: sweep, images per call, internal batch size, images/s, memory."""
    mem = "peak extra GPU MiB" if result["device"].startswith("cuda") else "peak extra RSS MiB"
    lines = [f"| sweep | images per call | internal_batch_size | s per call | images/s | {mem} |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['sweep']} | {r['images_per_call']} | {r['internal_batch_size']} | "
                     f"{r['seconds']} | {r['images_per_s']} | {r['peak_extra_mib']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    _child(sys.argv[1])
