"""Shared pieces of the benchmark cases: interleaved timing, pass counting, inputs, machine.

Every figure the harness reports is a ratio of two timings taken in the same run, with the
repetitions interleaved (A, B, A, B, ...) and the median of each side used, so that a
machine that slows down mid-run slows both sides alike.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """What every case runs on.

    model: a registered model name; weights: its weights (None: the model's default;
    "random" for torchvision models: a seeded random initialisation); size: input side in
    pixels (None: the model's own);
    reps: interleaved repetitions per timing (median reported); quick: tiny workloads that
    check the harness runs (figures meaningless); device: "cpu" or "cuda"; threads: torch
    threads (None: leave torch's default); autocast: None, "bf16" or "fp16" (CUDA only
    is meaningful; bf16 also runs on CPU); channels_last: move model and inputs to
    channels_last memory format; compile: ``torch.compile`` the model's network; methods:
    the methods the floor case times (None: all); rows: output rows of the throughput
    case (None: its default). Driver-memory case: data_dir: where its generated tables are
    kept and reused (None: a temporary folder, removed after); mem_rows: sizes (rows) of its
    2-method tables, production_rows: of its production table (0: none), run_rows: of its
    real runs (None: the case's defaults); mem_timeout_s: seconds one of its measurements
    may take (None: the case's default). tiny: the gpu case on a tiny model with tiny
    workloads (checks it runs; figures meaningless). precision: the model's salbench
    precision (``salbench.models.numerics``: fp32, tf32, bf16; None: torch's defaults, as
    before); the gpu case sets it.
    """

    model: str = "efficientnet_lite0"
    weights: str | None = None
    size: int | None = None
    reps: int = 3
    quick: bool = False
    device: str = "cpu"
    threads: int | None = None
    autocast: str | None = None
    channels_last: bool = False
    compile: bool = False
    methods: tuple[str, ...] | None = None
    rows: int | None = None
    data_dir: str | None = None
    mem_rows: tuple[int, ...] | None = None
    production_rows: int | None = None
    run_rows: tuple[int, ...] | None = None
    mem_timeout_s: int | None = None
    tiny: bool = False
    precision: str | None = None


def interleaved(fns: dict[str, Callable[[], Any]], reps: int,
                warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each callable, ``reps`` times, interleaved in the order given.

    With ``warmup``, one untimed call of each comes first (allocator, lazy imports); long
    calls on an already warm model can skip it.
    """
    if warmup:
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    """The median of a non-empty list of seconds."""
    return float(statistics.median(xs))


def sync() -> None:
    """Wait for queued CUDA work (a no-op on CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class PassCounter:
    """Counts the samples a model sees, split by forward+backward and forward-only.

    A forward hook notes each call's batch size; a tensor hook on the output notes when a
    gradient flows back through it. ``fb``: samples whose output was back-propagated;
    ``f``: samples only run forward (with or without autograd recording). The hook sits on
    the network behind a Classifier (``model.net``), so the passes of methods that run it
    past the Classifier's forward (DeepLift's and LRP's float32 rules) count too.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._forward = 0
        self.fb = 0
        self._handle = getattr(model, "net", model).register_forward_hook(self._hook)

    @property
    def f(self) -> int:
        """Forward-only samples."""
        return self._forward - self.fb

    def _hook(self, _m: torch.nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        n = int(inputs[0].shape[0])
        self._forward += n
        if isinstance(out, torch.Tensor) and out.requires_grad:
            seen = [False]

            def backward(grad: torch.Tensor) -> None:
                if not seen[0]:  # a second backward through the same output is not a pass
                    seen[0] = True
                    self.fb += n

            out.register_hook(backward)

    def remove(self) -> None:
        """Detach the hook."""
        self._handle.remove()


def floor_loop(model: torch.nn.Module, x: torch.Tensor, n_fb: int, n_f: int,
               batch: int) -> None:
    """The bare floor: ``n_fb`` input-gradient passes and ``n_f`` forward passes of ``model``.

    x: float [1, 3, H, W] in [0, 1], repeated to the batch (memory format kept); passes are
    batched by ``batch``, the last one smaller.
    """
    xb = x.expand(batch, -1, -1, -1).clone()
    for c in chunk_sizes(n_fb, batch):
        pts = xb[:c].detach().requires_grad_(True)
        torch.autograd.grad(model(pts)[:, 0].sum(), pts)
    with torch.no_grad():
        for c in chunk_sizes(n_f, batch):
            model(xb[:c])


def chunk_sizes(n: int, batch: int) -> list[int]:
    """Sizes of the chunks of ``n`` items batched by ``batch``: [batch, ..., remainder]."""
    return [min(batch, n - i) for i in range(0, n, batch)]


def best_batch(model: torch.nn.Module, x: torch.Tensor, candidates: tuple[int, ...],
               samples: int) -> tuple[int, dict[int, float]]:
    """The batch size with the least seconds per forward+backward sample, and every figure.

    Each candidate runs ``samples`` input-gradient passes once after a one-batch warm-up.
    """
    per_sample = {}
    for b in candidates:
        floor_loop(model, x, b, 0, b)
        sync()
        t0 = time.perf_counter()
        floor_loop(model, x, max(samples, b), 0, b)
        sync()
        per_sample[b] = (time.perf_counter() - t0) / max(samples, b)
    return min(per_sample, key=per_sample.get), per_sample


def load_model(s: Settings) -> torch.nn.Module:
    """The benchmark's model on ``s.device``, in eval mode, channels_last if asked, with
    salbench's ``s.precision`` if set."""
    from salbench.models import load, numerics

    model = load(s.model, weights=s.weights).to(s.device)
    if s.precision:
        numerics.apply(model, numerics.Numerics(precision=s.precision))
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if s.compile:
        model.net = torch.compile(model.net)
    return model


def photos(model: torch.nn.Module, n: int, s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` bundled photos (cycled) as the model's input and their top-1 classes.

    Returns x float [n, 3, H, W] in [0, 1] on ``s.device`` and target int64 [n].
    """
    from salbench.datasets.sample import annotations, load_photo

    names = [k for k, v in annotations().items() if v.get("include", True)]
    imgs = []
    for i in range(n):
        arr = load_photo(names[i % len(names)])
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        imgs.append(model.preprocess(arr[..., :3]))
    x = torch.stack(imgs).to(s.device)
    if s.size and tuple(x.shape[-2:]) != (s.size, s.size):
        x = torch.nn.functional.interpolate(x, size=(s.size, s.size), mode="bilinear",
                                            align_corners=False).clamp(0, 1)
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        target = model(x).argmax(1)
    return x, target


@contextmanager
def autocast(s: Settings):
    """torch.autocast for ``s.autocast`` ("bf16" / "fp16"), or nothing."""
    if not s.autocast:
        yield
        return
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[s.autocast]
    with torch.autocast(device_type=torch.device(s.device).type, dtype=dtype):
        yield


def machine() -> dict[str, Any]:
    """Where and when: CPU model, cores, memory, GPU, versions, git commit, UTC date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    mem = 0.0
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "git_commit": commit,
        "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
