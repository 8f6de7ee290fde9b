"""What a run writes equals what its methods and metrics compute (SPEC 6, "Fidelity").

The end-to-end test recomputes, outside the pipeline, every metric value a Ray run wrote:
``methods.attribute`` + ``methods.to_map`` on the run's own input crops, then ``pic_curve``
with ``image_mask(crop, 0.01, seed)``, the WSOL scores and the pointing game on that map.
It would have caught the float16 maps the CPU stage used to receive (SIC/AIC off by up to
0.011 on IDGI-IG's probability-scale maps). The other tests inject one-sample failures and
degenerate maps and check that only that sample's row is affected.
"""

from __future__ import annotations

import importlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import salbench
from salbench.datasets.shards import decode_batch, read_shard
from salbench.metrics import pic
from salbench.metrics.localization import pointing_game_hit
from salbench.models.base import to_tensor
from tests.plugins import ROOT, plugin_sandbox

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]

FAULTS = "tests.plugins.faults"
RESOURCES = {"shard_size": 4, "batch_size": 4, "torch_threads": 2}
PIC_TOL = 1e-6


def _need_root() -> None:
    if Path.cwd().resolve() != ROOT:
        pytest.skip("Ray workers import tests.plugins from the driver's working directory: "
                    "run pytest from the repository root")


@pytest.fixture()
def faults():
    """The fault-injection plugins, registered for one test."""
    with plugin_sandbox("tests.plugins"):
        yield importlib.import_module(FAULTS)


def _decoded(dataset: dict, model: salbench.models.Classifier, n: int) -> pd.DataFrame:
    """The rows the model stage receives: read and decoded as the pipeline does."""
    rows = pd.DataFrame(list(read_shard({"shard": 0, "start": 0, "stop": n},
                                        dataset_json=json.dumps(dataset, sort_keys=True))))
    return decode_batch(rows, input_size=model.input_size, crop_fraction=model.crop_fraction)


def _bright_threshold(dataset: dict, n: int) -> tuple[float, int]:
    """A brightness threshold that exactly one of the first ``n`` images passes, and it."""
    model = salbench.models.load("tiny_smooth")
    crops = _decoded(dataset, model, n)
    h, w = model.input_size
    means = np.array([np.frombuffer(c, np.uint8).reshape(h, w, 3).mean() / 255.0
                      for c in crops["crop"]])
    order = np.argsort(means)
    return float((means[order[-1]] + means[order[-2]]) / 2), int(crops["index"][order[-1]])


