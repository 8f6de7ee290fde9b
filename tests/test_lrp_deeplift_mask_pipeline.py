"""lrp, deeplift and meaningful_perturbation through the Ray pipeline (issue 26): the maps a
run writes for three images attributed in one batch equal ``methods.attribute`` on each image
alone (outside the pipeline, on the run's own decoded crops), and the run's diagnostics too."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import salbench
from salbench.config import parse_config
from salbench.datasets.shards import decode_batch, read_shard
from salbench.models.base import to_tensor
from salbench.pipeline.run import run

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]

DATASET = {"kind": "synthetic", "n": 3, "size": 32, "seed": 5}
METHODS = {"lrp": {}, "deeplift": {},
           "meaningful_perturbation": {"iterations": 4, "mask_size": 8}}


@pytest.mark.timeout(900)
def test_a_batch_in_the_pipeline_equals_single_images(tmp_path):
    cfg = {
        "name": "nm", "seed": 0, "profile": "fast", "out": str(tmp_path / "runs"),
        "dataset": DATASET, "models": ["tiny_cnn"],
        "methods": [{"name": k, **v} for k, v in METHODS.items()],
        "metrics": ["insertion"], "save_maps": True,
        "resources": {"shard_size": 3, "batch_size": 3, "torch_threads": 1},
    }
    s = run(parse_config(cfg), progress=None).samples
    assert (s["status"] == "ok").all(), s["error"].tolist()
    model = salbench.models.load("tiny_cnn")
    rows = pd.DataFrame(list(read_shard({"shard": 0, "start": 0, "stop": 3},
                                        dataset_json=json.dumps(DATASET, sort_keys=True))))
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
