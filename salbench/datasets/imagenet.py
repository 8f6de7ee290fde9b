"""``imagenet``: the ILSVRC2012 validation set, with labels and object boxes.

Recognised layouts under ``root`` (first match wins; explicit paths override each part):

Images (``images=``): a directory with ``ILSVRC2012_val_00000001.JPEG`` ... ("flat"), or with
class folders ``n01440764/*.JPEG`` ("classfolders"), looked for at
``ILSVRC/Data/CLS-LOC/val/``, ``Data/CLS-LOC/val/``, ``val/`` and ``root`` itself.
Image files are ``.jpeg``, ``.jpg``, ``.png`` (any case).

Class order (``synset_mapping=``): ``LOC_synset_mapping.txt`` in ``root`` (one
``n01440764 tench, Tinca tinca`` per line, line number = class index). Without it, the
standard ImageNet-1k order shipped with timm is used (the same order).

Labels and boxes, flat layout (one required):

- ``LOC_val_solution.csv`` (``solution=``; Kaggle format ``ImageId,PredictionString`` with
  ``PredictionString = "n01751748 x0 y0 x1 y1 n01751748 x0 y0 x1 y1 ..."``), or
- PASCAL VOC XML files (``annotations=``; ``ILSVRC/Annotations/CLS-LOC/val/<id>.xml`` or
  ``Annotations/CLS-LOC/val/``), parsed lazily when the row is read.

In the class-folder layout the label is the folder's synset; boxes come from the CSV or XML
when one is found (matched by file stem), else ``[]``.

Rows: ``sample_id`` = the image id (file stem, ``ILSVRC2012_val_00000001``) in the flat
layout, the relative path (``n01440764/ILSVRC2012_val_00000293.JPEG``) with class folders;
``image`` = raw file bytes; ``label`` = class index of the image's synset (the first object's
synset when the annotation lists several); ``boxes`` = the boxes of that synset, as written in
the annotation (ImageNet's pixel coordinates, not shifted); ``source`` = the file path.
Per-image problems (no annotation, unknown synset, malformed box, hostile or broken XML,
unreadable file) give an error row (``error`` key) instead of failing the dataset.

Every path (``root``, ``images``, ...) may be a URI (``s3://bucket/imagenet``;
:mod:`salbench.storage`): the layout is found by listing prefixes (image sizes come from the
listing), and images and XML files are read with retries when their rows are read.

XML is untrusted: with ``defusedxml`` installed it parses the files; otherwise documents
containing ``<!DOCTYPE`` or ``<!ENTITY`` are refused (no entity expansion, no external
entities) and files over 1 MiB are refused.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from salbench import storage
from salbench.datasets.base import Dataset, Row
from salbench.datasets.folder import check_limit, check_range, listing_fingerprint
from salbench.datasets.registry import register
from salbench.errors import BadInputError, ConfigError

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png"})
SYNSET_RE = re.compile(r"^n\d{8}$")
MAX_XML_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 30
IMAGE_DIRS = ("ILSVRC/Data/CLS-LOC/val", "Data/CLS-LOC/val", "val", ".")
XML_DIRS = ("ILSVRC/Annotations/CLS-LOC/val", "Annotations/CLS-LOC/val")
SOLUTION_NAME = "LOC_val_solution.csv"
SYNSET_NAME = "LOC_synset_mapping.txt"

Box = list[float]


def read_synset_mapping(path: Path | str) -> tuple[list[str], list[str]]:
    """(synsets, descriptions) from a ``LOC_synset_mapping.txt``; line order = class index."""
    try:
        lines = storage.read_bytes(path).decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"synset mapping {path}: cannot read it ({exc})") from None
    synsets: list[str] = []
    descs: list[str] = []
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        wnid, _, desc = line.strip().partition(" ")
        if not SYNSET_RE.match(wnid):
            raise ConfigError(
                f"synset mapping {path}, line {i}: {line[:60]!r} does not start with a WordNet "
                "id like 'n01440764'; expected lines 'n01440764 tench, Tinca tinca'"
            )
        if wnid in synsets:
            raise ConfigError(f"synset mapping {path}, line {i}: duplicate synset {wnid}")
        synsets.append(wnid)
        descs.append(desc.strip())
    if not synsets:
        raise ConfigError(f"synset mapping {path} is empty")
    return synsets, descs


def default_synsets() -> tuple[list[str], list[str]]:
    """The standard ImageNet-1k (synsets, descriptions), from timm's bundled class info."""
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        synsets = [info.index_to_label_name(i) for i in range(1000)]
        descs = [info.index_to_description(i) for i in range(1000)]
    except Exception as exc:  # noqa: BLE001 - any failure: ask for the file instead
        raise ConfigError(
            f"no {SYNSET_NAME} found and timm's ImageNet class list is unavailable ({exc}); "
            f"put {SYNSET_NAME} in the dataset root or pass synset_mapping=PATH"
        ) from None
    return synsets, descs


