"""The decoder step rebuilt for ONNX Runtime: fused attention over a cache that never moves.

Same arithmetic as :meth:`pvlm.PersonVLM.decode_step` (parity-checked at export), written
with ONNX Runtime's ``com.microsoft`` kernels, which ONNX Runtime runs on CPU and CUDA:

- ``MultiHeadAttention`` with ``past_sequence_length`` (and an all-zero ``cache_indirection``,
  which the CUDA kernel requires before it shares buffers): past and present K/V are ONE buffer
  per layer of shape (B, H, capacity, Dh). The runtime binds the same buffer (IO binding)
  as the ``past_*`` input and the ``present_*`` output, the kernel appends this token's K/V
  in place at slot ``position``, and nothing is copied per step on any device.
- ``SkipLayerNormalization`` (projection bias + residual add + next LayerNorm in one node)
  and ``BiasGelu``: 65 nodes per step after ONNX Runtime's optimiser, against 180 for the
  portable ``decoder.onnx``, whose per-node dispatch dominated batch-1 latency.

Every row of a batch must be at the same ``position`` (the runtime's greedy loop starts all
rows together and drops finished ones). TensorRT and Triton keep using the portable graph.
The graph is written with ``onnx.helper`` because the exporters emit no contrib ops.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from pvlm.model import PersonVLM

from .spec import GraphSpec

CONTRIB = "com.microsoft"


class _Builder:
    """Accumulates nodes and initializers."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: torch.Tensor | np.ndarray) -> str:
        arr = value.detach().float().numpy() if isinstance(value, torch.Tensor) else value
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def weight(self, name: str, linear: torch.nn.Linear, scale: float = 1.0) -> str:
        """A Linear's weight transposed for ``x @ W``."""
        return self.const(name, (linear.weight * scale).T)

    def node(self, op: str, inputs: list[str], outputs: list[str], domain: str | None = None, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, outputs, domain=domain, **attrs))
        return outputs[0]


def build_ort_decoder(model: PersonVLM, spec: GraphSpec, opset: int) -> onnx.ModelProto:
    """The ONNX Runtime decoder step for ``model`` (eval mode) with ``spec``'s names."""
    cfg = model.cfg
    heads = cfg.n_heads
    b = _Builder()
    blocks = list(model.blocks)

    def skip_norm(mm: str, residual: str, norm: torch.nn.LayerNorm, bias: torch.Tensor, name: str) -> tuple[str, str]:
        """LayerNorm(mm + bias + residual) and the sum itself (the next residual)."""
        b.node("SkipLayerNormalization",
               [mm, residual, b.const(f"{name}.gamma", norm.weight), b.const(f"{name}.beta", norm.bias),
                b.const(f"{name}.bias", bias)],
               [name, "", "", f"{name}.sum"], domain=CONTRIB, epsilon=norm.eps)
        return name, f"{name}.sum"

    def matmul(x: str, w: str, name: str) -> str:
        return b.node("MatMul", [x, w], [name])

    tok = b.node("Gather", [b.const("tok_emb", model.tok_emb.weight), "tokens"], ["tok_emb.out"])
    pos = b.node("Gather", [b.const("pos_emb", model.pos_emb.weight), "positions"], ["pos_emb.out"])
    x = b.node("Add", [tok, pos], ["embed"])  # (B, 1, D)
    # Rows share the step's position: the cache holds `position` filled slots before this token.
    past = b.node("Cast", [b.node("ReduceMax", ["positions"], ["positions.max"], keepdims=0)], ["past_length"],
                  to=TensorProto.INT32)
    first = blocks[0].ln1
    h = b.node("LayerNormalization", [x, b.const("l0.ln1.gamma", first.weight), b.const("l0.ln1.beta", first.bias)],
               ["l0.ln1"], axis=-1, epsilon=first.eps)
    for i, blk in enumerate(blocks):
        sa, ca, p = blk.attn, blk.cross, f"l{i}"
        w_qkv = b.const(f"{p}.qkv.w", torch.cat([sa.q.weight * sa.q_scale, sa.k.weight, sa.v.weight]).T)
        b_qkv = b.const(f"{p}.qkv.b", torch.cat([sa.q.bias * sa.q_scale, sa.k.bias, sa.v.bias]))
        b.node("Split", [matmul(h, w_qkv, f"{p}.qkv")], [f"{p}.q", f"{p}.k", f"{p}.v"], axis=-1, num_outputs=3)
        b.node("MultiHeadAttention",
               [f"{p}.q", f"{p}.k", f"{p}.v", b_qkv, "", "", f"past_k_{i}", f"past_v_{i}", past, "cache_indirection"],
               [f"{p}.self", f"present_k_{i}", f"present_v_{i}"], domain=CONTRIB, num_heads=heads, scale=1.0)
        h, x = skip_norm(matmul(f"{p}.self", b.weight(f"{p}.self.o.w", sa.o), f"{p}.self.o"), x, blk.ln2, sa.o.bias,
                         f"{p}.ln2")
        q = b.node("Add", [matmul(h, b.weight(f"{p}.cross.q.w", ca.q), f"{p}.cross.qm"),
                           b.const(f"{p}.cross.q.b", ca.q.bias)], [f"{p}.cross.q"])
        att = b.node("MultiHeadAttention", [q, f"cross_k_{i}", f"cross_v_{i}"], [f"{p}.cross"], domain=CONTRIB,
                     num_heads=heads, scale=float(ca.q_scale))
        h, x = skip_norm(matmul(att, b.weight(f"{p}.cross.o.w", ca.o), f"{p}.cross.o"), x, blk.ln3, ca.o.bias,
                         f"{p}.ln3")
        fc1, fc2 = blk.mlp[0], blk.mlp[3]
        g = b.node("BiasGelu", [matmul(h, b.weight(f"{p}.fc1.w", fc1), f"{p}.fc1"), b.const(f"{p}.fc1.b", fc1.bias)],
                   [f"{p}.gelu"], domain=CONTRIB)
        norm = blocks[i + 1].ln1 if i + 1 < len(blocks) else model.ln_f
        h, x = skip_norm(matmul(g, b.weight(f"{p}.fc2.w", fc2), f"{p}.fc2"), x, norm, fc2.bias,
                         f"l{i + 1}.ln1" if i + 1 < len(blocks) else "ln_f")
    logits = matmul(h, b.weight("head.w", model.head), "logits3")
    b.node("Reshape", [logits, b.const("logits.shape", np.array([0, -1], np.int64))], ["logits"])
    b.node("ArgMax", ["logits"], ["next_ids"], axis=-1, keepdims=0)
    graph = helper.make_graph(b.nodes, "personvlm_decoder_ort", _values(spec.inputs), _values(spec.outputs), b.inits)
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid(CONTRIB, 1)]
    # The lowest IR version the opset allows, not the installed onnx's newest: older runtimes load it.
    return helper.make_model(graph, opset_imports=opsets, producer_name="personvlm-toolkit",
                             ir_version=helper.find_min_ir_version_for(opsets, ignore_unknown=True))


def _values(tensors: dict) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), list(t.shape))
            for name, t in tensors.items()]


def export_ort_decoder(model: PersonVLM, spec: GraphSpec, path, opset: int) -> None:
    """Build and save the ONNX Runtime decoder step (weights inline)."""
    with torch.no_grad():
        onnx.save(build_ort_decoder(model.eval(), spec, opset), str(path))
