"""The saliency gallery: per sample, the model's input crop and every method's map side by
side, with the sample's key scores under each map.

Maps and crops come from the per-sample table (``map`` float16 bytes and ``input_png``,
written when the config has ``save_maps: true``). Every map is drawn the same way
(:data:`NORMALISATION`): divided by its own 99th percentile of |value|, clipped to [-1, 1],
with one diverging colour map (white at 0), written as a 256-colour PNG.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from PIL import Image

from salbench.report.data import RunTables
from salbench.report.format import fmt
from salbench.results.samples import RunSamples

CMAP = "RdBu_r"
PERCENTILE = 99.0
NORMALISATION = (
    f"Maps without negative values are scaled between their own 1st and {PERCENTILE:g}th "
    f"percentiles to [0, 1]; signed maps are divided by their {PERCENTILE:g}th percentile of "
    f"|value| to [-1, 1] (both clipped). One colour map, {CMAP}: white 0, red positive, blue "
    "negative. Both rescalings keep the order of the pixels, which is all the "
    "perturbation metrics use; colours compare pixels within a map, not magnitudes across "
    "maps.")
#: Per-row scores shown under the maps, in this order, with short labels (first 4 present;
#: each label names one metric, so a legend entry is never ambiguous).
SCORES = (
    ("insertion_auc", "ins"), ("deletion_auc", "del"), ("sic_auc", "SIC"), ("aic_auc", "AIC"),
    ("pic_blur_sic_auc", "SIC-blur"), ("insertion_igos_auc", "ins-IGOS"),
    ("deletion_igos_auc", "del-IGOS"),
    ("pixel_flip_lerf_auc", "LeRF"), ("pixel_flip_morf_auc", "MoRF"),
    ("insertion_samp_auc", "ins-SAMP"), ("deletion_samp_auc", "del-SAMP"),
    ("pointing_game_hit", "PG"), ("wsol_f1", "F1"), ("similarity_pearson", "r"),
    ("mprt_spearman", "MPRT"), ("sensitivity_n", "SensN"), ("concentration_gini", "Gini"),
)
MAX_SCORES = 4
DEFAULT_MAX_SAMPLES = 12


@dataclass
class Tile:
    """One method's map of one sample: the PNG (relative path) or why there is none."""

    method: str
    image: str | None
    scores: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""


@dataclass
class SampleRow:
    """One sample of one model: its caption, input crop and tiles."""

    model: str
    sample_id: str
    caption: str
    input_image: str | None
    tiles: list[Tile]


@dataclass
class Gallery:
    """The gallery section: its rows, the scores legend, and notes (why something is
    missing, how many samples are shown)."""

    rows: list[SampleRow]
    legend: list[tuple[str, str]]
    notes: list[str]


def normalise(m: np.ndarray) -> np.ndarray:
    """A map rescaled for display (see :data:`NORMALISATION`): non-negative maps to [0, 1]
    between their 1st and 99th percentiles, signed maps to [-1, 1] by their 99th percentile
    of |value|; a constant map becomes 0."""
    finite = m[np.isfinite(m)]
    if finite.size == 0:
        return np.zeros_like(m, dtype=np.float32)
    if finite.min() >= 0:
        lo, hi = np.percentile(finite, [100.0 - PERCENTILE, PERCENTILE])
        if hi <= lo:
            lo, hi = float(finite.min()), float(finite.max())
        if hi <= lo:
            return np.zeros_like(m, dtype=np.float32)
        return np.clip(np.nan_to_num((m - lo) / (hi - lo)), 0.0, 1.0).astype(np.float32)
    scale = float(np.percentile(np.abs(finite), PERCENTILE)) or float(np.abs(finite).max())
    return np.clip(np.nan_to_num(m / scale), -1.0, 1.0).astype(np.float32)


def map_png(m: np.ndarray) -> bytes:
    """A map as a palette PNG in the gallery's colour map (see :data:`NORMALISATION`)."""
    idx = np.round((normalise(m) + 1.0) * 127.5).astype(np.uint8)
    palette = (colormaps[CMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def decode_map(row: pd.Series) -> np.ndarray | None:
    """The float32 [H, W] map of a per-sample row, or None when the row has none."""
    data = row.get("map")
    if data is None or (isinstance(data, float) and math.isnan(data)) or len(data) == 0:
        return None
    h, w = int(row["map_height"]), int(row["map_width"])
    return np.frombuffer(data, np.float16).astype(np.float32).reshape(h, w)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text))


