"""Image inputs -> normalised float32 NCHW, matching the training transform exactly (numpy + PIL)."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray


class InputError(ValueError):
    """One input image is unusable; the message names it."""


def describe_input(x: ImageInput, index: int) -> str:
    """Short name of an input for error messages."""
    if isinstance(x, (str, os.PathLike)):
        return f"input {index} ({os.fspath(x)})"
    if isinstance(x, np.ndarray):
        return f"input {index} (array {x.shape} {x.dtype})"
    if isinstance(x, (bytes, bytearray, memoryview)):
        return f"input {index} ({len(x)} bytes)"
    return f"input {index} ({type(x).__name__})"


def to_rgb(x: ImageInput, index: int = 0, channel_order: str = "rgb") -> Image.Image:
    """A path, encoded bytes, PIL image or uint8 array (HxW, HxWx1/3/4; RGB or BGR) -> RGB PIL image."""
    name = describe_input(x, index)
    if isinstance(x, (bytes, bytearray, memoryview)):
        if len(x) == 0:
            raise InputError(f"{name}: empty image bytes")
        x = io.BytesIO(bytes(x))
    if isinstance(x, (str, os.PathLike, io.BytesIO)):
        try:
            with Image.open(x) as im:
                im.load()
                img = im
        except FileNotFoundError:
            raise InputError(f"{name}: file not found") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"{name}: not a readable image ({type(e).__name__})") from None
    elif isinstance(x, Image.Image):
        img = x
    elif isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise InputError(f"{name}: expected a uint8 array, got {x.dtype}")
        if x.ndim == 3 and x.shape[2] == 1:
            x = x[:, :, 0]
        if not (x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (3, 4))):
            raise InputError(f"{name}: expected HxW, HxWx3 or HxWx4, got shape {x.shape}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise InputError(f"{name}: empty image")
        if x.ndim == 3 and channel_order == "bgr":
            x = x[:, :, [2, 1, 0, 3][: x.shape[2]]]
        img = Image.fromarray(np.ascontiguousarray(x))
    else:
        raise InputError(f"{name}: unsupported input type {type(x).__name__} (path, PIL image or uint8 array)")
    if img.width == 0 or img.height == 0:
        raise InputError(f"{name}: empty image")
    if img.mode != "RGB":
        img = img.convert("RGB")  # grayscale, RGBA, palette, CMYK
    return img


def preprocess(img: Image.Image, height: int, width: int, mean: list[float], std: list[float]) -> np.ndarray:
    """RGB image -> float32 (3, H, W): bilinear stretch, 1/255 scale, normalise (as ``pvlm.data``)."""
    x = np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.uint8).astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def clip_box(box: Any, frame_h: int, frame_w: int, index: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) clipped to the frame; a box with no area inside it is an error."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"box {index}: expected (x1, y1, x2, y2), got {box!r}") from None
    if np.isnan([x1, y1, x2, y2]).any():  # NaN would otherwise clip silently to a frame edge
        raise InputError(f"box {index}: NaN coordinate in {tuple(box)}")
    cx1, cy1 = int(max(0, min(frame_w, np.floor(x1)))), int(max(0, min(frame_h, np.floor(y1))))
    cx2, cy2 = int(max(0, min(frame_w, np.ceil(x2)))), int(max(0, min(frame_h, np.ceil(y2))))
    if cx2 <= cx1 or cy2 <= cy1:
        raise InputError(f"box {index} {tuple(box)}: no area inside the {frame_w}x{frame_h} frame")
    return cx1, cy1, cx2, cy2
