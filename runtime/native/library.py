"""ctypes bindings of the native runtime's C ABI (``include/pvlm.h``): :class:`NativeDescriber` over ``libpvlm``.

For tests and ``pvlm-bench``'s ``native-cpu`` row; C and C++ programs link the library directly
(docs/native.md). Every failed call raises :class:`NativeError` carrying the C status and message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_BUILD = HERE / "build" / "release"  # where .ci/native.sh builds it

STATUS = ("PVLM_OK", "PVLM_ERR_ARGUMENT", "PVLM_ERR_BUNDLE_MISSING", "PVLM_ERR_MANIFEST", "PVLM_ERR_OUTSIDE_BUNDLE",
          "PVLM_ERR_INTEGRITY", "PVLM_ERR_UNSUPPORTED", "PVLM_ERR_LIMIT", "PVLM_ERR_BOX", "PVLM_ERR_RUNTIME",
          "PVLM_ERR_NO_MEMORY", "PVLM_ERR_INTERNAL")
PIXEL_FORMATS = {"rgb": 0, "bgr": 1, "rgba": 2, "bgra": 3, "gray": 4}


class NativeError(RuntimeError):
    """A failed pvlm_* call: ``status`` (its number), ``name`` (``PVLM_ERR_BOX``, ...) and the library's message."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.name = STATUS[status] if 0 <= status < len(STATUS) else "PVLM_ERR_UNKNOWN"
        self.message = message
        super().__init__(f"{self.name}: {message}")


class NativeUnavailable(RuntimeError):
    """The native library is not built or cannot be loaded; the message says how to build it."""


class _Box(ctypes.Structure):
    _fields_ = [("x1", ctypes.c_float), ("y1", ctypes.c_float), ("x2", ctypes.c_float), ("y2", ctypes.c_float)]


class _Image(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("width", ctypes.c_int32), ("height", ctypes.c_int32),
                ("stride", ctypes.c_int32), ("format", ctypes.c_int32), ("box", ctypes.POINTER(_Box))]


class _Options(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("precision", ctypes.c_char_p), ("decoder", ctypes.c_char_p),
                ("threads", ctypes.c_int32), ("max_batch", ctypes.c_int32), ("max_new_tokens", ctypes.c_int32),
                ("verify", ctypes.c_int32), ("shared_threads", ctypes.c_int32),
                ("no_repeat_ngram_size", ctypes.c_int32), ("min_crop_width", ctypes.c_int32),
                ("min_crop_height", ctypes.c_int32), ("encoder_chunk_pixels", ctypes.c_int64)]


class _Info(ctypes.Structure):
    _fields_ = [("input_height", ctypes.c_int32), ("input_width", ctypes.c_int32), ("max_batch", ctypes.c_int32),
                ("max_new_tokens", ctypes.c_int32), ("max_positions", ctypes.c_int32), ("vocab_size", ctypes.c_int32),
                ("precision", ctypes.c_char_p), ("decoder", ctypes.c_char_p), ("bundle_id", ctypes.c_char_p),
                ("onnxruntime_version", ctypes.c_char_p), ("shared_threads", ctypes.c_int32),
                ("no_repeat_ngram_size", ctypes.c_int32), ("min_crop_width", ctypes.c_int32),
                ("min_crop_height", ctypes.c_int32)]


class _Timings(ctypes.Structure):
    _fields_ = [("preprocess_ms", ctypes.c_double), ("encode_ms", ctypes.c_double), ("decode_ms", ctypes.c_double),
                ("total_ms", ctypes.c_double), ("steps", ctypes.c_int32), ("batch", ctypes.c_int32)]


class _Description(ctypes.Structure):
    _fields_ = [("text", ctypes.c_char_p), ("tokens", ctypes.POINTER(ctypes.c_int32)), ("n_tokens", ctypes.c_size_t),
                ("ended", ctypes.c_int32)]


class _Results(ctypes.Structure):
    _fields_ = [("count", ctypes.c_size_t), ("items", ctypes.POINTER(_Description)), ("timings", _Timings)]


