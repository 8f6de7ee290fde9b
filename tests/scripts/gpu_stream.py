"""Run salbench on a private local Ray whose GPUs are only a Ray resource (no CUDA; the
model actors compute on CPU), one run per scenario in turn, and print one JSON line: per
scenario what the planner logged, the wall time, and per stage the lifetimes of the Ray
actors started during that run (from the GCS). Used by tests/test_placement.py in a
subprocess, since a process can join only one Ray cluster.

    python gpu_stream.py GPUS OUT_DIR:MODELS[:attribute_num_gpus] [OUT_DIR:MODELS...]
        [OUT_DIR:placement]

``OUT_DIR:placement``: the graph alone (no run) for two models asking half a GPU each; per
model, where its AttributeActor and ScoreActor ran (``placement`` in the report).
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
from salbench.pipeline.graph import build_graph
from salbench.pipeline.run import run

STAGES = ("AttributeActor", "BokehActor", "ScoreActor", "FinalizeActor")


def actor_lifetimes(since_ms: int) -> dict[str, list[tuple[int, int]]]:
    """Per stage, each actor started at or after ``since_ms``: (start, end, state), times in
    ms since the epoch (end 0: still alive).

    ``ray._private.state`` reads the GCS directly; the public state API needs the dashboard,
    which this Ray does not run.
    """
    from ray._private import state

    out: dict[str, list[tuple[int, int]]] = {s: [] for s in STAGES}
    for info in state.actors().values():
        for stage in STAGES:
            if (info["ActorClassName"] == f"MapWorker(MapBatches({stage}))"
                    and int(info["StartTime"]) >= since_ms):
                out[stage].append((int(info["StartTime"]), int(info["EndTime"]), info["State"]))
    return out


def scenario(out: str, n_models: int, share: str | None) -> dict:
    """One run of ``n_models`` tiny models into ``out``: its report."""
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
    logging.getLogger("salbench").removeHandler(handler)
    report["log"] = logged.getvalue()
    report["actors"] = actor_lifetimes(report["t0_ms"])
    return report


def placement(out: str) -> dict:
    """The graph of two models with half a GPU each on 4 images: per model, the placements
    its AttributeActor and ScoreActor reported, and the rows."""
    config = parse_config({
        "out": out, "dataset": {"kind": "synthetic", "n": 4, "size": 32},
        "models": [{"name": "tiny_smooth", "num_gpus": 0.5}, {"name": "tiny_cnn",
                                                              "num_gpus": 0.5}],
        "methods": ["vg"], "metrics": ["sic"],
        "resources": {"shard_size": 2, "torch_threads": 1},
    })
    geometries = [((32, 32), 1.0), ((32, 32), 1.0)]
    items = [{"shard": 0, "start": 0, "stop": 2}, {"shard": 1, "start": 2, "stop": 4}]
    seen: dict[str, dict[str, set[str]]] = {}
    rows = 0
    for row in build_graph(config, items, geometries).iter_rows():
        rows += 1
        entry = seen.setdefault(row["model"], {"attribute": set(), "score": set()})
        entry["attribute"].add(row["placement"])
        entry["score"].add(row["score_placement"])
    return {"rows": rows, "models": {m: {k: sorted(v) for k, v in e.items()}
                                     for m, e in seen.items()}}


def main(gpus: float, scenarios: list[str]) -> None:
    # idle workers kept (as the test session's Ray does): each scenario's read/decode tasks
    # reuse the workers that imported torch for the previous one's
    ray.init(address="local", num_cpus=2, num_gpus=gpus, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, log_to_driver=False,
             _system_config={"num_workers_soft_limit": 8})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    reports = []
    for spec in scenarios:
        out, models, *share = spec.split(":")
        reports.append(placement(out) if models == "placement" else
                       scenario(out, int(models), share[0] if share else None))
    print(json.dumps(reports))


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2:])
