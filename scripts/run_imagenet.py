#!/usr/bin/env python3
"""Run a salbench config on the Ray cluster this script runs in; the ``ray submit`` entry.

    ray submit cluster.yaml scripts/run_imagenet.py -- --config configs/imagenet.yaml
    ray submit cluster.yaml scripts/run_imagenet.py -- --dry-run --require-data
    python scripts/run_imagenet.py --config configs/demo.yaml --address local   # no cluster

``ray submit`` copies only this file (to ``~/run_imagenet.py`` on the head) and runs it in
the home directory, so it runs the *installed* salbench (cluster.yaml's setup_commands
install it) and looks for a relative ``--config`` first in the current directory, then in
the project copy that cluster.yaml's file_mounts put at ``~/salbench`` (``--project-dir``).

What it does: validate the config (``salbench.config.load_config``), then, when the config
asks for CUDA, ask the autoscaler for the GPUs the config's actor pools need and wait until
the cluster has them (salbench sizes its pools by the cluster it finds at start, and does not
scale GPU requests down), then ``salbench run CONFIG --address ADDRESS [--set ...]``. The
driver, and so every output file, stays on the machine that runs this script.

``--dry-run`` validates the config and prints the plan without starting anything. It counts
the dataset's rows when every dataset path exists on this machine; when one is missing
(typically ``/data/...`` on a laptop) it says so and still exits 0, since the data only has to
exist on the cluster's nodes. ``--require-data`` makes a missing dataset path or model
weights file an error (exit 2): use it on the head node to check the data is in place.

Exit status: that of ``salbench run``; 2 for a bad config, missing files, salbench not being
installed, or GPUs that did not appear within ``--wait-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from salbench.config import RunConfig

#: Where cluster.yaml's file_mounts put the project (``/home/<ssh_user>/salbench``).
DEFAULT_PROJECT_DIR = "~/salbench"
DEFAULT_CONFIG = "configs/imagenet.yaml"
#: Dataset parameters that name files or directories (every reader's, see salbench.datasets).
PATH_KEYS = ("root", "path", "images", "labels", "synset_mapping", "solution", "annotations")
INSTALL_HINT = (
    "pip install torch==2.14.1 torchvision==0.29.1 /home/ubuntu/salbench (what cluster.yaml's "
    "setup_commands run; `ray up cluster.yaml` reruns them)"
)


class ScriptError(Exception):
    """A problem this script reports in one line before exiting with status 2."""


def _say(msg: str) -> None:
    print(f"[run_imagenet] {msg}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    p = argparse.ArgumentParser(
        prog="run_imagenet.py",
        description="Run a salbench config on the Ray cluster (the `ray submit` entry point).",
        epilog="Example: ray submit cluster.yaml scripts/run_imagenet.py -- "
        "--config configs/imagenet.yaml --set dataset.limit=500",
    )
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help=f"salbench YAML config (default {DEFAULT_CONFIG}); a relative path is "
                   "looked for here, then in --project-dir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set dataset.limit=500 (repeatable)")
    p.add_argument("--address", default="auto",
                   help="Ray address: auto (default; the cluster this machine belongs to), "
                   "HOST:PORT, or local (start a private Ray on this machine)")
    p.add_argument("--out", help="output directory (default: the config's 'out')")
    p.add_argument("--project-dir",
                   default=os.environ.get("SALBENCH_PROJECT_DIR", DEFAULT_PROJECT_DIR),
                   help="the project copy on the cluster, for relative --config paths "
                   f"(default $SALBENCH_PROJECT_DIR or {DEFAULT_PROJECT_DIR})")
    p.add_argument("--reuse", metavar="PREVIOUS_RUN",
                   help="an earlier run directory: copy the result cells whose keys did not "
                   "change, compute only the rest (salbench run --reuse)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and print the plan; start nothing")
    p.add_argument("--require-data", action="store_true",
                   help="with --dry-run: a dataset path or weights file missing here is an error")
    p.add_argument("--wait-gpus", type=float, default=None, metavar="N",
                   help="GPUs to wait for before the run (default: what the config's actor "
                   "pools ask for when resources.device is cuda, else 0)")
    p.add_argument("--wait-timeout", type=float, default=1800.0, metavar="SECONDS",
                   help="give up waiting for GPUs after this long (default 1800; 0: no wait)")
    return p


def require_salbench() -> None:
    """Raise ScriptError unless salbench (and what it imports) can be imported."""
    if importlib.util.find_spec("salbench") is None:
        raise ScriptError(
            f"salbench is not installed for {sys.executable}; install it with {INSTALL_HINT}"
        )
    try:
        import salbench  # noqa: F401
    except ImportError as exc:
        raise ScriptError(
            f"salbench is installed but cannot be imported ({exc}); reinstall with {INSTALL_HINT}"
        ) from None


def resolve_config(config: str, project_dir: str) -> Path:
    """The config file: ``config`` as given if it exists, else under ``project_dir``."""
    path = Path(config).expanduser()
    if path.is_file():
        return path.resolve()
    tried = [str(path)]
    if not path.is_absolute():
        alt = Path(project_dir).expanduser() / path
        if alt.is_file():
            return alt.resolve()
        tried.append(str(alt))
    raise ScriptError(
        f"config file not found (tried {', '.join(tried)}); cluster.yaml's file_mounts copy "
        "the project to ~/salbench on every node: rerun `ray up cluster.yaml` after adding it"
    )


def overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides that ``salbench run`` will apply, address and out included."""
    sets = list(args.set)
    if args.address:
        sets.append(f"resources.address={args.address}")
    if args.out:
        sets.append(f"out={args.out}")
    return sets


