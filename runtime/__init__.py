"""Lean PersonVLM runtime: numpy greedy loop over ONNX Runtime / TensorRT / CoreML. Never imports torch.

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
