"""Run salbench on a private local Ray whose GPUs are only a Ray resource (no CUDA; the
model actors compute on CPU) and print one JSON line: what the planner logged, the wall
time, and per stage the Ray actors' lifetimes (from the GCS). Used by tests/test_placement.py
in a subprocess, since a process can join only one Ray cluster.

    python gpu_stream.py OUT_DIR GPUS MODELS [attribute_num_gpus]
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time

import ray
import ray.data

from salbench.config import parse_config
from salbench.errors import ConfigError
from salbench.pipeline.run import run

STAGES = ("AttributeActor", "BokehActor", "ScoreActor", "FinalizeActor")


def actor_lifetimes() -> dict[str, list[tuple[int, int]]]:
    """Per stage, each actor's (start, end) in ms since the epoch (end 0: still alive).

    ``ray._private.state`` reads the GCS directly; the public state API needs the dashboard,
    which this Ray does not run.
    """
    from ray._private import state

    out: dict[str, list[tuple[int, int]]] = {s: [] for s in STAGES}
    for info in state.actors().values():
        for stage in STAGES:
            if info["ActorClassName"] == f"MapWorker(MapBatches({stage}))":
                out[stage].append((int(info["StartTime"]), int(info["EndTime"]), info["State"]))
    return out


def main(out: str, gpus: float, n_models: int, share: str | None) -> None:
    ray.init(address="local", num_cpus=2, num_gpus=gpus, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    logging.getLogger("salbench").addHandler(handler)
    logging.getLogger("salbench").setLevel(logging.INFO)
    models = [{"name": "tiny_cnn", "alias": f"m{i}"} for i in range(n_models)]
    resources = {"shard_size": 2, "batch_size": 2, "torch_threads": 1}
    if share is not None:
        resources["attribute_num_gpus"] = float(share)
    config = parse_config({
        "out": out, "name": "stream", "profile": "fast",
        "dataset": {"kind": "synthetic", "n": 12, "size": 32, "seed": 1},
        # IG with many steps keeps the model stage busy for seconds, so that on an idle
        # machine too the attribute pool is still working when the score pool starts
        "models": models, "methods": ["vg", {"name": "ig", "steps": 2000}],
        "metrics": ["sic", "aic", "pointing_game"], "resources": resources,
    })
    t0 = time.time()
    report: dict = {}
    try:
        res = run(config, progress=None)
        report["rows"] = len(res.samples)
        report["ok"] = int((res.samples["status"] == "ok").sum())
    except ConfigError as exc:
        report["config_error"] = str(exc)
    report["seconds"] = round(time.time() - t0, 2)
    report["t0_ms"] = int(t0 * 1000)
    report["log"] = logged.getvalue()
    report["actors"] = actor_lifetimes()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]),
         sys.argv[4] if len(sys.argv) > 4 else None)
