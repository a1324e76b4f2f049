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
    """A network layer as the TensorRT Python API shows it (name, type, metadata, inputs and outputs)."""

    def __init__(self, name: str, kind: str, inputs: list[_Tensor], outputs: list[_Tensor], metadata: str = ""):
        self.name, self.type, self.metadata = name, kind, metadata
        self.inputs, self.outputs, self.precision, self.types = inputs, outputs, None, {}

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_output(self, i: int) -> _Tensor:
        return self.outputs[i]

    def set_output_type(self, i: int, t: str) -> None:
        self.types[i] = t


FAKE_TRT = SimpleNamespace(float32="f32", float16="f16", int32="i32", int64="i64", bool="b",
                           LayerType=SimpleNamespace(CONSTANT="constant", SHAPE="shape"))


def _parse_like_tensorrt(model, metadata: bool) -> tuple[SimpleNamespace, dict[str, list[_Layer]]]:
    """A network as TensorRT 10's ONNX parser builds it from ``model``: several layers for some nodes.

    Gemm -> an unnamed matrix multiply, a bias constant and the add that carries the ONNX output name;
    ArgMax -> TopK (float values, int32 indices), a squeeze and the int64 cast named ``next_ids``;
    weights -> constant layers named after the initializers. Layers carry the parser's metadata
    (``[ONNX Layer: node]``, TensorRT 10) or none. Returns the network and each node's layers.
    """
    import onnx

    dtypes = {1: "f32", 10: "f16", 6: "i32", 7: "i64", 9: "b"}
    inferred = onnx.shape_inference.infer_shapes(model)
    kinds = {vi.name: vi.type.tensor_type.elem_type
             for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    inits = {t.name: t.data_type for t in model.graph.initializer}
    kinds.update(inits)
    layers: list[_Layer] = []
    tensors: dict[str, _Tensor] = {}
    made: dict[str, list[_Layer]] = {}

    def named(name: str) -> _Tensor:
        if name not in tensors:  # a graph input or a weight
            tensors[name] = _Tensor(name=name, dtype=dtypes.get(kinds.get(name, 1), "f32"))
            if name in inits:
                layers.append(_Layer(name, "constant", [], [tensors[name]]))
        return tensors[name]

    def unnamed(kind: str, dtype: str) -> _Tensor:
        return _Tensor(name=f"(Unnamed Layer* {len(layers)}) [{kind}]_output", dtype=dtype)

    for node in model.graph.node:
        inputs = [named(i) for i in node.input if i]
        outs = [named(o) for o in node.output]
        tag = f"[ONNX Layer: {node.name}]" if metadata else ""
        if node.op_type == "Gemm":
            mm, bias = unnamed("Matrix Multiply", "f32"), unnamed("Constant", "f32")
            steps = [("matmul", inputs, [mm]), ("constant", [], [bias]), ("elementwise", [mm, bias], outs)]
        elif node.op_type == "ArgMax":
            values, idx, squeezed = unnamed("TopK", "f32"), unnamed("TopK", "i32"), unnamed("Shuffle", "i32")
            steps = [("topk", inputs, [values, idx]), ("shuffle", [idx], [squeezed]), ("cast", [squeezed], outs)]
        else:
            steps = [(node.op_type.lower(), inputs, outs)]
        made[node.name] = []
        for k, (kind, ins, produced) in enumerate(steps):
            # the parser's names: the node's name, then the node's name with a global counter
            layer = _Layer(node.name if k == 0 else f"{node.name}_{len(layers)}", kind, ins, produced,
                           "" if kind == "constant" else tag)
            layers.append(layer)
            made[node.name].append(layer)
    return SimpleNamespace(num_layers=len(layers), get_layer=layers.__getitem__), made


@pytest.mark.parametrize("metadata", [True, False], ids=["parser-metadata", "no-metadata"])
def test_precision_plan_pins_every_float_layer_of_a_planned_node(tiny_bundle, metadata):
    """Mock network: each planned node's float layers are pinned FP32 (the logits matmul under its bias add,
    ArgMax's TopK), its integer layers (Range, the int64 cast, the squeeze) and every other node's are not."""
    import onnx

    from export.precision_plan import fp32_nodes
    from export.trt import mark_fp32_layers, onnx_tensor_names, plan_layers

    model = onnx.load(str(tiny_bundle / "decoder.onnx"))
    plan = fp32_nodes(model)
    network, made = _parse_like_tensorrt(model, metadata)
    tensors = onnx_tensor_names(model)
    found = plan_layers(network, plan, tensors)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    for node in plan:  # every layer made for the node, and no other node's layer
        assert {id(layers[i]) for i in found[node.name]} >= {id(x) for x in made[node.name]}, node.name
        assert all(layers[i].type == "constant" or layers[i] in made[node.name] for i in found[node.name]), node.name
    marked = mark_fp32_layers(network, plan, FAKE_TRT, tensors)
    planned = {n.name for n in plan}
    ops = {n.name: n.op_type for n in model.graph.node}
    pinned = [layer for layer in layers if layer.precision == "f32"]
    assert marked == len(pinned)
    for name, group in made.items():
        for layer in group:
            floats = any(t.dtype == "f32" for t in layer.outputs) and layer.type != "constant"
            assert (layer.precision == "f32") == (name in planned and floats), (name, layer.type)
            want = {j: "f32" for j, t in enumerate(layer.outputs) if t.dtype == "f32"} if layer.precision else {}
            assert layer.types == want, (name, layer.type)  # int outputs keep their types
    head = next(n for n in model.graph.node if "logits" in n.output)
    assert [x.type for x in made[head.name] if x.precision == "f32"] == ["matmul", "elementwise"]
    argmax = next(n for n in model.graph.node if n.op_type == "ArgMax")
    assert [x.type for x in made[argmax.name] if x.precision == "f32"] == ["topk"]
    rng = next(n for n in model.graph.node if ops[n.name] == "Range")
    assert rng.name in planned and all(x.precision is None for x in made[rng.name])


def test_precision_plan_walk_stops_at_another_nodes_layer():
    """A layer whose metadata names another node is not taken into the planned node, even unnamed between them."""
    from export.precision_plan import Fp32Node
    from export.trt import plan_layers

    x, mid, out = (_Tensor(name=n, dtype="f32") for n in ("x", "(Unnamed Layer* 0) [Shuffle]_output", "y"))
    other = _Layer("other", "shuffle", [x], [mid], "[ONNX Layer: other]")
    mine = _Layer("mine", "elementwise", [mid], [out], "[ONNX Layer: mine]")
    network = SimpleNamespace(num_layers=2, get_layer=[other, mine].__getitem__)
    found = plan_layers(network, [Fp32Node("mine", "Add", ("y",), "test")], {"x", "y"})
    assert found == {"mine": [1]}


def test_typing_choice():
    """auto: strongly typed FP16 from the verified FP16 graphs where the bundle has them; TensorRT 11 has no weak typing."""
    from export.trt import choose_typing

    plain = SimpleNamespace(precisions=("fp32",), root=Path("b"))
    with_fp16 = SimpleNamespace(precisions=("fp32", "fp16"), root=Path("b"))
    assert choose_typing("auto", "10.13.3.9", "fp16", plain) == "weak"
    assert choose_typing("auto", "10.13.3.9", "fp16", with_fp16) == "strong"
    assert choose_typing("auto", "10.13.3.9", "fp32", with_fp16) == "weak"
    assert choose_typing("auto", "11.0.0.1", "fp32", plain) == "strong"
    assert choose_typing("weak", "10.9.0.34", "fp16", with_fp16) == "weak"
    with pytest.raises(ValueError, match="no weakly typed networks"):
        choose_typing("weak", "11.0.0.1", "fp32", plain)
    with pytest.raises(ValueError, match="pvlm-export onnx --fp16"):
        choose_typing("auto", "11.0.0.1", "fp16", plain)
    with pytest.raises(ValueError, match="typing must be one of"):
        choose_typing("strict", "10.9.0.34", "fp16", plain)


class _Recorder:
    """Polygraphy's TensorRT loaders, recorded (mock): what the build asks for, run on a mock network."""

    def __init__(self, network: SimpleNamespace):
        self.network, self.calls = network, []

    def install(self, monkeypatch) -> None:
        import sys

        import polygraphy.backend.trt as pt

        rec = self

        class Loader:
            def __init__(self, kind: str, *args, **kwargs):
                self.kind, self.args, self.kwargs = kind, args, kwargs
                rec.calls.append(self)

        def engine_bytes(network, config, save_timing_cache=None):
            rec.calls.append(Loader("EngineBytesFromNetwork", network, config, save_timing_cache=save_timing_cache))

            def build() -> bytes:
                loader = network
                while loader.kind == "PostprocessNetwork":  # Polygraphy calls each func with network=
                    loader.args[1](network=rec.network)
                    loader = loader.args[0]
                return b"engine"
            return build

        for name in ("NetworkFromOnnxPath", "CreateConfig", "PostprocessNetwork"):
            monkeypatch.setattr(pt, name, lambda *a, _n=name, **k: Loader(_n, *a, **k))
        monkeypatch.setattr(pt, "EngineBytesFromNetwork", engine_bytes)
        monkeypatch.setitem(sys.modules, "tensorrt", SimpleNamespace(
            **vars(FAKE_TRT), MemoryPoolType=SimpleNamespace(WORKSPACE="workspace")))

    def one(self, kind: str):
        (found,) = [c for c in self.calls if c.kind == kind]
        return found


@pytest.fixture()
def fp16_variant_bundle(tiny_bundle, tmp_path) -> Path:
    """A copy of the tiny bundle with an FP16 variant of the encoder (the FP32 file stands in for it)."""
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    shutil.copy(dst / "encoder.onnx", dst / "encoder.fp16.onnx")
    manifest["artifacts"]["encoder.fp16.onnx"] = manifest["artifacts"]["encoder.onnx"]
    manifest["variants"] = {"fp16": {"graphs": {"encoder": "encoder.fp16.onnx"}, "plan": {}}}
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_strongly_typed_build_parses_the_verified_fp16_graph(fp16_variant_bundle, monkeypatch):
    """Recorded Polygraphy calls (mock): strongly_typed=True on encoder.fp16.onnx, no FP16 flag, no constraints."""
    import onnx

    import export.trt as t
    from runtime.bundle import Bundle

    b = Bundle.load(fp16_variant_bundle)
    network, _ = _parse_like_tensorrt(onnx.load(str(b.path("encoder"))), metadata=True)
    rec = _Recorder(network)
    rec.install(monkeypatch)
    target = t.GpuTarget("10.13.3.9", "NVIDIA H100", "9.0")
    e = t._build_one(b, "encoder", "fp16", target, 8, None, typing="strong")
    parse = rec.one("NetworkFromOnnxPath")
    assert parse.args == (str(fp16_variant_bundle / "encoder.fp16.onnx"),) and parse.kwargs == {"strongly_typed": True}
    config = rec.one("CreateConfig").kwargs
    assert not config["fp16"] and config["precision_constraints"] is None
    assert e.build["typing"] == "strong" and e.build["source"] == "encoder.fp16.onnx" and e.build["fp16"]
    assert e.build["fp32_layers"] == sum(1 for i in range(network.num_layers) if network.get_layer(i).type != "constant")
    assert t._tmp(fp16_variant_bundle / "encoder.fp16.plan").read_bytes() == b"engine"


def test_weakly_typed_build_pins_the_plan(tiny_bundle, tmp_path, monkeypatch):
    """Recorded Polygraphy calls (mock): the FP32 graph, the FP16 flag, obeyed constraints, the plan pinned."""
    import onnx

    import export.trt as t
    from export.precision_plan import fp32_nodes
    from runtime.bundle import Bundle

    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    b = Bundle.load(dst)
    model = onnx.load(str(b.path("decoder")))
    network, _ = _parse_like_tensorrt(model, metadata=False)
    rec = _Recorder(network)
    rec.install(monkeypatch)
    e = t._build_one(b, "decoder", "fp16", t.GpuTarget("10.13.3.9", "NVIDIA H100", "9.0"), 8, None, typing="weak")
    assert rec.one("NetworkFromOnnxPath").args == (str(dst / "decoder.onnx"),)
    config = rec.one("CreateConfig").kwargs
    assert config["fp16"] and config["precision_constraints"] == "obey"
    pinned = sum(1 for i in range(network.num_layers) if network.get_layer(i).precision == "f32")
    assert e.build["fp32_layers"] == pinned > len(fp32_nodes(model)) // 2
    assert e.build["typing"] == "weak" and e.build["fp32_plan_nodes"] == len(fp32_nodes(model))


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
    assert ("TensorRT" in lines[0] and "pip install 'tensorrt>=10,<11'" in lines[0]) or "NVIDIA GPU" in lines[0]
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


def _fake_build(bundle, graph, precision, target, opt_batch, workspace_gib, fp16_layers=True, typing="weak"):
    """Stands in for the GPU part of the build: writes the temporary file a real build writes."""
    import export.trt as t
    from runtime.bundle import sha256_path

    tmp = t._tmp(bundle.root / f"{graph}.{precision}.plan")
    tmp.write_bytes(f"plan for {graph}".encode())
    return Engine("tensorrt-plan", graph, f"{graph}.{precision}.plan", precision, sha256_path(tmp), tmp.stat().st_size,
                  target.to_dict(), {"fp16": precision == "fp16" and fp16_layers, "profiles": [t.profile_shapes(bundle, graph)],
                                     "fp32_layers": 3, "typing": typing}, {})


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
    assert {e.build["typing"] for e in built.values()} == {"strong"}  # auto: the verified FP16 graphs exist
    weak = {e.graph: e for e in t.build_engines(bundle_copy, fp16=True, progress=False, force=True, typing="weak")}
    assert {e.build["typing"] for e in weak.values()} == {"weak"}


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
    import collections
    import threading

    import numpy as np

    import runtime.backends.tensorrt as rt
    from runtime.backends import BackendClosed

    log, pointers = [], iter(range(100, 200))
    cudart = SimpleNamespace(cudaMalloc=lambda n: (0, next(pointers)), cudaFree=lambda p: log.append(("free", p)),
                             cudaStreamDestroy=lambda s: log.append(("stream", s)))
    backend = object.__new__(rt.TensorRTBackend)  # __init__ needs TensorRT and a GPU
    backend._cudart, backend._stream, backend._lock = cudart, 7, threading.Lock()
    backend._pool = collections.deque()
    backend._sizes, backend._contexts, backend._engines = {"cross_k": (64, np.dtype(np.float32))}, {}, {}
    backend.max_batch = backend.max_capacity = 8
    backend._heads_output = ()  # a bundle without attribute heads
    pooled, in_flight = backend._take(), backend._take()
    backend._give_back(pooled)
    with backend:
        pass
    assert backend.closed and log == [("free", 100), ("stream", 7)]  # the pooled set, then the stream
    backend._give_back(in_flight)  # a batch that ends after close frees its buffers instead of pooling them
    assert log[-1] == ("free", 101) and not backend._pool
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
