"""Pipeline overhead: the Ray graph vs a bare single-process loop doing the same work.

The loop calls the same stage functions and actor classes in one process, shard by shard,
without Ray (read, decode, AttributeActor, BokehActor); the pipeline is ``salbench run``'s
graph on a local Ray. Both use the same config; the ratio is loop time / pipeline time
(throughput of the pipeline relative to the loop; >= 0.9 is the SPEC target). Run it alone:
two torch-heavy processes on two cores slow each other down.

    python benchmarks/pipeline_vs_loop.py [--out DIR] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from salbench.actors import AttributeActor, BokehActor
from salbench.datasets import open_dataset
from salbench.models import load
from salbench.pipeline import parse_config, run
from salbench.pipeline.run import plan_shards
from salbench.pipeline.stages import decode_batch, read_shard

CONFIG = {
    "name": "bench",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "sample"},
    "models": ["efficientnet_lite0"],
    "methods": ["vg", "gxi", "ig", "smoothgrad", "gradcam", "idgi_ig"],
    "metrics": ["insertion", "deletion", "pointing_game", "wsol"],
    "resources": {"shard_size": 4, "torch_threads": 2},
}


def bare_loop(config: dict) -> float:
    """Seconds for the same work in one process, without Ray."""
    cfg = parse_config(config)
    model = load(cfg.models[0].name)
    t0 = time.perf_counter()
    attribute, bokeh = AttributeActor(cfg.to_dict(), 0), BokehActor(cfg.to_dict())
    spec = json.dumps(cfg.dataset, sort_keys=True)
    for item in plan_shards(len(open_dataset(cfg.dataset)), cfg.resources.shard_size):
        rows = pd.DataFrame(list(read_shard(item, dataset_json=spec)))
        decoded = decode_batch(rows, input_size=model.input_size,
                               crop_fraction=model.crop_fraction)
        bokeh(attribute(decoded))
    return time.perf_counter() - t0


def pipeline(config: dict, out: Path) -> float:
    """Seconds of the Ray graph's execution (Ray already started, as in a long run)."""
    res = run(parse_config({**config, "out": str(out)}), progress=None)
    manifest = json.loads((res.run_dir / "manifest.json").read_text())
    return float(manifest["timings"]["execute_seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    import ray

    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    out = args.out or Path(tempfile.mkdtemp())
    loops, pipes = [], []
    for _ in range(args.repeats):  # interleaved repetitions, median of each
        loops.append(bare_loop(CONFIG))
        pipes.append(pipeline(CONFIG, out))
    loop, pipe = statistics.median(loops), statistics.median(pipes)
    print(json.dumps({"loop_s": loops, "pipeline_s": pipes, "ratio_loop_over_pipeline":
                      round(loop / pipe, 3)}, indent=1))


if __name__ == "__main__":
    main()
