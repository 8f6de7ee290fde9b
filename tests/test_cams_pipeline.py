"""The CAM family through the Ray pipeline: one run with every CAM (the session's shared
``ray_batch_run``), its batch of three images equal to a loop of single images computed in
process."""

from __future__ import annotations

import numpy as np
import torch

import salbench
from salbench.report.gallery import decode_map

CAMS = ["gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam",
        "ablationcam"]


def test_every_cam_through_the_ray_pipeline_equals_single_images(ray_batch_run):
    """The session's shared Ray run (conftest ``ray_batch_run``: every CAM with its defaults
    on tiny_smooth, among other models and methods); its tiny_smooth CAM rows are this
    test's."""
    model_rows = ray_batch_run["samples"].query("model == 'tiny_smooth'")
    s = model_rows[model_rows["method"].isin(CAMS)]
    assert len(s) == 3 * len(CAMS) and (s["status"] == "ok").all(), s[["method", "error"]]
    assert s["insertion_auc"].between(0, 1).all()
    model = salbench.models.load("tiny_smooth")
    inputs = ray_batch_run["crops"]["tiny_smooth"]
    assert sorted(inputs) == [0, 1, 2]
    for _, row in s.iterrows():
        x = torch.from_numpy(inputs[row["index"]].copy()).permute(2, 0, 1)[None].float() / 255
        single = salbench.methods.attribute(row["method"], model, x, int(row["target"]),
                                            profile="fast").sum(1)[0].numpy()
        stored = decode_map(row)  # float16 of the batch's float32 map
        np.testing.assert_allclose(stored, single, rtol=2e-3, atol=2e-3 * np.abs(single).max(),
                                   err_msg=f"{row['method']} sample {row['index']}")
