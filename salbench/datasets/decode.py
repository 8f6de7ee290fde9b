"""Decode untrusted image bytes (or arrays) into uint8 RGB arrays, with reasons for failures.

Every problem becomes :class:`~salbench.errors.BadInputError` with a short reason, so the
pipeline can write an error row instead of crashing:

- ``"empty file"``: zero bytes.
- ``"not an image: ..."``: no supported image format recognises the bytes.
- ``"truncated image"``: the file ends before the pixel data does.
- ``"image too large: WxH"``: more than ``max_pixels`` pixels, decided from the header alone,
  before any pixel is decoded (decompression bombs never allocate their pixel buffer).
- ``"image too small: WxH ..."``: either side below ``min_size`` (default 8).
- ``"corrupt image: ..."``: any other decoder failure.

Conversions (the result is always ``uint8 [H, W, 3]`` RGB, C-contiguous):

- grayscale (``L``, ``1``) is repeated over the three channels;
- 16-bit images (``I;16*``, and ``I`` with values in [0, 65535]) are scaled linearly to
  8 bits, ``round(v * 255 / 65535)``, never clipped (65535 -> 255, 32768 -> 128);
  16-bit RGB(A) PNGs are reduced to 8 bits by Pillow's decoder (high byte);
- ``F`` (32-bit float) images in [0, 1] are scaled by 255, in [0, 255] rounded; other ranges
  are rejected;
- ``CMYK`` (and ``YCbCr``, ``LAB``, ``HSV``) use Pillow's conversion to RGB (Adobe inverted
  CMYK JPEGs are handled by the JPEG decoder; ICC profiles are ignored);
- palette images use their palette, including palette transparency;
- images with alpha (``RGBA``, ``LA``, ``PA``, palette + tRNS) are **composited on white**:
  ``out = (c * a + 255 * (255 - a)) / 255``, so transparent pixels are white, the usual
  look of a transparent image in a viewer and a neutral background for a classifier;
- the EXIF orientation tag is applied (the array is upright as a viewer shows it);
- of a multi-frame file (GIF, TIFF, APNG, WebP) the first frame is used.

Only the formats in :data:`ALLOWED_FORMATS` are tried: formats whose Pillow plugin runs an
external program (EPS runs Ghostscript) or that have no signature are never used on
untrusted bytes. Pillow's global ``Image.MAX_IMAGE_PIXELS`` is never modified; its
decompression-bomb warnings are silenced (we check the size ourselves) and its
``DecompressionBombError`` (raised at twice its own limit) becomes "image too large".
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from salbench.errors import BadInputError

#: Pillow's default ``MAX_IMAGE_PIXELS`` (a 9459 x 9459 image, about 256 MiB of RGB).
DEFAULT_MAX_PIXELS = 89_478_485
#: Smallest accepted side (pixels).
DEFAULT_MIN_SIZE = 8
#: Pillow format names tried on bytes, in this order (those Pillow was built with).
ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG",
    "PNG",
    "WEBP",
    "GIF",
    "BMP",
    "TIFF",
    "MPO",
    "PPM",
    "AVIF",
)

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _formats() -> tuple[str, ...]:
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _probe_size(buf: bytes, formats: tuple[str, ...]) -> tuple[int, int] | None:
    """(W, H) from the header, bypassing Pillow's bomb check; None when no plugin reads it."""
    prefix = buf[:16]
    for fmt in formats:
        factory, accept = Image.OPEN[fmt]
        try:
            if accept and not accept(prefix):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                im = factory(io.BytesIO(buf), "")
            size = (int(im.size[0]), int(im.size[1]))
            im.close()
            return size
        except Exception:  # noqa: BLE001 - any failure means "this plugin cannot tell"
            continue
    return None


def _check_size(w: int, h: int, max_pixels: int, min_size: int) -> None:
    if w * h > max_pixels:
        raise BadInputError(f"image too large: {w}x{h} (limit {max_pixels} pixels)")
    if w < min_size or h < min_size:
        raise BadInputError(f"image too small: {w}x{h} (minimum {min_size}x{min_size})")


