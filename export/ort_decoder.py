"""The decoder step rebuilt for ONNX Runtime: fused attention over a cache that never moves.

Same arithmetic as :meth:`pvlm.PersonVLM.decode_step` (parity-checked at export), written
with ONNX Runtime's ``com.microsoft`` kernels, which ONNX Runtime runs on CPU and CUDA:

- ``MultiHeadAttention`` with ``past_sequence_length`` (and an all-zero ``cache_indirection``,
  which the CUDA kernel requires before it shares buffers): past and present K/V are ONE buffer
  per layer of shape (B, H, capacity, Dh). The runtime binds the same buffer (IO binding)
  as the ``past_*`` input and the ``present_*`` output, the kernel appends this token's K/V
  in place at slot ``position``, and nothing is copied per step on any device.
- Cross-attention in one of two forms, chosen per model by ``export.spec.cross_form``; the
  visual tokens are fixed for a whole description, so ``cross_ort.onnx`` prepares, once per
  batch, what every step reads:
  - ``tables``: the query projection folded into each image's keys (``cross_qk``: hidden ->
    all heads' scores, with the query bias as ``cross_qkb``) and the output projection into its
    values (``cross_ov``: softmaxed scores -> hidden). A step reads heads x visual-tokens rows of
    d_model per image instead of two d_model x d_model weights and runs no attention kernel:
    0.41 -> 0.33 ms per batch-1 step on seed-7m. The tables are n_heads times the size of the
    K/V they replace, so their cost grows with the batch.
  - ``attention``: per-layer K/V (B, H, N, Dh) and ``MultiHeadAttention`` after the query
    projection. The projections are weight MatMuls again, shared by the batch (and INT8 in the
    INT8 variant). lite0 at batch 32: 1.48 against 2.02 ms per FP32 step, 1.22 against 1.73
    INT8; at batch 1 about 8% slower (docs/notes/issue-18.md, "Cross-attention form").
- ``SkipLayerNormalization`` (projection bias + residual add + next LayerNorm in one node)
  and ``BiasGelu``: 73 nodes per step after ONNX Runtime's optimiser (seed-7m), against 180
  for the portable ``decoder.onnx``, whose per-node dispatch dominated batch-1 latency.

Every row of a batch must be at the same ``position`` (the runtime's greedy loop starts all
rows together and drops finished ones). TensorRT and Triton keep using the portable graph.
The graph is written with ``onnx.helper`` because the exporters emit no contrib ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from pvlm.model import PersonVLM

from .spec import GraphSpec, cross_form_of

CONTRIB = "com.microsoft"


class _Builder:
    """Accumulates nodes and initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: torch.Tensor | np.ndarray) -> str:
        arr = value.detach().float().numpy() if isinstance(value, torch.Tensor) else value
        arr = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)  # (which would make a scalar 1-D)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def weight(self, name: str, linear: torch.nn.Linear, scale: float = 1.0) -> str:
        """A Linear's weight transposed for ``x @ W``."""
        return self.const(name, (linear.weight * scale).T)

    def node(self, op: str, inputs: list[str], outputs: list[str], domain: str | None = None, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attrs))
        return outputs[0]

    def matmul(self, x: str, w: str, name: str) -> str:
        """``x @ w`` named ``name``."""
        return self.node("MatMul", [x, w], [name])

    def skip_norm(self, mm: str, residual: str, norm: torch.nn.LayerNorm, bias: torch.Tensor,
                  name: str) -> tuple[str, str]:
        """LayerNorm(mm + bias + residual) and the sum itself (the next residual)."""
        self.node("SkipLayerNormalization",
                  [mm, residual, self.const(f"{name}.gamma", norm.weight), self.const(f"{name}.beta", norm.bias),
                   self.const(f"{name}.bias", bias)],
                  [name, "", "", f"{name}.sum"], domain=CONTRIB, epsilon=norm.eps)
        return name, f"{name}.sum"


