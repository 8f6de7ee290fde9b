"""A run that loses a worker node mid-run: a Ray cluster of a head and worker nodes in this
one machine (``ray.cluster_utils.Cluster``, as Ray's own fault-tolerance tests do). The head
offers no CPUs, so every task and actor runs on worker node A; once A holds a model actor and
a CPU-stage actor and some shards are written, A is removed (its raylet and every process on
it killed, as when a spot node is reclaimed) and worker node B joins (as an autoscaler's
replacement would). Prints one JSON
line: the run directory, the actors that were on A, the shards written before and the time.
Used by tests/test_node_loss.py in a subprocess (a process joins only one Ray cluster).

    python node_loss.py CONFIG_JSON
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ray
import ray.data
from ray.cluster_utils import Cluster

from salbench.config import parse_config
from salbench.pipeline.run import run

STORE = 100 * 1024 * 1024
#: The GCS declares a node dead after this many failed health checks in a row, one a second
#: (Ray's defaults, 5 every 3 s, left the run waiting ~13 s for the removed node's death
#: before its actors restarted; measured on the 2-core VM, 2026-12-06). A check waits 2 s for
#: a busy raylet's answer.
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_timeout_ms": 2000,
                 "health_check_failure_threshold": 3}


def actors_on(node_id: str) -> list[str]:
    """Class names of the live Ray Data actors on node ``node_id`` (read from the GCS)."""
    from ray._private import state

    return sorted(info["ActorClassName"] for info in state.actors().values()
                  if info["State"] == "ALIVE" and info["Address"]["NodeID"] == node_id
                  and info["ActorClassName"].startswith("MapWorker"))


def main(config_json: str) -> None:
    config = parse_config(json.loads(config_json))
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": STORE, "include_dashboard": False,
        "_system_config": HEALTH_CHECKS})
    node_a = cluster.add_node(num_cpus=2, object_store_memory=STORE)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    result: dict[str, Any] = {}

    def go() -> None:
        try:
            result["run_dir"] = str(run(config, progress=None).run_dir)
        except Exception as exc:  # reported to the test, which fails on it
            result["error"] = f"{type(exc).__name__}: {exc}"

    t0 = time.time()
    worker = threading.Thread(target=go)
    worker.start()
    report: dict[str, Any] = {"removed": False}
    deadline = time.time() + 480  # minutes on a shared 2-core machine; seconds alone
    while worker.is_alive() and time.time() < deadline:
        on_a = actors_on(node_a.node_id)
        done = sorted(Path(config.out).glob("*/_done/*"))
        stages = {name.split("(")[-1].rstrip(")") for name in on_a}
        if len(done) >= 2 and {"AttributeActor", "BokehActor"} <= stages:
            cluster.remove_node(node_a, allow_graceful=False)
            report.update(removed=True, actors_on_removed_node=on_a,
                          shards_done_before=len(done),
                          removed_after_s=round(time.time() - t0, 1))
            cluster.add_node(num_cpus=2, object_store_memory=STORE)  # the replacement node
            cluster.wait_for_nodes()
            break
        time.sleep(0.1)
    worker.join(timeout=max(1.0, deadline - time.time()))
    report.update(result, seconds=round(time.time() - t0, 1), finished=not worker.is_alive())
    print(json.dumps(report), flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
