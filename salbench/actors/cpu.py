"""BokehActor: the CPU stage. Runs every model-free ("cpu") metric on each ok row.

In this version the CPU metrics are the localization ones (pointing game); the bokeh images
and information levels of the PIC metrics belong here too as those metrics are registered.
It drops the image crop (and the map unless ``save_maps``) before rows go to the writer.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from salbench import metrics
from salbench.pipeline.config import RunConfig, parse_config


class BokehActor:
    """CPU metrics for rows of every model (see the module docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config: RunConfig = parse_config(config)
        self.specs = [
            (m, spec) for m in self.config.metrics if (spec := metrics.get(m.name)).stage == "cpu"
        ]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        for i, row in enumerate(batch.to_dict("records")):
            if row["status"] != "ok" or not self.specs:
                continue
            values = json.loads(row["values"])
            hw = (int(row["height"]), int(row["width"]))
            sample = {
                "map": np.frombuffer(row["map"], np.float16).astype(np.float32).reshape(hw),
                "image": np.frombuffer(row["crop"], np.uint8).reshape(*hw, 3),
                "boxes": np.asarray(json.loads(row["boxes"]), np.float32).reshape(-1, 4),
                "label": row["label"], "target": row["target"],
            }
            for comp, spec in self.specs:
                try:
                    values.update(spec.fn(sample, **spec.params(self.config.profile,
                                                                **comp.call_params())))
                except Exception as exc:
                    batch.loc[batch.index[i], "status"] = "metric_error"
                    batch.loc[batch.index[i], "error"] = (
                        f"{comp.label}: {type(exc).__name__}: {exc}"
                    )
            batch.loc[batch.index[i], "values"] = json.dumps(values)
        batch["crop"] = [b""] * len(batch)
        if not self.config.save_maps:
            batch["map"] = [b""] * len(batch)
        return batch
