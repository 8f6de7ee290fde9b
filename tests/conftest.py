"""Shared fixtures: one session-scoped local Ray cluster, torch threads, small models, and a
local S3 server (moto)."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SALBENCH_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _registries_as_found():
    """Every test leaves the method, metric, model and dataset registries as it found them.

    A name a test registers (a closure, a lambda, a function of an already imported module)
    is removed after it, and an entry it replaced is put back: otherwise a later test that
    runs every registered method or metric (``methods: all``, ``metrics.names()``) would
    meet it, and only in some orders. Kept: what a module first imported during the test
    registers at import (importing it again registers nothing)."""
    from salbench.datasets.registry import REGISTRY as datasets_registry
    from salbench.methods.registry import REGISTRY as methods_registry
    from salbench.metrics.registry import REGISTRY as metrics_registry
    from salbench.models.registry import REGISTRY as models_registry
    from salbench.registry import _function

    registries = (datasets_registry, methods_registry, metrics_registry, models_registry)
    before = [dict(r._entries) for r in registries]
    modules = set(sys.modules)
    yield
    for registry, old in zip(registries, before, strict=True):
        for name, entry in list(registry._entries.items()):
            if name in old:
                registry._entries[name] = old[name]
            elif getattr(_function(entry), "__module__", None) in modules:
                del registry._entries[name]


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray cluster for the whole session (2 CPUs, no dashboard, small object store)."""
    pytest.importorskip("ray")
    import ray
    import ray.data

    if not ray.is_initialized():
        _init_local_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    yield ray
    ray.shutdown()


def _init_local_ray() -> None:
    """The session's Ray. It keeps up to 8 idle workers (Ray's soft limit is otherwise the 2
    CPUs): each run's read/decode tasks then reuse the workers that imported torch for the
    previous run's tasks instead of booting new ones (measured on the 2-core VM, 2026-12-06:
    a 4-image run after the first 6.2-7.1 s -> 4.4-5.5 s, ~2.5 CPU-s less). Actors get new
    workers either way.
    """
    import ray

    with _any_agent_port():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 object_store_memory=200 * 1024 * 1024, log_to_driver=False,
                 configure_logging=False, _system_config={"num_workers_soft_limit": 8})


@contextlib.contextmanager
def _any_agent_port() -> Iterator[None]:
    """A local Ray started in this block puts its dashboard agent on a free port.

    ``ray.init(address="local")`` has no argument for it and always takes 52365, and every
    other Ray that starts on this machine while the session's holds that port (the local Ray
    of each ``salbench run`` a test starts in a subprocess, a ``Cluster``'s head) waits while
    its agent retries the port, ~3.3 s with nothing to do, then runs without it (measured on
    the 2-core VM, 2026-12-06). Port 0 is Ray's own "any free port" (what
    ``ray.cluster_utils`` gives its extra nodes). Without the field (another Ray version)
    the block changes nothing.
    """
    from ray._private.parameter import RayParams

    init = RayParams.__init__
    names, defaults = list(inspect.signature(init).parameters), init.__defaults__ or ()
    with_default = names[len(names) - len(defaults):]  # the parameters __defaults__ covers
    if "dashboard_agent_listen_port" not in with_default:
        yield
        return
    i = with_default.index("dashboard_agent_listen_port")
    init.__defaults__ = (*defaults[:i], 0, *defaults[i + 1:])
    try:
        yield
    finally:
        init.__defaults__ = defaults


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _live_members(pgid: int) -> list[int]:
    """PIDs of the processes of group ``pgid`` that are not zombies (from /proc)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


#: The part of a config that makes a run a driver can be killed in the middle of: 8
#: one-image shards whose IG (2000 steps) keeps the model pool busy, so that a kill after
#: the first shards lands mid-run (tests/test_interrupt.py locally, tests/test_s3.py on S3).
KILLED_MID_RUN = {"dataset": {"kind": "synthetic", "n": 8, "size": 32, "seed": 5},
                  "methods": [{"name": "ig", "steps": 2000}, "vg"],
                  "resources": {"shard_size": 1, "torch_threads": 1}}


def stop_process_group(pgid: int, timeout: float = 60.0) -> None:
    """SIGKILL what is left of process group ``pgid`` and wait until none of it runs.

    A driver started with ``start_new_session=True`` leads its own group, and the local Ray
    it started (GCS, raylet, agents, worker actors) stays in that group. When only the driver
    is killed, those processes go on for seconds (a writer actor may still finish a shard, in
    the run directory a test is about to read) and Ray's agents for much longer: a test that
    kills a driver stops them all, as losing the machine would, before it looks."""
    deadline = time.time() + timeout
    while members := _live_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        if time.time() > deadline:
            raise TimeoutError(f"processes {members} of group {pgid} outlived SIGKILL")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """An S3-compatible server (moto_server) on a free 127.0.0.1 port for the session.

    Sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL
    for it (restored afterwards). Ray workers inherit their environment when Ray starts, so a
    Ray started earlier in the session is restarted with these variables. Yields the
    endpoint URL; the server is stopped by its PID.
    """
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which(
        "moto_server")
    if exe is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=fh,
                                stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import ray

    if ray.is_initialized():
        ray.shutdown()
        _init_local_ray()
    try:
        yield env["AWS_ENDPOINT_URL"]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def smooth_model():
    """GELU + average-pool CNN (10 classes, 32x32): smooth, for reference cross-checks."""
    import salbench

    return salbench.models.load("tiny_smooth")


@pytest.fixture(scope="session")
def relu_model():
    """ReLU + max-pool CNN (10 classes, 32x32)."""
    import salbench

    return salbench.models.load("tiny_cnn")


@pytest.fixture(scope="session")
def lite0():
    """The embedded real ImageNet model."""
    import salbench

    return salbench.models.load("efficientnet_lite0")


@pytest.fixture()
def images32():
    """float32 [4, 3, 32, 32] in [0, 1], seeded."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g)


