"""Case 5: pipeline overhead: the Ray graph vs a bare single-process loop doing the same work.

The loop calls the same stage functions and actor classes in one process, shard by shard,
without Ray (read, decode, AttributeActor, BokehActor); the pipeline is ``salbench run``'s
graph on a local Ray (already started, as in a long run; its execution time from the
manifest, which includes starting Ray Data's workers and actors). Two workloads, each with
the loop and the graph interleaved:

- ``demo``: ``salbench demo``'s own config (the bundled photos, every method in the fast
  profile, four metrics, maps saved): the demo-sized run the target is about;
- ``short``: six methods only (~16 s of work here), where start-up weighs most.

ratio = loop seconds / pipeline seconds, the pipeline's throughput relative to the loop's;
target >= 0.9 on the demo. "After start-up" times the graph from the first block entering
the model actor to the last block out. The scaling curve runs the short workload with 1..N
AttributeActors (torch threads = cores / N each; the 1-actor point is the short workload's
own pipeline runs, the same config) and reports images/s.
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
from salbench.cli import DEMO_CONFIG
from salbench.config import parse_config
from salbench.datasets import open_dataset
from salbench.datasets.shards import decode_batch, read_shard
from salbench.models import load
from salbench.pipeline.run import plan_shards, run

TARGET = 0.9
METHODS = ["vg", "gxi", "ig", "smoothgrad", "gradcam", "idgi_ig"]


def config(s: Settings, actors: int = 1, workload: str = "short") -> dict[str, Any]:
    """The run config of ``workload`` ("demo" or "short"), ``actors`` model actors sharing
    the machine's cores."""
    cores = os.cpu_count() or 1
    if workload == "demo":
        base = {**DEMO_CONFIG, "models": [s.model]}
        if s.quick:
            base["methods"] = METHODS[:2]
    else:
        base = {"name": "bench", "seed": 0, "profile": "fast", "models": [s.model],
                "methods": METHODS[:2] if s.quick else METHODS,
                "metrics": ["insertion", "deletion", "pointing_game", "wsol"]}
    return {
        **base, "name": f"bench-{workload}",
        "dataset": {"kind": "sample", **({"limit": 2} if s.quick else {})},
        "resources": {"shard_size": 4, "attribute_actors": actors,
                      "torch_threads": max(1, cores // actors)},
    }


def bare_loop(cfg_dict: dict[str, Any]) -> float:
    """Seconds for the config's work in one process, without Ray."""
    cfg = parse_config(cfg_dict)
    model = load(cfg.models[0].name, weights=cfg.models[0].params.get("weights"))
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
    start = min(v["start_s"] for k, v in stages.items() if "AttributeActor" in k)
    end = max(v["end_s"] for v in stages.values())
    return float(timings["execute_seconds"]), float(end - start)


def _compare(s: Settings, cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Interleaved loop and graph runs of one config: medians and ratios."""
    times: dict[str, list[float]] = {"loop": [], "pipeline": [], "pipeline_after_startup": []}
    for _ in range(s.reps):
        times["loop"].append(bare_loop(cfg))
        whole, steady = pipeline(cfg, out)
        times["pipeline"].append(whole)
        times["pipeline_after_startup"].append(steady)
    loop, whole, steady = (median(times[k]) for k in times)
    return {"methods": len(parse_config(cfg).methods), "loop_s": round(loop, 2),
            "pipeline_s": round(whole, 2), "ratio": round(loop / whole, 3),
            "pipeline_after_startup_s": round(steady, 2),
            "ratio_after_startup": round(loop / steady, 3), "times": times}


def run_case(s: Settings) -> dict[str, Any]:
    """Loop vs pipeline ratios (demo and short workloads), images/s over 1..cores actors."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    out = Path(tempfile.mkdtemp(prefix="salbench-bench-"))
    short = config(s)
    n_images = len(open_dataset(parse_config(short).dataset))
    workloads = {w: _compare(s, config(s, 1, w), out) for w in ("demo", "short")}
    scaling = []
    for actors in range(1, (os.cpu_count() or 1) + 1):
        cfg_n = config(s, actors)
        # one actor is the short workload's config: its pipeline runs above are its times
        secs = workloads["short"]["times"]["pipeline"] if actors == 1 else [
            pipeline(cfg_n, out)[0] for _ in range(max(1, s.reps - 1))]
        scaling.append({"attribute_actors": actors,
                        "torch_threads_each": cfg_n["resources"]["torch_threads"],
                        "seconds": round(median(secs), 2),
                        "images_per_s": round(n_images / median(secs), 3), "times": secs})
    ratio = workloads["demo"]["ratio"]
    return {"case": "pipeline", "images": n_images, "metrics": short["metrics"],
            "short_methods": short["methods"], "workloads": workloads,
            "ratio": ratio, "target": TARGET, "met": ratio >= TARGET, "scaling": scaling}


def markdown(result: dict[str, Any]) -> str:
    """The case's tables: the ratios per workload, then images/s over actors."""
    lines = [
        f"{result['images']} photos; metrics {', '.join(result['metrics'])}. demo: "
        f"`salbench demo`'s config; short: {', '.join(result['short_methods'])}.",
        "",
        "| workload | methods | bare loop s | pipeline s | ratio (pipeline throughput / loop) "
        "| target | met | pipeline s after start-up | ratio after start-up |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, w in result["workloads"].items():
        target = f">= {result['target']}" if name == "demo" else ""
        met = ("yes" if w["ratio"] >= result["target"] else "no") if name == "demo" else ""
        lines.append(f"| {name} | {w['methods']} | {w['loop_s']} | {w['pipeline_s']} | "
                     f"{w['ratio']} | {target} | {met} | {w['pipeline_after_startup_s']} | "
                     f"{w['ratio_after_startup']} |")
    lines += ["", "| AttributeActors | torch threads each | seconds | images/s |",
              "|---:|---:|---:|---:|"]
    for r in result["scaling"]:
        lines.append(f"| {r['attribute_actors']} | {r['torch_threads_each']} | {r['seconds']} | "
                     f"{r['images_per_s']} |")
    return "\n".join(lines)