def build_ort_decoder(model: PersonVLM, spec: GraphSpec, opset: int) -> onnx.ModelProto:
    """The ONNX Runtime decoder step for ``model`` (eval mode) with ``spec``'s names."""
    cfg = model.cfg
    b = _Builder()
    blocks = list(model.blocks)
    tok = b.node("Gather", [b.const("tok_emb", model.tok_emb.weight), "tokens"], ["tok_emb.out"])
    pos = b.node("Gather", [b.const("pos_emb", model.pos_emb.weight), "positions"], ["pos_emb.out"])
    x = b.node("Add", [tok, pos], ["embed"])  # (B, 1, D)
    # Rows share the step's position: the cache holds `position` filled slots before this token.
    b.node("Cast", [b.node("ReduceMax", ["positions"], ["positions.max"], keepdims=0)], ["past_length"],
           to=TensorProto.INT32)
    tables = cross_form_of(spec.inputs) == "tables"
    if tables:
        b.const("cross.per_head", np.array([0, cfg.n_heads, cfg.n_visual], np.int64))
        b.const("cross.all_heads", np.array([0, 1, cfg.n_heads * cfg.n_visual], np.int64))
    first = blocks[0].ln1
    h = b.node("LayerNormalization", [x, b.const("l0.ln1.gamma", first.weight), b.const("l0.ln1.beta", first.bias)],
               ["l0.ln1"], axis=-1, epsilon=first.eps)
    for i, blk in enumerate(blocks):
        norm = blocks[i + 1].ln1 if i + 1 < len(blocks) else model.ln_f
        h, x = _layer(b, cfg, i, blk, h, x, tables, norm, f"l{i + 1}.ln1" if i + 1 < len(blocks) else "ln_f")
    logits = b.matmul(h, b.weight("head.w", model.head), "logits3")
    b.node("Reshape", [logits, b.const("logits.shape", np.array([0, -1], np.int64))], ["logits"])
    b.node("ArgMax", ["logits"], ["next_ids"], axis=-1, keepdims=0)
    return _model(b, "personvlm_decoder_ort", spec, opset)


def _layer(b: _Builder, cfg: Any, i: int, blk: Any, h: str, x: str, tables: bool, norm: torch.nn.LayerNorm,
           out_name: str) -> tuple[str, str]:
    """One decoder block on (normed ``h``, residual ``x``); returns the next block's normed input and residual."""
    sa, ca, p, heads = blk.attn, blk.cross, f"l{i}", cfg.n_heads
    w_qkv = b.const(f"{p}.qkv.w", torch.cat([sa.q.weight * sa.q_scale, sa.k.weight, sa.v.weight]).T)
    b_qkv = b.const(f"{p}.qkv.b", torch.cat([sa.q.bias * sa.q_scale, sa.k.bias, sa.v.bias]))
    b.node("Split", [b.matmul(h, w_qkv, f"{p}.qkv")], [f"{p}.q", f"{p}.k", f"{p}.v"], axis=-1, num_outputs=3)
    b.node("MultiHeadAttention",
           [f"{p}.q", f"{p}.k", f"{p}.v", b_qkv, "", "", f"past_k_{i}", f"past_v_{i}", "past_length",
            "cache_indirection"],
           [f"{p}.self", f"present_k_{i}", f"present_v_{i}"], domain=CONTRIB, num_heads=heads, scale=1.0)
    h, x = b.skip_norm(b.matmul(f"{p}.self", b.weight(f"{p}.self.o.w", sa.o), f"{p}.self.o"), x, blk.ln2, sa.o.bias,
                       f"{p}.ln2")
    if tables:
        qk = b.node("FusedMatMul", [h, f"cross_qk_{i}"], [f"{p}.cross.qk"], domain=CONTRIB, transB=1)
        scores = b.node("Add", [qk, f"cross_qkb_{i}"], [f"{p}.cross.s"])
        probs = b.node("Softmax", [b.node("Reshape", [scores, "cross.per_head"], [f"{p}.cross.sh"])],
                       [f"{p}.cross.p"], axis=-1)
        mixed = b.matmul(b.node("Reshape", [probs, "cross.all_heads"], [f"{p}.cross.pf"]), f"cross_ov_{i}",
                         f"{p}.cross.o")
    else:
        q = b.matmul(h, b.weight(f"{p}.cross.q.w", ca.q, ca.q_scale), f"{p}.cross.q")
        # the query bias rides in the kernel's bias input (K/V parts zero): one node fewer per layer
        bias = b.const(f"{p}.cross.b", torch.cat([ca.q.bias * ca.q_scale, torch.zeros(2 * cfg.d_model)]))
        att = b.node("MultiHeadAttention", [q, f"cross_k_{i}", f"cross_v_{i}", bias], [f"{p}.cross"],
                     domain=CONTRIB, num_heads=heads, scale=1.0)
        mixed = b.matmul(att, b.weight(f"{p}.cross.o.w", ca.o), f"{p}.cross.o")
    h, x = b.skip_norm(mixed, x, blk.ln3, ca.o.bias, f"{p}.ln3")
    fc1, fc2 = blk.mlp[0], blk.mlp[3]
    g = b.node("BiasGelu", [b.matmul(h, b.weight(f"{p}.fc1.w", fc1), f"{p}.fc1"), b.const(f"{p}.fc1.b", fc1.bias)],
               [f"{p}.gelu"], domain=CONTRIB)
    return b.skip_norm(b.matmul(g, b.weight(f"{p}.fc2.w", fc2), f"{p}.fc2"), x, norm, fc2.bias, out_name)


