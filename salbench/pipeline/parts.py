"""The finished rows of shards that are not complete yet, kept on local disk, not in the
driver's memory.

A shard is written when every model's rows for it are in. The models' branches of the Ray
graph run at their own speeds, so a fast model's rows can arrive thousands of shards ahead
of a slow one's; held as Python rows they would grow with the run. :class:`ShardParts`
writes each arriving part (an Arrow table of one shard's rows) to its own Arrow IPC file in
a local temporary folder (``TMPDIR``, named ``salbench-parts-<run id>-*`` so that a folder
left by a killed process names its run; removed on :meth:`ShardParts.close`) and reads a
shard's parts back when it is complete. The driver holds one part at a time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections import defaultdict

import pyarrow as pa


class ShardParts:
    """Parts of incomplete shards on local disk (see the module docstring)."""

    def __init__(self, run_id: str = "", workdir: str | None = None) -> None:
        prefix = f"salbench-parts-{run_id}-" if run_id else "salbench-parts-"
        self._dir = tempfile.mkdtemp(prefix=prefix, dir=workdir)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._files: dict[int, list[str]] = defaultdict(list)

    def add(self, shard: int, part: pa.Table) -> None:
        """Keep ``part`` (rows of ``shard``) until :meth:`pop`."""
        path = os.path.join(self._dir, f"shard-{shard:05d}-{len(self._files[shard]):05d}.arrow")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, part.schema) as writer:
            writer.write_table(part)
        self._files[shard].append(path)

    def pop(self, shard: int) -> list[pa.Table]:
        """Every part of ``shard``, in the order added; their files are removed."""
        parts = []
        for path in self._files.pop(shard, []):
            with pa.OSFile(path, "rb") as fh:
                parts.append(pa.ipc.open_file(fh).read_all().combine_chunks())
            os.remove(path)
        return parts

    def __len__(self) -> int:
        return len(self._files)

    def close(self) -> None:
        """Remove the folder and any part left in it."""
        self._cleanup()
