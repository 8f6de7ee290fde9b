"""PIC images between pipeline stages as lossless WebP bytes (salbench.metrics.pic.transport).

The split form's prepare hands its images on as :class:`EncodedImages`; scoring them and
finalizing must give exactly what the raw pixels gave (bit-equal), both for the metric
functions and through the pipeline's BokehActor -> ScoreActor -> FinalizeActor chain.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch

import salbench
from salbench.metrics import pic


@pytest.fixture(autouse=True)
def _fresh_cache():
    pic.BOKEH_CACHE.clear()
    yield
    pic.BOKEH_CACHE.clear()


def _sample(size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy photo-like uint8 image [size, size, 3] and a random map [size, size]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = np.stack([120 + 80 * np.sin(6 * xx), 100 + 60 * yy, 90 + 50 * xx * yy], -1)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    return img, rng.random((size, size)).astype(np.float32)


def test_encoded_images_decode_to_the_same_bytes():
    img, _ = _sample()
    grey = img[..., 1].copy()
    for images in ([img, 255 - img, np.zeros_like(img)], [grey, 255 - grey]):
        enc = pic.EncodedImages.encode(images)
        assert enc.shape == (len(images), *images[0].shape) and enc.dtype == np.uint8
        assert len(enc) == len(images)
        np.testing.assert_array_equal(enc.decode(), np.stack(images))
        np.testing.assert_array_equal(enc[1], images[1])
        back = pickle.loads(pickle.dumps(enc))
        np.testing.assert_array_equal(np.stack(list(back)), np.stack(images))
    # a WebP level's own encoding is reused as it is, not encoded again
    pic.BOKEH_CACHE.clear()
    known = pic.webp_bytes(img)
    assert known != pic.transport_bytes(img)
    assert pic.EncodedImages.encode([img], [known]).data[0] == known
    with pytest.raises(ValueError):
        pic.EncodedImages.encode([img.astype(np.float32)])


@pytest.mark.parametrize("name", ["sic", "pic_blur"])
def test_split_form_bytes_transport_is_bit_equal_to_raw_pixels(smooth_model, name):
    """prepare's encoded images decode to pic_prepare's raw images bit for bit, and scoring
    either gives the same predictions and the same finalized columns (exact equality)."""
    spec = salbench.metrics.get(name)
    params = spec.params()
    sent, raw_bytes = 0, 0
    for seed in range(2):
        img, smap = _sample(seed=seed)
        key, state, encoded = spec.prepare({"image": img, "map": smap}, **params)
        assert isinstance(encoded, pic.EncodedImages)
        pic.BOKEH_CACHE.clear()  # the raw images computed afresh, not from the cache
        settings = ({"bokeh": "blur", "thresholds": tuple(j / 24 for j in range(1, 24))}
                    if name == "pic_blur" else {})
        _, raw = pic.pic_prepare(img, smap, **settings)
        np.testing.assert_array_equal(encoded.decode(), raw)
        target = [seed] * len(raw)
        p_raw, t_raw = pic.model_scores(smooth_model, list(raw), target)
        p_enc, t_enc = pic.model_scores(smooth_model, list(encoded), target)
        np.testing.assert_array_equal(p_enc, p_raw)
        np.testing.assert_array_equal(t_enc, t_raw)
        a, b = spec.finalize(state, p_raw, t_raw, **params), spec.finalize(state, p_enc, t_enc,
                                                                           **params)
        for col in a:
            np.testing.assert_array_equal(np.asarray(b[col]), np.asarray(a[col]), err_msg=col)
        sent += len(pickle.dumps(encoded))
        raw_bytes += len(pickle.dumps(raw))
    assert sent < raw_bytes  # noisy 32 px images: smaller, though far from the photos' ratio


def test_msssim_images_without_webp_levels_are_encoded_losslessly():
    """info="msssim" computes no WebP: its images get the fast lossless encoding."""
    img, smap = _sample()
    settings = pic.PicSettings(info="msssim", thresholds=(0.5,))
    state, encoded = pic.pic_prepare(img, smap, settings, encoded=True)
    pic.BOKEH_CACHE.clear()
    raw_state, raw = pic.pic_prepare(img, smap, settings)
    np.testing.assert_array_equal(encoded.decode(), raw)
    np.testing.assert_array_equal(state["levels"], raw_state["levels"])
    assert encoded.data[0] == pic.transport_bytes(img)


def test_an_image_several_protocols_send_is_encoded_once():
    """sic and sic_msssim build the same images, pic_blur sends the same original: one bytes
    object each, which pickle writes once into the row's payload."""
    img, smap = _sample()
    sample = {"image": img, "map": smap}
    sets = {}
    for name in ("sic", "sic_msssim", "pic_blur"):
        spec = salbench.metrics.get(name)
        params = spec.params(**({"thresholds": (0.5,)} if name != "pic_blur" else {}))
        sets[name] = spec.prepare(sample, **params)[2]
    assert all(a is b for a, b in zip(sets["sic"].data, sets["sic_msssim"].data, strict=True))
    assert sets["pic_blur"].data[0] is sets["sic"].data[0]
    together = len(pickle.dumps(sets))
    apart = sum(len(pickle.dumps(v)) for v in sets.values())
    assert together < apart - sets["sic"].nbytes
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(sets))["sic_msssim"].decode(),
                                  sets["sic"].decode())


def _rows(n: int = 3, size: int = 32) -> pd.DataFrame:
    rows = []
    for i in range(n):
        img, smap = _sample(size, seed=10 + i)
        rows.append({"status": "ok", "error": "", "height": size, "width": size,
                     "map": smap.tobytes(), "map_dtype": "float32", "crop": img.tobytes(),
                     "boxes": "[]", "label": -1, "target": i % 10, "values": "{}"})
    return pd.DataFrame(rows)


def test_actor_chain_bytes_transport_equals_raw_pixels():
    """BokehActor -> ScoreActor -> FinalizeActor in process: the bytes payload and the same
    payload with its images as raw uint8 stacks (what the pipeline sent before) give equal
    metric values, exactly."""
    from salbench.actors import BokehActor, FinalizeActor, ScoreActor
    from salbench.config import parse_config

    cfg = parse_config({"name": "t", "models": ["tiny_smooth"], "methods": ["vg"],
                        "metrics": ["sic", "aic", "pic_blur"],
                        "dataset": {"kind": "synthetic", "n": 3, "size": 32}}).to_dict()
    threads = torch.get_num_threads()
    try:
        bokeh = BokehActor(cfg)(_rows())
        raw = bokeh.copy()
        raw["split"] = [pickle.dumps({**p, "images": {k: np.asarray(v.decode())
                                                      for k, v in p["images"].items()}})
                        for p in map(pickle.loads, bokeh["split"])]
        assert sum(map(len, bokeh["split"])) < sum(map(len, raw["split"]))
        score, finalize = ScoreActor(cfg, 0), FinalizeActor(cfg)
        got = [finalize(score(b)) for b in (bokeh, raw)]
    finally:
        torch.set_num_threads(threads)
    values = [[json.loads(v) for v in g["values"]] for g in got]
    assert values[0] == values[1]
    assert all("sic_auc" in v and "pic_blur_aic_auc" in v for v in values[0])
    assert np.isfinite([v["sic_auc"] for v in values[0]]).any()
