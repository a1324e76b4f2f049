"""Image inputs -> normalised float32 NCHW, matching the training transform exactly (numpy + PIL)."""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray

DEFAULT_MAX_PIXELS = 64_000_000  # width x height; an 8K frame is 33 Mpx. The one decompression-bomb limit
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # per encoded image sent to a server (pvlm-serve, the Triton describer)
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become white, as on a page or a viewer's canvas
EXIF_ORIENTATION = 0x0112  # values 2..8: the stored pixels are mirrored and/or rotated (a phone held sideways)
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))

# Our own max_pixels check runs first, so Pillow's DecompressionBombWarning (at 89 Mpx) would only repeat
# it on stderr; the error Pillow raises past 2x its limit is caught and reported as an InputError.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# A damaged EXIF block only means no orientation is applied (the pixels are used as stored): not worth a
# line on stderr per image. (A filter, not catch_warnings, which is not thread-safe.)
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


class InputError(ValueError):
    """One input image is unusable; the message names it."""


def quote_path(path: str) -> str:
    r"""``path`` as it is, or in double quotes with C-style escapes when it would not print as one plain field.

    Quoted (as git quotes paths): a path holding a tab, newline or any other non-printable character, or one
    that starts with ``"``. Inside the quotes ``\``, ``"``, tab, newline and CR are ``\\``, ``\"``, ``\t``,
    ``\n``, ``\r``; other characters that do not print are ``\xNN``/``\uNNNN``, and a byte that was not
    valid in the file system's encoding is ``\xNN`` again. So a quoted field never spans lines or columns.
    """
    if path.isprintable() and not path.startswith('"'):
        return path
    return '"' + "".join(_escape_char(c) for c in path) + '"'


def _escape_char(c: str) -> str:
    if c in _C_ESCAPES:
        return _C_ESCAPES[c]
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape: the undecodable byte itself
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def describe_input(x: ImageInput, index: int) -> str:
    """Short name of an input for error messages (a path as :func:`quote_path` prints it)."""
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        return f"input {index} ({quote_path(path if isinstance(path, str) else os.fsdecode(path))})"
    if isinstance(x, np.ndarray):
        return f"input {index} (array {x.shape} {x.dtype})"
    if isinstance(x, (bytes, bytearray, memoryview)):
        return f"input {index} ({len(x)} bytes)"
    return f"input {index} ({type(x).__name__})"


def to_rgb(x: ImageInput, index: int = 0, channel_order: str = "rgb",
           max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A path, encoded bytes, PIL image or uint8 array (HxW, HxWx1/3/4; RGB or BGR) -> RGB PIL image.

    An array's 4th channel is ignored (frame padding, not transparency); a PIL image's alpha is composited.
    Every PIL mode is converted for what it holds, upright by its EXIF orientation (see :func:`pil_to_rgb`);
    files and PIL images of more than ``max_pixels`` pixels are refused before decoding. A path must name
    a regular file: a FIFO, device or socket is refused without being read (it could block forever).
    Anything unusable is an :class:`InputError`.
    """
    name = describe_input(x, index)
    if isinstance(x, (bytes, bytearray, memoryview)):
        if len(x) == 0:
            raise InputError(f"{name}: empty image bytes")
        x = io.BytesIO(bytes(x))
    if isinstance(x, (str, os.PathLike, io.BytesIO)):
        img = _decode(x, name, max_pixels)
    elif isinstance(x, Image.Image):
        _check_pixels(x, name, max_pixels)
        try:
            x.load()  # a lazily opened file decodes here: truncated data fails for this input only
            img = pil_to_rgb(x, name)
        except InputError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError, AttributeError) as e:
            raise InputError(f"{name}: not a readable image ({type(e).__name__})") from None
    elif isinstance(x, np.ndarray):
        img = _array_to_rgb(x, name, channel_order)
    else:
        raise InputError(f"{name}: unsupported input type {type(x).__name__} (path, PIL image or uint8 array)")
    if img.width == 0 or img.height == 0:
        raise InputError(f"{name}: empty image")
    return img


def _decode(x: str | os.PathLike | io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    """An encoded image (a regular file's path, or bytes) decoded, upright and RGB; :class:`InputError` if not."""
    source = x if isinstance(x, io.BytesIO) else open_regular_file(x, name)
    try:
        with Image.open(source) as im:
            _check_pixels(im, name, max_pixels)  # from the header, before decoding
            im.load()
            return pil_to_rgb(im, name)
    except Image.DecompressionBombError:
        raise InputError(f"{name}: too many pixels (Pillow's decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{name}: not a readable image ({type(e).__name__})") from None
    finally:
        if source is not x:
            source.close()


def _array_to_rgb(x: np.ndarray, name: str, channel_order: str) -> Image.Image:
    """A uint8 HxW, HxWx1, HxWx3 or HxWx4 array in ``channel_order`` as an RGB image."""
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    if x.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 array, got {x.dtype}")
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if not (x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (3, 4))):
        raise InputError(f"{name}: expected HxW, HxWx3 or HxWx4, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name}: empty image")
    if x.ndim == 3:  # a 4th channel of a frame is ignored: capture APIs fill BGRA/RGBX padding with 0 or 255
        x = x[:, :, [2, 1, 0] if channel_order == "bgr" else [0, 1, 2]]
    return Image.fromarray(np.ascontiguousarray(x)).convert("RGB")


def open_regular_file(path: str | os.PathLike, name: str) -> IO[bytes]:
    """``path`` opened for binary reading if it is a regular file; :class:`InputError` (naming ``name``) if not.

    Checked before opening (a FIFO would block ``open`` until a writer comes) and again on what was opened,
    which is opened non-blocking: a path swapped for a FIFO in between is refused, not waited on.
    """
    try:
        kind = _not_regular(os.stat(path).st_mode)
        if kind is None:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                         | getattr(os, "O_BINARY", 0))
            try:
                kind = _not_regular(os.fstat(fd).st_mode)
                if kind is None:
                    return os.fdopen(fd, "rb")
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    except OSError as e:
        raise InputError(f"{name}: cannot open ({e.strerror or type(e).__name__})") from None
    except ValueError as e:  # an embedded NUL byte
        raise InputError(f"{name}: not a usable path ({e})") from None
    raise InputError(f"{name}: {kind}")


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = next((what for test, what in _NOT_REGULAR if test(mode)), "a special file")
    return f"is {kind}, not a regular file"


