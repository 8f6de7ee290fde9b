"""``synthetic``: procedurally generated images with one planted object of known location.

Image ``i`` of a dataset with ``seed`` s is generated from ``np.random.default_rng([s, i])``
alone, so any index range gives the same pixels (shards are reproducible):

- background: a smooth random colour field (a 6x6 grid of muted colours, values about
  50..170, upsampled bilinearly) plus Gaussian pixel noise (sigma 10);
- object: a disc or an axis-aligned square (``shapes``), diameter/side a uniform fraction
  ``[min_frac, max_frac]`` of the shorter image side, placed uniformly so it lies fully
  inside the image, filled with a saturated colour (one channel ~230, others ~30) and a
  diagonal stripe texture, plus noise.

Rows: ``sample_id`` = ``"synthetic-00003"``, ``image`` = uint8 [H, W, 3], ``label`` = the
``label`` parameter (default -1: no ImageNet class; target = top-1), ``boxes`` =
``[[x0, y0, x1, y1]]`` the tight box of the mask (x1 = last column + 1, y1 = last row + 1),
``mask`` = bool [H, W] (True on the object), ``source`` = a string with every generation
parameter (``"synthetic:seed=0,index=3,size=224x224,..."``), from which
:func:`synthetic_mask` regenerates the mask of a row that lost its ``mask`` key (e.g. after
a round trip through Parquet shards, whose schema has no mask column).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from salbench.datasets.base import Dataset, Row
from salbench.datasets.folder import check_limit, check_range, listing_fingerprint
from salbench.datasets.registry import register
from salbench.errors import BadInputError, ConfigError

SHAPES = ("disc", "square")


@dataclass(frozen=True)
class SyntheticParams:
    """Generation parameters shared by every image of a synthetic dataset."""

    seed: int = 0
    height: int = 224
    width: int = 224
    shapes: tuple[str, ...] = SHAPES
    min_frac: float = 0.2
    max_frac: float = 0.45

    def source(self, index: int) -> str:
        """The row's ``source`` string (parsed back by :meth:`from_source`)."""
        return (
            f"synthetic:seed={self.seed},index={index},size={self.height}x{self.width},"
            f"shapes={'+'.join(self.shapes)},min_frac={self.min_frac!r},"
            f"max_frac={self.max_frac!r}"
        )

    @classmethod
    def from_source(cls, source: str) -> tuple[SyntheticParams, int]:
        """Inverse of :meth:`source`: (params, index)."""
        if not source.startswith("synthetic:"):
            raise BadInputError(f"not a synthetic row source: {source!r}")
        try:
            kv = dict(item.split("=", 1) for item in source[len("synthetic:") :].split(","))
            h, w = (int(v) for v in kv["size"].split("x"))
            params = cls(
                seed=int(kv["seed"]),
                height=h,
                width=w,
                shapes=tuple(kv["shapes"].split("+")),
                min_frac=float(kv["min_frac"]),
                max_frac=float(kv["max_frac"]),
            )
            return params, int(kv["index"])
        except (KeyError, ValueError) as exc:
            raise BadInputError(f"malformed synthetic row source {source!r}: {exc}") from None


