"""``digits``: scikit-learn's 8x8 digits in the digits model's input convention (paper 000).

Images and the split come from :func:`salbench.models.digits.digits_images`, the function
the ``digits_cnn`` model is trained with: each digit scaled to 0..255, resized bilinearly to
20x20 and centred in a 28x28 black frame, uint8 [28, 28, 3] (white digit on black,
identical channels). ``split`` is ``"test"`` (default: the 450 held-out images the model
never saw), ``"train"`` (1347) or ``"all"`` (1797); the split is the model's stratified
75/25 ``train_test_split`` with ``random_state=0``.

Rows: ``sample_id`` = ``"digits-<i>"`` with ``i`` the index in ``load_digits()`` (stable
across splits), ``image`` = uint8 [28, 28, 3], ``label`` = the digit 0..9 (the classes of
``digits_cnn``, not ImageNet classes), ``boxes`` = ``[[x0, y0, x1, y1]]`` the tight box of
the ink pixels (values >= 64; x1, y1 exclusive), ``source`` = ``"sklearn:digits"``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from salbench.datasets import register
from salbench.datasets.base import Dataset, Row
from salbench.datasets.folder import check_limit, check_range, listing_fingerprint
from salbench.errors import ConfigError

SPLITS = ("test", "train", "all")


@functools.cache
def digits_indices(split: str) -> np.ndarray:
    """Indices into ``load_digits()`` of ``split``, in the order ``digits_images`` returns.

    Recomputed from the digits model's public ``RECIPE["split"]`` (the same
    ``train_test_split`` call, sorted).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from salbench.models.digits import RECIPE

    labels = load_digits().target
    idx = np.arange(len(labels))
    if split == "all":
        return idx
    s = RECIPE["split"]
    train, test = train_test_split(
        idx,
        test_size=s["test_size"],
        random_state=s["random_state"],
        stratify=labels if s["stratify"] else None,
    )
    return np.sort(train if split == "train" else test)


@functools.cache
def _data(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from salbench.models.digits import digits_images

    images, labels = digits_images(split)
    idx = digits_indices(split)
    from sklearn.datasets import load_digits

    if len(idx) != len(labels) or not np.array_equal(load_digits().target[idx], labels):
        raise RuntimeError(  # pragma: no cover - guards against the model changing its split
            "salbench.models.digits.digits_images() no longer follows RECIPE['split']; "
            "update salbench.datasets.digits.digits_indices"
        )
    for a in (images, labels):
        a.setflags(write=False)
    return images, labels, idx


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
        images, labels, idx = _data(self.split)
        for k in range(start, stop):
            img = images[k]
            yield {
                "sample_id": f"digits-{int(idx[k])}",
                "image": img.copy(),
                "label": int(labels[k]),
                "boxes": ink_box(img),
                "source": "sklearn:digits",
            }

    def fingerprint(self) -> str:
        """Hash of the split, the ids and the model's image recipe."""
        from salbench.models.digits import RECIPE

        return listing_fingerprint(
            self.kind, [[self.split, RECIPE["image"], RECIPE["split"]], self.sample_ids()]
        )