def image_from_bytes(data: bytes, index: int = 0, max_bytes: int = MAX_IMAGE_BYTES,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Encoded JPEG/PNG/... bytes -> RGB PIL image; :class:`InputError` naming input ``index`` otherwise.

    Refuses more than ``max_bytes`` bytes, or (before decoding) more than ``max_pixels`` pixels;
    the decoding itself is :func:`to_rgb`'s.
    """
    if len(data) > max_bytes:
        raise InputError(f"input {index} ({len(data)} bytes): larger than the {max_bytes} byte limit")
    return to_rgb(data, index, max_pixels=max_pixels)


def _check_pixels(img: Image.Image, name: str, max_pixels: int) -> None:
    w, h = img.size
    if w * h > max_pixels:
        raise InputError(f"{name}: {w}x{h} is {w * h} pixels, more than the {max_pixels} pixel limit (max_pixels)")


def pil_to_rgb(img: Image.Image, name: str = "image") -> Image.Image:
    """Any PIL mode -> 8-bit RGB by what the pixels mean, upright; :class:`InputError` for a mode we cannot convert.

    An EXIF orientation tag (2..8, as a phone writes for a picture taken sideways) is applied first, as
    every viewer does (``PIL.ImageOps.exif_transpose``); the result carries no orientation, so applying
    this twice turns nothing twice. A damaged EXIF block leaves the pixels as stored.

    - alpha (RGBA, LA, PA, P with transparency, premultiplied RGBa/La): composited on :data:`ALPHA_BACKGROUND`;
    - I;16*: 16-bit samples / 257 (65535 -> 255); I (int32): kept if in 0..255, / 257 if in 0..65535,
      otherwise stretched from its own min..max; F (float): x 255 if in 0..1, kept if in 0..255, otherwise
      stretched from its min..max; 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX: Pillow's own conversion.
    """
    img = _upright(img)
    if img.mode == "RGB":
        return img
    try:
        return _convert(img, name)
    except (ValueError, OSError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{name}: cannot convert PIL mode {img.mode} to RGB ({e})") from None


def _upright(img: Image.Image) -> Image.Image:
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises many types on a damaged block; pixels are fine
        return img
    if orientation not in range(2, 9):
        return img
    return ImageOps.exif_transpose(img)


def _convert(img: Image.Image, name: str) -> Image.Image:
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _gray_to_uint8(np.asarray(img), mode, name)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBa", "La"):  # premultiplied alpha: un-premultiply through RGBA
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _gray_to_uint8(a: np.ndarray, mode: str, name: str) -> np.ndarray:
    a = a.astype(np.float64)
    if a.size == 0:
        return a.astype(np.uint8)
    if not np.isfinite(a).all():
        raise InputError(f"{name}: mode {mode} image has NaN or infinite pixels")
    lo, hi = float(a.min()), float(a.max())
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi > 255 and hi <= 65535):
        a = a / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo < 0 or hi > 255:  # no known range: stretch the image's own
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def preprocess(img: Image.Image, height: int, width: int, mean: list[float], std: list[float]) -> np.ndarray:
    """RGB image -> float32 (3, H, W): bilinear stretch, 1/255 scale, normalise (as ``pvlm.data``)."""
    x = np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.uint8).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def clip_box(box: Any, frame_h: int, frame_w: int, index: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) clipped to the frame; :class:`InputError` naming box ``index`` for anything else.

    Refused: not four numbers, a coordinate that is NaN or infinite (or too large for a float), a box with
    no area inside the frame.
    """
    try:
        x1, y1, x2, y2 = coords = tuple(float(v) for v in box)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"box {index}: expected four numbers (x1, y1, x2, y2), got {_show(box)}") from None
    if not all(math.isfinite(v) for v in coords):  # NaN or inf would otherwise clip silently to a frame edge
        raise InputError(f"box {index}: coordinates must be finite numbers, got {_show(coords)}")
    cx1, cy1 = int(max(0, min(frame_w, math.floor(x1)))), int(max(0, min(frame_h, math.floor(y1))))
    cx2, cy2 = int(max(0, min(frame_w, math.ceil(x2)))), int(max(0, min(frame_h, math.ceil(y2))))
    if cx2 <= cx1 or cy2 <= cy1:
        raise InputError(f"box {index} {_show(coords)}: no area inside the {frame_w}x{frame_h} frame")
    return cx1, cy1, cx2, cy2


def _show(value: Any, limit: int = 80) -> str:
    try:
        text = repr(tuple(np.asarray(value).tolist()) if isinstance(value, np.ndarray) else value)
    except ValueError:  # an int too long to print (sys.set_int_max_str_digits)
        return f"a {type(value).__name__} with a number too large to print"
    return text if len(text) <= limit else text[:limit - 3] + "..."
