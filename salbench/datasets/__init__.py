"""Dataset readers (SPEC 7). Each yields rows::

    {"sample_id": str,            # unique and stable within the dataset
     "image": bytes | np.ndarray, # encoded file bytes, or uint8 [H, W, 3]
     "label": int,                # ImageNet class index; -1 when unknown (target = top-1)
     "boxes": list[list[float]],  # object boxes (x0, y0, x1, y1) in original pixels; may be []
     "source": str}               # where the row came from (path, "skimage:chelsea", ...)

``open_dataset({"kind": "folder", "path": ...})`` returns a :class:`Dataset`; its rows can be
read by index range, which is how the pipeline splits work into shards.
"""

from __future__ import annotations

from salbench.datasets import (  # noqa: F401
    digits,
    folder,
    imagenet,
    parquet,
    sample,
    synthetic,
)
from salbench.datasets.base import Dataset, Row
from salbench.datasets.registry import REGISTRY, names, open_dataset, register

__all__ = ["Dataset", "REGISTRY", "Row", "names", "open_dataset", "register"]
