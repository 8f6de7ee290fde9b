"""Incremental reruns (``--reuse``): cell keys, what is copied, what is recomputed.

The reuse bookkeeping (the cell keys a run has, the AttributeActor's "reused" rows, the
ShardWriter filling them from the earlier tables) is the same code in both executors
(salbench.pipeline.local calls the graph's actors and a ShardWriter, the Ray graph's writer
actor wraps one; their tables are equal: test_api, test_numerics). So most runs here are
in-process; reuse through the Ray graph is exercised by
test_adding_a_method_computes_only_that_method (its stage statistics are Ray's) and by
the CLI run of test_reuse_errors_and_cli.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from salbench import keys, models
from salbench.cli import main
from salbench.config import parse_config
from salbench.datasets.base import sample_key
from salbench.errors import ConfigError
from salbench.pipeline.run import run
from salbench.results.tables import read_samples

BASE = {
    "name": "r",
    "seed": 0,
    "profile": "fast",
    "dataset": {"kind": "synthetic", "n": 5, "size": 32, "seed": 3},
    "models": ["tiny_smooth"],
    "methods": ["vg", {"name": "ig", "steps": 8}],
    "metrics": ["insertion", "pointing_game"],
    "resources": {"shard_size": 2, "batch_size": 2, "torch_threads": 1},
}


def _cfg(tmp: Path, **changes) -> dict:
    cfg = json.loads(json.dumps(BASE))
    cfg.update(changes, out=str(tmp))
    return cfg


def _manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def _comparable(run_dir: Path) -> pd.DataFrame:
    return read_samples(run_dir).drop(columns=["run_id"])


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """The earlier run (in-process: its directory and tables are the Ray graph's)."""
    return run(parse_config(_cfg(tmp_path_factory.mktemp("first"))), progress=None,
               in_process=True)


@pytest.mark.usefixtures("ray_session")
def test_adding_a_method_computes_only_that_method(first, tmp_path):
    """Reuse through the Ray graph: the reused cells still pass the AttributeActor stage (as
    "reused" rows) and the writer actor fills them. The fresh run that it must equal is
    in-process (the executors write equal tables: test_api, test_numerics), so the Ray run's
    computed gxi cells are also held to an independent run."""
    cfg = _cfg(tmp_path, methods=[*BASE["methods"], "gxi"])
    again = run(parse_config(cfg), progress=None, reuse=first.run_dir)
    fresh = run(parse_config(_cfg(tmp_path / "fresh", methods=cfg["methods"])), progress=None,
                in_process=True)
    man = _manifest(again.run_dir)
    assert man["counts"]["cells_reused_now"] == 10  # 5 samples x (vg, ig)
    assert man["reuse_from"] == str(first.run_dir)
    assert man["timings"]["stages"]["MapBatches(AttributeActor)"]["rows"] == 15
    # only gxi was timed as computed work: reused rows carry no fresh timing
    assert set(man["timings"]["method_seconds_per_image"]) == {"tiny_smooth/gxi"}
    pd.testing.assert_frame_equal(_comparable(again.run_dir), _comparable(fresh.run_dir))
    pd.testing.assert_frame_equal(again.summary, fresh.summary)


def test_changed_parameters_recompute_that_method_only(first, tmp_path):
    cfg = _cfg(tmp_path, methods=["vg", {"name": "ig", "steps": 4}])
    again = run(parse_config(cfg), progress=None, reuse=first.run_dir, in_process=True)
    assert _manifest(again.run_dir)["counts"]["cells_reused_now"] == 5  # vg only
    s, prev = again.samples, first.samples
    assert (s.loc[s.method == "vg", "insertion_auc"].to_numpy()
            == prev.loc[prev.method == "vg", "insertion_auc"].to_numpy()).all()
    assert not np.allclose(s.loc[s.method == "ig", "completeness_error"],
                           prev.loc[prev.method == "ig", "completeness_error"])


def test_changed_metric_or_seed_or_data_reuses_nothing(first, tmp_path):
    changes = [
        {"metrics": ["insertion", {"name": "pointing_game", "tolerance": 3}]},
        {"dataset": {"kind": "synthetic", "n": 5, "size": 32, "seed": 4}},
    ]
    for i, change in enumerate(changes):
        again = run(parse_config(_cfg(tmp_path / str(i), **change)), progress=None,
                    reuse=first.run_dir, in_process=True)
        assert _manifest(again.run_dir)["counts"]["cells_reused_now"] == 0, change


def test_copied_cells_come_from_the_earlier_tables(first, tmp_path):
    """Tamper with the earlier run's stored value: the rerun must carry the stored value,
    which proves the cell was copied and not recomputed."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    prev = tmp_path / "prev"
    shutil.copytree(first.run_dir, prev)
    path = sorted((prev / "samples").glob("shard-*.parquet"))[0]
    table = pq.read_table(path)
    auc = table.column("insertion_auc").to_numpy().copy()
    auc[:] = 0.123
    pq.write_table(table.set_column(table.schema.get_field_index("insertion_auc"),
                                    "insertion_auc", pa.array(auc)), path)
    again = run(parse_config(_cfg(tmp_path / "again")), progress=None, reuse=prev,
                in_process=True)
    s = again.samples
    assert (s.loc[s["shard"] == 0, "insertion_auc"] == 0.123).all()
    assert (s.loc[s["shard"] != 0, "insertion_auc"] != 0.123).all()


def test_keys_are_content_keys():
    a = models.load("tiny_smooth")
    b = models.load("tiny_smooth")
    k = keys.model_key("tiny_smooth", a, a.input_size, a.crop_fraction)
    assert k == keys.model_key("tiny_smooth", b, b.input_size, b.crop_fraction)
    with np.errstate(all="ignore"):
        next(b.parameters()).data.add_(1e-3)
    assert k != keys.model_key("tiny_smooth", b, b.input_size, b.crop_fraction)
    assert sample_key(b"img", 1, "[]") != sample_key(b"img", 2, "[]")
    assert sample_key(b"img", 1, "[]") != sample_key(b"imh", 1, "[]")
    sg = {**BASE, "methods": ["smoothgrad", "ig"]}
    cfg, cfg1 = parse_config(sg), parse_config({**sg, "seed": 1})
    assert keys.method_key(cfg, cfg.methods[0]) != keys.method_key(cfg1, cfg1.methods[0])
    assert keys.method_key(cfg, cfg.methods[1]) == keys.method_key(cfg1, cfg1.methods[1])
    batched = parse_config({**sg, "methods": ["smoothgrad", {"name": "ig",
                                                             "internal_batch_size": 3}]})
    assert keys.method_key(cfg, cfg.methods[1]) == keys.method_key(batched, batched.methods[1])
    sorted_keys = np.sort(np.asarray(["b" * 16, "d" * 16], dtype="S16"))
    assert keys.contains(sorted_keys, ["a" * 16, "b" * 16, "c" * 16, "d" * 16, "e" * 16]
                         ).tolist() == [False, True, False, True, False]


@pytest.mark.usefixtures("ray_session")
def test_reuse_errors_and_cli(first, tmp_path, capsys):
    """The CLI's --reuse (a Ray run: the CLI has no in-process switch)."""
    with pytest.raises(ConfigError, match="not a salbench run directory"):
        run(parse_config(_cfg(tmp_path)), progress=None, reuse=tmp_path)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(json.dumps(_cfg(tmp_path / "cli")))
    assert main(["run", str(cfg_path), "--reuse", str(first.run_dir)]) == 0
    err = capsys.readouterr().err
    assert "reused 10 of 10 cells" in err