def salbench_argv(config: Path, args: argparse.Namespace) -> list[str]:
    """Arguments for ``salbench.cli.main``: ``run CONFIG --address ... [--set ...]``."""
    argv = ["run", str(config), "--address", args.address]
    for item in args.set:
        argv += ["--set", item]
    if args.out:
        argv += ["--out", args.out]
    if args.reuse:
        argv += ["--reuse", args.reuse]
    return argv


def dataset_paths(spec: dict[str, Any]) -> list[str]:
    """The file and directory paths a dataset spec names (strings or lists of strings)."""
    out: list[str] = []
    for key in PATH_KEYS:
        value = spec.get(key)
        if isinstance(value, str | os.PathLike):
            out.append(str(value))
        elif isinstance(value, list):
            out += [str(v) for v in value if isinstance(v, str | os.PathLike)]
    return out


def missing_paths(paths: Sequence[str]) -> list[str]:
    """Those of ``paths`` that do not exist on this machine."""
    return [p for p in paths if not Path(p).expanduser().exists()]


def uses_pic(config: RunConfig) -> bool:
    """True when a metric is split into CPU bokeh + model scoring stages (the PIC metrics)."""
    from salbench import metrics

    return any(metrics.get(m.name).prepare is not None for m in config.metrics)


def gpu_demand(config: RunConfig) -> float:
    """GPUs the run's model stages need at least on CUDA (``salbench.pipeline.plan.min_gpus``:
    per model, its slots at the pools' minimum size x its GPUs per slot, which the
    AttributeActor and, with PIC metrics, the ScoreActor share; 1 when GPUs are ``auto``)."""
    from salbench.pipeline.plan import min_gpus

    return min_gpus(config)


def gpus_to_wait_for(config: RunConfig, args: argparse.Namespace) -> int:
    """Whole GPUs to wait for before the run: ``--wait-gpus``, or the CUDA demand, or 0."""
    if args.wait_gpus is not None:
        return math.ceil(args.wait_gpus)
    if config.resources.device != "cuda":
        return 0
    return math.ceil(gpu_demand(config) - 1e-9)


def plan(config: RunConfig, config_path: Path, args: argparse.Namespace) -> list[str]:
    """The lines ``--dry-run`` prints; raises ScriptError for missing data with --require-data.

    Rows are counted by opening the dataset only when every path it names exists here.
    """
    from salbench.datasets import open_dataset
    from salbench.pipeline.run import new_run_dir, plan_shards

    res = config.resources
    lines = [
        f"config: {config_path} (hash {config.hash()})",
        f"run directory would be: {new_run_dir(config)} (written by the driver only, on the "
        "machine that runs salbench)",
        f"ray address: {res.address or 'local'}; profile {config.profile}; seed {config.seed}",
        f"dataset: {config.dataset}",
    ]
    missing = missing_paths(dataset_paths(config.dataset))
    if missing and args.require_data:
        raise ScriptError(f"dataset path(s) missing on this machine: {', '.join(missing)}")
    if missing:
        lines.append(
            f"  rows: not counted: {', '.join(missing)} not found on this machine (the data "
            "must be readable on the head and every worker at run time; check there with "
            "--dry-run --require-data)"
        )
    else:
        n = len(open_dataset(config.dataset))
        shards = plan_shards(n, res.shard_size)
        lines.append(f"  rows: {n} in {len(shards)} shard(s) of up to {res.shard_size} images")
    for m in config.models:
        weights = m.params.get("weights")
        note = ""
        if weights is not None and not Path(str(weights)).expanduser().is_file():
            if args.require_data:
                raise ScriptError(f"model {m.label}: weights file {weights} missing here")
            note = " (not found on this machine; needed on the head and every GPU node)"
        gpus = m.params.get("num_gpus", res.attribute_num_gpus)
        lines.append(f"model {m.label}: weights {weights or 'built in / $SALBENCH_WEIGHTS'}"
                     f"{note}; num_gpus {gpus} per model slot")
    lines.append(f"methods ({len(config.methods)}): {', '.join(c.label for c in config.methods)}")
    lines.append(f"metrics ({len(config.metrics)}): {', '.join(c.label for c in config.metrics)}"
                 + ("; PIC metrics: a ScoreActor pool per model" if uses_pic(config) else ""))
    lines.append(
        f"per model: {res.attribute_actors} AttributeActor(s)"
        + (f" and {res.attribute_actors} ScoreActor(s)" if uses_pic(config) else "")
        + f", {res.cpu_actors} CPU-stage actor(s) of {res.cpu_num_cpus:g} CPU; "
        f"{res.batch_size} images per model call; device {res.device}"
    )
    if res.device == "cuda":
        lines.append(f"GPUs requested: {gpu_demand(config):g}; the run first waits up to "
                     f"{args.wait_timeout:g} s for {gpus_to_wait_for(config, args)} GPU(s)")
    elif res.device == "auto":
        lines.append("device auto: GPUs are used only if the cluster has some when the run "
                     "starts; set resources.device: cuda on an autoscaling cluster")
    lines.append("would run: salbench " + " ".join(salbench_argv(config_path, args)))
    return lines


