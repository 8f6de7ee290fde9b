"""Placement: the plan (salbench.pipeline.plan) sizes every stage's actor pool for the
cluster or stops the run at once; with GPUs in the cluster each model gets its own pools, and
the model stages (AttributeActor, ScoreActor) share the model's GPUs. The Ray runs here have
GPUs as a Ray resource only (no CUDA: the model actors compute on CPU), in subprocesses,
since a process can join only one Ray cluster and the session's has no GPUs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from salbench.config import parse_config
from salbench.datasets.shards import block_items
from salbench.errors import ConfigError
from salbench.pipeline.plan import (
    GPU_ACTOR_CPUS,
    Plan,
    actor_config,
    block_shards,
    make_plan,
    min_gpus,
)

SCRIPTS = Path(__file__).parent / "scripts"
BASE = {"dataset": {"kind": "synthetic", "n": 4, "size": 32}, "methods": ["vg"]}


def _config(n_models: int = 1, metrics: list[str] | None = None, **resources):
    models = [{"name": "tiny_cnn", "alias": f"m{i}"} for i in range(n_models)]
    return parse_config({**BASE, "models": models, "metrics": metrics or ["insertion"],
                         "resources": resources})


def _gpus_used_per_gpu(plan: Plan, gpus: int) -> list[float]:
    """The model actors' GPU requests at minimum size packed first-fit into ``gpus`` GPUs,
    as Ray places fractions (within one GPU); fails the test if one does not fit."""
    free = [1.0] * gpus
    for p in sorted(plan.pools, key=lambda p: -p.num_gpus):
        for _ in range(p.min_size if p.num_gpus else 0):
            i = next((i for i, f in enumerate(free) if f + 1e-9 >= p.num_gpus), None)
            assert i is not None, f"{p} does not fit {free}"
            free[i] -= p.num_gpus
    return [1.0 - f for f in free]


def test_one_gpu_with_pic_shares_it_between_attribute_and_score():
    plan = make_plan(_config(metrics=["sic", "aic"]), {"CPU": 2, "GPU": 1})
    attribute, score = plan.pool("attribute", "m0"), plan.pool("score", "m0")
    assert plan.use_gpu and plan.split
    assert attribute.num_gpus == score.num_gpus == 0.5  # the one GPU holds both pools
    assert attribute.min_size == score.min_size == 1
    # every pool fits the 2 CPUs at once: read/decode 0.5 + actors' scaled requests
    assert plan.demand()[0] <= 2 and plan.demand()[1] <= 1
    assert {p.stage for p in plan.pools} == {"attribute", "score", "bokeh", "finalize"}


def test_three_models_on_two_gpus_get_fractions_that_pack():
    plan = make_plan(_config(n_models=3), {"CPU": 8, "GPU": 2})
    shares = [plan.pool("attribute", f"m{i}").num_gpus for i in range(3)]
    assert all(0 < s < 1 for s in shares)
    _gpus_used_per_gpu(plan, 2)  # Ray can place them: no GPU holds more than 1
    pic = make_plan(_config(n_models=3, metrics=["sic"]), {"CPU": 8, "GPU": 2})
    assert sum(p.num_gpus * p.min_size for p in pic.pools) <= 2
    assert max(_gpus_used_per_gpu(pic, 2)) <= 1


def test_two_models_on_eight_gpus_use_more_than_two_actors():
    for metrics in (["insertion"], ["sic"]):
        plan = make_plan(_config(n_models=2, metrics=metrics, attribute_actors="auto"),
                         {"CPU": 64, "GPU": 8})
        attribute = [plan.pool("attribute", f"m{i}") for i in range(2)]
        assert sum(p.max_size for p in attribute) > 2
        assert plan.demand("max_size")[1] <= 8  # at their maximum they use at most the 8
        assert plan.demand("max_size")[1] > 4  # ... and more than half of them
        assert all(p.min_size == 1 for p in attribute)
        assert attribute[0].strategy_args() == {"min_size": 1, "max_size": attribute[0].max_size}
    fixed = make_plan(_config(n_models=2, metrics=["sic"]), {"CPU": 64, "GPU": 8})
    assert "6 GPU(s) stay idle" in fixed.describe()  # one slot of 1 GPU per model: says so


def test_fixed_gpu_shares_that_do_not_fit_stop_with_the_numbers_and_the_fix():
    config = _config(n_models=2, metrics=["sic"], attribute_num_gpus=1)
    with pytest.raises(ConfigError, match=r"need 2 GPUs.*has 1.*attribute_num_gpus: auto"):
        make_plan(config, {"CPU": 8, "GPU": 1})
    # 3 x 0.6 GPU sum to 1.8 but Ray cannot put two 0.6 on one GPU: 3 GPUs, not 2
    config = _config(n_models=3, attribute_num_gpus=0.6)
    with pytest.raises(ConfigError, match=r"need 3 GPUs"):
        make_plan(config, {"CPU": 8, "GPU": 2})
    assert make_plan(config, {"CPU": 8, "GPU": 3}).pool("attribute", "m2").num_gpus == 0.6
    with pytest.raises(ConfigError, match=r"device is cuda.*no GPUs"):
        make_plan(_config(device="cuda"), {"CPU": 8})
    with pytest.raises(ConfigError, match=r"cannot be split"):
        make_plan(_config(metrics=["sic"], attribute_num_gpus=3), {"CPU": 8, "GPU": 4})
    with pytest.raises(ConfigError, match=r"has 0.25 CPUs"):
        make_plan(_config(), {"CPU": 0.25})


def test_model_num_gpus_overrides_and_min_gpus():
    config = parse_config({**BASE, "metrics": ["sic"], "models": [
        {"name": "tiny_cnn", "num_gpus": 1}, {"name": "tiny_smooth"}]})
    plan = make_plan(config, {"CPU": 8, "GPU": 3})
    assert plan.pool("attribute", "tiny_cnn").num_gpus == 0.5  # its 1 GPU, shared
    assert min_gpus(config) == 1.0  # tiny_smooth is on auto: any GPU count
    assert min_gpus(_config(n_models=2, attribute_num_gpus=0.5, attribute_actors=[2, 4])) == 2.0


def test_blocks_gather_small_shards_only_where_it_pays():
    """block_images auto: 64 images a block (4 shards of 16) in runs that keep 256 blocks,
    fewer shards a block below that, one in small runs and with PIC metrics (large bokeh
    blocks); a number: whole shards up to it, at least one."""
    auto = _config(shard_size=16)
    assert block_shards(auto, 3125) == 4  # 50,000 images: 782 blocks of 64
    assert block_shards(auto, 600) == 2 and block_shards(auto, 255) == 1
    assert block_shards(_config(shard_size=64), 10_000) == 1
    assert block_shards(_config(metrics=["sic"], shard_size=16), 3125) == 1
    assert block_shards(_config(shard_size=16, block_images=100), 10) == 6
    assert block_shards(_config(shard_size=16, block_images=8), 10) == 1
    items = [{"shard": i, "start": 2 * i, "stop": 2 * i + 2} for i in range(5)]
    blocks = block_items(items, 2)
    assert [json.loads(b["shards"]) for b in blocks] == [items[:2], items[2:4], items[4:]]


def test_cpu_plan_scales_requests_and_sizes_auto_pools():
    plan = make_plan(_config(n_models=2, metrics=["sic"]), {"CPU": 2})
    assert not plan.use_gpu and plan.cpu_scale < 1
    assert plan.demand()[0] <= 2 + 1e-9  # every pool at once on the 2 CPUs
    auto = make_plan(_config(attribute_actors="auto", cpu_actors="auto"), {"CPU": 16})
    a, b = auto.pool("attribute", "m0"), auto.pool("bokeh", "m0")
    assert a.min_size == b.min_size == 1 and a.max_size > 1 and b.max_size > 1
    assert auto.demand()[0] <= 16
    ranged = make_plan(_config(attribute_actors=[2, 3], cpu_actors=4), {"CPU": 16})
    assert ranged.pool("attribute", "m0").strategy_args() == {"min_size": 2, "max_size": 3}
    assert ranged.pool("bokeh", "m0").strategy_args() == {"size": 4}
    resolved = actor_config(_config(attribute_actors=[2, 3], cpu_actors="auto"), ranged)
    assert resolved["resources"]["attribute_actors"] == 3
    assert resolved["resources"]["cpu_actors"] == 4


def test_cpu_model_actors_get_the_cpus_the_other_stages_leave():
    """attribute_num_cpus auto, fixed pools, no GPUs: the cluster's CPUs less read + decode
    (0.25 + 0.25) and one CPU-stage actor per pool (0.5 each), shared among the model
    actors, capped at one node's CPUs less a CPU-stage actor's."""
    def cpus(plan, stage="attribute", model="m0"):
        return plan.pool(stage, model).num_cpus

    assert cpus(make_plan(_config(), {"CPU": 8})) == 7.0  # 8 - 0.5 - 0.5
    two = make_plan(_config(n_models=2), {"CPU": 8})  # (8 - 0.5 - 2 x 0.5) / 2
    assert cpus(two) == cpus(two, model="m1") == 3.25
    pic = make_plan(_config(metrics=["sic"]), {"CPU": 8})  # bokeh + finalize; attribute + score
    assert cpus(pic) == cpus(pic, "score") == 3.25 and cpus(pic, "bokeh") == 0.5
    assert cpus(make_plan(_config(attribute_actors=2), {"CPU": 8})) == 3.5
    assert cpus(make_plan(_config(), {"CPU": 16}, node_cpus=4)) == 3.5  # one node: 4 - 0.5
    # where little is left, 1 (then scaled with every request to fit, as before)
    assert cpus(make_plan(_config(), {"CPU": 2})) == 1.0
    assert cpus(make_plan(_config(), {"CPU": 16}, node_cpus=1)) == 1.0
    # a number is kept; autoscaling pools grow in actors of 1 CPU instead
    assert cpus(make_plan(_config(attribute_num_cpus=2), {"CPU": 8})) == 2.0
    auto = make_plan(_config(attribute_actors="auto"), {"CPU": 8})
    assert cpus(auto) == 1.0 and auto.pool("attribute", "m0").max_size == 7
    for plan in (two, pic):
        assert plan.cpu_scale == 1.0 and plan.demand()[0] == pytest.approx(8)  # all, no more
    # GPU runs: a model actor asks for the GPU actors' own CPUs, not what is left
    assert cpus(make_plan(_config(), {"CPU": 8, "GPU": 1})) == GPU_ACTOR_CPUS


@pytest.mark.parametrize("key, value, match", [
    ("attribute_actors", 0, "must be positive"),
    ("attribute_actors", [3, 1], r"1 <= min <= max"),
    ("attribute_actors", [1], r"positive int, auto or \[min, max\]"),
    ("cpu_actors", "many", r"positive int, auto or \[min, max\]"),
    ("cpu_actors", True, r"positive int, auto"),
    ("attribute_num_gpus", 1.5, "whole GPUs"),
    ("attribute_num_gpus", -1, "positive number or auto"),
    ("attribute_num_gpus", "half", "positive number or auto"),
    ("attribute_num_cpus", 0, "positive number or auto"),
    ("attribute_num_cpus", "many", "positive number or auto"),
    ("attribute_num_cpus", True, "positive number or auto"),
    ("window_images", 0, "must be positive"),
    ("window_images", 1.5, "expected int"),
    ("block_images", 0, "must be positive"),
    ("block_images", "big", "number of images or auto"),
    ("block_images", 2.5, "expected int"),
])
def test_pool_keys_are_validated_by_name(key, value, match):
    with pytest.raises(ConfigError, match=rf"resources\.{key}: .*{match}"):
        _config(**{key: value})


def test_pool_sizes_round_trip_through_the_config():
    config = _config(attribute_actors=[1, 4], cpu_actors="auto", attribute_num_gpus=0.5)
    assert config.resources.attribute_actors == (1, 4)
    again = parse_config(config.to_dict())
    assert again == config and again.to_dict()["resources"]["attribute_actors"] == [1, 4]
    with pytest.raises(ConfigError, match=r"models\[0\]: num_gpus"):
        parse_config({**BASE, "models": [{"name": "tiny_cnn", "num_gpus": 2.5}]})


@pytest.fixture(scope="module")
def one_gpu(tmp_path_factory) -> dict[str, dict]:
    """Three scenarios in turn on one private Ray with 1 "GPU" (one subprocess, one Ray
    start): ``stream``, 1 model with PIC; ``too_big``, 2 models asking 1 GPU each;
    ``placement``, the graph of 2 models asking half a GPU each. Each run's report lists
    only the actors it started."""
    outs = {name: tmp_path_factory.mktemp(name) for name in ("stream", "too_big", "placement")}
    res = subprocess.run([sys.executable, str(SCRIPTS / "gpu_stream.py"), "1",
                          f"{outs['stream']}:1", f"{outs['too_big']}:2:1",
                          f"{outs['placement']}:placement"],
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    # Ray's raylet may print to stdout too: the report is the script's one JSON line
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith('[{"')]
    reports = json.loads(line)
    return {name: {**report, "out": outs[name]}
            for name, report in zip(outs, reports, strict=True)}


@pytest.mark.slow
def test_one_gpu_with_pic_streams_every_pool_alive_at_once(one_gpu):
    report = one_gpu["stream"]
    assert report["rows"] == report["ok"] == 24, report  # 12 images x 2 methods
    assert "plan fits: GPU run" in report["log"]
    assert "attribute m0" in report["log"] and "0.5" in report["log"]
    lifetimes = report["actors"]
    for stage, actors in lifetimes.items():
        assert [a for a in actors if a[0] > 0], f"no {stage} ever started: {lifetimes}"
    started = [a[0] for actors in lifetimes.values() for a in actors if a[0] > 0]
    ended = [a[1] for actors in lifetimes.values() for a in actors if a[0] > 0]
    # one moment when every stage's pool was alive: the latest start precedes the first end
    assert max(started) < min(ended), lifetimes


@pytest.mark.slow
def test_gpu_run_that_does_not_fit_fails_in_seconds(one_gpu):
    report = one_gpu["too_big"]  # 2 models x 1 GPU each on a 1-GPU Ray
    assert "need 2 GPUs" in report["config_error"] and "has 1" in report["config_error"]
    assert report["seconds"] < 20, report["seconds"]
    assert not any(report["actors"].values())  # no actor was ever asked for
    assert list(report["out"].iterdir()) == []  # refused before any run directory was made


@pytest.mark.slow
def test_model_stages_get_their_gpu_share_and_one_model_each(one_gpu):
    """Two models asking half a GPU each: per model one AttributeActor and one ScoreActor,
    each with the GPU in its Ray context, each its own process."""
    report = one_gpu["placement"]
    assert report["rows"] == 8  # 4 images x 2 models x 1 method
    pids = set()
    for model, where in report["models"].items():
        for stage in ("attribute", "score"):
            (actor,) = [json.loads(p) for p in where[stage]]  # one actor per model and stage
            assert actor["model"] == model and len(actor["gpu_ids"]) == 1, (stage, actor)
            assert actor["device"] == "cpu"  # no CUDA here: the GPU is only a resource
            pids.add(actor["pid"])
    assert len(pids) == 4  # every (model, stage) pool is its own actor


@pytest.mark.slow
def test_placement_outside_ray_does_not_start_ray():
    """The actors also run in-process (benchmarks, notebooks): placement() must not connect
    to, or start, a Ray cluster there (a stale cluster address made it hang)."""
    code = ("import ray, torch\n"
            "from salbench.actors.attribute import placement\n"
            "print(placement('m', torch.device('cpu')), ray.is_initialized())\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    info, started = res.stdout.strip().rsplit(" ", 1)
    assert json.loads(info)["gpu_ids"] == [] and started == "False"


@pytest.mark.slow
def test_elastic_pools_run_and_give_the_fixed_pools_tables(ray_session, tmp_path):
    """Autoscaling pools (``[min, max]``, ``auto``) are valid Ray Data strategies, and the
    tables do not depend on the pools' sizes: they equal the in-process executor's, which
    equal the fixed pools' (tests/test_numerics.py, tests/test_api.py)."""
    from salbench.pipeline.run import run
    from salbench.results.tables import read_samples

    def table(resources: dict, out: str, in_process: bool):
        cfg = {**BASE, "dataset": {"kind": "synthetic", "n": 6, "size": 32, "seed": 4},
               "models": ["tiny_cnn"], "metrics": ["insertion", "pointing_game"],
               "out": str(tmp_path / out),
               "resources": {"shard_size": 2, "torch_threads": 1, **resources}}
        res = run(parse_config(cfg), progress=None, in_process=in_process)
        return read_samples(res.run_dir).drop(columns=["run_id"])

    elastic = table({"attribute_actors": [1, 2], "cpu_actors": "auto"}, "elastic", False)
    assert len(elastic) == 6 and (elastic["status"] == "ok").all()
    pd.testing.assert_frame_equal(elastic, table({}, "in-process", True))


