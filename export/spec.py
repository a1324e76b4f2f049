"""The one declarative I/O spec of the two graphs (Optimum's ``inputs``/``outputs`` habit).

It drives the ONNX export's dynamic shapes, the manifest entries, TensorRT optimisation
profiles and the runtime's input checks. ``decoder_ort`` is the same step for ONNX Runtime
only (see ``export/ort_decoder.py``): per-layer tensors, the cache shared between
``past_*`` and ``present_*``, and cross-attention through per-batch tables that ``cross_ort``
computes once from the encoder's K/V. A dimension is an ``int`` (static) or a name
(dynamic): ``batch`` (images in flight) and ``cache`` (self-attention cache capacity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pvlm.model import PersonVLMConfig

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output."""

    dtype: str  # numpy dtype name
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    """A graph's file name, ordered inputs and outputs."""

    file: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {
            "file": self.file,
            "inputs": {k: v.to_dict() for k, v in self.inputs.items()},
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
        }

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor: {axis: dim_name}}`` for every named dimension."""
        return {
            name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            for name, t in {**self.inputs, **self.outputs}.items()
        }


def graph_specs(cfg: PersonVLMConfig) -> dict[str, GraphSpec]:
    """The encoder, decoder-step and ONNX Runtime cross-table and decoder-step graph specs for a model config."""
    h, w = cfg.image_size
    kv_cross = TensorSpec("float32", (cfg.n_layers, "batch", cfg.n_heads, cfg.n_visual, cfg.head_dim))
    kv_cache = TensorSpec("float32", (cfg.n_layers, "batch", cfg.n_heads, "cache", cfg.head_dim))
    kv_new = TensorSpec("float32", (cfg.n_layers, "batch", cfg.n_heads, 1, cfg.head_dim))
    scores = cfg.n_heads * cfg.n_visual  # cross-attention scores per token, all heads
    cross_tables = {  # per layer: hidden -> scores (weights, bias) and scores -> output projection
        kind: TensorSpec("float32", shape) for kind, shape in (
            ("cross_qk", ("batch", scores, cfg.d_model)), ("cross_qkb", ("batch", 1, scores)),
            ("cross_ov", ("batch", scores, cfg.d_model)))
    }
    layer_cache = TensorSpec("float32", ("batch", cfg.n_heads, "cache", cfg.head_dim))
    step_in = {"tokens": TensorSpec("int64", ("batch", 1)), "positions": TensorSpec("int64", ("batch", 1))}
    step_out = {"logits": TensorSpec("float32", ("batch", cfg.vocab_size)), "next_ids": TensorSpec("int64", ("batch",))}
    return {
        "encoder": GraphSpec(
            file="encoder.onnx",
            inputs={"pixels": TensorSpec("float32", ("batch", 3, h, w))},
            outputs={"cross_k": kv_cross, "cross_v": kv_cross},
        ),
        "decoder": GraphSpec(
            file="decoder.onnx",
            inputs={**step_in, "cross_k": kv_cross, "cross_v": kv_cross, "cache_k": kv_cache, "cache_v": kv_cache},
            outputs={**step_out, "new_k": kv_new, "new_v": kv_new},
        ),
        "cross_ort": GraphSpec(
            file="cross_ort.onnx",
            inputs={"cross_k": kv_cross, "cross_v": kv_cross},
            outputs={f"{kind}_{i}": spec for i in range(cfg.n_layers) for kind, spec in cross_tables.items()},
        ),
        "decoder_ort": GraphSpec(
            file="decoder_ort.onnx",
            inputs={**step_in, **{f"{kind}_{i}": spec for i in range(cfg.n_layers) for kind, spec in (
                *cross_tables.items(), ("past_k", layer_cache), ("past_v", layer_cache))},
                # zeros (beam width 1): ONNX Runtime's CUDA kernel shares past/present only when it is given
                "cache_indirection": TensorSpec("int32", ("batch", 1, "cache"))},
            outputs={**step_out, **{f"present_{kv}_{i}": layer_cache for i in range(cfg.n_layers) for kv in "kv"}},
        ),
    }
