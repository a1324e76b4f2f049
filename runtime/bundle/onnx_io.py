"""The inputs and outputs of an ONNX graph, read from its protobuf bytes without the onnx package or the weights."""

from __future__ import annotations

import mmap
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .files import open_regular
from .format import MAX_GRAPH_IO, BundleError

# -- the inputs and outputs of an ONNX graph, read from its protobuf ---------------------------------------
# ModelProto.graph = 7; GraphProto.input = 11, .output = 12; ValueInfoProto.name = 1, .type = 2;
# TypeProto.tensor_type = 1 (a oneof with 4, 5, 8, 9); Tensor.elem_type = 1, .shape = 2;
# TensorShapeProto.dim = 1; Dimension.dim_value = 1, .dim_param = 2 (onnx/onnx.proto3).

ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
               9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


OnnxTensor = tuple[str, str, tuple[int | str, ...] | None]  # name, dtype, shape (None: not declared)


class _Malformed(Exception):
    """Internal: bytes that are not the protobuf they should be."""


def _varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        if shift > 63:
            raise _Malformed("varint longer than 10 bytes")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos
        shift += 7


def _fields(buf: Any, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, varint value or (start, end) of a length-delimited field) of one message."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise _Malformed("a field runs past its message")
            yield number, wire, (pos, pos + size)
            pos += size
            continue
        if wire not in (1, 5):
            raise _Malformed(f"wire type {wire}")
        pos += 8 if wire == 1 else 4
        if pos > end:
            raise _Malformed("a field runs past its message")


def _text(buf: Any, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0]:span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a name is not UTF-8") from None


def _value_info(buf: Any, span: tuple[int, int]) -> OnnxTensor:
    """(name, dtype, shape) of a ValueInfoProto; repeated sub-messages merge as protobuf merges them."""
    name, t = "", {"kind": None, "elem": 0, "dims": None}
    for number, wire, v in _fields(buf, *span):
        if number == 1 and wire == 2:
            name = _text(buf, v)
        elif number == 2 and wire == 2:
            _merge_type(buf, v, t)
    dtype = ONNX_DTYPES.get(t["elem"], f"elem_type {t['elem']}") if t["kind"] == "tensor" else "not a tensor"
    return name, dtype, None if t["dims"] is None else tuple(t["dims"])


def _merge_type(buf: Any, span: tuple[int, int], t: dict[str, Any]) -> None:
    """Merge a TypeProto into ``t`` (kind, elem, dims)."""
    for number, wire, v in _fields(buf, *span):
        if wire != 2:
            continue
        if number == 1:
            if t["kind"] != "tensor":  # another member of the oneof was set: this one starts afresh
                t.update(kind="tensor", elem=0, dims=None)
            for f_number, f_wire, fv in _fields(buf, *v):
                if f_number == 1 and f_wire == 0:
                    t["elem"] = fv
                elif f_number == 2 and f_wire == 2:
                    t["dims"] = [] if t["dims"] is None else t["dims"]
                    for d_number, d_wire, dv in _fields(buf, *fv):
                        if d_number == 1 and d_wire == 2:
                            if len(t["dims"]) >= 64:
                                raise _Malformed("more than 64 dimensions")
                            t["dims"].append(_dim(buf, dv))
        elif number in (4, 5, 8, 9):
            t.update(kind="other", elem=0, dims=None)


def _dim(buf: Any, span: tuple[int, int]) -> int | str:
    dim: int | str = "?"
    for number, wire, v in _fields(buf, *span):
        if number == 1 and wire == 0:
            dim = v - (1 << 64) if v >= 1 << 63 else v
        elif number == 2 and wire == 2:
            dim = _text(buf, v) or "?"
    return dim


def onnx_graph_io(path: Path) -> tuple[list[OnnxTensor], list[OnnxTensor]]:
    """The inputs and outputs of an ONNX model file, in graph order: ``(name, dtype, shape)`` each.

    dtype is a numpy name (``float32``...); shape holds ints and dimension names (``"?"``: unnamed), None when
    the graph declares no shape. Reads only the protobuf fields it needs (no onnx package, no weights read);
    :class:`BundleError` for a file that is not an ONNX model.
    """
    inputs: list[OnnxTensor] = []
    outputs: list[OnnxTensor] = []
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise BundleError(f"{path}: empty file, not an ONNX model")
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                for number, wire, v in _fields(buf, 0, size):
                    if number != 7 or wire != 2:
                        continue
                    for g_number, g_wire, gv in _fields(buf, *v):
                        if g_wire == 2 and g_number in (11, 12):
                            if len(inputs) + len(outputs) >= MAX_GRAPH_IO:
                                raise _Malformed(f"more than {MAX_GRAPH_IO} inputs and outputs")
                            (inputs if g_number == 11 else outputs).append(_value_info(buf, gv))
        except _Malformed as e:
            raise BundleError(f"{path}: not a readable ONNX model ({e})") from None
    return inputs, outputs


# -- the manifest's schema -----------------------------------------------------------------------------------

_SHA256 = re.compile(r"[0-9a-f]{64}")
