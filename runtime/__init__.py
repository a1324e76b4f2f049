"""Lean PersonVLM runtime: describes person crops from an export bundle on ONNX Runtime, TensorRT or CoreML.
Never imports torch or pvlm.

Two kinds of room. The base, which every package may import: the bundle reader (``runtime.bundle``), the
attribute schema and parser, preprocessing, atomic writes, CLI helpers, and ``Describer`` with its backends and
decoding loops (``pvlm-describe``). The applications on top of it, each in its own folder with its own stack:
``runtime.search`` (the description store, ``pvlm-index``, ``pvlm-search``, ``pvlm-web``), ``runtime.serving``
(``pvlm-serve``), ``runtime.video`` (``pvlm-video``) and ``runtime/native`` (the C/C++ runtime).

``import runtime`` is light: the Describer and its dependencies load on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BundleError", "DecodingOptions", "Description", "Describer", "InputError", "parse_attributes"]


def __getattr__(name: str) -> Any:
    if name in ("Describer", "Description"):
        from . import describer

        return getattr(describer, name)
    if name == "DecodingOptions":
        from .decoding import DecodingOptions

        return DecodingOptions
    if name == "InputError":
        from .preprocess import InputError

        return InputError
    if name == "BundleError":
        from .bundle import BundleError

        return BundleError
    if name == "parse_attributes":
        from .attributes import parse_attributes

        return parse_attributes
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
