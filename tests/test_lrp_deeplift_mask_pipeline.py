"""lrp, deeplift and meaningful_perturbation through the Ray pipeline (issue 26): the maps a
run writes for three images attributed in one batch equal ``methods.attribute`` on each image
alone (outside the pipeline, on the run's own decoded crops), and the run's diagnostics too.
The run is the session's shared one (conftest ``ray_batch_run``: these methods with the
parameters below on tiny_cnn, among other models and methods)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import salbench
from salbench.datasets.shards import decode_batch, read_shard
from salbench.models.base import to_tensor

pytestmark = pytest.mark.slow

METHODS = {"lrp": {}, "deeplift": {},
           "meaningful_perturbation": {"iterations": 4, "mask_size": 8}}


@pytest.mark.timeout(900)
def test_a_batch_in_the_pipeline_equals_single_images(ray_batch_run):
    s = ray_batch_run["samples"]
    s = s[(s["model"] == "tiny_cnn") & s["method"].isin(list(METHODS))]
    assert len(s) == 3 * len(METHODS)
    assert (s["status"] == "ok").all(), s["error"].tolist()
    model = salbench.models.load("tiny_cnn")
    dataset = ray_batch_run["dataset"]  # the run's dataset: its one shard, decoded again
    rows = pd.DataFrame(list(read_shard({"shard": 0, "start": 0, "stop": 3},
                                        dataset_json=json.dumps(dataset, sort_keys=True))))
    decoded = decode_batch(rows, input_size=model.input_size,
                           crop_fraction=model.crop_fraction).sort_values("index")
    h, w = model.input_size
    x = torch.stack([to_tensor(np.frombuffer(c, np.uint8).reshape(h, w, 3))
                     for c in decoded["crop"]])
    for name, params in METHODS.items():
        got = s[s["method"] == name].sort_values("index")
        assert len(got) == 3
        target = torch.as_tensor(got["target"].to_numpy(np.int64).copy())
        for i, row in enumerate(got.itertuples()):
            single = salbench.methods.attribute_with_info(
                name, model, x[i:i + 1], target[i:i + 1], profile="fast", **params)
            want = salbench.methods.to_map(single.attr, "abs_sum")[0].numpy()
            saved = np.frombuffer(row.map, np.float16).reshape(row.map_height, row.map_width)
            np.testing.assert_allclose(saved.astype(np.float32), want, rtol=2e-3,
                                       atol=2e-3 * float(np.abs(want).max()), err_msg=name)
            for col, value in single.info.items():
                assert getattr(row, col) == pytest.approx(float(value[0]), rel=1e-4,
                                                          abs=1e-5), (name, col)
    assert (s.loc[s["method"] == "deeplift", "completeness_error"] < 1e-4).all()
