"""Live progress: the model actors count (sample x method) cells through a counter (a Ray
actor, or a plain object in process), the driver shows a bar on a terminal and plain lines
otherwise."""

from __future__ import annotations

import io
import json
import time

import pandas as pd
import pytest

from salbench.actors.attribute import AttributeActor
from salbench.actors.progress import LocalCounter, report_cells, start_counter
from salbench.config import parse_config
from salbench.datasets.shards import decode_batch, read_shard
from salbench.pipeline.progress import (
    ProgressMonitor,
    ShardProgress,
    cells_done,
    progress_text,
)
from salbench.pipeline.run import run

CFG = {
    "name": "pg", "seed": 0, "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 5, "size": 32, "seed": 1},
    "models": ["tiny_smooth"], "methods": ["vg", "gxi", {"name": "ig", "steps": 4}],
    "metrics": ["insertion"],
    "resources": {"shard_size": 3, "batch_size": 3, "torch_threads": 1},
}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_text():
    assert progress_text(30, 120, 15.0, 1, 4, bar=False) == (
        "[salbench] 30/120 cells (25%), 2.00 cells/s, 15 s elapsed, ETA 45 s, "
        "1/4 shards written")
    line = progress_text(60, 120, 200.0, 2, 4, bar=True)
    assert line.startswith("[salbench] [" + "#" * 12 + "." * 12 + "] 60/120 cells (50%)")
    assert "3m20s elapsed, ETA 3m20s" in line
    assert "ETA ?" in progress_text(0, 10, 5.0, 0, 1, bar=False)


def test_the_eta_counts_from_the_first_work_seen_not_from_the_start():
    """A run whose first 40 s go to start-up, then 10 cells in the next 10 s: 1 cell/s, so
    90 cells left take 90 s (counted from the start: 0.2 cells/s and 7m30s)."""
    assert "ETA ?" in progress_text(10, 100, 40.0, 0, 4, bar=False, since=(40.0, 10))
    line = progress_text(20, 100, 50.0, 0, 4, bar=False, since=(40.0, 10))
    assert "1.00 cells/s" in line and "ETA 1m20s" in line
    assert "ETA 3m20s" in progress_text(20, 100, 50.0, 0, 4, bar=False)


def test_a_run_finished_at_the_first_sight_of_work_shows_its_rate_and_eta_0():
    """14 cells all seen done at once after 14 s (a short run; seen in `ray job submit`'s
    output as "0.00 cells/s ... ETA ?"): 1 cell/s over the whole run, nothing left."""
    line = progress_text(14, 14, 14.0, 2, 2, bar=False, since=(14.0, 14))
    assert "1.00 cells/s" in line and "ETA 0 s" in line


def test_shard_lines_share_the_live_lines_clock():
    """The driver's ShardProgress formats a written shard's line on the progress monitor's
    clock (in a Ray run the shard was written by the writer actor, whose clock started
    later)."""
    out = io.StringIO()
    pending = [{"shard": 0, "start": 0, "stop": 2}, {"shard": 1, "start": 2, "stop": 4}]
    shards = ShardProgress(out, pending, cells_per_image=1)
    shards.monitor = ProgressMonitor(out, shards.expected, lambda: {}, interactive=False)
    shards.monitor.t0 = time.time() - 125.0  # the live lines started 125 s ago
    shards.t0 = time.time()  # this object's own clock: just now
    shards.shard_written(1)
    assert "[salbench] shard 1 written: 1/2 shards, 2/4 cells, 2m05s elapsed" in out.getvalue()
    assert shards.monitor.written == {1}


def test_shard_lines_without_a_live_display():
    """Without a live display (no cell counter), each written shard is one line on the
    stream, counted in cells (images x models x methods), on this object's clock."""
    out = io.StringIO()
    pending = [{"shard": 3, "start": 0, "stop": 2}, {"shard": 5, "start": 2, "stop": 3}]
    shards = ShardProgress(out, pending, cells_per_image=6)
    assert shards.total_cells == 18 and shards.start(lambda: {}) is not None
    shards.stop()
    quiet = ShardProgress(None, pending, cells_per_image=6)
    assert quiet.start(lambda: {}) is None
    quiet.shard_written(5)  # counted, printed nowhere
    assert (quiet.written, quiet.cells_done) == (1, 6)
    out = io.StringIO()
    lines = ShardProgress(out, pending, cells_per_image=6)
    lines.t0 = time.time() - 65.0
    lines.shard_written(5)
    lines.shard_written(3)
    assert out.getvalue().splitlines() == [
        "[salbench] shard 5 written: 1/2 shards, 6/18 cells, 1m05s elapsed",
        "[salbench] shard 3 written: 2/2 shards, 18/18 cells, 1m05s elapsed"]


