"""The allocator setting of ``salbench.memory``: page faults and time with and without.

Each setting runs in its own process (glibc reads it per process): an AttributeActor
computes IG (fast profile) on the bundled photos, two passes; printed per pass: wall
seconds, user and system CPU seconds, minor page faults. Page-fault and system-time counts
hold on a busy machine; wall time needs a quiet one.

    python benchmarks/alloc.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

CONFIG = {"name": "alloc", "seed": 0, "profile": "fast", "dataset": {"kind": "sample"},
          "models": ["efficientnet_lite0"], "methods": ["ig"], "metrics": ["pointing_game"],
          "resources": {"shard_size": 4, "torch_threads": 2}}


def passes(repeats: int = 2) -> list[dict[str, float]]:
    """Per pass over the photos: wall, user, sys seconds and minor page faults."""
    import pandas as pd

    from salbench.actors import AttributeActor
    from salbench.config import parse_config
    from salbench.datasets import open_dataset
    from salbench.datasets.shards import decode_batch, read_shard
    from salbench.models import load
    from salbench.pipeline.run import plan_shards

    cfg = parse_config(CONFIG)
    model = load("efficientnet_lite0")
    spec = json.dumps(cfg.dataset, sort_keys=True)
    batches = [
        decode_batch(pd.DataFrame(list(read_shard(item, dataset_json=spec))),
                     input_size=model.input_size, crop_fraction=model.crop_fraction)
        for item in plan_shards(len(open_dataset(cfg.dataset)), cfg.resources.shard_size)
    ]
    actor = AttributeActor(cfg.to_dict(), 0)
    out = []
    for _ in range(repeats):
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for b in batches:
            actor(b)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        out.append({"wall_s": round(wall, 2), "user_s": round(r1.ru_utime - r0.ru_utime, 2),
                    "sys_s": round(r1.ru_stime - r0.ru_stime, 2),
                    "minor_faults": r1.ru_minflt - r0.ru_minflt})
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(passes()))
        return
    result = {}
    for tuned in ("0", "1"):
        env = {**os.environ, "SALBENCH_MALLOC_TUNING": tuned}
        proc = subprocess.run([sys.executable, __file__, "--child"], env=env, check=True,
                              capture_output=True, text=True)
        result["tuned" if tuned == "1" else "glibc defaults"] = json.loads(
            proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