def score_columns(samples: RunSamples) -> list[tuple[str, str]]:
    """(column, short label) of the scores shown under each map (up to four)."""
    out = []
    for col, short in SCORES:
        if samples.has_values(col):
            out.append((col, short))
        if len(out) == MAX_SCORES:
            break
    return out


def write_gallery(run: RunTables, out_dir: Path,
                  max_samples: int = DEFAULT_MAX_SAMPLES) -> Gallery:
    """Write the gallery's PNGs under ``out_dir`` and describe it (paths relative to
    ``out_dir.parent``, the report folder)."""
    s = run.samples
    if not run.has_maps:
        return Gallery([], [], [
            "This run has no saved maps (its config has save_maps: false), so there is no "
            "gallery. Rerun with --set save_maps=true to store the maps and input crops in "
            "the tables."])
    legend = score_columns(s)
    shown = s.first_samples(max_samples)
    n_samples = s.n_samples()
    notes = [NORMALISATION]
    if n_samples > len(shown):
        notes.append(f"Showing the first {len(shown)} of {n_samples} samples.")
    if "input_png" not in s.columns:
        notes.append("This run's tables hold no input crops (written by salbench before "
                     "input_png existed); only the maps are shown.")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in run.models:
        rows_of_model = s.rows_of_samples([idx for idx, _ in shown], model)
        for idx, sample_id in shown:
            g = rows_of_model[rows_of_model["index"] == idx]
            if g.empty:
                continue
            rows.append(_sample_row(run, g, model, str(sample_id), legend, out_dir))
    return Gallery(rows, legend, notes)


def _sample_row(run: RunTables, g: pd.DataFrame, model: str, sample_id: str,
                legend: list[tuple[str, str]], out_dir: Path) -> SampleRow:
    stem = f"{_slug(model)}-{_slug(sample_id)}"
    rel = out_dir.name
    input_image = None
    if "input_png" in g.columns:
        crops = [c for c in g["input_png"] if isinstance(c, bytes) and c]
        if crops:
            (out_dir / f"{stem}-input.png").write_bytes(crops[0])
            input_image = f"{rel}/{stem}-input.png"
    ok = g[g["status"] == "ok"]
    first = ok.iloc[0] if len(ok) else g.iloc[0]
    label = int(first["label"])
    caption = (f"{sample_id}: label {label if label >= 0 else 'none (target = top-1)'}, "
               f"target {int(first['target'])}, predicted {int(first['pred'])}, "
               f"p(target) {fmt(float(first['target_prob']))}") if len(ok) else (
               f"{sample_id}: {first['status']}, {str(first['error'] or '')[:200]}")
    tiles = []
    by_method = {r["method"]: r for _, r in g.iterrows()}
    for method in run.methods:
        row = by_method.get(method)
        if row is None:
            tiles.append(Tile(method, None, message="no row"))
            continue
        m = decode_map(row)
        scores = [(short, fmt(float(row[col]))) for col, short in legend]
        if m is None:
            msg = f"{row['status']}: {str(row['error'] or '')[:160]}" if row["status"] != "ok" \
                else "no map stored"
            tiles.append(Tile(method, None, scores if row["status"] == "ok" else [], msg))
            continue
        name = f"{stem}-{_slug(method)}.png"
        (out_dir / name).write_bytes(map_png(m))
        msg = "" if row["status"] == "ok" else f"{row['status']}: {str(row['error'])[:160]}"
        tiles.append(Tile(method, f"{rel}/{name}", scores, msg))
    return SampleRow(model, sample_id, caption, input_image, tiles)


def colorbar_css(stops: int = 11) -> str:
    """CSS gradient stops of the gallery's colour map, from -1 to +1."""
    colours = colormaps[CMAP](np.linspace(0, 1, stops))[:, :3] * 255
    return ", ".join(f"rgb({r:.0f},{g:.0f},{b:.0f}) {100 * i / (stops - 1):.0f}%"
                     for i, (r, g, b) in enumerate(colours))
