"""The one declarative I/O spec of the two graphs (Optimum's ``inputs``/``outputs`` habit).

It drives the ONNX export's dynamic shapes, the manifest entries, TensorRT optimisation
profiles and the runtime's input checks. ``decoder_ort`` is the same step for ONNX Runtime
only (see ``export/ort_decoder.py``): per-layer tensors, the cache shared between
``past_*`` and ``present_*``, and cross-attention inputs that ``cross_ort`` computes once per
batch from the encoder's K/V: per-batch tables or per-layer K/V (:func:`cross_form`). A
dimension is an ``int`` (static) or a name (dynamic): ``batch`` (images in flight) and
``cache`` (self-attention cache capacity).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pvlm.attribute_targets import HEAD_FIELDS
from pvlm.model import PersonVLMConfig
from runtime.bundle import AttributeHeads, HeadField

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


ATTRIBUTES_OUTPUT = "attributes"  # the encoder's optional output: every attribute head's softmax, side by side


def attribute_heads_layout(cfg: PersonVLMConfig) -> AttributeHeads | None:
    """Where each head field's probabilities lie in the encoder's ``attributes`` row (temperatures 1.0, not yet
    calibrated); None for a config without attribute heads."""
    if not cfg.attribute_heads:
        return None
    fields, offset = [], 0
    for f in HEAD_FIELDS:
        fields.append(HeadField(f.key, f.drawn, offset))
        offset += len(f.drawn)
    return AttributeHeads(ATTRIBUTES_OUTPUT, tuple(fields))


CROSS_FORMS = ("tables", "attention")
# ``auto`` keeps the tables while they pay up to this batch or beyond, by the byte count below.
# The attention kernel's own cost about doubles the real break-even: lite0 (3.6 by bytes) measured
# even with the tables at batch 8, 10-17% faster at 32, 6-9% slower at 1 (docs/notes/issue-18.md).
TABLES_MIN_BREAK_EVEN = 4


def cross_form(cfg: PersonVLMConfig) -> str:
    """How ``decoder_ort`` reads the visual tokens by default: ``tables`` or ``attention``.

    ``tables`` folds the query and output projections into per-image tables of H*N x D per layer
    (H heads, N visual tokens, D = d_model) and runs no attention kernel: two D x D weights fewer
    per batch, 2 * (H - 1) * N * D floats more per image than ``attention``'s K/V (H*N x D/H). So
    by bytes the tables stop paying at batch D / (N * (H - 1)): seed-7m 10.7 and tiny 32 (tables),
    lite0 3.6 (attention).
    """
    if cfg.n_heads == 1:  # one head: the tables are no larger than the K/V
        return "tables"
    break_even = cfg.d_model / (cfg.n_visual * (cfg.n_heads - 1))
    return "tables" if break_even > TABLES_MIN_BREAK_EVEN else "attention"


def cross_form_of(names: Iterable[str] | None) -> str | None:
    """The cross-attention form that ``decoder_ort`` inputs or ``cross_ort`` outputs with these names carry.

    None for None (a bundle without ``decoder_ort``).
    """
    if names is None:
        return None
    return "tables" if "cross_qk_0" in names else "attention"


def check_cross_choice(cross: str | None) -> None:
    """ValueError unless ``cross`` is None, ``auto`` or one of :data:`CROSS_FORMS`."""
    if cross not in (None, "auto", *CROSS_FORMS):
        raise ValueError(f"cross-attention form must be auto, {' or '.join(CROSS_FORMS)}, got {cross!r}")


def graph_specs(cfg: PersonVLMConfig, cross: str | None = None) -> dict[str, GraphSpec]:
    """The encoder, decoder-step and ONNX Runtime cross and decoder-step graph specs for a model config.

    A config with attribute heads gives the encoder a third output, :data:`ATTRIBUTES_OUTPUT`
    ``(batch, values)`` (see :func:`attribute_heads_layout`).

    ``cross``: the ``decoder_ort`` cross-attention form (``CROSS_FORMS``); ``None`` or ``auto``: :func:`cross_form`.
    """
    check_cross_choice(cross)
    cross = cross_form(cfg) if cross in (None, "auto") else cross
    h, w = cfg.image_size
    kv_cross = TensorSpec("float32", (cfg.n_layers, "batch", cfg.n_heads, cfg.n_visual, cfg.head_dim))
    kv_cache = TensorSpec("float32", (cfg.n_layers, "batch", cfg.n_heads, "cache", cfg.head_dim))
    kv_new = TensorSpec("float32", (cfg.n_layers, "batch", cfg.n_heads, 1, cfg.head_dim))
    scores = cfg.n_heads * cfg.n_visual  # cross-attention scores per token, all heads
    heads = attribute_heads_layout(cfg)
    if cross == "tables":  # per layer: hidden -> scores (weights, bias) and scores -> output projection
        cross_inputs = {kind: TensorSpec("float32", shape) for kind, shape in (
            ("cross_qk", ("batch", scores, cfg.d_model)), ("cross_qkb", ("batch", 1, scores)),
            ("cross_ov", ("batch", scores, cfg.d_model)))}
    else:  # per layer: the encoder's K and V, for the attention kernel
        layer_kv = TensorSpec("float32", ("batch", cfg.n_heads, cfg.n_visual, cfg.head_dim))
        cross_inputs = {"cross_k": layer_kv, "cross_v": layer_kv}
    layer_cache = TensorSpec("float32", ("batch", cfg.n_heads, "cache", cfg.head_dim))
    step_in = {"tokens": TensorSpec("int64", ("batch", 1)), "positions": TensorSpec("int64", ("batch", 1))}
    step_out = {"logits": TensorSpec("float32", ("batch", cfg.vocab_size)), "next_ids": TensorSpec("int64", ("batch",))}
    return {
        "encoder": GraphSpec(
            file="encoder.onnx",
            inputs={"pixels": TensorSpec("float32", ("batch", 3, h, w))},
            outputs={"cross_k": kv_cross, "cross_v": kv_cross, **({} if heads is None else {
                heads.output: TensorSpec("float32", ("batch", heads.total_values))})},
        ),
        "decoder": GraphSpec(
            file="decoder.onnx",
            inputs={**step_in, "cross_k": kv_cross, "cross_v": kv_cross, "cache_k": kv_cache, "cache_v": kv_cache},
            outputs={**step_out, "new_k": kv_new, "new_v": kv_new},
        ),
        "cross_ort": GraphSpec(
            file="cross_ort.onnx",
            inputs={"cross_k": kv_cross, "cross_v": kv_cross},
            outputs={f"{kind}_{i}": spec for i in range(cfg.n_layers) for kind, spec in cross_inputs.items()},
        ),
        "decoder_ort": GraphSpec(
            file="decoder_ort.onnx",
            inputs={**step_in, **{f"{kind}_{i}": spec for i in range(cfg.n_layers) for kind, spec in (
                *cross_inputs.items(), ("past_k", layer_cache), ("past_v", layer_cache))},
                # zeros (beam width 1): ONNX Runtime's CUDA kernel shares past/present only when it is given
                "cache_indirection": TensorSpec("int32", ("batch", 1, "cache"))},
            outputs={**step_out, **{f"present_{kv}_{i}": layer_cache for i in range(cfg.n_layers) for kv in "kv"}},
        ),
    }
