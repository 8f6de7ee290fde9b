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

from collections.abc import Callable
from typing import Any

from salbench.datasets.base import Dataset, Row
from salbench.registry import Registry, decorator

REGISTRY: Registry[Callable[..., Dataset]] = Registry("dataset")

#: ``@register("kind")`` on a Dataset subclass or a factory ``(**params) -> Dataset``.
register = decorator(REGISTRY, lambda name, fn, **meta: fn)


def names() -> list[str]:
    """Registered dataset kinds."""
    return REGISTRY.names()


def open_dataset(spec: str | dict[str, Any]) -> Dataset:
    """Open a dataset from ``"kind"`` or ``{"kind": ..., **params}``. ``filter`` is the
    model stage's (which images are evaluated), not the reader's."""
    if isinstance(spec, str):
        spec = {"kind": spec}
    params = dict(spec)
    params.pop("filter", None)
    kind = params.pop("kind", None)
    if kind is None:
        raise ValueError("dataset spec needs a 'kind' key, e.g. {kind: folder, path: photos/}")
    return REGISTRY.get(kind)(**params)


from salbench.datasets import (  # noqa: E402,F401
    digits,
    folder,
    imagenet,
    parquet,
    sample,
    synthetic,
)

__all__ = ["Dataset", "REGISTRY", "Row", "names", "open_dataset", "register"]
