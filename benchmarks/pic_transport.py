"""PIC images between the BokehActor and the ScoreActor: bytes per row, raw pixels vs WebP.

Rows: the bundled photos (vg and gradcam maps) and synthetic images (vg maps) at
EfficientNet-Lite0's crop, run through the pipeline's own BokehActor with every PIC metric
configured (sic, aic, sic_msssim, aic_msssim, pic_blur). Its output frame is what enters
the object store; its ``split`` column carries the images. "raw" is the same frame with each
image set as the uint8 array stack the pipeline sent until 2026-12-06 (same keys, same
states), "webp" the lossless WebP it sends now. Per metric set (sic + aic; the MS-SSIM
pair; pic_blur; all five) the bytes per row of the ``split`` column and of the whole frame
as Arrow, and the CPU seconds per row of decoding the images again (the ScoreActor's extra
work).
"""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

import salbench.methods as methods
from benchmarks.common import Settings, load_model, photos
from salbench.actors import BokehActor
from salbench.config import parse_config
from salbench.datasets.synthetic import SyntheticParams, generate
from salbench.metrics import pic

METRIC_SETS = {"sic + aic": ["sic", "aic"], "sic_msssim + aic_msssim": ["sic_msssim",
                                                                         "aic_msssim"],
               "pic_blur": ["pic_blur"],
               "all five": ["sic", "aic", "sic_msssim", "aic_msssim", "pic_blur"]}
TARGET = 0.25


def stage_rows(s: Settings) -> pd.DataFrame:
    """The AttributeActor's output rows the BokehActor takes: crop, float32 map, target."""
    model = load_model(s)
    x, t = photos(model, 2 if s.quick else 7, s)
    syn = [generate(SyntheticParams(seed=0), i)[0] for i in range(1 if s.quick else 3)]
    xs = torch.stack([model.preprocess(a) for a in syn])
    with torch.no_grad():
        ts = model(xs).argmax(1)
    rows = []
    for x_, t_, kind, meths in ((x, t, "photo", ("vg", "gradcam")), (xs, ts, "synthetic",
                                                                     ("vg",))):
        imgs = (x_.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        for meth in meths:
            maps = methods.to_map(methods.attribute(meth, model, x_, t_, profile="fast"),
                                  methods.get(meth).map_reduce or "abs_sum").numpy()
            for img, smap, tg in zip(imgs, maps, t_.tolist(), strict=True):
                h, w = smap.shape
                rows.append({"status": "ok", "error": "", "height": h, "width": w,
                             "map": smap.astype(np.float32).tobytes(), "map_dtype": "float32",
                             "crop": img.tobytes(), "boxes": "[]", "label": -1,
                             "target": int(tg), "values": "{}", "kind": kind, "method": meth})
    return pd.DataFrame(rows)


def _raw(payload: bytes) -> bytes:
    p = pickle.loads(payload)
    return pickle.dumps({**p, "images": {k: np.asarray(v.decode()) for k, v in
                                         p["images"].items()}})


def _arrow(frame: pd.DataFrame) -> int:
    return int(pa.Table.from_pandas(frame, preserve_index=False).nbytes)


def run(s: Settings) -> dict[str, Any]:
    """Bytes per row raw vs WebP per metric set and row kind (see the module docstring)."""
    rows = stage_rows(s)
    out: dict[str, Any] = {"case": "pic_transport", "rows": len(rows), "sets": {}}
    for name, metric_names in METRIC_SETS.items():
        cfg = parse_config({"name": "bytes", "models": [s.model], "methods": ["vg"],
                            "metrics": metric_names,
                            "dataset": {"kind": "synthetic", "n": 1}}).to_dict()
        pic.BOKEH_CACHE.clear()
        with pic.single_threaded_blas():
            t0 = time.process_time()
            webp = BokehActor(cfg)(rows.drop(columns=["kind", "method"]))
            prepare_s = time.process_time() - t0
        raw = webp.assign(split=[_raw(p) for p in webp["split"]])
        t0 = time.process_time()
        for p in webp["split"]:
            for v in pickle.loads(p)["images"].values():
                v.decode()
        decode_s = time.process_time() - t0
        entry: dict[str, Any] = {"prepare_cpu_s_per_row": prepare_s / len(rows),
                                 "decode_cpu_s_per_row": decode_s / len(rows), "kinds": {}}
        for kind in ("photo", "synthetic", "all"):
            sel = (rows["kind"] == kind).to_numpy() if kind != "all" else np.ones(len(rows),
                                                                                  bool)
            n = int(sel.sum())
            split_raw = sum(len(p) for p, k in zip(raw["split"], sel, strict=True) if k) / n
            split_webp = sum(len(p) for p, k in zip(webp["split"], sel, strict=True) if k) / n
            entry["kinds"][kind] = {
                "rows": n, "split_raw": split_raw, "split_webp": split_webp,
                "split_ratio": split_webp / split_raw,
                "frame_raw": _arrow(raw[sel]) / n, "frame_webp": _arrow(webp[sel]) / n,
            }
        out["sets"][name] = entry
    return out


def markdown(result: dict[str, Any]) -> str:
    """Bytes per row of the BokehActor's output, raw pixels vs lossless WebP."""
    lines = ["| PIC metrics | rows | PIC images raw, bytes/row | WebP, bytes/row | ratio | "
             "whole frame raw (Arrow) | WebP | decode CPU s/row |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, e in result["sets"].items():
        for kind, k in e["kinds"].items():
            lines.append(f"| {name} | {kind} ({k['rows']}) | {k['split_raw']:,.0f} | "
                         f"{k['split_webp']:,.0f} | {k['split_ratio']:.3f} | "
                         f"{k['frame_raw']:,.0f} | {k['frame_webp']:,.0f} | "
                         f"{e['decode_cpu_s_per_row']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.pic_transport [--quick] [--out DIR]``: print the table, write
    ``pic_transport.json`` and ``pic_transport.md`` into DIR."""
    import argparse
    from pathlib import Path

    from benchmarks.common import machine

    p = argparse.ArgumentParser(prog="python -m benchmarks.pic_transport")
    p.add_argument("--quick", action="store_true", help="a few rows: checks the harness runs")
    p.add_argument("--out", default="benchmarks/results/pic", help="output folder")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    result = {"machine": machine(), **run(Settings(quick=a.quick))}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pic_transport.json").write_text(json.dumps(result, indent=1, default=float))
    table = f"{result['machine']}\n\n{markdown(result)}\n"
    (out / "pic_transport.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
