"""ScoreActor: the model stage that scores the images the BokehActor built (PIC bokeh
images): one chunked forward pass over every image of every row of the batch, giving the
softmax probability of each row's target and whether the target is top-1. The images are
dropped from the payload afterwards, so only the scores travel on."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import torch

from salbench import models
from salbench.actors.attribute import pick_device, placement, set_threads
from salbench.config import RunConfig, parse_config
from salbench.metrics.pic import model_scores
from salbench.models import numerics


class ScoreActor:
    """Scores the split metrics' images with one model (GPU when available, else CPU)."""

    def __init__(self, config: dict[str, Any], model_index: int) -> None:
        self.config: RunConfig = parse_config(config)
        self.device = pick_device(self.config.resources.device)
        set_threads(self.config, self.device)
        comp = self.config.models[model_index]
        self.model = numerics.apply(models.load(comp.name, weights=comp.params.get("weights"),
                                                device=self.device),
                                    self.config.model_numerics(model_index))
        self.placement = placement(comp.label, self.device)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        payloads = {i: pickle.loads(p) for i, p in enumerate(batch["split"]) if p}
        images: list[np.ndarray] = []
        targets: list[int] = []
        where: list[tuple[int, Any, int, int]] = []
        for i, payload in payloads.items():
            for key, imgs in payload["images"].items():
                where.append((i, key, len(images), len(images) + len(imgs)))
                images.extend(imgs)
                targets.extend([payload["target"]] * len(imgs))
        with torch.no_grad():
            prob, top1 = model_scores(self.model, images, targets, device=self.device,
                                      internal_batch_size=self.config.resources.score_batch_size)
        for i, key, start, stop in where:
            payloads[i].setdefault("scores", {})[key] = (prob[start:stop], top1[start:stop])
        for i, payload in payloads.items():
            payload["images"] = {}
            batch.iloc[i, batch.columns.get_loc("split")] = pickle.dumps(payload)
        batch["score_placement"] = self.placement
        return batch
