"""Which nodes of a graph stay FP32 when the rest runs in FP16: one function, two consumers.

``fp32_nodes(model)`` reads an ONNX graph and returns the nodes to keep in FP32, each with
its reason. ONNX Runtime's float16 converter gets their names as ``node_block_list``
(``export/fp16.py``); the TensorRT build marks the layers producing their outputs FP32
under ``precision_constraints="obey"`` (``export/trt.py``). The rules are about numerics,
not about a particular model, so they apply to every graph the export writes:

- normalisation (LayerNormalization and ONNX Runtime's fused variants): the variance of a
  256-wide row of activations in the hundreds overflows FP16's 65504;
- Softmax and the attention scores feeding it (the score MatMul and the mask/bias ops between
  them): exp() of FP16 scores loses the small differences greedy decoding depends on, and a
  -1e4 mask added to large scores must not round;
- reductions over many elements (ReduceMean/ReduceSum/ReduceMax): FP16 accumulators;
- the logits head (the MatMul/Gemm producing ``logits``) and ArgMax: FP16 logits are spaced
  0.03 apart near |x|=64, so near-ties flip the greedy choice;
- ops without FP16 kernels on ONNX Runtime's CPU provider (``Resize``, ``Range``, fused
  com.microsoft attention), so the converted graph runs wherever the FP32 one runs.

Measured on the bundles (README "FP16, TensorRT and CoreML"): the rules above keep seed-7m's
MobileViT encoder finite; dropping the score and logits rules costs exact sequences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# op type -> why it stays FP32
OP_RULES: dict[str, str] = {
    "LayerNormalization": "normalisation statistics (variance overflows FP16)",
    "SkipLayerNormalization": "normalisation statistics (variance overflows FP16)",
    "SimplifiedLayerNormalization": "normalisation statistics (variance overflows FP16)",
    "SkipSimplifiedLayerNormalization": "normalisation statistics (variance overflows FP16)",
    "GroupNormalization": "normalisation statistics (variance overflows FP16)",
    "InstanceNormalization": "normalisation statistics (variance overflows FP16)",
    "Softmax": "softmax (exp of FP16 scores loses the differences greedy decoding needs)",
    "ReduceMean": "reduction over many elements (FP16 accumulator)",
    "ReduceSum": "reduction over many elements (FP16 accumulator)",
    "ReduceMax": "reduction feeding a mask or max (kept exact)",
    "ArgMax": "greedy choice on the logits (FP16 near-ties flip it)",
    "Resize": "no FP16 kernel on ONNX Runtime CPU",
    "Range": "index arithmetic, no FP16 kernel",
    "MultiHeadAttention": "fused attention (softmax inside)",
    "GroupQueryAttention": "fused attention (softmax inside)",
}
# Between a score MatMul and its Softmax: the mask, bias and scale ops (walked upstream).
_SCORE_PATH = {"Add", "Sub", "Mul", "Div", "Where", "Concat", "Reshape", "Transpose", "Cast", "Squeeze", "Unsqueeze"}
_PRODUCERS = {"MatMul", "Gemm", "FusedMatMul"}
LOGITS = "logits"


@dataclass(frozen=True)
class Fp32Node:
    """One node kept in FP32: its name, op type, outputs (TensorRT matches layers by them) and why."""

    name: str
    op_type: str
    outputs: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Manifest form."""
        return {"name": self.name, "op_type": self.op_type, "reason": self.reason}


@dataclass(frozen=True)
class PlanRules:
    """Which rule groups apply (all on by default; the measurements in the README switch them off one at a time)."""

    ops: bool = True
    scores: bool = True
    logits: bool = True


def fp32_nodes(model: Any, rules: PlanRules = PlanRules()) -> list[Fp32Node]:
    """The nodes of ``model`` (an ``onnx.ModelProto``) that stay FP32, in graph order, with reasons.

    Nodes without a name cannot be addressed by the converter; they get one here
    (``<op_type>_<index>``), so call this on the model you then convert.
    """
    nodes = list(model.graph.node)
    for i, n in enumerate(nodes):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    producer = {out: n for n in nodes for out in n.output}
    keep: dict[str, str] = {}
    if rules.ops:
        for n in nodes:
            if n.op_type in OP_RULES:
                keep.setdefault(n.name, OP_RULES[n.op_type])
    if rules.scores:
        for n in nodes:
            if n.op_type == "Softmax":
                for name in _score_path(n, producer):
                    keep.setdefault(name, "attention scores feeding a softmax (mask -1e4 + large dot products)")
    if rules.logits:
        for out in model.graph.output:
            if out.name == LOGITS and out.name in producer:
                for name in _upstream(producer[out.name], producer, {"Reshape", "Squeeze", "Cast"}):
                    keep.setdefault(name, "logits head (FP16 near-ties flip the greedy choice)")
    return [Fp32Node(n.name, n.op_type, tuple(n.output), keep[n.name]) for n in nodes if n.name in keep]


def _upstream(node: Any, producer: dict[str, Any], through: set[str]) -> list[str]:
    """``node`` and its producers through ``through`` ops, up to and including the first MatMul/Gemm."""
    out, stack, seen = [], [node], set()
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n is not node and n.op_type not in through and n.op_type not in _PRODUCERS:
            continue  # masks, constants, index arithmetic: not part of the value path
        out.append(n.name)
        if n is node or n.op_type in through:
            stack.extend(producer[i] for i in n.input if i in producer)
    return out


def _score_path(softmax: Any, producer: dict[str, Any]) -> list[str]:
    """The ops between a Softmax and the MatMul(s) computing its scores, those MatMuls included."""
    names = _upstream(softmax, producer, _SCORE_PATH)
    return [n for n in names if n != softmax.name]


def fp32_outputs(plan: Iterable[Fp32Node]) -> set[str]:
    """Tensor names produced by the plan's nodes (what the TensorRT build matches layers on)."""
    return {o for node in plan for o in node.outputs}


def summarize(plan: list[Fp32Node]) -> dict[str, Any]:
    """Compact manifest form: counts per reason and the node names."""
    by_reason: dict[str, int] = {}
    for node in plan:
        by_reason[node.reason] = by_reason.get(node.reason, 0) + 1
    return {"nodes": [n.name for n in plan], "by_reason": by_reason}
