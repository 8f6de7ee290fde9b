"""Dataset readers and image decoding (SPEC 7): bad input, annotations, shards."""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from salbench.datasets import open_dataset
from salbench.datasets.decode import decode_image, encode_png
from salbench.datasets.folder import FolderDataset
from salbench.datasets.imagenet import ImageNetDataset, parse_voc_xml
from salbench.datasets.parquet import ParquetDataset, shard_command, write_shards
from salbench.datasets.sample import SampleDataset, annotations
from salbench.datasets.synthetic import SyntheticDataset, mask_box, synthetic_mask
from salbench.errors import BadInputError, ConfigError

try:
    from fixtures_imagenet import SYNSETS, image_id, make_imagenet_fixture
except ImportError:  # tests/ imported as a package
    from tests.fixtures_imagenet import SYNSETS, image_id, make_imagenet_fixture


# --------------------------------------------------------------------------- helpers
def _enc(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h RGB pixels, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _reason(data: object, **kw: object) -> str:
    with pytest.raises(BadInputError) as ei:
        decode_image(data, **kw)  # type: ignore[arg-type]
    return str(ei.value)


# --------------------------------------------------------------------------- decode
def test_decode_rgb_png_and_jpeg_roundtrip() -> None:
    arr = _noise()
    out = decode_image(_enc(Image.fromarray(arr), "PNG"))
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out, arr)
    jpg = decode_image(_enc(Image.fromarray(arr), "JPEG", quality=95))
    assert jpg.shape == (40, 48, 3)
    np.testing.assert_array_equal(decode_image(encode_png(arr)), arr)


