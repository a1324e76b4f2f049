"""Backend whose two graphs are other models of the same Triton server, called through BLS.

Used by the ``pvlm_describer`` Python-backend model of a repository written by
``pvlm-export triton``: ``runtime.describer.greedy_decode`` drives it exactly as it drives
ONNX Runtime, so the greedy loop (and dropping finished rows) exists once. The cache lives
in numpy arrays in the describer's process and travels with every step request.

``triton_python_backend_utils`` exists only inside Triton's Python backend stub; it is imported
when the backend is created, or passed in (tests pass a stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import BackendUnavailable


class BlsError(RuntimeError):
    """A BLS request to a graph model failed; the message carries Triton's."""


@dataclass
class _State:
    cross_k: np.ndarray
    cross_v: np.ndarray
    cache_k: np.ndarray  # (L, B, H, capacity, Dh); slot t holds position t
    cache_v: np.ndarray


class TritonBlsBackend:
    """encode/step/keep as BLS requests to ``encoder_model`` and ``decoder_model`` (Backend protocol)."""

    name = "triton-bls"

    def __init__(self, model: dict[str, Any], encoder_model: str = "pvlm_encoder",
                 decoder_model: str = "pvlm_decoder", pb_utils: Any = None):
        """``model``: the bundle manifest's model config (layers, heads, d_model)."""
        if pb_utils is None:
            try:
                import triton_python_backend_utils as pb_utils  # only inside Triton's Python backend
            except ImportError:
                raise BackendUnavailable("triton-bls runs only inside a Triton Python-backend model") from None
        self._pb = pb_utils
        self.encoder_model, self.decoder_model = encoder_model, decoder_model
        self._cache_shape = (model["n_layers"], model["n_heads"], model["d_model"] // model["n_heads"])
        self._outputs = ["next_ids", "new_k", "new_v"]  # logits stay in the decoder model
        cpu = getattr(pb_utils, "TRITONSERVER_MEMORY_CPU", None)
        preferred = getattr(pb_utils, "PreferredMemory", None)
        # a GPU graph model's outputs come back in host memory: the loop runs in numpy
        self._memory = preferred(cpu, 0) if preferred is not None and cpu is not None else None

    def _call(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        pb = self._pb
        kwargs: dict[str, Any] = {"model_name": model, "requested_output_names": outputs,
                                  "inputs": [pb.Tensor(n, np.ascontiguousarray(a)) for n, a in inputs.items()]}
        if self._memory is not None:
            kwargs["preferred_memory"] = self._memory
        response = pb.InferenceRequest(**kwargs).exec()
        if response.has_error():
            raise BlsError(f"{model}: {response.error().message()}")
        arrays = []
        for name in outputs:
            tensor = pb.get_output_tensor_by_name(response, name)
            if tensor is None:
                raise BlsError(f"{model}: response has no output {name!r}")
            arrays.append(np.array(tensor.as_numpy()))  # own the memory, not the response's
        return arrays

    def encode(self, pixels: np.ndarray, capacity: int) -> _State:
        """Encoder request for float32 (B, 3, H, W); zeroed cache of ``capacity`` slots."""
        ck, cv = self._call(self.encoder_model, {"pixels": pixels}, ["cross_k", "cross_v"])
        layers, heads, dh = self._cache_shape
        cache = np.zeros((layers, pixels.shape[0], heads, capacity, dh), np.float32)
        return _State(ck, cv, cache, np.zeros_like(cache))

    def step(self, state: _State, tokens: np.ndarray, position: int) -> np.ndarray:
        """One decoder request; stores this token's K/V at slot ``position``; next ids (B,) int64."""
        if position >= state.cache_k.shape[3]:
            raise ValueError(f"position {position} exceeds the cache capacity {state.cache_k.shape[3]}")
        positions = np.full((tokens.shape[0], 1), position, np.int64)
        ids, nk, nv = self._call(self.decoder_model, {
            "tokens": tokens, "positions": positions, "cross_k": state.cross_k, "cross_v": state.cross_v,
            "cache_k": state.cache_k, "cache_v": state.cache_v}, self._outputs)
        state.cache_k[:, :, :, position] = nk[:, :, :, 0]
        state.cache_v[:, :, :, position] = nv[:, :, :, 0]
        return ids.astype(np.int64, copy=False)

    def keep(self, state: _State, rows: np.ndarray) -> None:
        """Compact every per-row buffer to ``rows`` (finished rows stop costing decoder work)."""
        state.cross_k = np.ascontiguousarray(state.cross_k[:, rows])
        state.cross_v = np.ascontiguousarray(state.cross_v[:, rows])
        state.cache_k = np.ascontiguousarray(state.cache_k[:, rows])
        state.cache_v = np.ascontiguousarray(state.cache_v[:, rows])


__all__ = ["BlsError", "TritonBlsBackend"]