@pytest.fixture
def temp_dirs(tmp_path, monkeypatch):
    """TMPDIR moved to a fresh folder for the test: yields (that folder, the paths of the
    folders ``tempfile.mkdtemp`` made there, in order)."""
    import tempfile

    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    made: list[str] = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(real(**kw)) or made[-1])
    return spill, made


#: The dataset of :func:`ray_batch_run`: three 32x32 synthetic images in one shard.
RAY_BATCH_DATASET = {"kind": "synthetic", "n": 3, "size": 32, "seed": 5}


@pytest.fixture(scope="session")
def ray_batch_run(ray_session, tmp_path_factory):
    """One Ray pipeline run shared by the tests that check that methods computed in a batch of
    3 inside the Ray graph store the maps single-image calls give (test_fullgrad,
    test_relu_variants, test_cams_pipeline, test_lrp_deeplift_mask_pipeline): starting the
    actor pools costs seconds, the computing well under one.

    Both models (tiny_cnn, tiny_smooth) and the union of those tests' methods, each with the
    parameters its test compares with (dga: steps 3; the ReLU variants and dga_gxi: steps 4;
    meaningful_perturbation: 4 iterations, mask_size 8; the others their defaults), profile
    fast, maps saved, 3 images per shard and per batch. A config's methods run on every
    model: on tiny_smooth (GELU) fullgrad, dga (FullGrad inside) and lrp refuse the model, so
    those cells are ``method_error`` rows that no test reads; each test takes its own
    model's and methods' rows.

    Returns a dict: ``samples`` (the per-sample table read back from the run directory),
    ``run_dir``, ``dataset`` (the run's dataset mapping, :data:`RAY_BATCH_DATASET`) and
    ``crops``: per model, sample index -> the run's stored input crop (uint8 [H, W, 3] RGB,
    decoded from the PNG on the first row of each sample x model, whichever its method)."""
    import io

    import numpy as np
    from PIL import Image

    from salbench.config import parse_config
    from salbench.pipeline.run import run
    from salbench.results.tables import read_samples

    cams = ["gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam",
            "ablationcam"]
    methods = [
        "fullgrad", {"name": "dga", "steps": 3},
        *({"name": n, "steps": 4} for n in ("ig_p1", "ig_p2", "gig_p1", "gig_p2", "dga_gxi")),
        *cams,
        "lrp", "deeplift", {"name": "meaningful_perturbation", "iterations": 4, "mask_size": 8},
    ]
    cfg = {"name": "batch", "seed": 0, "profile": "fast",
           "out": str(tmp_path_factory.mktemp("ray_batch_run")),
           "dataset": dict(RAY_BATCH_DATASET), "models": ["tiny_cnn", "tiny_smooth"],
           "methods": methods, "metrics": ["insertion"], "save_maps": True,
           "resources": {"shard_size": 3, "batch_size": 3, "torch_threads": 1}}
    run_dir = run(parse_config(cfg), progress=None).run_dir
    samples = read_samples(run_dir)
    crops: dict[str, dict[int, np.ndarray]] = {}
    for r in samples.itertuples():
        if r.input_png is not None:
            crops.setdefault(r.model, {})[r.index] = np.asarray(
                Image.open(io.BytesIO(r.input_png)).convert("RGB"))
    return {"samples": samples, "run_dir": run_dir, "dataset": dict(RAY_BATCH_DATASET),
            "crops": crops}
