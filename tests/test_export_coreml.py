"""CoreML: conversion on Linux (specs checked against the manifest), every preset, the precision plan, the backend.

The conversion needs coremltools (``pip install 'coremltools>=9'``, Linux wheels exist); running
the packages needs macOS on Apple silicon, so those tests are marked ``macos`` and skip elsewhere.
Each preset is converted with its own backbone, visual tokens, image size and attention shape
and a one-layer, 64-token decoder (random init): the op set depends on those, not on depth.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("coremltools", reason="coremltools is not installed (pip install 'coremltools>=9')")

from runtime.backends.coreml import on_apple_silicon  # noqa: E402


@pytest.fixture(scope="module")
def coreml_bundle(tiny_bundle, tmp_path_factory, one_torch_thread) -> tuple[Path, str]:
    """A copy of the tiny bundle with FP16 CoreML packages, converted through the CLI from the BUNDLE argument."""
    from click.testing import CliRunner

    from export.cli import main

    dst = tmp_path_factory.mktemp("coreml") / "b"
    shutil.copytree(tiny_bundle, dst)
    res = CliRunner().invoke(main, ["coreml", str(dst)])
    assert res.exit_code == 0, res.output
    return dst, res.output


def test_packages_listed_and_verified(coreml_bundle):
    from runtime.bundle import Bundle

    bundle, output = coreml_bundle
    b = Bundle.load(bundle)  # sha256 of each .mlpackage folder checked
    packages = {e.graph: e for e in b.engines if e.format == "coreml-mlpackage"}
    assert set(packages) == {"encoder", "decoder"}
    for graph, e in packages.items():
        assert e.file == f"{graph}.fp16.mlpackage" and (bundle / e.file).is_dir()
        assert e.precision == "fp16" and e.build["compute_precision"] == "fp16"
        assert e.target["minimum_deployment_target"] == "macOS13"
        assert e.build["fp32_plan_ops"] > 0 and e.build["fp32_by_reason"]
    assert not list(bundle.glob(".coreml.tmp-*"))
    assert "encoder.fp16.mlpackage" in output and "coreml: 2 packages" in output


def test_specs_match_manifest(coreml_bundle):
    """Input/output names, shapes (flexible dims as ranges from the limits) and precision against the manifest."""
    import coremltools as ct

    bundle, _ = coreml_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    limits = manifest["limits"]
    ranges = {"batch": [1, limits["max_batch"]], "cache": [1, limits["max_new_tokens"]]}
    for graph in ("encoder", "decoder"):
        want = manifest["graphs"][graph]
        spec = ct.utils.load_spec(str(bundle / f"{graph}.fp16.mlpackage"))
        assert spec.WhichOneof("Type") == "mlProgram"
        inputs = {f.name: f.type.multiArrayType for f in spec.description.input}
        outputs = {f.name: f.type.multiArrayType for f in spec.description.output}
        assert list(inputs) == list(want["inputs"]) and list(outputs) == list(want["outputs"])
        for name, t in want["inputs"].items():
            arr = inputs[name]
            got = [[r.lowerBound, r.upperBound] if r.lowerBound != r.upperBound else r.lowerBound
                   for r in arr.shapeRange.sizeRanges]
            assert got == [ranges[d] if isinstance(d, str) else d for d in t["shape"]], name
            dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType
            assert arr.dataType == (dtype.INT32 if t["dtype"] == "int64" else dtype.FLOAT32), name
        fp16 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16
        float_outputs = [n for n, t in want["outputs"].items() if t["dtype"] == "float32"]
        # FP16 at the interface (coremltools' default under FP16 compute; the plan's ops inside stay FP32)
        assert float_outputs and all(outputs[n].dataType == fp16 for n in float_outputs)


def test_bundle_without_checkpoint_is_refused(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from export.cli import main

    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["source"].update(checkpoint="gone.pt", checkpoint_absolute=str(tmp_path / "gone-too.pt"))
    (dst / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(main, ["coreml", str(dst)])
    assert res.exit_code == 2 and "source checkpoint" in res.output and "gone.pt" in res.output
    assert not list(dst.glob("*.mlpackage")) and not list(dst.glob(".coreml.tmp-*"))


def test_existing_packages_need_force(coreml_bundle):
    from export.coreml import export_coreml

    bundle, _ = coreml_bundle
    with pytest.raises(FileExistsError, match="--force"):
        export_coreml(bundle, progress=False)


# ---- every preset: the converted programs ----------------------------------------------------------

# The MIL ops the presets' programs use (coremltools 9, target macOS 13). A new op here means a new
# backbone or layer reached the CoreML path: check it runs on the target before adding it.
KNOWN_OPS = {"add", "cast", "clip", "concat", "const", "conv", "expand_dims", "gather", "gelu", "layer_norm", "less",
             "linear", "logical_not", "matmul", "mul", "range_1d", "reduce_argmax", "reduce_mean", "relu",
             "reshape", "select", "shape", "sigmoid", "sigmoid_hard", "silu", "slice_by_index", "softmax", "split",
             "squeeze", "stack", "thresholded_relu", "transpose", "upsample_bilinear"}
# Ops the precision plan keeps FP32 whatever their neighbours (the score and logits MatMuls are checked apart).
PLAN_OPS = {"layer_norm", "softmax", "reduce_mean", "reduce_sum", "reduce_max", "reduce_argmax", "upsample_bilinear"}


def _preset_config(name: str):
    from pvlm import PersonVLMConfig

    return PersonVLMConfig.preset(name, n_layers=1, vocab_size=64, max_len=64)


@pytest.fixture(scope="module")
def converted(one_torch_thread):
    """preset -> graph -> (program, selector): both graphs of every preset converted with FP16 compute."""
    import torch

    from export.coreml import MAX_RANK, PlanSelector, _coremltools, convert_graph
    from export.graphs import DecoderStepGraph, EncoderGraph
    from export.mobilevit import patch_mobilevit_blocks
    from export.spec import graph_specs
    from pvlm import PersonVLM
    from pvlm.preset_names import preset_names
    from runtime.bundle import Limits

    ct, cache = _coremltools(), {}

    def get(preset: str) -> dict:
        if preset not in cache:
            cfg = _preset_config(preset)
            torch.manual_seed(0)
            model = PersonVLM(cfg, load_pretrained=False).eval()
            encoder = EncoderGraph(model)
            patch_mobilevit_blocks(encoder.model, max_rank=MAX_RANK)  # as export_coreml does
            specs, out = graph_specs(cfg), {}
            for graph, module in (("encoder", encoder), ("decoder", DecoderStepGraph(model))):
                selector = PlanSelector()
                mlmodel = convert_graph(ct, module, specs[graph], Limits(8, 16, 64), "fp16", selector, progress=False)
                out[graph] = (mlmodel, selector, specs[graph])
            cache[preset] = out
        return cache[preset]

    assert set(preset_names())  # the parametrization below reads the same list
    return get


def _presets() -> list[str]:
    from pvlm.preset_names import preset_names

    return list(preset_names())


def test_every_preset_is_converted():
    """Completeness: the per-preset conversion test covers every preset of pvlm.model.PRESETS."""
    from pvlm.model import PRESETS

    assert set(_presets()) == set(PRESETS)


@pytest.mark.parametrize("preset", _presets())
def test_preset_programs(converted, preset):
    """Inputs and outputs as the ONNX spec (int32 ids, flexible batch and cache), no tensor above rank 5,
    known ops only, and FP16 compute except the precision plan's ops (norms, softmax and the scores
    feeding it, reductions, the logits head, argmax), which read and write FP32."""
    import coremltools as ct
    from coremltools.converters.mil.mil import types

    dtype = ct.proto.FeatureTypes_pb2.ArrayFeatureType
    ranges = {"batch": [1, 8], "cache": [1, 16]}
    for graph, (mlmodel, selector, spec) in converted(preset).items():
        desc = mlmodel.get_spec().description
        inputs = {f.name: f.type.multiArrayType for f in desc.input}
        assert list(inputs) == list(spec.inputs) and [f.name for f in desc.output] == list(spec.outputs)
        for name, t in spec.inputs.items():
            got = [[r.lowerBound, r.upperBound] if r.lowerBound != r.upperBound else r.lowerBound
                   for r in inputs[name].shapeRange.sizeRanges]
            assert got == [ranges[d] if isinstance(d, str) else d for d in t.shape], (graph, name)
            assert inputs[name].dataType == (dtype.INT32 if t.dtype == "int64" else dtype.FLOAT32), (graph, name)
        ops = list(mlmodel._mil_program.functions["main"].operations)
        assert max(v.rank for op in ops for v in op.outputs) <= 5, graph
        assert {op.op_type for op in ops} <= KNOWN_OPS, (graph, {op.op_type for op in ops} - KNOWN_OPS)
        for op in ops:
            if op.op_type in PLAN_OPS:
                assert op.inputs["x"].dtype == types.fp32, (graph, op.op_type, op.name)
        computed = [op for op in ops if op.op_type in ("conv", "linear")]
        assert sum(op.inputs["x"].dtype == types.fp16 for op in computed) >= len(computed) / 2, graph  # FP16 compute
        reasons = {n.reason for n in selector.plan}
        assert any("normalisation" in r for r in reasons), graph
        if graph == "decoder":
            head = next(op for op in ops if op.op_type == "reduce_argmax").inputs["x"].op
            assert head.op_type == "linear" and head.inputs["x"].dtype == types.fp32  # the logits head
            assert {"ArgMax", "Gemm", "Softmax", "MatMul"} <= {n.op_type for n in selector.plan}
            assert any("attention scores" in r for r in reasons)


def test_fp32_precision_keeps_every_op_fp32(converted, tiny_model, one_torch_thread):
    """--precision fp32: no FP16 anywhere (no selector involved)."""
    from coremltools.converters.mil.mil import types

    from export.coreml import _coremltools, convert_graph
    from export.graphs import DecoderStepGraph
    from export.spec import graph_specs
    from runtime.bundle import Limits

    mlmodel = convert_graph(_coremltools(), DecoderStepGraph(tiny_model), graph_specs(tiny_model.cfg)["decoder"],
                            Limits(4, 8, 64), "fp32", progress=False)
    ops = mlmodel._mil_program.functions["main"].operations
    assert not any(v.dtype == types.fp16 for op in ops for v in op.outputs)


@pytest.mark.skipif(on_apple_silicon(), reason="on Apple silicon the backend starts")
def test_backend_refuses_off_apple_silicon(coreml_bundle, caplog):
    from runtime import Describer
    from runtime.backends import BackendUnavailable

    bundle, _ = coreml_bundle
    with pytest.raises(BackendUnavailable, match="macOS arm64 only"):
        Describer(bundle, backend="coreml", precision="fp16")


@pytest.mark.macos
@pytest.mark.skipif(not on_apple_silicon(), reason="CoreML models run only on macOS arm64")
def test_coreml_matches_onnxruntime(coreml_bundle, tiny_model):
    from export.validate import parity_images
    from runtime import Describer

    bundle, _ = coreml_bundle
    pixels = parity_images(tiny_model, 32, seed=3)
    cm = Describer(bundle, backend="coreml", precision="fp16")
    assert cm.backend_name == "coreml"
    ours, _ = cm.generate_ids(pixels[:8])
    ref, _ = Describer(bundle, backend="onnxruntime-cpu").generate_ids(pixels[:8])
    assert sum(a == b for a, b in zip(ours, ref)) >= 7
    assert Describer(bundle, precision="fp16").backend_name == "coreml"  # auto on Apple silicon
