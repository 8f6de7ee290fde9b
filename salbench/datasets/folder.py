"""``folder``: any directory of images, with an optional labels CSV.

Listing rule (recursive, sorted by relative POSIX path):

- every regular file (or symlink to one) whose extension is an image extension
  (:data:`IMAGE_EXTENSIONS`, case-insensitive) **or** that has no extension is listed;
  such a file that is not really an image (a ``.txt`` renamed ``.jpg``) is still listed
  and fails at decode time with a reason, so it becomes an error row, never a silent drop;
- hidden files and directories (name starting with ``.``) are not listed;
- other files (``.txt``, ``.csv``, ``.json``, ...) are not listed; their relative paths are
  kept in :attr:`FolderDataset.skipped` and a logged warning says how many there were;
- a file named in the labels CSV is always listed, whatever its extension; one that does
  not exist becomes an error row ("file not found").

Labels CSV: a header with columns ``file,label`` (more columns are ignored), ``file``
relative to ``path`` (POSIX or native separators), ``label`` an ImageNet class index
(integer >= -1; -1 = unknown, target = top-1). The CSV path is used as given, or relative
to ``path`` when it does not exist as given. A malformed CSV raises ConfigError naming the
file and the line. With a labels CSV, a listed image without a CSV row becomes an error
row ("missing label"): SPEC 7 treats missing labels as bad input.

Rows: ``sample_id`` = relative path, ``image`` = the raw file bytes (read lazily in
``read``), ``label``, ``boxes`` = [] (a folder has no boxes), ``source`` = the file's path.
An unreadable file gives ``image=b""`` and an ``error`` key with the reason.

``path`` and ``labels`` may be URIs (``s3://bucket/photos``; :mod:`salbench.storage`): the
folder is then the objects under that prefix, listed with their sizes in one listing, and
each image is read with retries when its row is read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from salbench import storage
from salbench.datasets.base import Dataset, Row
from salbench.datasets.registry import register
from salbench.errors import ConfigError

#: Extensions listed as images (lower case, with the dot).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff",
        ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".avif", ".mpo",
    }
)  # fmt: skip
log = logging.getLogger(__name__)

#: Largest file read into a row (bytes); bigger files become error rows.
MAX_FILE_BYTES = 1 << 30


def listing_fingerprint(kind: str, entries: Iterable[Any]) -> str:
    """A 16-hex-digit SHA-256 over ``kind`` and JSON-encoded entries (stable across runs).

    Readers use it to make :meth:`Dataset.fingerprint` sensitive to labels, boxes, sizes and
    generation parameters, not only to the sample ids.
    """
    h = hashlib.sha256(kind.encode())
    for e in entries:
        h.update(json.dumps(e, sort_keys=True, separators=(",", ":"), default=str).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def check_limit(limit: Any) -> int | None:
    """Validate a ``limit`` parameter (None or an integer >= 0)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"dataset.limit must be null or an integer >= 0, got {limit!r}")
    return limit


def check_range(start: int, stop: int, n: int) -> tuple[int, int]:
    """Clamp ``[start, stop)`` to ``[0, n)`` (negative or reversed ranges are empty)."""
    start = max(0, min(int(start), n))
    stop = max(start, min(int(stop), n))
    return start, stop


def _norm_rel(name: str, csv_path: Path, line: int) -> str:
    raw = name.strip().replace("\\", "/")
    p = PurePosixPath(raw)
    if not raw or p.is_absolute() or ".." in p.parts:
        raise ConfigError(
            f"labels file {csv_path}, line {line}: file {name!r} must be a path relative to "
            "the image folder (no absolute paths, no '..')"
        )
    parts = [s for s in p.parts if s not in (".", "")]
    if not parts:
        raise ConfigError(f"labels file {csv_path}, line {line}: empty file name")
    return "/".join(parts)


def read_labels_csv(csv_path: Path | str) -> dict[str, int]:
    """Parse a ``file,label`` CSV into {relative posix path: label}.

    Raises ConfigError naming the file and line for a missing header column, a non-integer
    or out-of-range label, an empty or escaping file name, or a duplicate file.
    """
    try:
        text = storage.read_bytes(csv_path).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"labels file {csv_path}: cannot read it ({exc})") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ConfigError(
            f"labels file {csv_path} is empty; expected a header 'file,label'"
        ) from None
    except csv.Error as exc:
        raise ConfigError(f"labels file {csv_path}, line 1: {exc}") from None
    for col in ("file", "label"):
        if col not in header:
            raise ConfigError(
                f"labels file {csv_path}, line 1: no {col!r} column in header {header}; "
                "expected columns 'file,label'"
            )
    i_file, i_label = header.index("file"), header.index("label")
    out: dict[str, int] = {}
    line = 1
    try:
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) <= max(i_file, i_label):
                raise ConfigError(
                    f"labels file {csv_path}, line {line}: expected {len(header)} columns, "
                    f"got {len(rec)} ({rec!r})"
                )
            rel = _norm_rel(rec[i_file], csv_path, line)
            lab_s = rec[i_label].strip()
            try:
                lab = int(lab_s)
            except ValueError:
                raise ConfigError(
                    f"labels file {csv_path}, line {line}: label {lab_s!r} is not an integer "
                    "class index"
                ) from None
            if lab < -1:
                raise ConfigError(
                    f"labels file {csv_path}, line {line}: label {lab} must be >= 0 "
                    "(or -1 for unknown)"
                )
            if rel in out:
                raise ConfigError(f"labels file {csv_path}, line {line}: duplicate file {rel!r}")
            out[rel] = lab
    except csv.Error as exc:
        raise ConfigError(f"labels file {csv_path}, line {line}: {exc}") from None
    return out


