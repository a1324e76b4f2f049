"""INT8 variants of the graphs for ONNX Runtime on CPU (AVX-512 VNNI / AVX2), with ORT's own quantization tools.

- Encoder: static QDQ (``quantize_static``), per-channel symmetric INT8 weights, UINT8
  activations calibrated (MinMax) on images of the model's own kind: synthetic person crops
  (another seed than the verification images) or the images of a ``--calibration`` JSONL.
  ``quant_pre_process`` first (ORT's shape inference and basic graph optimisation).
  Only the op types in ``ENCODER_OPS`` are quantized: see the measurements there.
- Decoder: dynamic quantization (``quantize_dynamic``) of the MatMuls with constant
  weights, per ``DECODER_GRAPHS``; the cross tables and the attention stay FP32.

Inputs and outputs stay FP32, so the runtime's loop is the same for every precision.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pvlm.model import PersonVLM

from .precisions import SPECS, Variant, VariantOptions
from .spec import GraphSpec

log = logging.getLogger(__name__)

CALIBRATION_SEED = 2  # never the verification images (VERIFY_SEED) nor FP32 parity's (seed 0)
CALIBRATION_BATCH = 8
# Encoder op types run in INT8. Measured on seed-7m's MobileViT (process CPU time, one thread, so
# that the shared machine's load stays out; batch 1 / batch 8, against FP32): Conv only 0.87x /
# 0.88x and Conv+MatMul+Gemm 0.90x / 0.84x (slower: every SiLU between convolutions then runs on
# dequantized floats, unfused); Conv+Sigmoid+Mul (SiLU in INT8 too) 1.14x / 1.21x; adding Add,
# MatMul and Gemm (the transformer blocks' projections and residuals) 1.01x / 1.35x. The batch
# sizes that pay are the throughput ones, so everything below runs in INT8; LayerNormalization,
# Softmax, Transpose and the reshapes stay float. Op types a graph lacks cost nothing. Quality:
# on the quickstart's MobileNetV3 (hard-swish, squeeze-excite) the INT8 encoder costs ~9 points of
# attribute agreement (0.904 with it, 0.991 without) and the export fails its floor: see the note.
# Clip (ReLU6, EfficientNet-Lite's activation) is listed so that ORT's QDQ quantizer folds it into
# the convolution's output range: without it each convolution's output is quantized over its whole
# pre-activation range. Trained lite0 quickstart model, INT8 encoder + FP32 decoder, 64 crops
# (/tmp/r3/int8_exp.py, docs/notes/issue-18.md): attribute agreement 0.820 without Clip, 0.923
# with it; percentile calibration 0.926, reduce_range 0.885. Still below the floor: the export
# then falls back to the FP32 encoder (export/precisions.py, PrecisionSpec.fallbacks).
ENCODER_OPS: tuple[str, ...] = ("Conv", "Clip", "Sigmoid", "Mul", "Add", "MatMul", "Gemm")
# Decoder graphs whose weight MatMuls are quantized dynamically. decoder_ort is what ONNX Runtime
# runs; its batch-1 step streams every FP32 weight per token (memory-bound), and INT8 weights make
# seed-7m 1.37x faster end to end at batch 1 on their own (CPU time, one thread), the quickstart's
# small preset 1.31x at batch 32, at 0.991 attribute agreement (docs/notes/issue-18.md).
# The portable decoder (TensorRT/Triton's graph) and cross_ort (once per batch) stay FP32.
DECODER_GRAPHS: tuple[str, ...] = ("decoder_ort",)


class _Reader:
    """``CalibrationDataReader`` over normalised (N, 3, H, W) float32 images, in batches."""

    def __init__(self, images: np.ndarray, batch: int = CALIBRATION_BATCH):
        self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {"pixels": batch}


def calibration_images(model: PersonVLM, options: VariantOptions) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalised calibration images and where they came from (for the plan).

    ``options.calibration``: the first ``calibration_images`` readable images of that JSONL
    (pvlm's dataset format); otherwise synthetic person crops with :data:`CALIBRATION_SEED`.
    """
    from pvlm.data import load_jsonl, normalize, resize_rgb

    cfg = model.cfg
    n = options.calibration_images
    if options.calibration is not None:
        from PIL import Image

        records = load_jsonl(options.calibration)[:n]
        if not records:
            raise ValueError(f"{options.calibration}: no readable images to calibrate INT8 on")
        crops = []
        for r in records:
            with Image.open(r.image) as im:
                crops.append(resize_rgb(im, cfg.image_size))
        return normalize(np.stack(crops), cfg.mean, cfg.std), {"source": str(options.calibration),
                                                               "images": len(crops)}
    from .validate import parity_images

    # parity_images' last quarter is uniform noise: calibrate on its person crops only.
    images = parity_images(model, n + n // 3 + 1, seed=CALIBRATION_SEED)[:n]
    return images, {"source": "synthetic person crops", "seed": CALIBRATION_SEED, "images": len(images)}


def score_matmuls(path: Path) -> list[str]:
    """Names of the attention-score MatMuls (those feeding a Softmax; ``export/precision_plan.py``'s rule).

    Kept float: quantized, ORT fuses DQ -> Softmax -> Q into QLinearSoftmax, which ran 5x slower than
    the float Softmax on these CPUs (seed-7m encoder, batch 32: 83.6 ms against 16.1 ms, ORT profiler;
    without it the encoder took 512 instead of 540 ms at batch 32 and 21.8 instead of 25.5 ms at batch 1).
    Unnamed nodes get the plan's names, written back to ``path`` so the quantizer sees the same ones.
    """
    import onnx

    from .precision_plan import PlanRules, fp32_nodes

    model = onnx.load(str(path), load_external_data=False)
    unnamed = any(not n.name for n in model.graph.node)
    plan = fp32_nodes(model, PlanRules(ops=False, scores=True, logits=False))
    if unnamed:
        onnx.save(model, str(path))
    return [n.name for n in plan if n.op_type in ("MatMul", "FusedMatMul", "Gemm")]


def head_nodes(path: Path, op_types: tuple[str, ...]) -> list[str]:
    """Names of the ``op_types`` nodes after the backbone's last convolution: the projector and the
    cross-attention K/V projections, whose outputs every decoder step reads (kept FP32)."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node  # topologically sorted
    last_conv = max((i for i, n in enumerate(nodes) if n.op_type == "Conv"), default=-1)
    return [n.name for n in nodes[last_conv + 1:] if n.op_type in op_types]


def quantize_encoder(src: Path, dst: Path, images: np.ndarray, op_types: tuple[str, ...] = ENCODER_OPS,
                     nodes_to_exclude: list[str] | None = None) -> dict[str, Any]:
    """Static QDQ quantization of ``src`` into ``dst``; returns what was quantized.

    ``nodes_to_exclude`` defaults to :func:`head_nodes` and :func:`score_matmuls` (pass ``[]`` to quantize them too).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="pvlm-int8-") as tmp:
        pre = _pre_process(src, Path(tmp))
        if nodes_to_exclude is None:
            nodes_to_exclude = score_matmuls(pre) + head_nodes(pre, op_types)
        quantize_static(
            str(pre), str(dst), _Reader(images), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=nodes_to_exclude or [], calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
    return {"method": "static QDQ", "calibration": "MinMax", "per_channel": True, "activations": "uint8",
            "weights": "int8", "op_types": list(op_types), "nodes_excluded": len(nodes_to_exclude or []),
            "nodes_quantized": _count_quantized(dst, op_types)}


def quantize_decoder(src: Path, dst: Path) -> dict[str, Any]:
    """Dynamic quantization of the weight MatMuls of a decoder graph (activations quantized per call)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="pvlm-int8-") as tmp:
        # The contrib ops (MultiHeadAttention, SkipLayerNormalization) have no ONNX shape inference: say the type.
        quantize_dynamic(str(_pre_process(src, Path(tmp))), str(dst), op_types_to_quantize=["MatMul"],
                         per_channel=False, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return {"method": "dynamic", "weights": "int8", "op_types": ["MatMul"], "nodes_quantized": _count_quantized(dst)}


def _pre_process(src: Path, tmp: Path) -> Path:
    """ORT's pre-quantization pass (ONNX shape inference, basic optimisation) into ``tmp``.

    Symbolic shape inference is skipped: the quantizers here need only the element types,
    which ONNX shape inference gives.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / f"{src.stem}.pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    return pre


def _count_quantized(path: Path, op_types: tuple[str, ...] = ()) -> dict[str, int]:
    """Nodes per op type that run quantized (QDQ: an ``op_types`` node fed by DequantizeLinear; dynamic: integer MatMuls)."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    dq = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    counts: dict[str, int] = {}
    for n in nodes:
        if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") or (
                n.op_type in op_types and any(i in dq for i in n.input)):
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def build_int8(model: PersonVLM, out: Path, specs: dict[str, GraphSpec], options: VariantOptions) -> Variant:
    """Write ``encoder.int8.onnx`` (and the decoder graphs of :data:`DECODER_GRAPHS`) next to the FP32 files."""
    import onnxruntime

    images, source = calibration_images(model, options)
    graphs: dict[str, str] = {}
    plan: dict[str, Any] = {"tool": f"onnxruntime.quantization {onnxruntime.__version__}", "calibration": source}
    spec = SPECS["int8"]
    for name in ("encoder", *DECODER_GRAPHS):
        if name not in specs:
            continue
        src, dst = out / specs[name].file, out / spec.file(specs[name].file)
        plan[name] = quantize_encoder(src, dst, images) if name == "encoder" else quantize_decoder(src, dst)
        graphs[name] = dst.name
    plan["fp32"] = [name for name in specs if name not in graphs]
    return Variant("int8", graphs, plan)