@pytest.mark.timeout(900)
def test_run_values_equal_the_metric_functions_on_the_methods_maps(tmp_path):
    """IG, IDGI-IG (probability score) and Grad-CAM on two photos through Ray: the run's
    SIC, AIC, WSOL and pointing-game values equal the metric functions on the float32 map of
    ``methods.attribute`` on the run's saved input crop, to 1e-6.

    Bit-equal inputs: the crops are the run's own (checked against its saved PNGs) and the
    methods run on the same batch of two as in the run, with the same torch thread count,
    so the maps are the same floats. What remains is the scoring of the bokeh images: the
    run scores every image of a shard in chunks of ``score_batch_size``, ``pic_curve`` scores
    [original, blurred] and then the bokeh images as separate batches; the softmax
    probabilities of one image in two batch compositions differ by float32 rounding (~1e-7),
    and the AUC is a weighted sum of them.
    """
    dataset = {"kind": "sample", "limit": 2}
    methods = ["ig", {"name": "idgi_ig", "score": "prob"}, "gradcam"]
    res = salbench.evaluate(
        dataset=dataset, models=["efficientnet_lite0"], methods=methods,
        metrics=["sic", "aic", "wsol", "pointing_game"], save_maps=True, seed=0,
        profile="fast", resources={"shard_size": 2, "batch_size": 2, "torch_threads": 2},
        out=tmp_path, ray=True)
    s = res.samples
    assert len(s) == 6 and (s["status"] == "ok").all(), s["error"].tolist()
    model = salbench.models.load("efficientnet_lite0")
    decoded = _decoded(dataset, model, 2).sort_values("index")
    h, w = model.input_size
    crops = [np.frombuffer(c, np.uint8).reshape(h, w, 3) for c in decoded["crop"]]
    for _, row in s.dropna(subset=["input_png"]).drop_duplicates("index").iterrows():
        saved = np.asarray(Image.open(io.BytesIO(row["input_png"])))
        np.testing.assert_array_equal(saved, crops[int(row["index"])])
    x = torch.stack([to_tensor(c) for c in crops])
    wsol = salbench.metrics.get("wsol")
    worst = 0.0
    for comp in methods:
        name = comp if isinstance(comp, str) else comp["name"]
        params = {} if isinstance(comp, str) else {k: v for k, v in comp.items() if k != "name"}
        rows = s[s["method"] == name].sort_values("index")
        target = torch.as_tensor(rows["target"].to_numpy(np.int64))
        torch.set_num_threads(2)
        attr = salbench.methods.attribute(name, model, x, target, profile="fast", **params)
        spec = salbench.methods.get(name)
        maps = salbench.methods.to_map(attr, spec.map_reduce or "abs_sum").numpy()
        assert maps.dtype == np.float32
        for i, row in enumerate(rows.itertuples()):
            crop, smap, t = crops[i], maps[i], int(row.target)
            mask = pic.image_mask(crop, 0.01, 0)
            sic = pic.pic_curve(crop, smap, mask, pic.predictor(model, t, "sic"))
            aic = pic.pic_curve(crop, smap, mask, pic.predictor(model, t, "aic"))
            for kind, curve in (("sic", sic), ("aic", aic)):  # a skip is the same skip
                assert getattr(row, f"{kind}_skipped") == float(curve.status != "ok")
                got = getattr(row, f"{kind}_auc")
                assert got == pytest.approx(curve.auc, abs=PIC_TOL, nan_ok=True), (name, i)
                if curve.status == "ok":
                    worst = max(worst, abs(got - curve.auc))
            assert sic.status == "ok"  # the comparison is not vacuous
            boxes = np.asarray(json.loads(decoded["boxes"].iloc[i]), np.float32).reshape(-1, 4)
            sample = {"map": smap, "image": crop, "boxes": boxes, "label": row.label,
                      "target": t}
            for col, value in wsol.fn(sample, **wsol.params("fast")).items():
                assert getattr(row, col) == pytest.approx(value, abs=1e-12, nan_ok=True), col
            assert row.pointing_game_hit == pytest.approx(pointing_game_hit(smap, boxes),
                                                          nan_ok=True)
    print(f"max |AUC difference| run vs pic_curve on the float32 map: {worst:.2e}")


