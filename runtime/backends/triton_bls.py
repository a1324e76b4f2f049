"""Backend whose two graphs are other models of the same Triton server, called through BLS.

Used by the ``pvlm_describer`` Python-backend model of a repository written by
``pvlm-export triton``, as the backend of its ``Describer``: ``runtime.describer.greedy_decode``
drives it exactly as it drives ONNX Runtime, so the greedy loop (and dropping finished rows)
exists once; beam search and sampling ask the decoder model for its ``logits`` output instead of
``next_ids`` and reorder the host cache, as on the portable ONNX Runtime decoder. The cache lives in numpy arrays in the describer's process and travels with every
step request.

``triton_python_backend_utils`` exists only inside Triton's Python backend stub; it is imported
when the backend is created, or passed in (tests pass a stand-in).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bundle import ModelConfig
from .base import BackendUnavailable
from .host_cache import DECODER_OUTPUTS, LOGITS_OUTPUTS, HostCacheBackend


class BlsError(RuntimeError):
    """A BLS request to a graph model failed; the message carries Triton's."""


class TritonBlsBackend(HostCacheBackend):
    """encode/step/keep as BLS requests to ``encoder_model`` and ``decoder_model`` (Backend protocol)."""

    name = "triton-bls"

    def __init__(self, model: ModelConfig, encoder_model: str = "pvlm_encoder",
                 decoder_model: str = "pvlm_decoder", pb_utils: Any = None):
        """``model``: the bundle's model config (layers, heads, head width)."""
        if pb_utils is None:
            try:
                import triton_python_backend_utils as pb_utils  # only inside Triton's Python backend
            except ImportError:
                raise BackendUnavailable("triton-bls runs only inside a Triton Python-backend model") from None
        self._pb = pb_utils
        self.encoder_model, self.decoder_model = encoder_model, decoder_model
        super().__init__(model)
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

    def run_encoder(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Encoder request for float32 (B, 3, H, W)."""
        ck, cv = self._call(self.encoder_model, {"pixels": pixels}, ["cross_k", "cross_v"])
        return ck, cv

    def run_decoder(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder request."""
        ids, nk, nv = self._call(self.decoder_model, feeds, DECODER_OUTPUTS)
        return ids, nk, nv

    def run_decoder_logits(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One decoder request for the logits (B, vocab) (beam search and sampling)."""
        logits, nk, nv = self._call(self.decoder_model, feeds, LOGITS_OUTPUTS)
        return logits, nk, nv

    def _release(self) -> None:
        self._pb = None  # the graph models belong to the server; nothing else is held here


__all__ = ["BlsError", "TritonBlsBackend"]
