"""CoreML ML programs of the two graphs (``pvlm-export coreml CKPT|BUNDLE``), for Apple silicon.

coremltools converts from PyTorch: the encoder and the one-step decoder modules of
``export/graphs.py`` are traced (``torch.jit.trace``) and converted to ML programs with FP16
compute (or FP32). FP16 compute follows the precision plan of the ONNX variants and the
TensorRT build (``export/precision_plan.py``): the converted program is read as an ONNX-like
graph, ``fp32_nodes`` picks the ops to keep (normalisation, softmax and the scores feeding it,
reductions, the logits head, argmax), and coremltools' ``FP16ComputePrecision`` op selector
leaves exactly those in FP32. The KV cache is a plain input/output, exactly as in ``decoder.onnx``
(``cache_k``/``cache_v`` in, ``new_k``/``new_v`` out, the runtime stores each step's K/V):
this works on every macOS 13+/iOS 16+ target, where CoreML's stateful buffers would need
macOS 15/iOS 18 and a different graph. Flexible dimensions are ``RangeDim``s from the
bundle's limits (batch 1..max_batch, cache 1..max_new_tokens). Token ids and positions are
int32 (CoreML has no int64 inputs); everything else keeps the ONNX graphs' names and shapes.
Core ML refuses tensors above rank 5, so MobileViT blocks are converted with the rank-5
unfold/fold of ``export/mobilevit.py``.

A bundle argument needs its source checkpoint (``Bundle.find_source_checkpoint``).
Packages are written to a temporary folder and renamed into the bundle, then listed in the
manifest's ``engines`` (format ``coreml-mlpackage``) with the sha256 of the folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from runtime.bundle import Bundle, BundleError, GraphEntry, Limits, sha256_path
from runtime.engines import Engine

from .manifest import artifact_entry, record_engines
from .precision_plan import Fp32Node, fp32_nodes, summarize

log = logging.getLogger(__name__)

GRAPHS = ("encoder", "decoder")
MIN_TARGET = "macOS13"  # ML programs with FP16 compute
INT_INPUTS = ("tokens", "positions")  # int64 in ONNX, int32 in CoreML
MAX_RANK = 5  # Core ML's limit on any tensor of a program
# MIL op type -> the ONNX op type the precision plan's rules name (other types are passed through).
MIL_TO_ONNX = {
    "layer_norm": "LayerNormalization", "instance_norm": "InstanceNormalization", "softmax": "Softmax",
    "reduce_mean": "ReduceMean", "reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_argmax": "ArgMax",
    "matmul": "MatMul", "linear": "Gemm", "add": "Add", "sub": "Sub", "mul": "Mul", "real_div": "Div",
    "select": "Where", "concat": "Concat", "reshape": "Reshape", "transpose": "Transpose", "cast": "Cast",
    "squeeze": "Squeeze", "expand_dims": "Unsqueeze", "range_1d": "Range", "upsample_bilinear": "Resize",
    "resize_bilinear": "Resize",
}


class CoreMLUnavailable(RuntimeError):
    """coremltools is missing; the message says how to get it."""


def _coremltools() -> Any:
    quiet = logging.getLogger("coremltools")
    level = quiet.level
    try:
        # off macOS its import warns that the runtime half is missing, which only running needs
        quiet.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
    except ImportError:
        raise CoreMLUnavailable("coremltools is not installed: pip install 'personvlm-toolkit[coreml]' "
                                "(coremltools>=9)") from None
    finally:
        quiet.setLevel(level)
    return ct


def export_coreml(source: str | Path, out_dir: str | Path | None = None, *, precision: str = "fp16",
                  force: bool = False, progress: bool = True) -> list[Engine]:
    """Convert the encoder and decoder step to ``.mlpackage``s in a bundle; returns their manifest entries.

    ``source``: a checkpoint (``out_dir`` or CHECKPOINT without .pt must then be its exported bundle)
    or a bundle directory (its ``source.checkpoint`` is converted).
    """
    from pvlm.checkpoint import load_checkpoint

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    ct = _coremltools()
    bundle, checkpoint = _bundle_and_checkpoint(Path(source), out_dir)
    existing = [e for e in bundle.engines if e.format == "coreml-mlpackage"]
    if existing and not force:
        raise FileExistsError(f"{bundle.root}: already has CoreML packages ({', '.join(e.file for e in existing)}); "
                              "use --force to replace them")
    model, _, _ = load_checkpoint(checkpoint)
    model.eval()
    tmp = Path(tempfile.mkdtemp(prefix=".coreml.tmp-", dir=bundle.root))
    try:
        built = _convert_all(ct, model, bundle, checkpoint, precision, tmp, progress)
        for e in built:
            dst = bundle.root / e.file
            if dst.exists():  # the old package steps aside (into tmp, removed below) so one is always in place
                dst.rename(tmp / f"{e.file}.old")
            (tmp / e.file).rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record_engines(bundle, built, lambda e: e.format == "coreml-mlpackage")
    return built


def _bundle_and_checkpoint(source: Path, out_dir: str | Path | None) -> tuple[Bundle, Path]:
    """The bundle to add packages to and the checkpoint to convert, from a bundle or a checkpoint argument."""
    if not source.is_dir():
        return Bundle.load(out_dir or source.with_suffix("")), source
    bundle = Bundle.load(out_dir or source)
    try:
        return bundle, bundle.find_source_checkpoint()
    except BundleError as e:
        raise BundleError(f"{bundle.root}: {e}; pass the checkpoint instead "
                          "(pvlm-export coreml CKPT --out BUNDLE)") from None


def _convert_all(ct: Any, model: Any, bundle: Bundle, checkpoint: Path, precision: str, tmp: Path,
                 progress: bool) -> list[Engine]:
    """Both graphs converted and saved into ``tmp``; their manifest entries."""
    import torch
    from tqdm import tqdm

    from .graphs import DecoderStepGraph, EncoderGraph
    from .mobilevit import patch_mobilevit_blocks

    modules = {"encoder": EncoderGraph(model), "decoder": DecoderStepGraph(model)}
    patch_mobilevit_blocks(modules["encoder"].model, max_rank=MAX_RANK)
    built: list[Engine] = []
    for graph in tqdm(GRAPHS, desc="coreml", unit="graph", disable=not progress):
        file = f"{graph}.{precision}.mlpackage"
        selector = PlanSelector() if precision == "fp16" else None
        mlmodel = convert_graph(ct, modules[graph], bundle.graph(graph), bundle.limits, precision, selector,
                                progress=progress)
        mlmodel.save(str(tmp / file))
        plan = summarize(selector.plan) if selector else None
        built.append(Engine("coreml-mlpackage", graph, file, precision, sha256_path(tmp / file),
                            artifact_entry(tmp, file)["bytes"],
                            {"coremltools": ct.__version__, "minimum_deployment_target": MIN_TARGET},
                            {"compute_precision": precision, "convert_to": "mlprogram",
                             "fp32_plan_ops": len(selector.plan) if selector else 0,
                             "fp32_by_reason": plan["by_reason"] if plan else {},
                             "kv_cache": "inputs/outputs (cache_k/cache_v in, new_k/new_v out)",
                             "source": str(checkpoint), "torch": torch.__version__},
                            coreml_io(mlmodel)))
    return built


class PlanSelector:
    """``FP16ComputePrecision`` op selector: False (stay FP32) for the precision plan's ops.

    coremltools calls it once per op of a program; the first call of a block reads the whole
    block as an ONNX-like graph and runs :func:`export.precision_plan.fp32_nodes` on it.
    ``plan`` holds the result (op names as in the program at that pass, with the reasons).
    """

    def __init__(self) -> None:
        self.plan: list[Fp32Node] = []
        self._block: Any = None
        self._fp32: set[str] = set()

    def __call__(self, op: Any) -> bool:
        """True to run ``op`` in FP16."""
        block = op.enclosing_block
        if block is not self._block:
            self._block = block
            self.plan = fp32_nodes(mil_block_as_onnx(block))
            self._fp32 = {n.name for n in self.plan}
        return op.name not in self._fp32


def mil_block_as_onnx(block: Any) -> Any:
    """A MIL block's ops as an ``onnx.ModelProto`` graph (op types renamed by ``MIL_TO_ONNX``), for the plan."""
    from onnx import helper

    nodes = []
    for op in block.operations:
        inputs = [v.name for v in op.get_flattened_inputs()]
        nodes.append(helper.make_node(MIL_TO_ONNX.get(op.op_type, op.op_type), inputs,
                                      [v.name for v in op.outputs], name=op.name))
    outputs = [helper.make_empty_tensor_value_info(v.name) for v in block.outputs]
    return helper.make_model(helper.make_graph(nodes, "mil", [], outputs))