def find_library(path: str | os.PathLike | None = None) -> Path:
    """``libpvlm.so``: ``path``, else ``$PVLM_NATIVE_LIB``, else the build folder of .ci/native.sh, else the system's."""
    for candidate in (path, os.environ.get("PVLM_NATIVE_LIB"), DEFAULT_BUILD / "libpvlm.so"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    found = ctypes.util.find_library("pvlm")
    if found:
        return Path(found)
    raise NativeUnavailable(f"libpvlm is not built: run .ci/native.sh (builds {DEFAULT_BUILD}/libpvlm.so) "
                            "or set PVLM_NATIVE_LIB; see docs/native.md")


def load_library(path: str | os.PathLike | None = None) -> ctypes.CDLL:
    """The library with every function's argument and result types declared."""
    where = find_library(path)
    try:
        lib = ctypes.CDLL(str(where))
    except OSError as e:
        raise NativeUnavailable(f"{where}: cannot be loaded ({e})") from None
    status = ctypes.c_int
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "pvlm_version": (ctypes.c_char_p, []),
        "pvlm_abi_version": (ctypes.c_int32, []),
        "pvlm_last_error": (ctypes.c_char_p, []),
        "pvlm_status_name": (ctypes.c_char_p, [ctypes.c_int]),
        "pvlm_options_init": (None, [ctypes.POINTER(_Options)]),
        "pvlm_open": (status, [ctypes.c_char_p, ctypes.POINTER(_Options), ctypes.POINTER(ctypes.c_void_p)]),
        "pvlm_close": (None, [ctypes.c_void_p]),
        "pvlm_info_get": (status, [ctypes.c_void_p, ctypes.POINTER(_Info)]),
        "pvlm_describe": (status, [ctypes.c_void_p, ctypes.POINTER(_Image), ctypes.c_size_t, ctypes.c_int32,
                                   ctypes.POINTER(ctypes.POINTER(_Results))]),
        "pvlm_generate": (status, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int32, ctypes.c_int32,
                                   ctypes.c_int32, ctypes.POINTER(ctypes.POINTER(_Results))]),
        "pvlm_preprocess": (status, [ctypes.c_void_p, ctypes.POINTER(_Image), ctypes.c_void_p, ctypes.c_size_t]),
        "pvlm_results_free": (None, [ctypes.POINTER(_Results)]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


@dataclass(frozen=True)
class NativeDescription:
    """One image's result from the native library (attributes are parsed in Python: ``runtime.attributes``)."""

    text: str
    tokens: list[int]
    ended: bool
    timings: dict[str, float] = field(default_factory=dict)  # ms, of the call this image ran in


@dataclass
class Frame:
    """A uint8 HWC frame kept alive for a call, and the C struct that points into it."""

    array: np.ndarray
    image: _Image
    box: _Box | None = None


def _frame(array: Any, channel_order: str, box: Sequence[float] | None) -> Frame:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise TypeError(f"expected a uint8 HxW, HxWx3 or HxWx4 array, got {a.dtype} {a.shape}")
    channels = 1 if a.ndim == 2 else a.shape[2]
    fmt = "gray" if channels == 1 else channel_order + ("a" if channels == 4 else "")
    # rows may be strided (a view into a larger frame); the pixels of a row must be packed
    if a.strides[-1] != 1 or (channels > 1 and a.strides[1] != channels) or a.strides[0] < a.shape[1] * channels:
        a = np.ascontiguousarray(a)
    height, width = a.shape[:2]
    image = _Image(a.ctypes.data, width, height, a.strides[0], PIXEL_FORMATS[fmt], None)
    frame = Frame(a, image)
    if box is not None:
        frame.box = _Box(*(float(v) for v in box))
        image.box = ctypes.pointer(frame.box)
    return frame


class NativeDescriber:
    """An opened bundle in the native library; thread-safe like the C handle it wraps.

    ``precision``, ``decoder``, ``threads``, ``max_batch``, ``max_new_tokens``, ``verify``, ``shared_threads``,
    ``no_repeat_ngram_size`` (None: the library's default, 10), ``min_crop`` ((height, width) or one int for both; None: 1/8 of the model's
    input; 0: none), ``encoder_chunk_pixels`` (None: the library's default, 2 x 224 x 224): ``pvlm_options``, as
    ``Describer``'s options of the same names. ``library``: a path to
    ``libpvlm.so`` (see :func:`find_library`).
    """

    def __init__(self, bundle: str | os.PathLike, *, precision: str = "fp32", decoder: str = "auto",
                 threads: int | None = None, max_batch: int | None = None, max_new_tokens: int | None = None,
                 verify: bool = True, shared_threads: bool = False, channel_order: str = "rgb",
                 no_repeat_ngram_size: int | None = None, min_crop: int | tuple[int, int] | None = None,
                 encoder_chunk_pixels: int | None = None, library: str | os.PathLike | None = None):
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.lib = load_library(library)
        self.channel_order = channel_order
        opts = _Options()
        self.lib.pvlm_options_init(ctypes.byref(opts))
        opts.precision, opts.decoder = precision.encode(), decoder.encode()
        opts.threads, opts.max_batch, opts.max_new_tokens = threads or 0, max_batch or 0, max_new_tokens or 0
        opts.verify, opts.shared_threads = int(verify), int(shared_threads)
        if no_repeat_ngram_size is not None:
            opts.no_repeat_ngram_size = no_repeat_ngram_size
        if min_crop is not None:
            opts.min_crop_height, opts.min_crop_width = (min_crop, min_crop) if isinstance(min_crop, int) else min_crop
        if encoder_chunk_pixels is not None:
            opts.encoder_chunk_pixels = encoder_chunk_pixels
        handle = ctypes.c_void_p()
        self._check(self.lib.pvlm_open(os.fsencode(bundle), ctypes.byref(opts), ctypes.byref(handle)))
        self._handle: int | None = handle.value
        info = _Info()
        self._check(self.lib.pvlm_info_get(self._handle, ctypes.byref(info)))
        self.info = {name: (v.decode() if isinstance(v, bytes) else v)
                     for name, _ in _Info._fields_ for v in [getattr(info, name)]}
        self.max_batch = self.info["max_batch"]

    def _check(self, status: int) -> None:
        if status != 0:
            raise NativeError(status, (self.lib.pvlm_last_error() or b"").decode(errors="replace"))

    @property
    def handle(self) -> int:
        """The ``pvlm_bundle*``; raises once closed."""
        if self._handle is None:
            raise NativeError(1, "the bundle is closed")
        return self._handle

    def close(self) -> None:
        """``pvlm_close`` (idempotent)."""
        if self._handle is not None:
            self.lib.pvlm_close(self._handle)
            self._handle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _take(self, results: Any) -> tuple[list[NativeDescription], dict[str, float]]:
        try:
            r = results.contents
            t = r.timings
            timings = {"preprocess_ms": t.preprocess_ms, "encode_ms": t.encode_ms, "decode_ms": t.decode_ms,
                       "steps": t.steps, "total_ms": t.total_ms, "batch": t.batch}
            out = [NativeDescription(d.text.decode(), d.tokens[: d.n_tokens], bool(d.ended), dict(timings))
                   for d in r.items[: r.count]]
        finally:
            self.lib.pvlm_results_free(results)
        return out, timings

    def describe_images(self, images: Sequence[Any], boxes: Sequence[Sequence[float] | None] | None = None,
                        max_new_tokens: int | None = None) -> list[NativeDescription]:
        """One batch (at most ``max_batch``) of uint8 arrays (HxW, HxWx3 or HxWx4 in ``channel_order``), each
        with an optional box (x1, y1, x2, y2) into it."""
        frames = [_frame(a, self.channel_order, b) for a, b in zip(images, boxes or [None] * len(images))]
        array = (_Image * len(frames))(*(f.image for f in frames))
        results = ctypes.POINTER(_Results)()
        self._check(self.lib.pvlm_describe(self.handle, array, len(frames), max_new_tokens or 0, ctypes.byref(results)))
        return self._take(results)[0]

    def describe_crops(self, frame: Any, boxes: Sequence[Sequence[float]],
                       max_new_tokens: int | None = None) -> list[NativeDescription]:
        """Boxes (x1, y1, x2, y2; clipped) of one frame, in batches of ``max_batch``."""
        out: list[NativeDescription] = []
        for start in range(0, len(boxes), self.max_batch):
            chunk = list(boxes[start:start + self.max_batch])
            out += self.describe_images([frame] * len(chunk), chunk, max_new_tokens)
        return out

    def generate(self, pixels: np.ndarray, max_new_tokens: int | None = None, stop_at_eos: bool = True,
                 no_repeat_ngram_size: int = 0) -> tuple[list[NativeDescription], dict[str, float]]:
        """The greedy loop on preprocessed float32 (B, 3, H, W), without the repetition guard unless asked (as
        ``Describer.generate_ids``); the descriptions and the call's timings."""
        x = np.ascontiguousarray(pixels, np.float32)
        results = ctypes.POINTER(_Results)()
        self._check(self.lib.pvlm_generate(self.handle, x.ctypes.data, x.shape[0], max_new_tokens or 0,
                                           int(stop_at_eos), no_repeat_ngram_size, ctypes.byref(results)))
        return self._take(results)

    def preprocess(self, image: Any, box: Sequence[float] | None = None) -> np.ndarray:
        """One uint8 array (and optional box) -> float32 (3, H, W), as ``runtime.preprocess.preprocess``."""
        f = _frame(image, self.channel_order, box)
        out = np.empty((3, self.info["input_height"], self.info["input_width"]), np.float32)
        self._check(self.lib.pvlm_preprocess(self.handle, ctypes.byref(f.image), out.ctypes.data, out.size))
        return out


__all__ = ["NativeDescriber", "NativeDescription", "NativeError", "NativeUnavailable", "find_library", "load_library"]
