"""The CAM family through the Ray pipeline: one run with every CAM, its batch of three images
equal to a loop of single images computed in process."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import salbench
from salbench.config import parse_config
from salbench.pipeline.run import run
from salbench.report.gallery import decode_map
from salbench.results.tables import read_samples

CAMS = ["gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam",
        "ablationcam"]


@pytest.mark.usefixtures("ray_session")
def test_every_cam_through_the_ray_pipeline_equals_single_images(tmp_path):
    cfg = {"name": "cams", "seed": 0, "profile": "fast", "out": str(tmp_path),
           "dataset": {"kind": "synthetic", "n": 3, "size": 32, "seed": 5},
           "models": ["tiny_smooth"], "methods": CAMS, "metrics": ["insertion"],
           "save_maps": True,
           "resources": {"shard_size": 3, "batch_size": 3, "torch_threads": 1}}
    res = run(parse_config(cfg), progress=None)
    s = read_samples(res.run_dir)
    assert len(s) == 3 * len(CAMS) and (s["status"] == "ok").all(), s[["method", "error"]]
    assert s["insertion_auc"].between(0, 1).all()
    model = salbench.models.load("tiny_smooth")
    inputs = {r.index: np.asarray(Image.open(io.BytesIO(r.input_png)).convert("RGB"))
              for r in s.itertuples() if r.input_png is not None}
    assert sorted(inputs) == [0, 1, 2]
    for _, row in s.iterrows():
        x = torch.from_numpy(inputs[row["index"]].copy()).permute(2, 0, 1)[None].float() / 255
        single = salbench.methods.attribute(row["method"], model, x, int(row["target"]),
                                            profile="fast").sum(1)[0].numpy()
        stored = decode_map(row)  # float16 of the batch's float32 map
        np.testing.assert_allclose(stored, single, rtol=2e-3, atol=2e-3 * np.abs(single).max(),
                                   err_msg=f"{row['method']} sample {row['index']}")
