"""FP16 variants of the graphs with ONNX Runtime's float16 converter (FP32 inputs and outputs).

First cut (the FP16 precision plan is refined in ``export/precision_plan.py``): LayerNorm,
Softmax and the fused attention/normalisation kernels stay FP32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvlm.model import PersonVLM

from .spec import GraphSpec
from .variants import Variant, VariantOptions

PORTABLE = ("encoder", "decoder")  # the ONNX Runtime graphs (fused com.microsoft kernels) stay FP32 for now
FP32_OPS = ("LayerNormalization", "SkipLayerNormalization", "Softmax", "MultiHeadAttention", "Resize")


def build_fp16(model: PersonVLM, out: Path, specs: dict[str, GraphSpec], options: VariantOptions) -> Variant:
    """Convert every graph in ``specs`` to FP16 next to its FP32 file (``encoder.fp16.onnx``, ...)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    graphs: dict[str, str] = {}
    for name, spec in specs.items():
        if name not in PORTABLE:
            continue
        src = out / spec.file
        dst = src.with_name(src.stem + ".fp16.onnx")
        proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=list(FP32_OPS))
        del proto.graph.value_info[:]  # stale FP32 types the converter leaves behind; shape inference redoes them
        converted = OnnxModel(proto)
        converted.topological_sort()  # the keep_io_types casts are appended after their consumers
        onnx.save(converted.model, str(dst))
        graphs[name] = dst.name
    plan: dict[str, Any] = {"converter": "onnxruntime.transformers.float16", "fp32_ops": list(FP32_OPS),
                            "io": "float32"}
    return Variant("fp16", graphs, plan)
