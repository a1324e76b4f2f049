"""Split a PersonVLM into encoder + one-step decoder graphs; ONNX export, TensorRT, CoreML."""

from .onnx import export_onnx
from .validate import ValidationError

__all__ = ["ValidationError", "export_onnx"]