def test_cells_done_caps_retries_and_counts_written_shards():
    expected = {0: 6, 1: 6, 2: 3}
    assert cells_done({0: 9, 1: 2}, expected, set()) == 6 + 2
    assert cells_done({1: 2}, expected, {0, 2}) == 6 + 2 + 3


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    counts = {0: 0}

    def poll():
        counts[0] = min(counts[0] + 1, 6)
        return dict(counts)

    mon = ProgressMonitor(out, {0: 6, 1: 6}, poll, interactive=False, interval=0.05)
    mon.start()
    deadline = time.time() + 30  # a busy machine may schedule the thread late
    while out.getvalue().count(" cells (") < 3 and time.time() < deadline:
        time.sleep(0.05)
    mon.shard_written(0, "[salbench] shard 0 written")
    mon.shard_written(1, "[salbench] shard 1 written")
    mon.stop()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    live = [ln for ln in lines if " cells (" in ln]
    assert len(live) >= 3  # printed on its own, not only when shards finish
    assert any("/12 cells" in ln and "(100%)" not in ln for ln in live)
    assert live[-1].startswith("[salbench] 12/12 cells (100%)")
    assert "[salbench] shard 1 written" in lines


def test_bar_redraws_in_place_on_a_terminal():
    out = Tty()
    mon = ProgressMonitor(out, {0: 4}, lambda: {0: 2}, interactive=True)
    mon.start()
    deadline = time.time() + 30
    while "2/4 cells" not in out.getvalue() and time.time() < deadline:
        time.sleep(0.05)
    mon.shard_written(0, "[salbench] shard 0 written")
    mon.stop()
    text = out.getvalue()
    assert "\r\033[K[salbench] [" + "#" * 12 + "." * 12 + "] 2/4 cells (50%)" in text
    assert "\r\033[K[salbench] shard 0 written\n" in text  # the bar is cleared first
    final = text.rsplit("\r\033[K", 1)[-1]
    assert final.startswith("[salbench] [" + "#" * 24 + "] 4/4 cells (100%)")
    assert final.endswith("\n")


def _decoded(config: dict) -> pd.DataFrame:
    item = {"shard": 0, "start": 0, "stop": 3}
    rows = pd.DataFrame(list(read_shard(item, dataset_json=json.dumps(config["dataset"]))))
    return decode_batch(rows, input_size=(32, 32), crop_fraction=1.0)


def test_attribute_actor_reports_each_methods_batch():
    counter = LocalCounter()
    seen = []
    add = counter.add
    counter.add = lambda counts: (seen.append(dict(counts)), add(counts))  # type: ignore
    actor = AttributeActor(parse_config(CFG).to_dict(), 0, progress=counter)
    actor(_decoded(CFG))
    assert seen == [{0: 3}, {0: 3}, {0: 3}]  # one report per method, 3 samples each
    assert counter.snapshot() == {0: 9}


def test_ray_counter_receives_the_actors_reports(ray_session):
    counter = start_counter("test-progress")
    try:
        actor = AttributeActor(parse_config(CFG).to_dict(), 0, progress=counter)
        actor(_decoded(CFG))
        assert ray_session.get(counter.snapshot.remote()) == {0: 9}
        report_cells(counter, [{"shard": 1}, {"shard": 1}])
        assert ray_session.get(counter.snapshot.remote()) == {0: 9, 1: 2}
    finally:
        ray_session.kill(counter)


@pytest.mark.parametrize("in_process", [True, False])
def test_a_run_shows_live_progress(tmp_path, in_process, request):
    if not in_process:
        request.getfixturevalue("ray_session")
    out = io.StringIO()
    run(parse_config({**CFG, "out": str(tmp_path)}), progress=out, in_process=in_process)
    text = out.getvalue()
    assert "[salbench] 15/15 cells (100%)" in text  # 5 samples x 3 methods
    assert text.count("shard") >= 2 and "2/2 shards written" in text


def test_a_shard_is_announced_as_it_lands_not_at_the_next_block(ray_session):
    """The writer actor's answer for a block is announced while Ray Data has not produced
    the next block yet (before: only when the next block came, or at the end)."""
    import threading

    from salbench.pipeline.writer_actor import write_dataset

    ray = ray_session

    @ray.remote(num_cpus=0)
    class FakeWriter:
        def add_blocks(self, *blocks):
            return [int(b["shard"][0]) for b in blocks]

    announced: list[int] = []
    seen = threading.Event()

    class Writer:
        def shard_written(self, shard: int) -> None:
            announced.append(shard)
            seen.set()

    class Bundle:
        def __init__(self, shard: int) -> None:
            self.block_refs = [ray.put({"shard": [shard]})]

    waited: list[bool] = []

    class Dataset:
        def iter_internal_ref_bundles(self):
            yield Bundle(0)
            waited.append(seen.wait(timeout=60))  # a slow model stage: no block meanwhile
            yield Bundle(1)

    actor = FakeWriter.remote()
    try:
        write_dataset(Dataset(), actor, Writer())
    finally:
        ray.kill(actor)
    assert waited == [True] and announced == [0, 1]
