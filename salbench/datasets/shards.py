"""Pure per-row stage functions of the Ray Data graph: read shards, decode + crop.

They run inside Ray tasks but know nothing of Ray, and import neither torch nor the
methods, so a fresh read worker starts in well under a second. Rows between stages use
fixed-type columns only (ints, strings, bytes), so every block has the same Arrow schema:
arrays travel as raw bytes (``crop``: uint8 [H, W, 3]; ``map``: the method's float32
[H, W]) and boxes as JSON.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from salbench.datasets.base import Dataset, sample_key
from salbench.datasets.decode import decode_image, encode_png
from salbench.datasets.registry import open_dataset
from salbench.errors import BadInputError
from salbench.imaging import center_crop, crop_boxes


@functools.lru_cache(maxsize=4)
def _dataset(spec_json: str) -> Dataset:
    return open_dataset(json.loads(spec_json))


def block_items(shard_items: list[dict[str, int]], per_block: int) -> list[dict[str, str]]:
    """Consecutive shard items ({shard, start, stop}) in groups of ``per_block``: one item
    per Ray Data block, ``{"shards": <the group as JSON>}`` (:func:`read_block` reads it)."""
    return [{"shards": json.dumps(shard_items[i:i + per_block])}
            for i in range(0, len(shard_items), per_block)]


def read_block(item: dict[str, Any], *, dataset_json: str) -> Iterator[dict[str, Any]]:
    """A block item of :func:`block_items` -> the rows of its shards, shard after shard
    (:func:`read_shard` each)."""
    for shard in json.loads(item["shards"]):
        yield from read_shard(shard, dataset_json=dataset_json)


def read_shard(item: dict[str, Any], *, dataset_json: str) -> Iterator[dict[str, Any]]:
    """Shard item {shard, start, stop} -> its dataset rows with bytes images, boxes as JSON.

    Always exactly stop - start rows: a row that cannot be read carries ``read_error`` (the
    reason) and an empty image; if the reader fails part-way (corrupt data pages), the rest
    of the range become such rows (sample_id ``row-<index>``), so the run goes on.
    """
    ds = _dataset(dataset_json)
    start, stop = int(item["start"]), int(item["stop"])
    rows = ds.read(start, stop)
    failure = ""
    for offset in range(stop - start):
        row = None
        if not failure:
            try:
                row = next(rows)
            except StopIteration:
                failure = f"the dataset ended at row {start + offset} of {stop}"
            except Exception as exc:  # a poisoned shard: the rest of the range become errors
                failure = f"unreadable dataset rows: {type(exc).__name__}: {exc}"[:2000]
        if row is None:
            row = {"sample_id": f"row-{start + offset}", "error": failure}
        image, error = row.get("image", b""), str(row.get("error") or "")
        if isinstance(image, np.ndarray):
            try:
                image = encode_png(image)
            except (BadInputError, ValueError, TypeError) as exc:
                image, error = b"", f"cannot encode array image: {exc}"
        label = int(row.get("label", -1) if row.get("label") is not None else -1)
        boxes = json.dumps(np.asarray(row.get("boxes") or [], float).reshape(-1, 4).tolist())
        yield {
            "shard": int(item["shard"]),
            "index": start + offset,
            "sample_id": str(row["sample_id"]),
            "sample_key": sample_key(bytes(image), label, boxes),
            "image": bytes(image),
            "label": label,
            "boxes": boxes,
            "source": str(row.get("source", "")),
            "read_error": error,
        }


def decode_batch(
    batch: pd.DataFrame, *, input_size: tuple[int, int], crop_fraction: float
) -> pd.DataFrame:
    """Decode each image, centre-crop it for the model, map its boxes into the crop.

    Output columns: shard, index, sample_id, sample_key, label, source, boxes (JSON, crop
    pixels), crop (uint8 [H, W, 3] bytes, empty on error), status ("ok" or "bad_image"),
    error (reason).
    """
    out = []
    for row in batch.to_dict("records"):
        rec = {k: row[k] for k in ("shard", "index", "sample_id", "sample_key", "label",
                                   "source")}
        rec.update(boxes="[]", crop=b"", status="ok", error="")
        try:
            if row["read_error"]:
                raise BadInputError(row["read_error"])
            img = decode_image(row["image"])
            rec["crop"] = center_crop(img, input_size, crop_fraction).tobytes()
            boxes = crop_boxes(np.array(json.loads(row["boxes"])), img.shape[:2], input_size,
                               crop_fraction)
            rec["boxes"] = json.dumps(boxes.tolist())
        except BadInputError as exc:
            rec.update(status="bad_image", error=str(exc))
        except Exception as exc:  # a hostile file must become an error row, never a crash
            rec.update(status="bad_image", error=f"{type(exc).__name__}: {exc}")
        out.append(rec)
    return pd.DataFrame(out, columns=[
        "shard", "index", "sample_id", "sample_key", "label", "source", "boxes", "crop",
        "status", "error",
    ])
