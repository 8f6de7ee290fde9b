"""Run the graph on a private local Ray whose 2 "GPUs" are only a resource (no CUDA) and
print, per model, where its AttributeActor and ScoreActor ran (JSON). Used by
tests/test_placement.py in a subprocess, since a process can join only one Ray cluster."""

from __future__ import annotations

import json
import sys

import ray
import ray.data

from salbench.config import parse_config
from salbench.pipeline.graph import build_graph


def main(out: str) -> None:
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             object_store_memory=200 * 1024 * 1024, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
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
    print(json.dumps({"rows": rows, "models": {
        m: {k: sorted(v) for k, v in e.items()} for m, e in seen.items()}}))


if __name__ == "__main__":
    main(sys.argv[1])
