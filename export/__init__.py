"""Split a PersonVLM into encoder + one-step decoder graphs; ONNX export, TensorRT, CoreML.

``import export`` is torch-free: ``export_onnx`` and ``ValidationError`` load PyTorch on first use,
so ``pvlm-export triton`` and ``pvlm-export --help`` run on a runtime-only install.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ValidationError", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from .onnx import export_onnx

        return export_onnx
    if name == "ValidationError":
        from .validate import ValidationError

        return ValidationError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