def test_one_samples_failures_stay_on_it_and_degenerate_maps_are_flagged(faults, tmp_path):
    """A method whose map is NaN on one image, and a model-stage metric that raises on one
    image: only that sample's rows are affected, and its other metrics are kept. A constant
    map is a ``degenerate_map`` row whose ranking metrics are undefined (PIC used to score it
    an SIC of 0.5, insertion a raster-order curve). In-process: the stages' actors run the
    same code there as in Ray's pools (error rows through Ray: tests/test_faults.py,
    tests/test_s3.py; both executors' tables equal: tests/test_api.py)."""
    dataset = {"kind": "synthetic", "n": 4, "size": 32, "seed": 3}
    threshold, bright = _bright_threshold(dataset, 4)
    res = salbench.evaluate(
        dataset=dataset, models=["tiny_smooth"],
        methods=["vg", {"name": "fault_nan_bright", "threshold": threshold}, "fault_constant"],
        metrics=["insertion", {"name": "fault_raise_bright", "threshold": threshold},
                 "pointing_game", "sic"],
        resources=RESOURCES, out=tmp_path, ray=False)
    s = res.samples.set_index(["method", "index"])
    # the NaN map: that one sample is a degenerate map, with the count of NaN pixels
    nan_rows = s.loc["fault_nan_bright"]
    assert nan_rows.loc[bright, "status"] == "degenerate_map"
    assert nan_rows.loc[bright, "error"].startswith("1024 of 1024 map pixels are NaN")
    assert np.isnan(nan_rows.loc[bright, "insertion_auc"])
    others = nan_rows.drop(index=bright)
    assert (others["status"] == "metric_error").sum() == 0
    assert (others["status"] == "ok").all() and others["insertion_auc"].notna().all()
    # the raising metric: only the bright sample's vg row is a metric_error, and it keeps
    # insertion and the pointing game (computed by other stages / other metrics)
    vg = s.loc["vg"]
    assert vg.loc[bright, "status"] == "metric_error"
    assert vg.loc[bright, "error"] == ("fault_raise_bright: ValueError: injected failure on "
                                       "a bright image")
    assert np.isnan(vg.loc[bright, "fault_mean"])
    assert np.isfinite(vg.loc[bright, "insertion_auc"])
    assert vg.loc[bright, "pointing_game_hit"] in (0.0, 1.0)
    assert (vg.drop(index=bright)["status"] == "ok").all()
    assert vg.drop(index=bright)["fault_mean"].notna().all()
    # the summary: each metric its own n and error count
    summ = res.summary.set_index(["method", "metric"])
    assert summ.loc[("vg", "insertion_auc"), ["n", "n_error"]].tolist() == [4, 0]
    assert summ.loc[("vg", "fault_mean"), ["n", "n_error"]].tolist() == [3, 1]
    assert summ.loc[("vg", "pointing_game_hit"), "n_error"] == 0
    nan_summary = summ.loc[("fault_nan_bright", "insertion_auc")]
    assert (nan_summary["n"], nan_summary["n_degenerate"], nan_summary["n_error"]) == (3, 1, 0)
    # the constant map: every sample degenerate, no ranking metric, counted in the summary
    const = s.loc["fault_constant"]
    assert (const["status"] == "degenerate_map").all()
    assert const["error"].str.startswith("constant map (every pixel 0)").all()
    for col in ("insertion_auc", "sic_auc", "pointing_game_hit", "fault_mean"):
        assert const[col].isna().all(), col
    assert s.loc["vg"]["sic_auc"].notna().sum() >= 3  # the metric itself works here
    for metric in ("insertion_auc", "sic_auc", "sic_aggregate_auc", "pointing_game_hit"):
        row = summ.loc[("fault_constant", metric)]
        assert (row["n"], row["n_degenerate"]) == (0, 4) and np.isnan(row["mean"]), metric


def test_a_lost_device_restarts_the_actor_instead_of_error_rows(faults, tmp_path):
    """A CUDA error ("device-side assert") ends the model actor's process; Ray restarts it
    and the batch is redone, so no row is an error. In this process (``ray=False``) the
    error is raised: there is no actor to replace."""
    _need_root()
    marker = tmp_path / "device-lost"
    cfg = dict(dataset={"kind": "synthetic", "n": 4, "size": 32, "seed": 3},
               models=["tiny_smooth"],
               methods=["vg", {"name": "fault_device_once", "marker": str(marker)}],
               metrics=["insertion"], resources=RESOURCES)
    res = salbench.evaluate(**cfg, out=tmp_path / "ray", ray=True)
    assert marker.exists()  # the error did happen, in a model actor's process
    s = res.samples
    assert len(s) == 8 and (s["status"] == "ok").all(), s["error"].tolist()
    marker.unlink()
    with pytest.raises(RuntimeError, match="CUDA error"):
        salbench.evaluate(**cfg, out=tmp_path / "local", ray=False)
