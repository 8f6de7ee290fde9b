"""BokehActor and FinalizeActor: the CPU stages.

BokehActor runs every model-free ("cpu") metric on each ok row and the CPU half of every
split metric (PIC: bokeh images and information levels), whose images it attaches to the row
for the ScoreActor (PIC's as lossless WebP, :class:`~salbench.metrics.pic.EncodedImages`,
decoded as the ScoreActor iterates them). FinalizeActor turns the scored images into the
split metrics' columns (PIC curves and AUCs). Rows travel with fixed-type columns; the split
metrics' payload is one pickled ``split`` bytes column that only these actors read (internal
data, never read from outside the pipeline).
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pandas as pd

from salbench import metrics
from salbench.config import RunConfig, parse_config
from salbench.memory import keep_freed_memory
from salbench.results.tables import MAP_STATUSES
from salbench.runner import metric_error_line


def _fail(batch: pd.DataFrame, i: int, label: str, exc: Exception) -> None:
    """Row ``i`` keeps its other metrics; this metric's failure is one more error line."""
    at = batch.index[i]
    previous = batch.loc[at, "error"] if batch.loc[at, "status"] == "metric_error" else ""
    batch.loc[at, "status"] = "metric_error"
    batch.loc[at, "error"] = "\n".join(filter(None, [previous, metric_error_line(label, exc)]))


def stage_map(row: dict[str, Any]) -> np.ndarray:
    """A stage row's saliency map in the dtype the method returned: float [height, width]."""
    hw = (int(row["height"]), int(row["width"]))
    return np.frombuffer(row["map"], np.dtype(row["map_dtype"])).reshape(hw)


class BokehActor:
    """CPU metrics and the CPU half of split metrics (see the module docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        keep_freed_memory()
        self.config: RunConfig = parse_config(config)
        specs = [(m, metrics.get(m.name)) for m in self.config.metrics]
        self.cpu = [(m, s) for m, s in specs if s.stage == "cpu"]
        self.split = [(m, s) for m, s in specs if s.prepare is not None]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        payloads = [b""] * len(batch)
        for i, row in enumerate(batch.to_dict("records")):
            if row["status"] not in MAP_STATUSES or not (self.cpu or self.split):
                continue
            hw = (int(row["height"]), int(row["width"]))
            sample = {
                "map": stage_map(row),
                "image": np.frombuffer(row["crop"], np.uint8).reshape(*hw, 3),
                "boxes": np.asarray(json.loads(row["boxes"]), np.float32).reshape(-1, 4),
                "label": row["label"], "target": row["target"],
            }
            values = json.loads(row["values"])
            for comp, spec in self.cpu:
                try:
                    values.update(spec.fn(sample, **self.config.params_for(comp, spec)))
                except Exception as exc:
                    _fail(batch, i, comp.label, exc)
            images: dict[Any, np.ndarray] = {}
            states: dict[str, tuple[Any, Any]] = {}
            for comp, spec in self.split:
                try:
                    key, state, imgs = spec.prepare(sample, **self.config.params_for(comp, spec))
                except Exception as exc:
                    _fail(batch, i, comp.label, exc)
                    continue
                images.setdefault(key, imgs)
                states[comp.label] = (key, state)
            if states:
                payloads[i] = pickle.dumps({"images": images, "states": states,
                                            "target": int(row["target"])})
            batch.loc[batch.index[i], "values"] = json.dumps(values)
        batch["split"] = payloads
        if not self.config.save_maps:  # with save_maps the driver stores the crop as PNG
            batch["crop"] = [b""] * len(batch)
            batch["map"] = [b""] * len(batch)
        return batch


class FinalizeActor:
    """The CPU half of split metrics after scoring: their columns into ``values``."""

    def __init__(self, config: dict[str, Any]) -> None:
        keep_freed_memory()
        self.config: RunConfig = parse_config(config)
        self.split = [(m, s) for m in self.config.metrics
                      if (s := metrics.get(m.name)).prepare is not None]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        for i, row in enumerate(batch.to_dict("records")):
            if not row["split"]:
                continue
            payload = pickle.loads(row["split"])
            values = json.loads(row["values"])
            for comp, spec in self.split:
                if comp.label not in payload["states"]:
                    continue
                key, state = payload["states"][comp.label]
                prob, top1 = payload["scores"][key]
                try:
                    values.update(spec.finalize(state, prob, top1,
                                                **self.config.params_for(comp, spec)))
                except Exception as exc:
                    _fail(batch, i, comp.label, exc)
            batch.loc[batch.index[i], "values"] = json.dumps(_plain(values))
        return batch.drop(columns=["split"])


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars / arrays -> JSON-ready floats and lists."""
    return {k: np.asarray(v, np.float64).tolist() for k, v in values.items()}
