"""ONNX Runtime backend (CPU, or CUDA with onnxruntime-gpu)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bundle import Bundle
from .base import BackendUnavailable
from .host_cache import DECODER_OUTPUTS, HostCacheBackend


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime (or onnxruntime-gpu)") from None
    return onnxruntime


def cuda_available() -> bool:
    """True when onnxruntime-gpu with a usable CUDA provider is installed."""
    try:
        return "CUDAExecutionProvider" in _ort().get_available_providers()
    except BackendUnavailable:
        return False


class OrtBackend(HostCacheBackend):
    """Encoder + decoder-step sessions; the cache lives in numpy arrays passed by reference."""

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None,
                 providers: list[Any] | None = None):
        ort = _ort()
        if device == "cuda" and not cuda_available():
            raise BackendUnavailable("onnxruntime-cuda needs onnxruntime-gpu and an NVIDIA GPU")
        self.name = f"onnxruntime-{device}"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = providers or (["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda"
                                  else ["CPUExecutionProvider"])
        self.encoder = ort.InferenceSession(str(bundle.path("encoder")), opts, providers=providers)
        self.decoder = ort.InferenceSession(str(bundle.path("decoder")), opts, providers=providers)
        super().__init__(bundle.model)

    def run_encoder(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoder session: cross_k, cross_v."""
        ck, cv = self.encoder.run(None, {"pixels": pixels})
        return ck, cv

    def run_decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder-step session; numpy inputs are passed by reference (no copy on CPU)."""
        ids, nk, nv = self.decoder.run(DECODER_OUTPUTS, feeds)
        return ids, nk, nv