def _parse_box(tokens: list[str]) -> Box:
    vals = [float(t) for t in tokens]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"box {tokens!r} is not 4 finite numbers")
    x0, y0, x1, y1 = vals
    if x1 < x0 or y1 < y0 or x0 < 0 or y0 < 0:
        raise ValueError(f"box {tokens!r} is not (x0, y0, x1, y1) with 0 <= x0 <= x1, y0 <= y1")
    return vals


def parse_prediction_string(s: str) -> list[tuple[str, Box]]:
    """``"n01751748 x0 y0 x1 y1 ..."`` -> [(synset, [x0, y0, x1, y1]), ...].

    Raises ValueError for a token count not a multiple of 5, a bad synset or a bad box.
    """
    toks = s.split()
    if not toks or len(toks) % 5:
        raise ValueError(f"PredictionString has {len(toks)} tokens; expected groups of 5")
    out = []
    for k in range(0, len(toks), 5):
        wnid = toks[k]
        if not SYNSET_RE.match(wnid):
            raise ValueError(f"{wnid!r} is not a synset id")
        out.append((wnid, _parse_box(toks[k + 1 : k + 5])))
    return out


def read_solution_csv(path: Path | str) -> dict[str, list[tuple[str, Box]] | str]:
    """Parse ``LOC_val_solution.csv`` into {image id: objects, or an error reason}.

    Raises ConfigError (naming the file) for an unreadable file or a wrong header; a bad
    line only marks its image with an error reason.
    """
    try:
        text = storage.read_bytes(path).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"solution file {path}: cannot read it ({exc})") from None
    name = storage.basename(path)
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"solution file {path} is empty") from None
    if header[:2] != ["ImageId", "PredictionString"]:
        raise ConfigError(
            f"solution file {path}, line 1: header {header!r}; expected "
            "'ImageId,PredictionString' (Kaggle LOC_val_solution.csv)"
        )
    out: dict[str, list[tuple[str, Box]] | str] = {}
    try:
        for line, rec in enumerate(reader, start=2):
            if not rec:
                continue
            image_id = rec[0].strip()
            if len(rec) < 2:
                out[image_id] = f"{name} line {line}: no PredictionString"
                continue
            try:
                out[image_id] = parse_prediction_string(rec[1])
            except ValueError as exc:
                out[image_id] = f"{name} line {line}: {exc}"
    except csv.Error as exc:
        raise ConfigError(f"solution file {path}: {exc}") from None
    return out


def _safe_xml_root(data: bytes) -> ET.Element:
    if len(data) > MAX_XML_BYTES:
        raise BadInputError(f"annotation XML too large ({len(data)} bytes)")
    try:
        import defusedxml.ElementTree as DET  # type: ignore[import-untyped]
    except ImportError:
        DET = None
    if DET is not None:
        try:
            return DET.fromstring(data)
        except Exception as exc:  # noqa: BLE001 - defusedxml raises several kinds
            raise BadInputError(f"annotation XML refused: {exc}") from None
    low = data.lower()
    if b"<!doctype" in low or b"<!entity" in low:
        raise BadInputError("annotation XML refused: contains a DTD or entity declaration")
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise BadInputError(f"malformed annotation XML: {exc}") from None


