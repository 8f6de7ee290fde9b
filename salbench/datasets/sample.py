"""``sample``: real photos bundled with scikit-image, annotated in ``data/sample.json``.

The default selection is chelsea (tabby cat), coffee (espresso), rocket (missile), camera
(tripod), astronaut (label -1), coins (label -1) and motorcycle (moped; the left image of
``skimage.data.stereo_motorcycle``); ``clock`` is annotated but left out (too blurred; see
its note). Each photo's entry records its ImageNet class index, boxes (x0, y0, x1, y1) in
original pixels (x1, y1 exclusive edges), its size (W, H) and a note explaining the choice.

Rows: ``sample_id`` = photo name, ``image`` = PNG bytes of the skimage array (grayscale
photos stay one-channel PNGs; ``decode_image`` turns them into RGB), ``label``, ``boxes``,
``source`` = ``"skimage:<loader>"``. Everything loads offline (the photos ship inside the
scikit-image wheel).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import numpy as np

from salbench.datasets.base import Dataset, Row
from salbench.datasets.decode import encode_png
from salbench.datasets.folder import check_limit, check_range, listing_fingerprint
from salbench.datasets.registry import register
from salbench.errors import ConfigError

#: Accepted alternative names for ``names=[...]``.
ALIASES = {"stereo_motorcycle": "motorcycle", "cat": "chelsea"}


@functools.lru_cache(maxsize=1)
def annotations() -> dict[str, dict[str, Any]]:
    """The parsed ``data/sample.json`` photos, by name, in file order."""
    text = resources.files("salbench.datasets").joinpath("data/sample.json").read_text("utf-8")
    return {p["name"]: p for p in json.loads(text)["photos"]}


def load_photo(name: str) -> np.ndarray:
    """The skimage array of photo ``name``: uint8 [H, W, 3] or [H, W] (grayscale)."""
    import skimage.data

    entry = annotations()[name]
    arr = getattr(skimage.data, entry["loader"])()
    if isinstance(arr, tuple):
        arr = arr[int(entry.get("index", 0))]
    return np.asarray(arr)


@functools.lru_cache(maxsize=16)
def _png(name: str) -> tuple[bytes, str | None]:
    arr = load_photo(name)
    w, h = annotations()[name]["size"]
    err = None
    if arr.shape[:2] != (h, w):
        err = (
            f"skimage photo {name!r} is {arr.shape[1]}x{arr.shape[0]}, annotated as {w}x{h}; "
            "its boxes do not apply (scikit-image changed the photo)"
        )
    return encode_png(arr), err


@register("sample")
class SampleDataset(Dataset):
    """The bundled real photos (see the module docstring).

    Args:
        names: photos to use, in this order (default: every photo with ``include: true``).
        limit: keep only the first ``limit`` photos.
    """

    kind = "sample"

    def __init__(self, names: Sequence[str] | None = None, limit: int | None = None) -> None:
        ann = annotations()
        if names is None:
            chosen = [n for n, p in ann.items() if p.get("include", True)]
        else:
            if isinstance(names, str):
                names = [names]
            chosen = []
            for n in names:
                n = ALIASES.get(n, n)
                if n not in ann:
                    raise ConfigError(
                        f"dataset.names: unknown sample photo {n!r}; valid: {', '.join(ann)}"
                    )
                if n in chosen:
                    raise ConfigError(f"dataset.names: photo {n!r} listed twice")
                chosen.append(n)
        self.limit = check_limit(limit)
        self.names = chosen[: self.limit] if self.limit is not None else chosen

    def __len__(self) -> int:
        return len(self.names)

    def sample_ids(self) -> list[str]:
        return list(self.names)

    def read(self, start: int, stop: int) -> Iterator[Row]:
        start, stop = check_range(start, stop, len(self.names))
        ann = annotations()
        for name in self.names[start:stop]:
            p = ann[name]
            data, err = _png(name)
            row: Row = {
                "sample_id": name,
                "image": data,
                "label": int(p["label"]),
                "boxes": [[float(v) for v in b] for b in p["boxes"]],
                "source": f"skimage:{p['loader']}",
            }
            if err is not None:
                row["error"] = err
            yield row

    def fingerprint(self) -> str:
        """Hash of the selected photos' annotations (name, loader, size, label, boxes)."""
        ann = annotations()
        return listing_fingerprint(
            self.kind,
            (
                [n, ann[n]["loader"], ann[n]["size"], ann[n]["label"], ann[n]["boxes"]]
                for n in self.names
            ),
        )
