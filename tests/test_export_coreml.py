"""CoreML: conversion on Linux (specs checked against the manifest), the manifest entries, the backend.

The conversion needs coremltools (``pip install 'coremltools>=9'``, Linux wheels exist); running
the packages needs macOS on Apple silicon, so those tests are marked ``macos`` and skip elsewhere.
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
        assert float_outputs and all(outputs[n].dataType == fp16 for n in float_outputs)  # FP16 compute


def test_bundle_without_checkpoint_is_refused(tiny_bundle, tmp_path):
    from click.testing import CliRunner

    from export.cli import main

    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["source"]["checkpoint"] = str(tmp_path / "gone.pt")
    (dst / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(main, ["coreml", str(dst)])
    assert res.exit_code == 2 and "source checkpoint" in res.output and "gone.pt" in res.output
    assert not list(dst.glob("*.mlpackage")) and not list(dst.glob(".coreml.tmp-*"))


def test_existing_packages_need_force(coreml_bundle):
    from export.coreml import export_coreml

    bundle, _ = coreml_bundle
    with pytest.raises(FileExistsError, match="--force"):
        export_coreml(bundle, progress=False)


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
