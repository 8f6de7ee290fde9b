"""The Dataset interface shared by every reader."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator
from typing import Any

Row = dict[str, Any]

#: Content keys are this many hex digits of SHA-256 (``salbench.keys``).
KEY_CHARS = 16


def digest(*parts: bytes) -> str:
    """Key of a sequence of byte strings: SHA-256 over each part's length and bytes."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:KEY_CHARS]


def sample_key(image: bytes, label: int, boxes_json: str) -> str:
    """Key of a sample's content: encoded image bytes, label, boxes (JSON [[x0,y0,x1,y1]...])."""
    return digest(bytes(image), str(int(label)).encode(), boxes_json.encode())


class Dataset(abc.ABC):
    """A finite, ordered collection of rows (see ``salbench.datasets`` for the row keys).

    Subclasses implement ``__len__`` and ``read(start, stop)``; the order is stable, so an
    index range is a reproducible shard. ``limit`` (if given) truncates the dataset.
    """

    kind: str = "dataset"

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of rows."""

    @abc.abstractmethod
    def read(self, start: int, stop: int) -> Iterator[Row]:
        """Rows ``start`` (inclusive) to ``stop`` (exclusive), in order.

        Must not raise for one bad file: a row whose image cannot be read carries the bytes
        it has (possibly b"") and decoding reports the problem downstream.
        """

    def __iter__(self) -> Iterator[Row]:
        return self.read(0, len(self))

    def fingerprint(self) -> str:
        """A short hash identifying the dataset's content listing (ids, labels, sources)."""
        h = hashlib.sha256(self.kind.encode())
        for sid in self.sample_ids():
            h.update(sid.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]

    def sample_ids(self) -> list[str]:
        """All sample ids in order (reads every row by default; readers override cheaply)."""
        return [row["sample_id"] for row in self.read(0, len(self))]
