"""ONNX Runtime backend (CPU, or CUDA with onnxruntime-gpu)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bundle import Bundle
from .base import BackendUnavailable


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


@dataclass
class _State:
    cross_k: np.ndarray
    cross_v: np.ndarray
    cache_k: np.ndarray  # (L, B, H, capacity, Dh); slot t holds position t
    cache_v: np.ndarray


class OrtBackend:
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
        m = bundle.model
        self._cache_shape = (m["n_layers"], m["n_heads"], m["d_model"] // m["n_heads"])
        self._outputs = ["next_ids", "new_k", "new_v"]  # logits stay inside the session

    def encode(self, pixels: np.ndarray, capacity: int) -> _State:
        """Run the encoder; zeroed cache of ``capacity`` slots."""
        ck, cv = self.encoder.run(None, {"pixels": pixels})
        layers, heads, dh = self._cache_shape
        cache = np.zeros((layers, pixels.shape[0], heads, capacity, dh), np.float32)
        return _State(ck, cv, cache, np.zeros_like(cache))

    def step(self, state: _State, tokens: np.ndarray, position: int) -> np.ndarray:
        """One step; stores this token's K/V at slot ``position``."""
        if position >= state.cache_k.shape[3]:
            raise ValueError(f"position {position} exceeds the cache capacity {state.cache_k.shape[3]}")
        positions = np.full((tokens.shape[0], 1), position, np.int64)
        ids, nk, nv = self.decoder.run(self._outputs, {
            "tokens": tokens, "positions": positions, "cross_k": state.cross_k, "cross_v": state.cross_v,
            "cache_k": state.cache_k, "cache_v": state.cache_v})
        state.cache_k[:, :, :, position] = nk[:, :, :, 0]
        state.cache_v[:, :, :, position] = nv[:, :, :, 0]
        return ids

    def keep(self, state: _State, rows: np.ndarray) -> None:
        """Compact every per-row buffer to ``rows``."""
        state.cross_k = np.ascontiguousarray(state.cross_k[:, rows])
        state.cross_v = np.ascontiguousarray(state.cross_v[:, rows])
        state.cache_k = np.ascontiguousarray(state.cache_k[:, rows])
        state.cache_v = np.ascontiguousarray(state.cache_v[:, rows])