def convert_graph(ct: Any, module: Any, spec: GraphEntry, limits: Limits, precision: str,
                  selector: PlanSelector | None = None, progress: bool = True) -> Any:
    """Trace one graph module and convert it to an ML program with the spec's names and flexible dims.

    FP16 keeps the ops ``selector`` declines in FP32 (a fresh :class:`PlanSelector` by default).
    ``progress``: coremltools' own progress bars on stderr.
    """
    import numpy as np
    import torch

    ranges = {"batch": limits.max_batch, "cache": limits.max_new_tokens}
    examples, inputs = [], []
    for name, t in spec.inputs.items():
        shape = [2 if d == "batch" else 4 if d == "cache" else int(d) for d in t.shape]
        flexible = [ct.RangeDim(1, ranges[d], default=1) if isinstance(d, str) else int(d) for d in t.shape]
        if t.dtype == "int64":
            examples.append(torch.zeros(shape, dtype=torch.int64))
            inputs.append(ct.TensorType(name=name, shape=flexible, dtype=np.int32))
        else:
            examples.append(torch.randn(shape))
            inputs.append(ct.TensorType(name=name, shape=flexible, dtype=np.float32))
    outputs = [ct.TensorType(name=name) for name in spec.outputs]
    compute = (ct.transform.FP16ComputePrecision(op_selector=selector or PlanSelector()) if precision == "fp16"
               else ct.precision.FLOAT32)
    stderr = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), stderr, torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), tuple(examples), check_trace=False)
        return ct.convert(traced, inputs=inputs, outputs=outputs, convert_to="mlprogram", compute_precision=compute,
                          minimum_deployment_target=getattr(ct.target, MIN_TARGET), skip_model_load=True)


def coreml_io(mlmodel: Any) -> dict[str, Any]:
    """Input/output names -> {dtype, shape} read back from the converted spec (flexible dims as [lo, hi])."""
    spec = mlmodel.get_spec()
    types = {65568: "float32", 65552: "float16", 131104: "int32"}  # ArrayFeatureType.ArrayDataType values

    def one(feature: Any) -> dict[str, Any]:
        arr = feature.type.multiArrayType
        ranges = arr.shapeRange.sizeRanges
        shape = ([[int(r.lowerBound), int(r.upperBound)] if r.lowerBound != r.upperBound else int(r.lowerBound)
                  for r in ranges] if len(ranges) else [int(d) for d in arr.shape])
        return {"dtype": types.get(arr.dataType, str(arr.dataType)), "shape": shape or None}  # None: set at run time

    return {"inputs": {f.name: one(f) for f in spec.description.input},
            "outputs": {f.name: one(f) for f in spec.description.output}}