def parse_voc_xml(data: bytes) -> list[tuple[str, Box]]:
    """Objects [(synset, [xmin, ymin, xmax, ymax])] of a PASCAL VOC annotation document.

    Raises BadInputError for refused, malformed or incomplete XML.
    """
    root = _safe_xml_root(data)
    if root.tag != "annotation":
        raise BadInputError(f"annotation XML root is <{root.tag}>, expected <annotation>")
    objs: list[tuple[str, Box]] = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not SYNSET_RE.match(name) or bb is None:
            raise BadInputError(f"annotation object without a synset name or <bndbox> ({name!r})")
        tokens = [(bb.findtext(k) or "").strip() for k in ("xmin", "ymin", "xmax", "ymax")]
        try:
            objs.append((name, _parse_box(tokens)))
        except ValueError as exc:
            raise BadInputError(f"annotation box: {exc}") from None
    if not objs:
        raise BadInputError("annotation XML has no <object>")
    return objs


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan_remote(d: str) -> tuple[str, list[str], dict[str, int]] | None:
    """:func:`_scan_images` of a URI, with the listed sizes by relative path."""
    try:
        files, dirs = storage.list_dir(d)
    except FileNotFoundError:
        return None
    flat = {f: n for f, n in files.items() if _is_image(f)}
    if flat:
        return "flat", sorted(flat), flat
    classdirs = [c for c in dirs if SYNSET_RE.match(c)]
    sizes: dict[str, int] = {}
    listings = storage.map_threads(lambda c: storage.list_dir(storage.join(d, c))[0],
                                   classdirs, True)
    for cd, listed in zip(classdirs, listings, strict=True):
        sizes.update({f"{cd}/{f}": n for f, n in listed.items() if _is_image(f)})
    if sizes:
        return "classfolders", sorted(sizes), sizes
    return None


def _scan_images(d: Path | str) -> tuple[str, list[str], dict[str, int]] | None:
    """("flat" | "classfolders", sorted relative paths, sizes known from the listing: only
    for a URI) of images in ``d``, or None."""
    if not isinstance(d, Path):
        return _scan_remote(d)
    if not d.is_dir():
        return None
    flat: list[str] = []
    classdirs: list[Path] = []
    with os.scandir(d) as it:
        for e in it:
            if e.is_file() and _is_image(e.name):
                flat.append(e.name)
            elif e.is_dir() and SYNSET_RE.match(e.name):
                classdirs.append(Path(e.path))
    if flat:
        return "flat", sorted(flat), {}
    files = []
    for cd in classdirs:
        with os.scandir(cd) as it:
            files += [f"{cd.name}/{e.name}" for e in it if e.is_file() and _is_image(e.name)]
    if files:
        return "classfolders", sorted(files), {}
    return None