def test_decode_bad_inputs_have_reasons() -> None:
    jpg = _enc(Image.fromarray(_noise()), "JPEG", quality=90)
    assert _reason(b"") == "empty file"
    assert _reason(b"hello, this is a text file\n" * 4).startswith("not an image")
    assert _reason(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n").startswith(
        "not an image"
    )  # EPS would run Ghostscript: never tried
    assert _reason(jpg[: len(jpg) // 2]) == "truncated image"
    png = _enc(Image.fromarray(_noise()), "PNG")
    assert _reason(png[: len(png) // 2]) == "truncated image"
    assert _reason(png[:30]) == "truncated image"
    assert _reason(_enc(Image.new("RGB", (4, 4)), "PNG")).startswith("image too small: 4x4")
    assert _reason(_noise(4, 40)).startswith("image too small: 40x4")


def test_decode_bomb_checked_from_header() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may escape
        assert _reason(_png_header_only(100_000, 100_000)).startswith(
            "image too large: 100000x100000"
        )
        # above Pillow's warning limit, below its error limit: our own check answers
        assert _reason(_png_header_only(10_000, 10_000)).startswith("image too large: 10000x10000")
    # a real image over a caller's limit is refused before decoding
    assert _reason(encode_png(_noise()), max_pixels=1000).startswith("image too large: 48x40")
    assert Image.MAX_IMAGE_PIXELS == before


def test_decode_modes() -> None:
    # grayscale
    gray = decode_image(_enc(Image.new("L", (16, 12), 77), "PNG"))
    assert gray.shape == (12, 16, 3) and (gray == 77).all()
    # 1-bit
    assert (decode_image(_enc(Image.new("1", (16, 16), 1), "PNG")) == 255).all()
    # 16-bit grayscale: scaled, not clipped
    v16 = np.array([[0, 1000, 257 * 100, 32768, 65535] * 2] * 10, dtype=np.uint16)
    out = decode_image(_enc(Image.fromarray(v16), "PNG"))
    np.testing.assert_array_equal(out[0, :5, 0], [0, 4, 100, 128, 255])
    # CMYK JPEG (cyan) -> RGB
    cmyk = decode_image(_enc(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=95))
    np.testing.assert_allclose(cmyk[8, 8].astype(int), [0, 255, 255], atol=3)
    # RGBA composited on white
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[:, :5] = (255, 0, 0, 255)  # opaque red
    rgba[:, 5:8] = (0, 0, 255, 0)  # fully transparent blue -> white
    rgba[:, 8:] = (0, 0, 0, 128)  # half-transparent black -> mid gray
    out = decode_image(_enc(Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])
    np.testing.assert_array_equal(out[0, 6], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 9], [127, 127, 127])
    # LA
    assert (decode_image(_enc(Image.new("LA", (9, 9), (0, 0)), "PNG")) == 255).all()
    # palette, and palette with a transparent index
    pal = Image.new("P", (10, 10), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    np.testing.assert_array_equal(decode_image(_enc(pal, "PNG"))[0, 0], [10, 200, 30])
    assert (decode_image(_enc(pal, "PNG", transparency=1)) == 255).all()
    # GIF / BMP / TIFF / WebP
    arr = _noise(16, 16, 1)
    for fmt, kw in (("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})):
        np.testing.assert_array_equal(decode_image(_enc(Image.fromarray(arr), fmt, **kw)), arr)
    assert decode_image(_enc(Image.fromarray(arr), "GIF")).shape == (16, 16, 3)


def test_decode_applies_exif_orientation() -> None:
    arr = np.zeros((8, 16, 3), np.uint8)  # wide: H=8, W=16
    arr[:, :8] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(_enc(im, "PNG", exif=exif.tobytes()))
    assert out.shape == (16, 8, 3)  # upright: tall
    assert out[0, :, 0].mean() > 200 and out[-1, :, 0].mean() < 50  # white on top


def test_decode_arrays() -> None:
    arr = _noise(10, 12)
    np.testing.assert_array_equal(decode_image(arr), arr)
    np.testing.assert_array_equal(decode_image(arr[..., 0])[..., 2], arr[..., 0])
    np.testing.assert_array_equal(
        decode_image(np.full((9, 9), 65535, np.uint16)), np.full((9, 9, 3), 255, np.uint8)
    )
    f = decode_image(np.full((9, 9, 3), 0.5, np.float32))
    assert (f == 128).all()
    assert (decode_image(np.ones((9, 9), bool)) == 255).all()
    rgba = np.zeros((9, 9, 4), np.uint8)
    assert (decode_image(rgba) == 255).all()  # transparent -> white
    assert "channels-first" in _reason(np.zeros((3, 20, 20), np.uint8))
    assert "expected [0, 1]" in _reason(np.full((9, 9, 3), -2.0))
    assert "NaN" in _reason(np.full((9, 9, 3), np.nan))
    assert "values in" in _reason(np.full((9, 9), 300, np.int32))


# --------------------------------------------------------------------------- sample
def test_sample_photos_annotated() -> None:
    ann = annotations()
    ds = SampleDataset()
    ids = ds.sample_ids()
    assert ids == [n for n, p in ann.items() if p["include"]]
    assert set(ids) == {
        "chelsea", "coffee", "rocket", "camera", "astronaut", "coins", "motorcycle"
    }  # fmt: skip
    rows = list(ds)
    assert [r["sample_id"] for r in rows] == ids
    for r in rows:
        p = ann[r["sample_id"]]
        assert -1 <= r["label"] < 1000 and "error" not in r
        assert r["source"] == f"skimage:{p['loader']}"
        img = decode_image(r["image"])
        h, w = img.shape[:2]
        assert [w, h] == p["size"]
        assert (r["label"] >= 0) == bool(r["boxes"]), r["sample_id"]
        for x0, y0, x1, y1 in r["boxes"]:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (r["sample_id"], w, h)
        assert p["note"]
    labels = {r["sample_id"]: r["label"] for r in rows}
    assert labels["chelsea"] == 281 and labels["coffee"] == 967 and labels["camera"] == 872
    # grayscale photos are stored gray, decoded to RGB
    cam = decode_image(rows[ids.index("camera")]["image"])
    assert (cam[..., 0] == cam[..., 2]).all()


def test_sample_class_names_match_imagenet() -> None:
    timm_data = pytest.importorskip("timm.data")
    info = timm_data.ImageNetInfo()
    for p in annotations().values():
        if p["label"] >= 0:
            assert info.index_to_description(p["label"]) == p["class_name"], p["name"]


def test_sample_selection() -> None:
    ds = open_dataset({"kind": "sample", "names": ["stereo_motorcycle", "clock"]})
    assert ds.sample_ids() == ["motorcycle", "clock"]
    assert len(SampleDataset(limit=2)) == 2
    with pytest.raises(ConfigError, match="unknown sample photo 'lena'"):
        SampleDataset(names=["lena"])


# --------------------------------------------------------------------------- synthetic
def test_synthetic_deterministic_and_masks() -> None:
    a = list(SyntheticDataset(n=6, size=64, seed=3))
    b = list(SyntheticDataset(n=6, size=64, seed=3).read(2, 5))
    for ra, rb in zip(a[2:5], b, strict=True):
        assert ra["sample_id"] == rb["sample_id"]
        np.testing.assert_array_equal(ra["image"], rb["image"])
    other = next(iter(SyntheticDataset(n=1, size=64, seed=4)))
    assert not np.array_equal(other["image"], a[0]["image"])
    for r in a:
        img, mask = r["image"], r["mask"]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == bool and mask.sum() > 20
        assert r["boxes"] == [mask_box(mask)]
        x0, y0, x1, y1 = r["boxes"][0]
        assert mask[int(y0) : int(y1), int(x0) : int(x1)].sum() == mask.sum()  # box is tight
        assert mask[int(y0), :].any() and mask[int(y1) - 1, :].any()
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        # the planted object stands out from the background
        assert abs(img[mask].mean(0) - img[~mask].mean(0)).max() > 40
        stripped = {k: v for k, v in r.items() if k != "mask"}
        np.testing.assert_array_equal(synthetic_mask(stripped), mask)
    rect = next(iter(SyntheticDataset(n=1, size=(48, 80), label=7, shapes=["square"])))
    assert rect["image"].shape == (48, 80, 3) and rect["label"] == 7
    assert rect["mask"].sum() == (rect["boxes"][0][2] - rect["boxes"][0][0]) ** 2
    with pytest.raises(ConfigError, match="shapes"):
        SyntheticDataset(shapes=["star"])


# --------------------------------------------------------------------------- digits
def test_digits_held_out_split() -> None:
    from sklearn.datasets import load_digits

    ds = open_dataset({"kind": "digits"})
    assert len(ds) == 450
    rows = list(ds.read(0, 5))
    target = load_digits().target
    for r in rows:
        i = int(r["sample_id"].split("-")[1])
        assert r["label"] == target[i]
        assert r["image"].shape == (28, 28, 3) and r["image"].dtype == np.uint8
        assert r["source"] == "sklearn:digits" and len(r["boxes"]) == 1
    assert len(set(ds.sample_ids())) == 450
    assert len(open_dataset({"kind": "digits", "split": "train", "limit": 3})) == 3
    with pytest.raises(ConfigError, match="split"):
        open_dataset({"kind": "digits", "split": "val"})


# --------------------------------------------------------------------------- folder
def _make_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.jpg").write_bytes(_enc(Image.fromarray(_noise(20, 30)), "JPEG"))
    (root / "sub" / "b.PNG").write_bytes(encode_png(_noise(16, 16, 2)))
    (root / "c.jpg").write_bytes(b"just some text, renamed to .jpg\n")
    (root / "noext").write_bytes(encode_png(_noise(12, 12, 3)))
    (root / "notes.txt").write_text("not listed")
    (root / ".hidden.jpg").write_bytes(b"x")
    (root / ".git" / "x.png").write_bytes(b"x")
    (root / "empty.png").write_bytes(b"")
    labels = root / "labels.csv"
    labels.write_text("file,label\na.jpg,281\nsub/b.PNG,7\nc.jpg,1\nempty.png,2\ngone.jpg,3\n")
    return labels


def test_folder_listing_labels_and_bad_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    labels = _make_folder(tmp_path / "imgs")
    with caplog.at_level("WARNING", logger="salbench.datasets.folder"):
        ds = FolderDataset(tmp_path / "imgs", labels=labels)
    assert "1 file(s) without an image extension" in caplog.text
    assert ds.skipped == ["notes.txt"]
    assert ds.sample_ids() == ["a.jpg", "c.jpg", "empty.png", "gone.jpg", "noext", "sub/b.PNG"]
    rows = {r["sample_id"]: r for r in ds}
    assert rows["a.jpg"]["label"] == 281 and rows["sub/b.PNG"]["label"] == 7
    assert decode_image(rows["a.jpg"]["image"]).shape == (20, 30, 3)
    assert decode_image(rows["noext"]["image"]).shape == (12, 12, 3)
    # corrupt file: the row is there, decoding says why
    assert rows["c.jpg"]["label"] == 1 and "error" not in rows["c.jpg"]
    assert _reason(rows["c.jpg"]["image"]).startswith("not an image")
    assert _reason(rows["empty.png"]["image"]) == "empty file"
    assert rows["gone.jpg"]["error"] == "file not found" and rows["gone.jpg"]["image"] == b""
    assert rows["noext"]["error"].startswith("missing label")
    # labels path relative to the folder; limit keeps sorted order
    ds2 = FolderDataset(tmp_path / "imgs", labels="labels.csv", limit=2)
    assert ds2.sample_ids() == ["a.jpg", "c.jpg"]
    assert [r["sample_id"] for r in ds2.read(1, 10)] == ["c.jpg"]
    nolab = next(iter(FolderDataset(tmp_path / "imgs")))
    assert nolab["label"] == -1 and "error" not in nolab


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name,label\na.jpg,1\n", r"line 1: no 'file' column"),
        ("file,label\na.jpg,1\nb.jpg,cat\n", r"line 3: label 'cat' is not an integer"),
        ("file,label\na.jpg,1\na.jpg,2\n", r"line 3: duplicate file 'a.jpg'"),
        ("file,label\n../x.jpg,1\n", r"line 2: file '../x.jpg' must be a path relative"),
        ("file,label\na.jpg,-5\n", r"line 2: label -5 must be >= 0"),
        ("", r"is empty"),
    ],
)
def test_folder_bad_labels_csv(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=match) as ei:
        FolderDataset(tmp_path, labels=bad)
    assert "bad.csv" in str(ei.value)


# --------------------------------------------------------------------------- imagenet
@pytest.mark.parametrize("layout", ["csv", "xml"])
def test_imagenet_annotated_layouts(tmp_path: Path, layout: str) -> None:
    truth = make_imagenet_fixture(tmp_path, n=6, layout=layout)  # type: ignore[arg-type]
    ds = open_dataset({"kind": "imagenet", "root": str(tmp_path)})
    assert isinstance(ds, ImageNetDataset) and ds.layout == "flat"
    assert ds.sample_ids() == [image_id(k) for k in range(1, 7)]
    rows = {r["sample_id"]: r for r in ds}
    # hand-checked values (see tests/fixtures_imagenet.py TRUTH)
    r1 = rows["ILSVRC2012_val_00000001"]
    assert r1["label"] == 3 and r1["boxes"] == [[2.0, 3.0, 30.0, 20.0]]
    r3 = rows["ILSVRC2012_val_00000003"]
    assert r3["label"] == 7 and r3["boxes"] == [[5, 5, 15, 15], [20, 10, 35, 28]]
    assert rows["ILSVRC2012_val_00000004"]["boxes"] == [[10.5, 4.0, 22.0, 30.25]]
    r6 = rows["ILSVRC2012_val_00000006"]  # its other-class box is not returned
    assert r6["label"] == 3 and r6["boxes"] == [[4.0, 6.0, 12.0, 30.0]]
    for sid, (label, boxes) in truth.items():
        assert rows[sid]["label"] == label and rows[sid]["boxes"] == boxes
        assert "error" not in rows[sid]
    assert decode_image(r1["image"]).shape == (32, 40, 3)
    assert ds.synsets[:2] == ["n01440764", "n01443537"]
    assert [r["sample_id"] for r in ds.read(4, 100)] == [image_id(5), image_id(6)]
    # explicit paths instead of a root
    if layout == "csv":
        explicit = ImageNetDataset(
            images=tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "val",
            solution=tmp_path / "LOC_val_solution.csv",
            synset_mapping=tmp_path / "LOC_synset_mapping.txt",
            limit=2,
        )
        assert [(r["label"], r["boxes"]) for r in explicit] == [
            (3, [[2.0, 3.0, 30.0, 20.0]]),
            (0, [[0.0, 0.0, 39.0, 31.0]]),
        ]


def test_imagenet_classfolders(tmp_path: Path) -> None:
    make_imagenet_fixture(tmp_path, n=6, layout="classfolders")
    ds = ImageNetDataset(tmp_path, limit=4)
    assert ds.layout == "classfolders" and len(ds) == 4
    rows = list(ds)
    assert rows[0]["sample_id"] == "n01440764/ILSVRC2012_val_00000002.JPEG"
    assert rows[0]["label"] == 0 and rows[0]["boxes"] == []
    by_id = {r["sample_id"]: r["label"] for r in ImageNetDataset(tmp_path)}
    assert by_id[f"{SYNSETS[3]}/{image_id(1)}.JPEG"] == 3
    assert by_id[f"{SYNSETS[9]}/{image_id(5)}.JPEG"] == 9
    # without LOC_synset_mapping.txt the standard ImageNet-1k order (from timm) is used
    pytest.importorskip("timm.data")
    (tmp_path / "LOC_synset_mapping.txt").unlink()
    ds = ImageNetDataset(tmp_path)
    assert len(ds.synsets) == 1000
    assert {r["sample_id"]: r["label"] for r in ds} == by_id


def test_imagenet_bad_annotations_and_layouts(tmp_path: Path) -> None:
    make_imagenet_fixture(tmp_path / "x", n=3, layout="xml")
    xml_dir = tmp_path / "x" / "ILSVRC" / "Annotations" / "CLS-LOC" / "val"
    (xml_dir / f"{image_id(1)}.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "boom">]><annotation>&e;</annotation>'
    )
    (xml_dir / f"{image_id(2)}.xml").write_text("<annotation><object>")
    (xml_dir / f"{image_id(3)}.xml").unlink()
    rows = list(ImageNetDataset(tmp_path / "x"))
    assert "DTD or entity" in rows[0]["error"] or "refused" in rows[0]["error"]
    assert "malformed" in rows[1]["error"] or "refused" in rows[1]["error"]
    assert rows[2]["error"].startswith("missing label")
    assert all(r["label"] == -1 for r in rows)
    with pytest.raises(BadInputError, match="no <object>"):
        parse_voc_xml(b"<annotation><size/></annotation>")
    # a malformed CSV line marks only its image
    make_imagenet_fixture(tmp_path / "c", n=2, layout="csv")
    sol = tmp_path / "c" / "LOC_val_solution.csv"
    sol.write_text(
        f"ImageId,PredictionString\n{image_id(1)},n01440764 1 2 3\n"
        f"{image_id(2)},n09999999 1 2 3 4\n"
    )
    r1, r2 = ImageNetDataset(tmp_path / "c")
    assert "groups of 5" in r1["error"] and "unknown synset" in r2["error"]
    # unrecognised layouts
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="LOC_val_solution.csv"):
        ImageNetDataset(tmp_path / "empty")
    (tmp_path / "nolabels" / "val").mkdir(parents=True)
    (tmp_path / "nolabels" / "val" / f"{image_id(1)}.JPEG").write_bytes(b"")
    with pytest.raises(ConfigError, match="no labels"):
        ImageNetDataset(tmp_path / "nolabels")


# --------------------------------------------------------------------------- parquet
def test_parquet_roundtrip_across_shards(tmp_path: Path) -> None:
    src = SyntheticDataset(n=7, size=32, seed=1, label=5)
    paths = write_shards(src, tmp_path / "shards", rows_per_shard=3, row_group_size=2)
    assert [p.name for p in paths] == [f"shard-0000{i}.parquet" for i in range(3)]
    assert not list((tmp_path / "shards").glob(".*"))  # no temp files left
    ds = open_dataset({"kind": "parquet", "path": str(tmp_path / "shards")})
    assert len(ds) == 7 and ds.sample_ids() == src.sample_ids()
    orig = list(src)
    back = list(ds)
    for o, b in zip(orig, back, strict=True):
        assert (b["sample_id"], b["label"], b["source"]) == (o["sample_id"], 5, o["source"])
        np.testing.assert_allclose(b["boxes"], o["boxes"])
        np.testing.assert_array_equal(decode_image(b["image"]), o["image"])
        assert "error" not in b
    for start, stop in [(2, 5), (0, 7), (5, 6), (3, 3), (6, 100)]:
        got = [r["sample_id"] for r in ds.read(start, stop)]
        assert got == [r["sample_id"] for r in orig[start:stop]], (start, stop)
    assert len(ParquetDataset(paths[1:], limit=2)) == 2
    with pytest.raises(ConfigError, match="already holds 3 shard"):
        write_shards(src, tmp_path / "shards")
    write_shards(SyntheticDataset(n=2, size=32), tmp_path / "shards", overwrite=True)
    assert len(ParquetDataset(tmp_path / "shards")) == 2  # stale shards removed


def test_parquet_schema_validation(tmp_path: Path) -> None:
    # an unusable shard is one error row naming the file and the reason (a poisoned shard
    # must not stop a run), not an exception
    table = pa.table({"sample_id": ["a"], "image": [b""], "label": [1], "source": ["x"]})
    pq.write_table(table, tmp_path / "bad.parquet")
    (row,) = list(ParquetDataset(tmp_path))
    assert row["sample_id"] == "bad.parquet" and row["image"] == b""
    assert re.search(r"bad\.parquet: missing column 'boxes'", row["error"])
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    (junk,) = list(ParquetDataset(tmp_path / "junk.parquet"))
    assert "junk.parquet" in junk["error"] and "not a readable Parquet file" in junk["error"]
    assert len(ParquetDataset(tmp_path)) == 2


def test_shard_command_folder_keeps_error_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _make_folder(tmp_path / "imgs")
    n = shard_command(str(tmp_path / "imgs"), str(tmp_path / "out"), 4)
    assert n == 5  # labels.csv and notes.txt are not listed (no image extension)
    out = capsys.readouterr().out
    assert "wrote 5 rows (0 with errors) in 2 shard(s)" in out
    ds = ParquetDataset(tmp_path / "out")
    assert ds.sample_ids() == ["a.jpg", "c.jpg", "empty.png", "noext", "sub/b.PNG"]
    rows = {r["sample_id"]: r for r in ds}
    assert _reason(rows["c.jpg"]["image"]).startswith("not an image")
    assert _reason(rows["empty.png"]["image"]) == "empty file"
    # rows that could not be read keep their place and their reason
    _make_folder(tmp_path / "imgs2")
    folder = FolderDataset(tmp_path / "imgs2", labels=tmp_path / "imgs2" / "labels.csv")
    write_shards(folder, tmp_path / "out2")
    back = {r["sample_id"]: r for r in ParquetDataset(tmp_path / "out2")}
    assert back["gone.jpg"]["error"] == "file not found" and back["gone.jpg"]["image"] == b""
    assert "error" not in back["a.jpg"]


# --------------------------------------------------------------------------- fingerprints
def test_fingerprints_stable_and_content_sensitive(tmp_path: Path) -> None:
    # synthetic: parameters
    fp = SyntheticDataset(n=4, seed=0).fingerprint()
    assert fp == SyntheticDataset(n=4, seed=0).fingerprint() and len(fp) == 16
    assert fp != SyntheticDataset(n=4, seed=1).fingerprint()
    assert fp != SyntheticDataset(n=4, seed=0, label=3).fingerprint()
    # sample: selection
    assert SampleDataset().fingerprint() == SampleDataset().fingerprint()
    assert SampleDataset().fingerprint() != SampleDataset(limit=3).fingerprint()
    # folder: labels and file sizes
    labels = _make_folder(tmp_path / "imgs")
    fp = FolderDataset(tmp_path / "imgs", labels=labels).fingerprint()
    assert fp == FolderDataset(tmp_path / "imgs", labels=labels).fingerprint()
    labels.write_text(labels.read_text().replace("a.jpg,281", "a.jpg,282"))
    fp2 = FolderDataset(tmp_path / "imgs", labels=labels).fingerprint()
    assert fp2 != fp
    (tmp_path / "imgs" / "c.jpg").write_bytes(b"other text, other length")
    assert FolderDataset(tmp_path / "imgs", labels=labels).fingerprint() != fp2
    # imagenet: a changed box
    make_imagenet_fixture(tmp_path / "inet", n=3, layout="xml")
    fp = ImageNetDataset(tmp_path / "inet").fingerprint()
    assert fp == ImageNetDataset(tmp_path / "inet").fingerprint()
    xml = tmp_path / "inet" / "ILSVRC" / "Annotations" / "CLS-LOC" / "val" / f"{image_id(2)}.xml"
    xml.write_text(xml.read_text().replace("<xmax>39</xmax>", "<xmax>38</xmax>"))
    assert ImageNetDataset(tmp_path / "inet").fingerprint() != fp
    # parquet: the rows' labels
    write_shards(SyntheticDataset(n=3, size=32), tmp_path / "p1")
    write_shards(SyntheticDataset(n=3, size=32, label=1), tmp_path / "p2")
    fp1 = ParquetDataset(tmp_path / "p1").fingerprint()
    assert fp1 == ParquetDataset(tmp_path / "p1").fingerprint()
    assert fp1 != ParquetDataset(tmp_path / "p2").fingerprint()


@pytest.mark.parametrize("kind", [None, "imagenet"])
def test_shard_command_keeps_imagenet_labels_and_boxes(tmp_path: Path, kind: str | None,
                                                       capsys) -> None:
    """`salbench shard IMAGENET_ROOT DST` (layout detected, or --kind imagenet): the shards
    read back with the same ids, labels, boxes and image bytes as the ImageNet reader."""
    from salbench.cli import main

    truth = make_imagenet_fixture(tmp_path / "in", n=5, layout="csv")
    argv = ["shard", str(tmp_path / "in"), str(tmp_path / "out"), "--rows-per-shard", "2"]
    assert main(argv + (["--kind", kind] if kind else [])) == 0
    assert "source imagenet" in capsys.readouterr().out
    shards = open_dataset({"kind": "parquet", "path": str(tmp_path / "out")})
    original = {r["sample_id"]: r for r in open_dataset({"kind": "imagenet",
                                                         "root": str(tmp_path / "in")})}
    rows = list(shards)
    assert len(rows) == 5 and len(list((tmp_path / "out").glob("shard-*.parquet"))) == 3
    for r in rows:
        label, boxes = truth[r["sample_id"]]
        assert r["label"] == label and np.allclose(r["boxes"], boxes)
        assert r["image"] == original[r["sample_id"]]["image"]


def test_shard_command_folder_fallback_and_bad_kind(tmp_path: Path) -> None:
    from salbench.cli import main

    _make_folder(tmp_path / "imgs")
    assert main(["shard", str(tmp_path / "imgs"), str(tmp_path / "out")]) == 0
    assert open_dataset({"kind": "parquet", "path": str(tmp_path / "out")}).kind == "parquet"
    assert main(["shard", str(tmp_path / "imgs"), str(tmp_path / "o2"), "--kind",
                 "imagenet"]) == 2  # not an ImageNet layout: one clear error line


def test_read_stage_imports_neither_torch_nor_torchvision():
    """A Ray read task unpickles ``salbench.datasets.shards``; importing torch there cost each
    fresh worker ~3 s of start-up, so the read and decode path stays torch-free."""
    import subprocess
    import sys

    code = ("import sys, salbench.datasets.shards\n"
            "print([m for m in ('torch', 'torchvision', 'ray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