def _threads_in_actor(num_cpus: float, torch_threads: int | None) -> int:
    import ray
    import torch

    from salbench.actors.attribute import set_threads

    @ray.remote(num_cpus=num_cpus)
    class Probe:
        def threads(self, cfg: dict) -> int:
            set_threads(parse_config(cfg), torch.device("cpu"))
            return torch.get_num_threads()

    cfg = _config(torch_threads=torch_threads).to_dict()
    actor = Probe.remote()
    try:
        return ray.get(actor.threads.remote(cfg))
    finally:
        ray.kill(actor)


def test_a_cpu_model_actor_uses_the_cpus_ray_gave_it(ray_session):
    # Ray's local cluster in tests has 2 CPUs; the old rule (the node's cores divided among
    # the model actors) gave a 1-CPU actor both, oversubscribing the other stages' core.
    assert _threads_in_actor(1, None) == 1
    assert _threads_in_actor(2, None) == 2
    assert _threads_in_actor(0.5, None) == 1
    assert _threads_in_actor(1, 3) == 3  # resources.torch_threads wins


def test_in_process_the_model_stage_divides_the_cores_among_the_models(ray_session):
    import os

    import torch

    from salbench.actors.attribute import set_threads

    before = torch.get_num_threads()
    try:
        set_threads(_config(n_models=2), torch.device("cpu"))
        assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // 2)
    finally:
        torch.set_num_threads(before)
