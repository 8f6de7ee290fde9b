"""Case 5: pipeline overhead: the Ray graph vs a bare single-process loop doing the same work.

The loop calls the same stage functions and actor classes in one process, shard by shard,
without Ray (read, decode, AttributeActor, BokehActor); the pipeline is ``salbench run``'s
graph on a local Ray (already started, as in a long run; its execution time from the
manifest). Both use the same config: the bundled photos, six methods in the fast profile,
four metrics. ratio = loop seconds / pipeline seconds, the pipeline's throughput relative to
the loop's; target >= 0.9. The scaling curve runs the graph with 1..N AttributeActors
(torch threads = cores / N each) and reports images/s.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.common import Settings, median
from salbench.actors import AttributeActor, BokehActor
from salbench.datasets import open_dataset
from salbench.models import load
from salbench.pipeline import parse_config, run
from salbench.pipeline.run import plan_shards
from salbench.pipeline.stages import decode_batch, read_shard

TARGET = 0.9
METHODS = ["vg", "gxi", "ig", "smoothgrad", "gradcam", "idgi_ig"]


def config(s: Settings, actors: int = 1) -> dict[str, Any]:
    """The benchmark's run config: ``actors`` model actors sharing the machine's cores."""
    cores = os.cpu_count() or 1
    return {
        "name": "bench", "seed": 0, "profile": "fast",
        "dataset": {"kind": "sample", **({"limit": 2} if s.quick else {})},
        "models": [s.model],
        "methods": METHODS[:2] if s.quick else METHODS,
        "metrics": ["insertion", "deletion", "pointing_game", "wsol"],
        "resources": {"shard_size": 4, "attribute_actors": actors,
                      "torch_threads": max(1, cores // actors)},
    }


def bare_loop(cfg_dict: dict[str, Any]) -> float:
    """Seconds for the config's work in one process, without Ray."""
    cfg = parse_config(cfg_dict)
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


def pipeline(cfg_dict: dict[str, Any], out: Path) -> tuple[float, float]:
    """Seconds of the Ray graph's execution for the config, whole and after start-up.

    After start-up: from the first block entering the model actor to the last block out of
    any stage (Ray Data's per-stage timestamps in the manifest), i.e. without starting Ray
    Data's workers and actors, importing torch and loading the model in them.
    """
    res = run(parse_config({**cfg_dict, "out": str(out)}), progress=None)
    timings = json.loads((res.run_dir / "manifest.json").read_text())["timings"]
    stages = timings["stages"]
    start = min(v["earliest_start_time"] for k, v in stages.items() if "AttributeActor" in k)
    end = max(v["latest_end_time"] for v in stages.values())
    return float(timings["execute_seconds"]), float(end - start)


def run_case(s: Settings) -> dict[str, Any]:
    """Loop vs pipeline ratio, and the pipeline's images/s over 1..cores actors."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    out = Path(tempfile.mkdtemp(prefix="salbench-bench-"))
    cfg = config(s)
    n_images = len(open_dataset(parse_config(cfg).dataset))
    # interleaved; the pipeline's figures: its execute time (ray.init excluded), whole and
    # after its workers and actors started
    times: dict[str, list[float]] = {"loop": [], "pipeline": [], "pipeline_after_startup": []}
    for _ in range(s.reps):
        times["loop"].append(bare_loop(cfg))
        whole, steady = pipeline(cfg, out)
        times["pipeline"].append(whole)
        times["pipeline_after_startup"].append(steady)
    ratio = median(times["loop"]) / median(times["pipeline"])
    scaling = []
    for actors in range(1, (os.cpu_count() or 1) + 1):
        cfg_n = config(s, actors)
        secs = [pipeline(cfg_n, out)[0] for _ in range(max(1, s.reps - 1))]
        scaling.append({"attribute_actors": actors,
                        "torch_threads_each": cfg_n["resources"]["torch_threads"],
                        "seconds": round(median(secs), 2),
                        "images_per_s": round(n_images / median(secs), 3), "times": secs})
    return {
        "case": "pipeline", "images": n_images, "methods": cfg["methods"],
        "metrics": cfg["metrics"],
        "loop_s": round(median(times["loop"]), 2),
        "pipeline_s": round(median(times["pipeline"]), 2),
        "ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET,
        "pipeline_after_startup_s": round(median(times["pipeline_after_startup"]), 2),
        "ratio_after_startup": round(median(times["loop"])
                                     / median(times["pipeline_after_startup"]), 3),
        "times": times, "scaling": scaling,
    }


def markdown(result: dict[str, Any]) -> str:
    """The case's tables: the ratio, then images/s over actors."""
    met = "yes" if result["met"] else "no"
    lines = [
        f"{result['images']} photos x {len(result['methods'])} methods "
        f"({', '.join(result['methods'])}), metrics {', '.join(result['metrics'])}.",
        "",
        "| bare loop s | pipeline s | ratio (pipeline throughput / loop) | target | met "
        "| pipeline s after start-up | ratio after start-up |",
        "|---:|---:|---:|---:|---|---:|---:|",
        f"| {result['loop_s']} | {result['pipeline_s']} | {result['ratio']} | "
        f">= {result['target']} | {met} | {result['pipeline_after_startup_s']} | "
        f"{result['ratio_after_startup']} |",
        "",
        "| AttributeActors | torch threads each | seconds | images/s |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["scaling"]:
        lines.append(f"| {r['attribute_actors']} | {r['torch_threads_each']} | {r['seconds']} | "
                     f"{r['images_per_s']} |")
    return "\n".join(lines)