def wait_for_gpus(
    needed: int,
    timeout_s: float,
    available: Callable[[], float],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    interval_s: float = 10.0,
) -> bool:
    """Poll ``available()`` (GPUs in the cluster) until it reaches ``needed``; False on timeout."""
    start = last_report = clock()
    while True:
        have = available()
        if have >= needed:
            return True
        now = clock()
        if now - start >= timeout_s:
            return False
        if now - last_report >= 60 or now == start:
            _say(f"waiting for GPUs: {have:g} of {needed} in the cluster "
                 f"({now - start:.0f} s of {timeout_s:g} s)")
            last_report = now
        sleep(interval_s)


def _connect_and_wait(config: RunConfig, args: argparse.Namespace) -> bool:
    """Join Ray, ask the autoscaler for the GPUs the run needs and wait for them.

    Returns True when a resource request was made (the caller clears it after the run).
    """
    needed = gpus_to_wait_for(config, args)
    if needed <= 0 or args.wait_timeout <= 0 or args.address == "local":
        return False
    import ray
    from ray.autoscaler.sdk import request_resources

    from salbench.pipeline.run import ensure_ray

    ensure_ray(args.address)  # salbench's run reuses this connection
    request_resources(bundles=[{"GPU": 1}] * needed)
    ok = wait_for_gpus(needed, args.wait_timeout,
                       lambda: float(ray.cluster_resources().get("GPU", 0)))
    if not ok:
        request_resources(bundles=[])
        raise ScriptError(
            f"the cluster has {ray.cluster_resources().get('GPU', 0):g} GPU(s) after "
            f"{args.wait_timeout:g} s; the config needs {needed}. Check `ray status` and the "
            "autoscaler log (`ray monitor cluster.yaml`), cluster.yaml's max_workers, or pass "
            "--wait-gpus / fewer attribute_actors"
        )
    _say(f"{needed} GPU(s) ready")
    return True


def run(args: argparse.Namespace) -> int:
    """Validate, then print the plan (--dry-run) or wait for GPUs and run salbench."""
    require_salbench()
    from salbench.config import load_config
    from salbench.errors import SalbenchError

    config_path = resolve_config(args.config, args.project_dir)
    try:
        config = load_config(config_path, overrides(args))
        if args.dry_run:
            print("\n".join(plan(config, config_path, args)))
            return 0
    except SalbenchError as exc:
        raise ScriptError(str(exc)) from None
    from salbench.cli import main as salbench_main

    requested = False
    try:
        try:
            requested = _connect_and_wait(config, args)
        except ConnectionError as exc:
            raise ScriptError(f"cannot reach the Ray cluster at {args.address!r} ({exc})") from None
        _say("salbench " + " ".join(salbench_argv(config_path, args)))
        return salbench_main(salbench_argv(config_path, args))
    finally:
        if requested:
            from ray.autoscaler.sdk import request_resources

            try:  # withdraw the request: idle workers go after idle_timeout_minutes
                request_resources(bundles=[])
            except Exception as exc:  # noqa: BLE001 - never hide the run's own outcome
                _say(f"could not withdraw the GPU request ({exc}); workers stay until "
                     "another request_resources call or `ray down`")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a ScriptError prints one line and returns 2."""
    args = build_parser().parse_args(argv)
    if args.require_data and not args.dry_run:
        build_parser().error("--require-data goes with --dry-run")
    try:
        return run(args)
    except ScriptError as exc:
        print(f"run_imagenet: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
