"""``digits``: scikit-learn's 8x8 digits in the digits model's input convention (paper 000).

The images and the split are made here (:func:`digits_images`) and the ``digits_cnn`` model
(:mod:`salbench.models.digits`) is trained on them, so the dataset does not import the model:
each digit scaled to 0..255, resized bilinearly to 20x20 and centred in a 28x28 black frame,
uint8 [28, 28, 3] (white digit on black, identical channels). ``split`` is ``"test"``
(default: the 450 held-out images the model never saw), ``"train"`` (1347) or ``"all"``
(1797); the split is a stratified 75/25 ``train_test_split`` with ``random_state=0``.

Rows: ``sample_id`` = ``"digits-<i>"`` with ``i`` the index in ``load_digits()`` (stable
across splits), ``image`` = uint8 [28, 28, 3], ``label`` = the digit 0..9 (the classes of
``digits_cnn``, not ImageNet classes), ``boxes`` = ``[[x0, y0, x1, y1]]`` the tight box of
the ink pixels (values >= 64; x1, y1 exclusive), ``source`` = ``"sklearn:digits"``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

from salbench.datasets.base import Dataset, Row
from salbench.datasets.folder import check_limit, check_range, listing_fingerprint
from salbench.datasets.registry import register
from salbench.errors import ConfigError

SPLITS = ("test", "train", "all")

#: How the images are made; part of the digits model's recipe (whose hash names its weights).
IMAGE_RECIPE: dict[str, Any] = {
    "digit_box": 20, "size": 28, "resize": "bilinear", "scale": "x/16*255 uint8",
}
#: How the images are split into train and test; part of the model's recipe too.
SPLIT_RECIPE: dict[str, Any] = {"test_size": 0.25, "random_state": 0, "stratify": True}


@functools.cache
def _all_images() -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]  # [N, 1, 8, 8] in [0,1]
    box, size = IMAGE_RECIPE["digit_box"], IMAGE_RECIPE["size"]
    x = F.interpolate(x, size=(box, box), mode="bilinear", align_corners=False)
    pad = (size - box) // 2
    x = F.pad(x, (pad, size - box - pad, pad, size - box - pad))
    img = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()  # [N, 28, 28]
    img = np.repeat(img[..., None], 3, axis=-1)
    img.setflags(write=False)
    labels = data.target.astype(np.int64)
    labels.setflags(write=False)
    return img, labels


@functools.cache
def digits_indices(split: str) -> np.ndarray:
    """Indices into ``load_digits()`` of ``split``, ascending (the order of ``digits_images``)."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    _, labels = _all_images()
    idx = np.arange(len(labels))
    if split == "all":
        return idx
    from sklearn.model_selection import train_test_split

    s = SPLIT_RECIPE
    train, test = train_test_split(
        idx,
        test_size=s["test_size"],
        random_state=s["random_state"],
        stratify=labels if s["stratify"] else None,
    )
    return np.sort(train if split == "train" else test)


def digits_images(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn digits in the digits model's input convention.

    Args:
        split: ``"test"`` (the held-out 450 images), ``"train"`` (1347) or ``"all"`` (1797).

    Returns:
        (images uint8 [N, 28, 28, 3] (white digit on black, identical channels), labels int64
        [N] in 0..9). Arrays are fresh copies.
    """
    img, labels = _all_images()
    idx = digits_indices(split)
    return img[idx].copy(), labels[idx].copy()


#: Pixels at or above this value (a quarter of full intensity) count as ink for the box.
INK_THRESHOLD = 64


def ink_box(img: np.ndarray, threshold: int = INK_THRESHOLD) -> list[list[float]]:
    """[[x0, y0, x1, y1]] of the ink pixels (>= threshold) of a uint8 [H, W, 3] image.

    x1, y1 are exclusive; [] for a blank image. The bilinear upsampling spreads faint
    values around each stroke, hence the threshold rather than "non-zero".
    """
    ys, xs = np.nonzero(img.max(axis=-1) >= threshold)
    if len(xs) == 0:
        return []
    return [[float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]]


@register("digits")
class DigitsDataset(Dataset):
    """scikit-learn digits, 28x28 RGB (see the module docstring).

    Args:
        split: "test" (held out from ``digits_cnn`` training), "train" or "all".
        limit: keep only the first ``limit`` images.
    """

    kind = "digits"

    def __init__(self, split: str = "test", limit: int | None = None) -> None:
        if split not in SPLITS:
            raise ConfigError(f"dataset.split must be one of {list(SPLITS)}, got {split!r}")
        self.split = split
        self.limit = check_limit(limit)
        n = len(digits_indices(split))
        self.n = n if self.limit is None else min(n, self.limit)

    def __len__(self) -> int:
        return self.n

    def sample_ids(self) -> list[str]:
        return [f"digits-{i}" for i in digits_indices(self.split)[: self.n]]

    def read(self, start: int, stop: int) -> Iterator[Row]:
        start, stop = check_range(start, stop, self.n)
        if start == stop:
            return
        images, labels = _all_images()
        idx = digits_indices(self.split)
        for k in range(start, stop):
            img = images[idx[k]]
            yield {
                "sample_id": f"digits-{int(idx[k])}",
                "image": img.copy(),
                "label": int(labels[idx[k]]),
                "boxes": ink_box(img),
                "source": "sklearn:digits",
            }

    def fingerprint(self) -> str:
        """Hash of the split, the ids and the image recipe."""
        return listing_fingerprint(
            self.kind, [[self.split, IMAGE_RECIPE, SPLIT_RECIPE], self.sample_ids()]
        )
