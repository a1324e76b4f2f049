"""FP16 variants of the graphs with ONNX Runtime's float16 converter (FP32 inputs and outputs).

Which nodes stay FP32 is decided by ``export/precision_plan.py`` (the TensorRT build uses
the same plan). Every graph of the bundle is converted, the ONNX Runtime ones
(``cross_ort``, ``decoder_ort``) only when the converted graph loads in ONNX Runtime: their
fused com.microsoft kernels must have FP16 implementations on the provider that verifies
them (CPU here). A graph that does not load stays FP32 and the reason goes into the plan;
``runtime.backends.ort.choose_decoder`` then runs the portable FP16 decoder.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pvlm.model import PersonVLM

from .precision_plan import PlanRules, fp32_nodes, summarize
from .precisions import SPECS, Variant, VariantOptions
from .spec import GraphSpec

log = logging.getLogger(__name__)

CONVERTER = "onnxruntime.transformers.float16"
# The ONNX Runtime graphs are all-or-nothing: cross_ort's tables feed decoder_ort, and the runtime
# runs both or neither (``choose_decoder``).
ORT_PAIR = ("cross_ort", "decoder_ort")


def convert_fp16(src: Path, dst: Path, rules: PlanRules = PlanRules()) -> dict[str, Any]:
    """Convert one ONNX file to FP16 (FP32 I/O) keeping the precision plan's nodes FP32; returns the plan summary."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = onnx.load(str(src))
    plan = fp32_nodes(proto, rules)  # names unnamed nodes in ``proto``: convert this very proto
    proto = convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST),
                                     node_block_list=[n.name for n in plan])
    del proto.graph.value_info[:]  # stale FP32 types the converter leaves behind; shape inference redoes them
    converted = OnnxModel(proto)
    converted.topological_sort()  # the keep_io_types casts are appended after their consumers
    onnx.save(converted.model, str(dst))
    return summarize(plan)


def loads_in_onnxruntime(path: Path) -> str | None:
    """None when ONNX Runtime (CPU) can create a session for ``path``, else its error's first line."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own untyped errors
        return str(e).strip().splitlines()[0][:300]
    return None


def build_fp16(model: PersonVLM, out: Path, specs: dict[str, GraphSpec], options: VariantOptions,
               rules: PlanRules = PlanRules()) -> Variant:
    """Convert every graph in ``specs`` to FP16 next to its FP32 file (``encoder.fp16.onnx``, ...)."""
    graphs: dict[str, str] = {}
    plans: dict[str, Any] = {}
    kept_fp32: dict[str, str] = {}
    for name, spec in specs.items():
        src, dst = out / spec.file, out / SPECS["fp16"].file(spec.file)
        plans[name] = convert_fp16(src, dst, rules)
        problem = loads_in_onnxruntime(dst)
        if problem:
            kept_fp32[name] = f"the FP16 graph does not load in ONNX Runtime CPU: {problem}"
            dst.unlink()
            continue
        graphs[name] = dst.name
    if any(g in graphs for g in ORT_PAIR) and not all(g in graphs for g in ORT_PAIR if g in specs):
        for g in ORT_PAIR:
            if g in graphs:
                (out / graphs.pop(g)).unlink()
                kept_fp32.setdefault(g, "its partner graph stays FP32 (cross_ort and decoder_ort run together)")
    for name, why in kept_fp32.items():
        log.info("fp16: %s stays FP32 (%s)", name, why)
    plan: dict[str, Any] = {"converter": CONVERTER, "io": "float32", "rules": asdict(rules),
                            "fp32_nodes": plans, "kept_fp32": kept_fp32}
    return Variant("fp16", graphs, plan)
