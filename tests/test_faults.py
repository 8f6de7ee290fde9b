"""Faults: a worker actor killed mid-run, a sample that kills its worker, a lost device.

A killed worker must end with tables equal to an uninterrupted run: no duplicate, no missing
row. (A driver SIGKILLed mid-run and resumed: tests/test_interrupt.py, local, and
tests/test_s3.py, on object storage.)
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from salbench.config import parse_config
from salbench.pipeline.run import run
from salbench.results.tables import finished_shards, read_samples

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]

CONFIG = {
    "name": "faults",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 8, "size": 32, "seed": 5},
    "models": ["tiny_smooth"],
    "methods": [{"name": "ig", "steps": 2000}, "vg"],
    "metrics": ["insertion", "pointing_game"],
    "resources": {"shard_size": 1, "torch_threads": 1},
}


def _cfg(out: Path) -> dict:
    return {**CONFIG, "out": str(out)}


def _table(run_dir: Path) -> pd.DataFrame:
    return read_samples(run_dir).drop(columns=["run_id"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in-process: both executors write equal tables,
    tests/test_numerics.py)."""
    return run(parse_config(_cfg(tmp_path_factory.mktemp("ref"))), progress=None,
               in_process=True).run_dir


def _pids(title: str) -> list[int]:
    """Processes whose command line contains ``title`` (Ray names actor processes so)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="ignore")
            except OSError:
                continue
            if title in cmd and int(d) != os.getpid():
                out.append(int(d))
    return out


def test_killed_worker_actor_is_restarted_and_nothing_is_lost(reference, tmp_path):
    out = tmp_path / "runs"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            done = list(out.glob("*/_done/*.json"))
            pids = _pids("AttributeActor")
            if pids and len(done) >= 2:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    res = run(parse_config(_cfg(out)), progress=None)
    thread.join(timeout=1)
    assert killed, "the attribute actor was never killed (the run ended first)"
    assert finished_shards(res.run_dir) == set(range(8))
    pd.testing.assert_frame_equal(_table(res.run_dir), _table(reference))


def test_sample_that_kills_its_worker_becomes_an_error_row(tmp_path):
    """A sample that SIGKILLs the model actor every time: after the batch died once, the
    batch is redone one sample at a time; the poisoned sample dies ``max_sample_crashes``
    times alone and becomes ``worker_crash`` rows; every other row is ok."""
    from salbench import models
    from salbench.datasets import open_dataset
    from salbench.models.base import center_crop, to_tensor

    spec = {"kind": "synthetic", "n": 6, "size": 32, "seed": 5}
    m = models.load("tiny_smooth")
    means = sorted(float(to_tensor(center_crop(r["image"], m.input_size, m.crop_fraction)).mean())
                   for r in open_dataset(spec).read(0, 6))
    threshold = (means[-1] + means[-2]) / 2  # only the brightest sample crosses it
    cfg = {**_cfg(tmp_path), "dataset": spec,
           "methods": ["vg", {"name": "tests.crash_plugin:crash_on_bright",
                              "threshold": threshold}],
           "resources": {"shard_size": 3, "batch_size": 3, "torch_threads": 1,
                         "max_sample_crashes": 2}}
    res = run(parse_config(cfg), progress=None)
    s = res.samples
    bad = s[s["status"] != "ok"]
    assert len(s) == 12 and len(bad) == 2  # the bright sample, both of its methods
    assert set(bad["status"]) == {"worker_crash"} and bad["index"].nunique() == 1
    assert "died 2 times" in bad["error"].iloc[0]
    assert (s.loc[s["index"] != bad["index"].iloc[0], "status"] == "ok").all()


def test_a_one_sample_batch_that_died_once_is_retried_not_an_error_row(tmp_path, monkeypatch):
    """A batch of one sample whose attempt died once is redone alone and succeeds: the
    batch's count and the sample's own count must not be the same journal entry."""
    import json as _json

    from salbench.actors import AttributeActor
    from salbench.actors.journal import start_journal
    from salbench.datasets import open_dataset
    from salbench.datasets.shards import decode_batch, read_shard
    from salbench.models import load
    from salbench.pipeline.run import plan_shards

    cfg = parse_config({**_cfg(tmp_path), "methods": ["vg"],
                        "dataset": {"kind": "synthetic", "n": 1, "size": 32, "seed": 5}})
    model = load("tiny_smooth")
    (item,) = plan_shards(len(open_dataset(cfg.dataset)), 1)
    rows = pd.DataFrame(list(read_shard(item, dataset_json=_json.dumps(cfg.dataset))))
    batch = decode_batch(rows, input_size=model.input_size, crop_fraction=model.crop_fraction)
    actor = AttributeActor(cfg.to_dict(), 0, journal=start_journal(f"t-{tmp_path.name}"))
    real = actor.runner.attribute

    def dies(rows):  # the attempt that never ends, as if the process had been killed
        raise KeyboardInterrupt

    monkeypatch.setattr(actor.runner, "attribute", dies)
    with pytest.raises(KeyboardInterrupt):
        actor(batch)
    monkeypatch.setattr(actor.runner, "attribute", real)
    out = actor(batch)
    assert list(out["status"]) == ["ok"], out["error"].tolist()
