"""CoreML ML programs of the two graphs (``pvlm-export coreml CKPT|BUNDLE``), for Apple silicon.

coremltools converts from PyTorch: the encoder and the one-step decoder modules of
``export/graphs.py`` are traced (``torch.jit.trace``) and converted to ML programs with FP16
compute (or FP32). The KV cache is a plain input/output, exactly as in ``decoder.onnx``
(``cache_k``/``cache_v`` in, ``new_k``/``new_v`` out, the runtime stores each step's K/V):
this works on every macOS 13+/iOS 16+ target, where CoreML's stateful buffers would need
macOS 15/iOS 18 and a different graph. Flexible dimensions are ``RangeDim``s from the
bundle's limits (batch 1..max_batch, cache 1..max_new_tokens). Token ids and positions are
int32 (CoreML has no int64 inputs); everything else keeps the ONNX graphs' names and shapes.

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

log = logging.getLogger(__name__)

GRAPHS = ("encoder", "decoder")
MIN_TARGET = "macOS13"  # ML programs with FP16 compute
INT_INPUTS = ("tokens", "positions")  # int64 in ONNX, int32 in CoreML


class CoreMLUnavailable(RuntimeError):
    """coremltools is missing; the message says how to get it."""


def _coremltools() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import coremltools as ct
    except ImportError:
        raise CoreMLUnavailable("coremltools is not installed: pip install 'personvlm-toolkit[coreml]' "
                                "(coremltools>=9)") from None
    return ct


def export_coreml(source: str | Path, out_dir: str | Path | None = None, *, precision: str = "fp16",
                  force: bool = False, progress: bool = True) -> list[Engine]:
    """Convert the encoder and decoder step to ``.mlpackage``s in a bundle; returns their manifest entries.

    ``source``: a checkpoint (``out_dir`` or CHECKPOINT without .pt must then be its exported bundle)
    or a bundle directory (its ``source.checkpoint`` is converted).
    """
    import torch
    from tqdm import tqdm

    from pvlm.checkpoint import load_checkpoint

    from .graphs import DecoderStepGraph, EncoderGraph

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    ct = _coremltools()
    source = Path(source)
    if source.is_dir():
        bundle = Bundle.load(out_dir or source)
        try:
            checkpoint = bundle.find_source_checkpoint()
        except BundleError as e:
            raise BundleError(f"{bundle.root}: {e}; pass the checkpoint instead "
                              "(pvlm-export coreml CKPT --out BUNDLE)") from None
    else:
        checkpoint = source
        bundle = Bundle.load(out_dir or source.with_suffix(""))
    existing = [e for e in bundle.engines if e.format == "coreml-mlpackage"]
    if existing and not force:
        raise FileExistsError(f"{bundle.root}: already has CoreML packages ({', '.join(e.file for e in existing)}); "
                              "use --force to replace them")
    model, _, _ = load_checkpoint(checkpoint)
    model.eval()
    limits = bundle.limits
    tmp = Path(tempfile.mkdtemp(prefix=".coreml.tmp-", dir=bundle.root))
    built: list[Engine] = []
    try:
        modules = {"encoder": EncoderGraph(model), "decoder": DecoderStepGraph(model)}
        for graph in tqdm(GRAPHS, desc="coreml", unit="graph", disable=not progress):
            spec = bundle.graph(graph)
            file = f"{graph}.{precision}.mlpackage"
            mlmodel = convert_graph(ct, modules[graph], spec, limits, precision)
            mlmodel.save(str(tmp / file))
            built.append(Engine("coreml-mlpackage", graph, file, precision, sha256_path(tmp / file),
                                artifact_entry(tmp, file)["bytes"],
                                {"coremltools": ct.__version__, "minimum_deployment_target": MIN_TARGET},
                                {"compute_precision": precision, "convert_to": "mlprogram",
                                 "kv_cache": "inputs/outputs (cache_k/cache_v in, new_k/new_v out)",
                                 "source": str(checkpoint), "torch": torch.__version__},
                                coreml_io(mlmodel)))
        for e in built:
            dst = bundle.root / e.file
            if dst.exists():
                shutil.rmtree(dst)
            (tmp / e.file).rename(dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record_engines(bundle, built, lambda e: e.format == "coreml-mlpackage")
    return built


def convert_graph(ct: Any, module: Any, spec: GraphEntry, limits: Limits, precision: str) -> Any:
    """Trace one graph module and convert it to an ML program with the spec's names and flexible dims."""
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
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), tuple(examples), check_trace=False)
        return ct.convert(traced, inputs=inputs, outputs=outputs, convert_to="mlprogram",
                          compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
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