def _smooth_field(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    grid = rng.uniform(50.0, 170.0, size=(6, 6, 3)).astype(np.float32)
    out = np.empty((h, w, 3), np.float32)
    for c in range(3):
        chan = Image.fromarray(np.ascontiguousarray(grid[..., c]))
        out[..., c] = np.asarray(chan.resize((w, h), Image.Resampling.BILINEAR))
    return out


def generate(params: SyntheticParams, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index``: (uint8 [H, W, 3] RGB, bool [H, W] object mask)."""
    rng = np.random.default_rng([params.seed, index])
    h, w = params.height, params.width
    img = _smooth_field(rng, h, w)
    shape = params.shapes[int(rng.integers(len(params.shapes)))]
    side = int(round(rng.uniform(params.min_frac, params.max_frac) * min(h, w)))
    side = max(2, min(side, min(h, w)))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    yy, xx = np.mgrid[0:h, 0:w]
    if shape == "disc":
        r = side / 2.0
        cy, cx = y0 + r - 0.5, x0 + r - 0.5
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        mask = (yy >= y0) & (yy < y0 + side) & (xx >= x0) & (xx < x0 + side)
    colour = np.full(3, 30.0, np.float32)
    colour[int(rng.integers(3))] = 230.0
    period = float(rng.uniform(6.0, 14.0))
    stripes = 20.0 * np.sin(2 * np.pi * (xx + yy) / period).astype(np.float32)
    obj = colour[None, None, :] + stripes[..., None]
    img = np.where(mask[..., None], obj, img)
    img += rng.normal(0.0, 10.0, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def mask_box(mask: np.ndarray) -> list[float]:
    """Tight box [x0, y0, x1, y1] of a bool [H, W] mask (x1, y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def synthetic_mask(row: Row) -> np.ndarray:
    """The ground-truth object mask of a synthetic row: bool [H, W], True on the object.

    Uses ``row["mask"]`` when present, else regenerates it from ``row["source"]``.
    """
    if "mask" in row and row["mask"] is not None:
        return np.asarray(row["mask"], dtype=bool)
    params, index = SyntheticParams.from_source(str(row["source"]))
    return generate(params, index)[1]


@register("synthetic")
class SyntheticDataset(Dataset):
    """``n`` generated images with one planted object each (see the module docstring).

    Args:
        n: number of images.
        size: image size, an int (square) or (H, W); each side >= 16.
        seed: random seed; same seed -> identical images.
        label: class index put on every row (-1 = none).
        shapes: object shapes to draw from ("disc", "square").
        min_frac, max_frac: object size as a fraction of the shorter side, 0 < min <= max <= 1.
        limit: keep only the first ``limit`` images.
    """

    kind = "synthetic"

    def __init__(
        self,
        n: int = 16,
        size: int | Sequence[int] = 224,
        seed: int = 0,
        label: int = -1,
        shapes: Sequence[str] = SHAPES,
        min_frac: float = 0.2,
        max_frac: float = 0.45,
        limit: int | None = None,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"dataset.n must be an integer >= 0, got {n!r}")
        if isinstance(size, int):
            hw: tuple[Any, ...] = (size, size)
        else:
            hw = tuple(size)
        if len(hw) != 2 or not all(isinstance(v, int) and v >= 16 for v in hw):
            raise ConfigError(f"dataset.size must be an int or [H, W], each >= 16; got {size!r}")
        if isinstance(shapes, str):
            shapes = [shapes]
        bad = [s for s in shapes if s not in SHAPES]
        if not shapes or bad:
            raise ConfigError(f"dataset.shapes: {list(shapes)!r}; valid shapes: {list(SHAPES)}")
        if not (0.0 < min_frac <= max_frac <= 1.0):
            raise ConfigError(
                f"dataset.min_frac/max_frac must satisfy 0 < min_frac <= max_frac <= 1, got "
                f"{min_frac!r}, {max_frac!r}"
            )
        if isinstance(label, bool) or not isinstance(label, int) or label < -1:
            raise ConfigError(f"dataset.label must be an integer >= -1, got {label!r}")
        self.params = SyntheticParams(
            seed=int(seed),
            height=int(hw[0]),
            width=int(hw[1]),
            shapes=tuple(shapes),
            min_frac=float(min_frac),
            max_frac=float(max_frac),
        )
        self.label = label
        self.limit = check_limit(limit)
        self.n = n if self.limit is None else min(n, self.limit)

    def __len__(self) -> int:
        return self.n

    def sample_ids(self) -> list[str]:
        return [f"synthetic-{i:05d}" for i in range(self.n)]

    def read(self, start: int, stop: int) -> Iterator[Row]:
        start, stop = check_range(start, stop, self.n)
        for i in range(start, stop):
            img, mask = generate(self.params, i)
            yield {
                "sample_id": f"synthetic-{i:05d}",
                "image": img,
                "label": self.label,
                "boxes": [mask_box(mask)],
                "mask": mask,
                "source": self.params.source(i),
            }

    def fingerprint(self) -> str:
        """Hash of the generation parameters, label and length."""
        return listing_fingerprint(self.kind, [[self.params.source(-1), self.label, self.n, "v1"]])