def _open(buf: bytes, max_pixels: int) -> Image.Image:
    formats = _formats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(buf), formats=formats)
        except Image.DecompressionBombError as exc:
            size = _probe_size(buf, formats)
            if size is not None:
                limit = f"limit {max_pixels} pixels"
                if size[0] * size[1] <= max_pixels:
                    limit = "over Pillow's decompression-bomb limit"
                raise BadInputError(f"image too large: {size[0]}x{size[1]} ({limit})") from None
            m = _BOMB_PIXELS.search(str(exc))
            what = f"{m.group(1)} pixels" if m else "over Pillow's hard limit"
            raise BadInputError(f"image too large: {what} (limit {max_pixels} pixels)") from None
        except UnidentifiedImageError:
            head = buf[:8]
            fmt = _signature(buf)
            if fmt is not None:
                if len(buf) < 1024:
                    raise BadInputError("truncated image") from None
                raise BadInputError(f"corrupt image: unreadable {fmt} header") from None
            raise BadInputError(
                f"not an image: unrecognised format (first bytes {head!r}); "
                f"supported: {', '.join(formats)}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - hostile bytes must never crash a worker
            if _looks_truncated(exc):
                raise BadInputError("truncated image") from None
            raise BadInputError(f"corrupt image: {_short(exc)}") from None


_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _signature(buf: bytes) -> str | None:
    """The format whose magic number ``buf`` starts with, for clearer error reasons."""
    for magic, name in _SIGNATURES:
        if buf.startswith(magic):
            return name
    if buf[:4] == b"RIFF" and buf[8:12] == b"WEBP":
        return "WEBP"
    return None


def _looks_truncated(exc: BaseException) -> bool:
    msg = str(exc).lower()
    return isinstance(exc, EOFError) or any(
        k in msg
        for k in ("truncated", "premature", "end of file", "broken data stream", "buffer is not")
    )


def _short(exc: BaseException, n: int = 120) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def _load(im: Image.Image) -> Image.Image:
    """Decode the pixels (first frame) and apply EXIF orientation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            im.seek(0)
            im.load()
        except MemoryError:
            raise BadInputError("image too large: out of memory while decoding") from None
        except Exception as exc:  # noqa: BLE001 - hostile bytes must never crash a worker
            if _looks_truncated(exc):
                raise BadInputError("truncated image") from None
            raise BadInputError(f"corrupt image: {_short(exc)}") from None
        try:
            out = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
            out = im
    return out if out is not None else im


def _composite_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """uint8 RGB [H,W,3] over white with uint8 alpha [H,W]; rounds to nearest."""
    a = alpha.astype(np.uint32)[..., None]
    out = (rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _scale16(a: np.ndarray) -> np.ndarray:
    """Integers in [0, 65535] -> uint8, round(v * 255 / 65535)."""
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_u8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64, copy=False)
    if a.size == 0:
        return a.astype(np.uint8)
    if not np.isfinite(a).all():
        raise BadInputError("float image contains NaN or infinity")
    lo, hi = float(a.min()), float(a.max())
    if lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif not (lo >= 0.0 and hi <= 255.0):
        raise BadInputError(
            f"float image values in [{lo:g}, {hi:g}]; expected [0, 1] (or [0, 255])"
        )
    return np.rint(a).astype(np.uint8)


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im, dtype=np.uint8)
    if mode in ("L", "1"):
        g = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im)
        if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise BadInputError(
                f"unsupported {mode} image: values in [{int(a.min())}, {int(a.max())}], "
                "expected [0, 65535]"
            )
        g = _scale16(a)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        g = _float_to_u8(np.asarray(im))
        return np.repeat(g[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        return _composite_white(rgba[..., :3], rgba[..., 3])
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as exc:
        raise BadInputError(f"unsupported image mode {mode!r}: {_short(exc)}") from None


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        raise BadInputError(
            f"array of shape {a.shape} looks channels-first; expected [H, W, 3] (or [H, W])"
        )
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise BadInputError(f"array of shape {a.shape}; expected [H, W], [H, W, 1|3|4]")
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        u8 = _scale16(a)
    elif np.issubdtype(a.dtype, np.floating):
        u8 = _float_to_u8(a)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise BadInputError(
                f"{a.dtype} image values in [{lo}, {hi}]; expected [0, 255] "
                "(pass uint16 for 16-bit data)"
            )
        u8 = a.astype(np.uint8)
    else:
        raise BadInputError(f"unsupported array dtype {a.dtype}")
    c = u8.shape[-1]
    if c == 1:
        u8 = np.repeat(u8, 3, axis=2)
    elif c == 4:
        u8 = _composite_white(u8[..., :3], u8[..., 3])
    return np.ascontiguousarray(u8)


def decode_image(
    data: bytes | bytearray | memoryview | np.ndarray,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int = DEFAULT_MIN_SIZE,
) -> np.ndarray:
    """Decode an encoded image (or validate an array) into RGB.

    Args:
        data: encoded file bytes (JPEG, PNG, WebP, GIF, BMP, TIFF, PPM, ...), or an array
            ``[H, W]`` / ``[H, W, 1|3|4]`` of dtype uint8 (0..255), uint16 (0..65535, scaled),
            bool, other integers within 0..255, or float in [0, 1] (or [0, 255]).
        max_pixels: largest accepted W*H, checked from the header before decoding.
        min_size: smallest accepted width and height.

    Returns:
        A new, writable, C-contiguous uint8 array [H, W, 3], RGB, values 0..255 (see the
        module docstring for conversions).

    Raises:
        BadInputError: with a short reason ("empty file", "not an image: ...",
            "truncated image", "image too large: WxH ...", "image too small: ...",
            "corrupt image: ...").
    """
    if isinstance(data, np.ndarray):
        out = _array_to_rgb(data)  # validates the shape first
        _check_size(int(out.shape[1]), int(out.shape[0]), max_pixels, min_size)
        return out if out is not data else out.copy()  # never alias the caller's array
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BadInputError(f"expected image bytes or an array, got {type(data).__name__}")
    buf = bytes(data)
    if len(buf) == 0:
        raise BadInputError("empty file")
    im = _open(buf, max_pixels)
    try:
        w, h = im.size
        _check_size(int(w), int(h), max_pixels, min_size)
        out = _pil_to_rgb(_load(im))
    finally:
        im.close()
    if out.ndim != 3 or out.shape[2] != 3:  # pragma: no cover - defensive
        raise BadInputError(f"decoder produced shape {out.shape}")
    if not (out.flags.writeable and out.flags.c_contiguous and out.dtype == np.uint8):
        out = np.array(out, dtype=np.uint8, order="C")  # a fresh, writable array
    return out


def encode_png(img: np.ndarray, *, compress_level: int = 6) -> bytes:
    """Encode an image array as PNG bytes (deterministic: no metadata, fixed settings).

    Args:
        img: uint8 ``[H, W, 3]`` RGB (also ``[H, W]`` / ``[H, W, 1]`` gray and
            ``[H, W, 4]`` RGBA, stored as such).
        compress_level: zlib level 0..9.

    Returns:
        The PNG file as bytes.
    """
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise BadInputError(f"encode_png needs uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise BadInputError(f"encode_png needs [H, W], [H, W, 1|3|4], got shape {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
