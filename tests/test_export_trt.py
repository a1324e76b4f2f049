"""TensorRT: profiles, the precision plan on a network, manifest entries, backend choice and fallback, errors.

Everything that needs no GPU runs everywhere; the engine build, parity and timing tests are
marked ``gpu``/``tensorrt`` and skip without an NVIDIA GPU and TensorRT.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("onnxruntime")

from runtime.engines import Engine, mismatch, parse_engines  # noqa: E402


def _has_gpu() -> bool:
    from export.trt import gpu_properties

    return gpu_properties() is not None


HAS_TRT = importlib.util.find_spec("tensorrt") is not None
HAS_GPU = _has_gpu()


def needs_trt(fn):
    """Marked gpu + tensorrt; skipped (with which is missing) without TensorRT or an NVIDIA GPU."""
    missing = [w for w, absent in (("TensorRT (pip install tensorrt from NVIDIA's index)", not HAS_TRT),
                                   ("an NVIDIA GPU", not HAS_GPU)) if absent]
    skip = pytest.mark.skipif(bool(missing), reason="needs " + " and ".join(missing))
    return pytest.mark.gpu(pytest.mark.tensorrt(skip(fn)))


@pytest.fixture()
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def test_profiles_from_manifest(tiny_bundle):
    from export.trt import profile_shapes
    from runtime.bundle import Bundle

    b = Bundle.load(tiny_bundle)
    cfg = b.model
    enc = profile_shapes(b, "encoder")
    h, w = b.preprocess["height"], b.preprocess["width"]
    assert enc == {"pixels": ((1, 3, h, w), (8, 3, h, w), (8, 3, h, w))}  # max batch 8: opt clipped to it
    dec = profile_shapes(b, "decoder", opt_batch=4)
    layers, heads, dh = cfg["n_layers"], cfg["n_heads"], cfg["d_model"] // cfg["n_heads"]
    assert dec["tokens"] == ((1, 1), (4, 1), (8, 1))
    assert dec["cache_k"] == ((layers, 1, heads, 1, dh), (layers, 4, heads, 24, dh), (layers, 8, heads, 24, dh))
    assert set(dec) == set(b.graph("decoder").inputs)


def test_profiles_reject_unknown_dimension(tiny_bundle):
    from export.trt import profile_shapes
    from runtime.bundle import Bundle, Manifest

    b = Bundle.load(tiny_bundle)
    manifest = json.loads(json.dumps(dict(b.manifest.raw)))
    manifest["graphs"]["encoder"]["inputs"]["pixels"]["shape"][2] = "height"
    with pytest.raises(ValueError, match="no profile for dimension"):
        profile_shapes(Bundle(b.root, Manifest.from_dict(manifest)), "encoder")


class _Tensor(SimpleNamespace):
    pass


class _Layer:
    def __init__(self, outputs: list[_Tensor]):
        self.outputs, self.precision, self.types = outputs, None, {}

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> _Tensor:
        return self.outputs[i]

    def set_output_type(self, i: int, t: str) -> None:
        self.types[i] = t


def test_precision_plan_pins_layers_by_tensor(tiny_bundle):
    """The plan's ONNX output tensors select the TensorRT layers; int outputs keep their type."""
    import onnx

    from export.precision_plan import fp32_nodes, fp32_outputs
    from export.trt import mark_fp32_layers

    trt = SimpleNamespace(float32="f32", float16="f16", int32="i32")
    model = onnx.load(str(tiny_bundle / "decoder.onnx"))
    plan = fp32_nodes(model)
    outputs = fp32_outputs(plan)
    layers = [_Layer([_Tensor(name=o, dtype="i32" if n.op_type == "ArgMax" else "f16") for o in n.output])
              for n in model.graph.node]
    network = SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__)
    assert mark_fp32_layers(network, outputs, trt) == len(plan)
    pinned = [layer for layer in layers if layer.precision == "f32"]
    assert len(pinned) == len(plan)
    argmax = next(layer for layer, n in zip(layers, model.graph.node) if n.op_type == "ArgMax")
    assert argmax.precision == "f32" and argmax.types == {}  # indices are not floats
    norm = next(layer for layer, n in zip(layers, model.graph.node) if n.op_type == "LayerNormalization")
    assert norm.types == {0: "f32"}