def build_ort_cross(model: PersonVLM, spec: GraphSpec, opset: int) -> onnx.ModelProto:
    """Per-batch cross-attention inputs for ``decoder_ort`` from the encoder's cross K/V (L, B, H, N, Dh).

    ``attention`` form: each layer's K and V (B, H, N, Dh). ``tables`` form, per layer, with the
    score scale folded in: ``cross_qk`` (B, H*N, D) and ``cross_qkb`` (B, 1, H*N) give every
    head's scores from the hidden state (``h @ qk^T + qkb``), and ``cross_ov`` (B, H*N, D) maps
    the per-head softmax straight to the output projection's input sum (its bias stays in the
    step graph).
    """
    cfg = model.cfg
    layers, heads, dh, d, n = cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.d_model, cfg.n_visual
    b = _Builder()
    if cross_form_of(spec.outputs) == "attention":  # the layers' K/V apart
        for kind in ("cross_k", "cross_v"):
            for i in range(layers):
                b.node("Gather", [kind, b.const(f"{kind}.{i}", np.array(i, np.int64))], [f"{kind}_{i}"], axis=0)
        return _model(b, "personvlm_cross_ort", spec, opset)

    def shape(name: str, *dims: int) -> str:
        return b.const(name, np.array(dims, np.int64))

    def per_head(src: str) -> str:
        """(L, B, H, N, Dh) -> (L, H, B*N, Dh): every layer's and head's rows in one matrix each."""
        t = b.node("Transpose", [src], [f"{src}.lh"], perm=[0, 2, 1, 3, 4])
        return b.node("Reshape", [t, shape(f"{src}.lh.shape", layers, heads, -1, dh)], [f"{src}.rows"])

    def stacked(per_layer) -> torch.Tensor:
        return torch.stack([per_layer(blk.cross) for blk in model.blocks])

    # All layers and heads at once: one (B*N, Dh) @ (Dh, X) matmul per layer and head. Every
    # permutation below keeps the innermost axis in place (ONNX Runtime's fast Transpose path).
    wq = b.const("q.w", stacked(lambda a: (a.q.weight * a.q_scale).reshape(heads, dh, d)))  # (L, H, Dh, D)
    bq = b.const("q.b", stacked(lambda a: (a.q.bias * a.q_scale).reshape(heads, dh, 1)))  # (L, H, Dh, 1)
    wo = b.const("o.w", stacked(lambda a: a.o.weight.T.reshape(heads, dh, d)))  # (L, H, Dh, D)
    k, v = per_head("cross_k"), per_head("cross_v")
    tables = {  # name -> (matmul, 5-D view, permutation to (L, B, ...), final per-batch shape)
        "cross_qk": (b.node("MatMul", [k, wq], ["kq"]), (layers, heads, -1, n, d), [0, 2, 1, 3, 4], (heads * n, d)),
        "cross_qkb": (b.node("MatMul", [k, bq], ["kb"]), (layers, heads, -1, n), [0, 2, 1, 3], (1, heads * n)),
        "cross_ov": (b.node("MatMul", [v, wo], ["vo"]), (layers, heads, -1, n, d), [0, 2, 1, 3, 4], (heads * n, d)),
    }
    for name, (mm, view, perm, final) in tables.items():
        t = b.node("Transpose", [b.node("Reshape", [mm, shape(f"{name}.view.shape", *view)], [f"{name}.view"])],
                   [f"{name}.lb"], perm=perm)
        t = b.node("Reshape", [t, shape(f"{name}.all.shape", layers, -1, *final)], [f"{name}.all"])
        for i in range(layers):
            b.node("Gather", [t, b.const(f"{name}.{i}", np.array(i, np.int64))], [f"{name}_{i}"], axis=0)
    return _model(b, "personvlm_cross_ort", spec, opset)


def _model(b: _Builder, name: str, spec: GraphSpec, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(b.nodes, name, _values(spec.inputs), _values(spec.outputs), b.inits)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB, 1)]
    # The lowest IR version the opset allows, not the installed onnx's newest: older runtimes load it.
    return helper.make_model(graph, opset_imports=opsets, producer_name="personvlm-toolkit",
                             ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True))


def _values(tensors: dict) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), list(t.shape))
            for name, t in tensors.items()]


def export_ort_decoder(model: PersonVLM, specs: dict[str, GraphSpec], out: Path, opset: int) -> None:
    """Build and save the ONNX Runtime cross tables and decoder step (``cross_ort``, ``decoder_ort``) into ``out``."""
    with torch.no_grad():
        model = model.eval()
        onnx.save(build_ort_cross(model, specs["cross_ort"], opset), str(out / specs["cross_ort"].file))
        onnx.save(build_ort_decoder(model, specs["decoder_ort"], opset), str(out / specs["decoder_ort"].file))
