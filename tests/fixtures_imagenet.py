"""Tiny ILSVRC2012-validation fixtures in the layouts the ``imagenet`` reader accepts.

Not a test module: ``make_imagenet_fixture(root, n, layout)`` writes the files and returns
the ground truth it wrote, so tests can compare the reader against hand-written values.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

#: The first ten lines of the real ``LOC_synset_mapping.txt`` (ImageNet-1k class order).
SYNSET_LINES = [
    "n01440764 tench, Tinca tinca",
    "n01443537 goldfish, Carassius auratus",
    "n01484850 great white shark, white shark, man-eater, man-eating shark, Carcharodon carcharias",
    "n01491361 tiger shark, Galeocerdo cuvieri",
    "n01494475 hammerhead, hammerhead shark",
    "n01496331 electric ray, crampfish, numbfish, torpedo",
    "n01498041 stingray",
    "n01514668 cock",
    "n01514859 hen",
    "n01518878 ostrich, Struthio camelus",
]
SYNSETS = [line.split(" ", 1)[0] for line in SYNSET_LINES]

#: Per image (1-based number): (class index, boxes (x0, y0, x1, y1), image (W, H)).
#: Image 3 has two boxes of its class; image 6 has a box of another class first listed
#: after its own (only boxes of the image's class are returned by the reader).
TRUTH: dict[int, tuple[int, list[list[float]], tuple[int, int]]] = {
    1: (3, [[2.0, 3.0, 30.0, 20.0]], (40, 32)),
    2: (0, [[0.0, 0.0, 39.0, 31.0]], (40, 32)),
    3: (7, [[5.0, 5.0, 15.0, 15.0], [20.0, 10.0, 35.0, 28.0]], (48, 32)),
    4: (1, [[10.5, 4.0, 22.0, 30.25]], (32, 40)),
    5: (9, [[1.0, 1.0, 8.0, 8.0]], (24, 24)),
    6: (3, [[4.0, 6.0, 12.0, 30.0]], (36, 36)),
}
#: Extra object of another class written for image 6 (after its own box).
OTHER_OBJECT = (5, [0.0, 0.0, 3.0, 3.0])

Layout = Literal["csv", "xml", "classfolders"]


def image_id(k: int) -> str:
    """``ILSVRC2012_val_%08d`` of the 1-based image number ``k``."""
    return f"ILSVRC2012_val_{k:08d}"


def _truth(k: int) -> tuple[int, list[list[float]], tuple[int, int]]:
    return TRUTH[(k - 1) % len(TRUTH) + 1]


def _jpeg(k: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(k)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _objects(k: int) -> list[tuple[str, list[float]]]:
    label, boxes, _ = _truth(k)
    objs = [(SYNSETS[label], b) for b in boxes]
    if (k - 1) % len(TRUTH) + 1 == 6:
        objs.append((SYNSETS[OTHER_OBJECT[0]], OTHER_OBJECT[1]))
    return objs


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _voc_xml(k: int) -> str:
    _, _, (w, h) = _truth(k)
    parts = [
        "<annotation>",
        "  <folder>val</folder>",
        f"  <filename>{image_id(k)}</filename>",
        "  <source><database>ILSVRC_2012</database></source>",
        f"  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>",
        "  <segmented>0</segmented>",
    ]
    for wnid, (x0, y0, x1, y1) in _objects(k):
        parts += [
            "  <object>",
            f"    <name>{wnid}</name><pose>Unspecified</pose>",
            "    <truncated>0</truncated><difficult>0</difficult>",
            f"    <bndbox><xmin>{_fmt(x0)}</xmin><ymin>{_fmt(y0)}</ymin>"
            f"<xmax>{_fmt(x1)}</xmax><ymax>{_fmt(y1)}</ymax></bndbox>",
            "  </object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


def make_imagenet_fixture(
    root: Path, n: int = 6, layout: Layout = "csv"
) -> dict[str, tuple[int, list[list[float]]]]:
    """Write ``n`` small validation JPEGs with annotations under ``root``.

    Layouts:
        ``"csv"``: Kaggle layout, ``ILSVRC/Data/CLS-LOC/val/*.JPEG`` +
        ``LOC_val_solution.csv`` (rows in shuffled order, as Kaggle's are not sorted) +
        ``LOC_synset_mapping.txt``.
        ``"xml"``: ``val/*.JPEG`` + ``ILSVRC/Annotations/CLS-LOC/val/*.xml`` (PASCAL VOC) +
        ``LOC_synset_mapping.txt``.
        ``"classfolders"``: ``val/<synset>/*.JPEG`` + ``LOC_synset_mapping.txt`` (no boxes).

    Returns:
        {image id: (class index, boxes of that class)} for the images written (boxes are []
        for class folders).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("\n".join(SYNSET_LINES) + "\n")
    truth: dict[str, tuple[int, list[list[float]]]] = {}
    if layout == "csv":
        img_dir = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    elif layout in ("xml", "classfolders"):
        img_dir = root / "val"
    else:
        raise ValueError(f"unknown layout {layout!r}")
    img_dir.mkdir(parents=True, exist_ok=True)
    csv_lines = []
    for k in range(1, n + 1):
        label, boxes, size = _truth(k)
        iid = image_id(k)
        if layout == "classfolders":
            d = img_dir / SYNSETS[label]
            d.mkdir(exist_ok=True)
            (d / f"{iid}.JPEG").write_bytes(_jpeg(k, size))
            truth[iid] = (label, [])
            continue
        (img_dir / f"{iid}.JPEG").write_bytes(_jpeg(k, size))
        truth[iid] = (label, [list(b) for b in boxes])
        if layout == "csv":
            pred = " ".join(f"{w} {' '.join(_fmt(v) for v in b)}" for w, b in _objects(k))
            csv_lines.append(f"{iid},{pred} ")
        else:
            xml_dir = root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
            xml_dir.mkdir(parents=True, exist_ok=True)
            (xml_dir / f"{iid}.xml").write_text(_voc_xml(k))
    if layout == "csv":
        random.Random(0).shuffle(csv_lines)
        (root / "LOC_val_solution.csv").write_text(
            "ImageId,PredictionString\n" + "\n".join(csv_lines) + "\n"
        )
    return truth