def test_trt_cli_without_tensorrt_exits_2_and_writes_nothing(tiny_bundle):
    if HAS_TRT and HAS_GPU:
        pytest.skip("TensorRT and a GPU are present: the error path is not reachable")
    from click.testing import CliRunner

    from export.cli import main

    before = {p.name: p.stat().st_mtime_ns for p in tiny_bundle.iterdir()}
    res = CliRunner().invoke(main, ["trt", "--fp16", str(tiny_bundle)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot build TensorRT engines here: no ")
    assert ("TensorRT" in lines[0] and "pip install tensorrt" in lines[0]) or "NVIDIA GPU" in lines[0]
    assert {p.name: p.stat().st_mtime_ns for p in tiny_bundle.iterdir()} == before


def test_trt_cli_bad_bundle_exits_2(tmp_path):
    from click.testing import CliRunner

    from export.cli import main

    res = CliRunner().invoke(main, ["trt", str(tmp_path / "missing")])
    assert res.exit_code == 2 and res.output.startswith("error: ") and "does not exist" in res.output


def test_trt_target_names_what_is_missing(monkeypatch):
    import export.trt as t

    monkeypatch.setattr(t, "gpu_properties", lambda: None)
    with pytest.raises(t.TrtUnavailable, match="NVIDIA GPU") as e:
        t.trt_target()
    if not HAS_TRT:
        assert "no TensorRT and no NVIDIA GPU" in str(e.value) and "pypi.nvidia.com" in str(e.value)


def _fake_build(bundle, graph, precision, target, opt_batch, workspace_gib, fp16_layers=True):
    """Stands in for the GPU part of the build: writes the temporary file a real build writes."""
    import export.trt as t
    from runtime.bundle import sha256_path

    tmp = t._tmp(bundle.root / f"{graph}.{precision}.plan")
    tmp.write_bytes(f"plan for {graph}".encode())
    return Engine("tensorrt-plan", graph, f"{graph}.{precision}.plan", precision, sha256_path(tmp), tmp.stat().st_size,
                  target.to_dict(), {"fp16": precision == "fp16" and fp16_layers, "profiles": [t.profile_shapes(bundle, graph)],
                                     "fp32_layers": 3}, {})


def test_engines_recorded_in_manifest(bundle_copy, monkeypatch):
    import export.trt as t
    from runtime.bundle import Bundle

    monkeypatch.setattr(t, "trt_target", lambda: t.GpuTarget("10.9.0.34", "NVIDIA H200", "9.0"))
    monkeypatch.setattr(t, "_build_one", _fake_build)
    built = t.build_engines(bundle_copy, fp16=True, progress=False)
    assert [e.file for e in built] == ["encoder.fp16.plan", "decoder.fp16.plan"]
    b = Bundle.load(bundle_copy)  # sha256 of the plans verified
    engines = b.engines
    assert {(e.graph, e.precision, e.format) for e in engines} == {("encoder", "fp16", "tensorrt-plan"),
                                                                  ("decoder", "fp16", "tensorrt-plan")}
    assert engines[0].target == {"tensorrt": "10.9.0.34", "gpu": "NVIDIA H200", "compute_capability": "9.0"}
    assert not list(bundle_copy.glob(".*.tmp"))
    with pytest.raises(FileExistsError, match="--force"):
        t.build_engines(bundle_copy, fp16=True, progress=False)
    t.build_engines(bundle_copy, fp16=False, progress=False)  # fp32 engines sit beside the fp16 ones
    assert len(Bundle.load(bundle_copy).engines) == 4


def test_fp16_engines_follow_the_verified_fp16_variant(bundle_copy, monkeypatch):
    """A graph the export's FP16 verification kept FP32 gets an engine without FP16 layers."""
    import export.trt as t
    from runtime.bundle import Bundle

    monkeypatch.setattr(t, "trt_target", lambda: t.GpuTarget("10.9.0.34", "NVIDIA H200", "9.0"))
    monkeypatch.setattr(t, "_build_one", _fake_build)
    assert t.measured_fp32_graphs(Bundle.load(bundle_copy)) == set()  # no FP16 variant: nothing measured
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    shutil.copy(bundle_copy / "encoder.onnx", bundle_copy / "encoder.fp16.onnx")  # stands in for the converted file
    manifest["artifacts"]["encoder.fp16.onnx"] = manifest["artifacts"]["encoder.onnx"]
    manifest["variants"] = {"fp16": {"graphs": {"encoder": "encoder.fp16.onnx"}, "plan": {}}}
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    assert t.measured_fp32_graphs(Bundle.load(bundle_copy)) == {"decoder"}
    built = {e.graph: e for e in t.build_engines(bundle_copy, fp16=True, progress=False)}
    assert built["encoder"].build["fp16"] and not built["decoder"].build["fp16"]


def test_failed_build_leaves_no_engine(bundle_copy, monkeypatch):
    import export.trt as t

    monkeypatch.setattr(t, "trt_target", lambda: t.GpuTarget("10.9.0.34", "NVIDIA H200", "9.0"))

    def fail_on_decoder(bundle, graph, *args, **kwargs):
        if graph == "decoder":
            raise RuntimeError("builder failed")
        return _fake_build(bundle, graph, *args, **kwargs)

    monkeypatch.setattr(t, "_build_one", fail_on_decoder)
    before = (bundle_copy / "manifest.json").read_text()
    with pytest.raises(RuntimeError):
        t.build_engines(bundle_copy, progress=False)
    assert (bundle_copy / "manifest.json").read_text() == before
    assert not list(bundle_copy.glob("*.plan")) and not list(bundle_copy.glob(".*.tmp"))


def test_engine_schema_and_mismatch():
    e = Engine("tensorrt-plan", "encoder", "encoder.fp16.plan", "fp16", "ab", 10,
               {"tensorrt": "10.9.0.34", "gpu": "NVIDIA H200", "compute_capability": "9.0"})
    assert parse_engines([e.to_dict()]) == [e]
    assert mismatch(e, "10.9.0.34", "9.0") is None
    assert "TensorRT 10.9.0.34, this is 10.13.0" in mismatch(e, "10.13.0", "9.0")
    assert "compute capability 9.0 (NVIDIA H200), this GPU is 8.6" in mismatch(e, "10.9.0.34", "8.6")
    with pytest.raises(ValueError, match="missing sha256"):
        parse_engines([{k: v for k, v in e.to_dict().items() if k != "sha256"}])
    with pytest.raises(ValueError, match="unknown format"):
        parse_engines([{**e.to_dict(), "format": "onnx"}])


def _fake_trt_imports(version: str):
    """tensorrt + cuda-python stand-ins that report a GPU (the backend stops before touching it on a mismatch)."""
    trt = SimpleNamespace(__version__=version)
    prop = SimpleNamespace(name=b"NVIDIA H200", major=9, minor=0)
    cudart = SimpleNamespace(cudaGetDeviceCount=lambda: (0, 1), cudaGetDeviceProperties=lambda i: (0, prop))
    return lambda: (trt, cudart)


@pytest.fixture()
def engine_bundle(bundle_copy, monkeypatch) -> Path:
    """The tiny bundle with (stand-in) FP16 and FP32 engines built for TensorRT 10.9.0.34 on sm 9.0."""
    import export.trt as t

    monkeypatch.setattr(t, "trt_target", lambda: t.GpuTarget("10.9.0.34", "NVIDIA H200", "9.0"))
    monkeypatch.setattr(t, "_build_one", _fake_build)
    t.build_engines(bundle_copy, fp16=True, progress=False)
    t.build_engines(bundle_copy, fp16=False, progress=False)
    return bundle_copy


def test_auto_falls_back_on_engine_mismatch_and_warns_once(engine_bundle, monkeypatch, caplog):
    import runtime.backends.tensorrt as rt
    from runtime import Describer

    rt.warn_once.cache_clear()
    monkeypatch.setattr(rt, "_imports", _fake_trt_imports("10.13.0.35"))
    with caplog.at_level(logging.WARNING):
        d = Describer(engine_bundle)
        Describer(engine_bundle)
    assert d.backend_name == "onnxruntime-cpu"
    warnings = [r.getMessage() for r in caplog.records if "tensorrt" in r.getMessage()]
    assert len(warnings) == 1 and "built with TensorRT 10.9.0.34, this is 10.13.0.35" in warnings[0]
    assert "falling back to ONNX Runtime" in warnings[0]
    with pytest.raises(rt.EngineMismatch, match="rebuild with pvlm-export trt"):
        Describer(engine_bundle, backend="tensorrt")


def test_auto_would_pick_matching_engines(engine_bundle, monkeypatch):
    """With a matching TensorRT and GPU, auto goes to the TensorRT backend first (stopped at its start here)."""
    import runtime.backends.tensorrt as rt
    from runtime import Describer

    monkeypatch.setattr(rt, "_imports", _fake_trt_imports("10.9.0.34"))
    found = {}

    def started(self, bundle, precision="fp32", **_):
        found.update(rt.find_engines(bundle, precision, "10.9.0.34", "9.0"))
        raise SystemExit("started")  # not a BackendUnavailable: auto must not swallow it

    monkeypatch.setattr(rt.TensorRTBackend, "__init__", started)
    with pytest.raises(SystemExit, match="started"):
        Describer(engine_bundle, precision="fp16")
    assert {g: e.file for g, e in found.items()} == {"encoder": "encoder.fp16.plan", "decoder": "decoder.fp16.plan"}


def test_tensorrt_backend_without_tensorrt(tiny_bundle, caplog):
    if HAS_TRT:
        pytest.skip("TensorRT is installed")
    from runtime import Describer
    from runtime.backends import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="tensorrt is not installed: pip install tensorrt"):
        Describer(tiny_bundle, backend="tensorrt")
    with caplog.at_level(logging.WARNING):
        assert Describer(tiny_bundle).backend_name == "onnxruntime-cpu"  # no TensorRT: quiet fallback
    assert not [r for r in caplog.records if "tensorrt" in r.getMessage()]


def test_no_engines_for_precision(tiny_bundle, monkeypatch):
    import runtime.backends.tensorrt as rt
    from runtime import Describer
    from runtime.backends import BackendUnavailable

    monkeypatch.setattr(rt, "_imports", _fake_trt_imports("10.9.0.34"))
    with pytest.raises(BackendUnavailable, match="no fp32 TensorRT engines .*pvlm-export trt"):
        Describer(tiny_bundle, backend="tensorrt")


def test_tensorrt_backend_close_frees_buffers_and_refuses():
    """The lifecycle without a GPU: stand-in cuda calls record what ``close`` frees (no engine is loaded)."""
    import threading

    import numpy as np

    import runtime.backends.tensorrt as rt
    from runtime.backends import BackendClosed

    log, pointers = [], iter(range(100, 200))
    cudart = SimpleNamespace(cudaMalloc=lambda n: (0, next(pointers)), cudaFree=lambda p: log.append(("free", p)),
                             cudaStreamDestroy=lambda s: log.append(("stream", s)))
    backend = object.__new__(rt.TensorRTBackend)  # __init__ needs TensorRT and a GPU
    backend._cudart, backend._stream, backend._pool, backend._lock = cudart, 7, [], threading.Lock()
    backend._sizes, backend._contexts, backend._engines = {"cross_k": (64, np.dtype(np.float32))}, {}, {}
    backend.max_batch = backend.max_capacity = 8
    pooled, in_flight = backend._take(), backend._take()
    backend._give_back(pooled)
    with backend:
        pass
    assert backend.closed and log == [("free", 100), ("stream", 7)]  # the pooled set, then the stream
    backend._give_back(in_flight)  # a batch that ends after close frees its buffers instead of pooling them
    assert log[-1] == ("free", 101) and backend._pool == []
    with pytest.raises(BackendClosed, match="the tensorrt backend is closed"):
        backend.encode(np.zeros((1, 3, 4, 4), np.float32), 4)
    with pytest.raises(BackendClosed, match="the tensorrt backend is closed"):
        backend.step(rt.TrtState(in_flight, 1, 4), np.zeros((1, 1), np.int64), 0)
    with pytest.raises(BackendClosed, match="the tensorrt backend is closed"):
        backend.keep(rt.TrtState(in_flight, 1, 4), np.array([0]))


# ---- on a GPU with TensorRT -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_engines(tiny_bundle, tmp_path_factory) -> Path:
    from export.trt import build_engines

    dst = tmp_path_factory.mktemp("trt") / "b"
    shutil.copytree(tiny_bundle, dst)
    build_engines(dst, fp16=True, progress=False)
    build_engines(dst, fp16=False, progress=False)
    return dst


@needs_trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_engines_match_onnxruntime(built_engines, tiny_model, precision):
    from export.validate import parity_images
    from runtime import Describer

    pixels = parity_images(tiny_model, 64, seed=3)
    trt_d = Describer(built_engines, backend="tensorrt", precision=precision)
    ort_d = Describer(built_engines, backend="onnxruntime-cpu")
    assert trt_d.backend_name == "tensorrt"
    same = 0
    for start in range(0, 64, 8):
        a, _ = trt_d.generate_ids(pixels[start:start + 8])
        b, _ = ort_d.generate_ids(pixels[start:start + 8])
        same += sum(x == y for x, y in zip(a, b))
    assert same / 64 >= 0.99
    assert Describer(built_engines, precision=precision).backend_name == "tensorrt"  # auto picks it


@needs_trt
def test_gpu_describer_closes_tensorrt(built_engines, tiny_model):
    from export.validate import parity_images
    from runtime import Describer
    from runtime.backends import BackendClosed

    pixels = parity_images(tiny_model, 4, seed=3)
    with Describer(built_engines, backend="tensorrt") as d:
        ids, _ = d.generate_ids(pixels)
        assert len(ids) == 4
    with pytest.raises(BackendClosed, match="the tensorrt backend is closed"):
        d.generate_ids(pixels)


@needs_trt
def test_gpu_bench_runs_tensorrt(built_engines, tmp_path):
    from click.testing import CliRunner

    from bench.cli_speed import main

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, [str(built_engines), "--backend", "tensorrt", "--backend", "onnxruntime-cpu",
                                    "--batch", "1", "--batch", "8", "--iters", "3", "--json", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "tensorrt" in out.read_text()