@register("imagenet")
class ImageNetDataset(Dataset):
    """ILSVRC2012 validation images with labels and boxes (see the module docstring).

    Args:
        root: dataset root (Kaggle ``imagenet-object-localization-challenge`` layout or a
            folder with ``val/``); may be omitted when ``images`` is given.
        limit: keep only the first ``limit`` images (sorted by file name).
        images: explicit image directory (flat or class folders).
        solution: explicit ``LOC_val_solution.csv``.
        annotations: explicit directory of VOC XML files.
        synset_mapping: explicit ``LOC_synset_mapping.txt``.
    """

    kind = "imagenet"

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        images: str | os.PathLike[str] | None = None,
        solution: str | os.PathLike[str] | None = None,
        annotations: str | os.PathLike[str] | None = None,
        synset_mapping: str | os.PathLike[str] | None = None,
    ) -> None:
        if root is None and images is None:
            raise ConfigError("dataset.root: the imagenet dataset needs root (or images)")
        self.root = storage.normalize(root) if root is not None else None
        try:
            if self.root is not None and not storage.is_dir(self.root):
                raise ConfigError(f"dataset.root: {str(self.root)!r} is not a directory")
        except OSError as exc:
            raise ConfigError(f"dataset.root: cannot read {str(self.root)!r}: {exc}") from exc
        self.limit = check_limit(limit)
        self._sizes: dict[str, int] = {}
        self.images_dir, self.layout, files = self._find_images(images)
        self.synsets, self.descriptions = self._find_synsets(synset_mapping)
        self.index = {s: i for i, s in enumerate(self.synsets)}
        self.solution_path, self.xml_dir = self._find_annotations(solution, annotations)
        self.solution = read_solution_csv(self.solution_path) if self.solution_path else None
        if self.layout == "flat" and self.solution is None and self.xml_dir is None:
            where = self.root if self.root is not None else self.images_dir
            raise ConfigError(
                f"imagenet: found images in {str(self.images_dir)!r} but no labels; expected "
                f"{SOLUTION_NAME} in {str(where)!r} or XML annotations in "
                f"{' or '.join(repr(str(storage.join(where, d))) for d in XML_DIRS)} "
                "(or pass solution=PATH / annotations=DIR, or use class folders val/n01440764/)"
            )
        if self.layout == "flat":
            stems = [os.path.splitext(f)[0] for f in files]
            if len(set(stems)) != len(stems):
                dup = sorted({s for s in stems if stems.count(s) > 1})[0]
                raise ConfigError(
                    f"imagenet: two image files with id {dup!r} in {str(self.images_dir)!r}"
                )
        self.files = files[: self.limit] if self.limit is not None else files

    # -- layout discovery ---------------------------------------------------------------
    def _find_images(self, images: Any) -> tuple[Path | str, str, list[str]]:
        if images is not None:
            d = storage.normalize(images)
            found = _scan_images(d)
            if found is None:
                raise ConfigError(
                    f"dataset.images: no .JPEG/.jpg/.png images in {str(d)!r} or in its "
                    "class folders n########/"
                )
            self._sizes = found[2]
            return d, found[0], found[1]
        assert self.root is not None
        for sub in IMAGE_DIRS:
            d = storage.join(self.root, sub) if sub != "." else self.root
            found = _scan_images(d)
            if found is not None:
                self._sizes = found[2]
                return d, found[0], found[1]
        raise ConfigError(
            f"imagenet: no validation images under {str(self.root)!r}; expected "
            "ILSVRC2012_val_00000001.JPEG ... (or class folders n01440764/*.JPEG) in one of "
            f"{', '.join(IMAGE_DIRS)} relative to the root, with {SOLUTION_NAME} or "
            f"{XML_DIRS[0]}/*.xml and {SYNSET_NAME}"
        )

    def _find_synsets(self, synset_mapping: Any) -> tuple[list[str], list[str]]:
        if synset_mapping is not None:
            p = storage.normalize(synset_mapping)
            if not storage.is_file(p):
                raise ConfigError(f"dataset.synset_mapping: {str(p)!r} not found")
            return read_synset_mapping(p)
        for base in (self.root, storage.parent(self.images_dir)):
            if base is not None and storage.is_file(storage.join(base, SYNSET_NAME)):
                return read_synset_mapping(storage.join(base, SYNSET_NAME))
        return default_synsets()

    def _find_annotations(self, solution: Any, annotations: Any
                          ) -> tuple[Path | str | None, Path | str | None]:
        if solution is not None:
            p = storage.normalize(solution)
            if not storage.is_file(p):
                raise ConfigError(f"dataset.solution: {str(p)!r} not found")
            return p, None
        if annotations is not None:
            d = storage.normalize(annotations)
            if not storage.is_dir(d):
                raise ConfigError(f"dataset.annotations: {str(d)!r} is not a directory")
            return None, d
        if self.root is not None:
            if storage.is_file(storage.join(self.root, SOLUTION_NAME)):
                return storage.join(self.root, SOLUTION_NAME), None
            for sub in XML_DIRS:
                if storage.is_dir(storage.join(self.root, sub)):
                    return None, storage.join(self.root, sub)
        return None, None

    # -- rows -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.files)

    def _sample_id(self, rel: str) -> str:
        return os.path.splitext(rel)[0] if self.layout == "flat" else rel

    def sample_ids(self) -> list[str]:
        return [self._sample_id(f) for f in self.files]

    def _objects(self, stem: str) -> list[tuple[str, Box]] | str | None:
        """The image's annotated objects, an error reason, or None (no annotation)."""
        if self.solution is not None:
            return self.solution.get(stem)
        if self.xml_dir is not None:
            p = storage.join(self.xml_dir, f"{stem}.xml")
            try:
                data = p.read_bytes() if isinstance(p, Path) else storage.read_bytes(p)
            except FileNotFoundError:
                return None
            except OSError as exc:
                return f"unreadable annotation {stem}.xml: {exc.strerror or exc}"
            try:
                return parse_voc_xml(data)
            except BadInputError as exc:
                return f"{stem}.xml: {exc}"
        return None

    def label_boxes(self, rel: str) -> tuple[int, list[Box], str | None]:
        """(label, boxes, error reason or None) of the image at relative path ``rel``."""
        stem = os.path.splitext(os.path.basename(rel))[0]
        objs = self._objects(stem)
        if self.layout == "classfolders":
            wnid = rel.split("/", 1)[0]
            if wnid not in self.index:
                return -1, [], f"unknown synset {wnid} (not in the synset mapping)"
            boxes = [b for w, b in objs if w == wnid] if isinstance(objs, list) else []
            return self.index[wnid], boxes, None
        if objs is None:
            return -1, [], f"missing label: no annotation for {stem}"
        if isinstance(objs, str):
            return -1, [], objs
        wnid = objs[0][0]
        if wnid not in self.index:
            return -1, [], f"unknown synset {wnid} (not in the synset mapping)"
        return self.index[wnid], [b for w, b in objs if w == wnid], None

    def _size(self, rel: str) -> int:
        """Size in bytes of a listed image (FileNotFoundError when it is not there)."""
        return storage.listed_size(self.images_dir, rel, self._sizes)

    def read(self, start: int, stop: int) -> Iterator[Row]:
        start, stop = check_range(start, stop, len(self.files))
        for rel in self.files[start:stop]:
            path = storage.join(self.images_dir, rel)
            label, boxes, err = self.label_boxes(rel)
            data = b""
            try:
                size = self._size(rel)
                if size > MAX_FILE_BYTES:
                    err = err or f"file too large: {size} bytes"
                else:
                    data = path.read_bytes() if isinstance(path, Path) else storage.read_bytes(
                        path)
            except OSError as exc:
                err = err or f"unreadable file: {exc.strerror or exc}"
            row: Row = {
                "sample_id": self._sample_id(rel),
                "image": data,
                "label": label,
                "boxes": boxes,
                "source": str(path),
            }
            if err is not None:
                row["error"] = err
            yield row

    def fingerprint(self) -> str:
        """Hash of ids, image file sizes, labels and boxes (XML annotations are parsed)."""

        def entries() -> Iterator[list[Any]]:
            yield [self.layout, self.synsets]
            for rel in self.files:
                try:
                    size = self._size(rel)
                except OSError:
                    size = -1
                label, boxes, err = self.label_boxes(rel)
                yield [self._sample_id(rel), size, label, boxes, err]

        return listing_fingerprint(self.kind, entries())
