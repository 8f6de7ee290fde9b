"""PIC's images between pipeline stages as lossless WebP bytes (:class:`EncodedImages`).

The split form's CPU half (:func:`~salbench.metrics.pic.orchestrator.pic_prepare` with
``encoded=True``, what the BokehActor runs) hands its images to the model stage (the
ScoreActor) as lossless WebP: the encodings the WebP information level computes anyway where
there are some (``info="webp"``), else a fast lossless encoding (libwebp ``method=0``).
Lossless WebP of an 8-bit RGB or grey image decodes to the same bytes, so the predictions and
AUCs are bit-equal to sending the pixels (tested), at a fraction of the size
(BENCHMARKS.md, "PIC transport").

An image that several protocols send (the original in every one; ``sic`` and
``sic_msssim`` build the same bokeh images) gets one encoding, found by its content hash in
:data:`~salbench.metrics.pic.engine.BOKEH_CACHE`; the sets then hold the same ``bytes``
object, which pickle writes once into the row's payload. The ScoreActor still scores each
set's images in the same order as before, so deduplication changes no prediction.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
from PIL import Image

from salbench.metrics.pic.engine import BOKEH_CACHE
from salbench.metrics.pic.images import content_hash
from salbench.metrics.pic.levels import webp_bytes


def transport_bytes(image: np.ndarray) -> bytes:
    """A fast lossless WebP encoding of a uint8 [H, W, 3] or [H, W] image (libwebp's least
    effort: ``method=0``; ~15% larger than PAIR's quality-100 encoding, ~15x faster)."""
    return webp_bytes(image, quality=100, method=0)


def _encoding(image: np.ndarray, known: bytes | None) -> bytes:
    """The one encoding of ``image`` this process hands on: the cached one if any, else
    ``known`` (a WebP level's), else a fresh :func:`transport_bytes`; cached by content."""
    key = ("encoded", content_hash(image))
    hit = BOKEH_CACHE.get(key)
    if hit is not None:
        return hit
    data = known or transport_bytes(image)
    BOKEH_CACHE.put(key, data, len(data) + 64)
    return data


def decode_image(data: bytes, grey: bool = False) -> np.ndarray:
    """Lossless WebP bytes -> uint8 [H, W, 3] (or [H, W] with ``grey``)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L" if grey else "RGB"))


class EncodedImages(Sequence[np.ndarray]):
    """uint8 images of one shape held as lossless WebP bytes; items decode on access.

    A sequence of the images (``len``, indexing, iteration give uint8 [H, W, 3] or [H, W]
    arrays), so a consumer that takes a list of arrays takes it as it is; ``shape`` and
    ``dtype`` are those of the stacked images, uint8 [N, H, W, 3] (or [N, H, W]); it pickles
    as its bytes. ``data``: the encodings; ``image_shape``: (H, W, 3), or (H, W) for grey
    images (stored as RGB by WebP, decoded back to one channel exactly).
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, data: Sequence[bytes], image_shape: tuple[int, ...] = (0, 0, 3)) -> None:
        self.data = list(data)
        self.image_shape = tuple(int(n) for n in image_shape)
        self.grey = len(self.image_shape) == 2

    @classmethod
    def encode(cls, images: Sequence[np.ndarray],
               known: Sequence[bytes | None] | None = None) -> EncodedImages:
        """Encode uint8 images of one shape, [H, W, 3] or [H, W]; ``known[i]``, where given,
        is image i's lossless WebP already computed (reused, not re-encoded)."""
        arrays = [np.asarray(im) for im in images]
        if arrays:
            shape = arrays[0].shape
            if arrays[0].dtype != np.uint8 or not (len(shape) == 2 or (len(shape) == 3
                                                                        and shape[2] == 3)):
                raise ValueError(f"EncodedImages: uint8 [H, W, 3] or [H, W] images, got "
                                 f"{arrays[0].dtype} {shape}")
            if any(a.shape != shape or a.dtype != np.uint8 for a in arrays):
                raise ValueError("EncodedImages: every image must have the first's shape")
        known = list(known) if known is not None else [None] * len(arrays)
        return cls([_encoding(a, k) for a, k in zip(arrays, known, strict=True)],
                   arrays[0].shape if arrays else (0, 0, 3))

    @property
    def shape(self) -> tuple[int, ...]:
        """The stacked images' shape: (N, H, W, 3) or (N, H, W)."""
        return (len(self.data), *self.image_shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the encodings."""
        return sum(len(d) for d in self.data)

    def __len__(self) -> int:
        return len(self.data)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [decode_image(d, self.grey) for d in self.data[index]]
        return decode_image(self.data[index], self.grey)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (decode_image(d, self.grey) for d in self.data)

    def decode(self) -> np.ndarray:
        """Every image: uint8 [N, H, W, 3] (or [N, H, W])."""
        return np.stack(list(self)) if self.data else np.zeros(self.shape, np.uint8)