def _split_listing(rels: Iterable[str]) -> tuple[list[str], list[str]]:
    listed: list[str] = []
    skipped: list[str] = []
    for rel in rels:
        ext = os.path.splitext(rel.rsplit("/", 1)[-1])[1].lower()
        (listed if ext == "" or ext in IMAGE_EXTENSIONS else skipped).append(rel)
    return sorted(listed), sorted(skipped)


def list_files(root: Path) -> tuple[list[str], list[str]]:
    """(listed, skipped) relative POSIX paths under ``root`` by the module's listing rule."""
    listed: list[str] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = Path(dirpath).relative_to(root)
        for fn in filenames:
            if fn.startswith("."):
                continue
            full = Path(dirpath, fn)
            if not full.is_file():
                continue
            rel = (rel_dir / fn).as_posix()
            ext = os.path.splitext(fn)[1].lower()
            if ext == "" or ext in IMAGE_EXTENSIONS:
                listed.append(rel)
            else:
                skipped.append(rel)
    return sorted(listed), sorted(skipped)


def _relative_to(path: Path | str, root: Path | str) -> str | None:
    """``path`` relative to ``root`` (POSIX), or None when it is not under it."""
    if isinstance(path, Path) and isinstance(root, Path):
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return None
    prefix = f"{root}/"
    return str(path)[len(prefix):] if str(path).startswith(prefix) else None


@register("folder")
class FolderDataset(Dataset):
    """Images under ``path`` (see the module docstring for the listing rule and row format).

    Args:
        path: the image folder (a path or a URI).
        labels: optional CSV with columns ``file,label`` (a path or a URI).
        limit: keep only the first ``limit`` files (in sorted order).
        max_file_bytes: files larger than this become error rows.
    """

    kind = "folder"

    def __init__(
        self,
        path: str | os.PathLike[str],
        labels: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        self.root = storage.normalize(path)
        try:
            if not storage.is_dir(self.root):
                raise ConfigError(f"dataset.path: {str(self.root)!r} is not a directory")
        except OSError as exc:
            raise ConfigError(f"dataset.path: cannot read {str(self.root)!r}: {exc}") from exc
        self.limit = check_limit(limit)
        self.max_file_bytes = int(max_file_bytes)
        self.labels_path: Path | str | None = None
        self.labels: dict[str, int] | None = None
        if labels is not None:
            lp = storage.normalize(labels)
            if (not storage.is_file(lp) and not storage.is_uri(lp) and not lp.is_absolute()
                    and storage.is_file(storage.join(self.root, str(lp)))):
                lp = storage.join(self.root, str(lp))
            if not storage.is_file(lp):
                raise ConfigError(
                    f"dataset.labels: {str(labels)!r} not found (looked as given and under "
                    f"{str(self.root)!r})"
                )
            self.labels_path = lp
            self.labels = read_labels_csv(lp)
        # Sizes from the one listing of an object store (a request per object otherwise).
        self._sizes: dict[str, int] = {}
        if isinstance(self.root, Path):
            listed, skipped = list_files(self.root)
        else:
            self._sizes = storage.walk_files(self.root)
            listed, skipped = _split_listing(self._sizes)
        if self.labels_path is not None:
            rel_csv = _relative_to(self.labels_path, self.root)
            listed = [f for f in listed if f != rel_csv]
            skipped = [f for f in skipped if f != rel_csv]
        if self.labels is not None:
            extra = set(self.labels) - set(listed)
            skipped = [f for f in skipped if f not in extra]
            listed = sorted(set(listed) | extra)
        if skipped:
            log.warning(
                "folder %r: %d file(s) without an image extension not listed (first: %r); "
                "see FolderDataset.skipped",
                str(self.root),
                len(skipped),
                skipped[0],
            )
        self.skipped = skipped
        self.files = listed[: self.limit] if self.limit is not None else listed

    def __len__(self) -> int:
        return len(self.files)

    def sample_ids(self) -> list[str]:
        return list(self.files)

    def _label(self, rel: str) -> tuple[int, str | None]:
        if self.labels is None:
            return -1, None
        if rel not in self.labels:
            return -1, f"missing label: {rel!r} has no row in {self.labels_path}"
        return self.labels[rel], None

    def _size(self, rel: str) -> int:
        """Size in bytes of a listed file (FileNotFoundError when it is not there)."""
        return storage.listed_size(self.root, rel, self._sizes)

    def read(self, start: int, stop: int) -> Iterator[Row]:
        start, stop = check_range(start, stop, len(self.files))
        for rel in self.files[start:stop]:
            full = storage.join(self.root, rel)
            label, err = self._label(rel)
            data = b""
            try:
                size = self._size(rel)
                if size > self.max_file_bytes:
                    err = err or f"file too large: {size} bytes (limit {self.max_file_bytes})"
                else:
                    data = full.read_bytes() if isinstance(full, Path) else storage.read_bytes(
                        full)
            except FileNotFoundError:
                err = err or "file not found"
            except OSError as exc:
                err = err or f"unreadable file: {exc.strerror or exc}"
            row: Row = {
                "sample_id": rel,
                "image": data,
                "label": label,
                "boxes": [],
                "source": str(full),
            }
            if err is not None:
                row["error"] = err
            yield row

    def fingerprint(self) -> str:
        """Hash of (relative path, file size, label) per file; file contents are not read."""

        def entries() -> Iterator[list[Any]]:
            for rel in self.files:
                try:
                    size = self._size(rel)
                except OSError:
                    size = -1
                yield [rel, size, self._label(rel)[0]]

        return listing_fingerprint(self.kind, entries())
