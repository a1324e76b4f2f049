"""ONNX export: bundle layout and manifest (contract 2), graph structure, numeric parity, atomic failure."""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

GRAPHS = ("encoder.onnx", "decoder.onnx", "cross_ort.onnx", "decoder_ort.onnx")
STACKED = ("cross_k", "cross_v", "cache_k", "cache_v", "new_k", "new_v")  # (L, batch, ...): batch on axis 1
DECODER_INPUTS = ["tokens", "positions", "cross_k", "cross_v", "cache_k", "cache_v"]
DECODER_OUTPUTS = ["logits", "next_ids", "new_k", "new_v"]
FP16_LOWEST = -65504.0
CARD = ("README.md", "description.schema.json")  # the model card and the describe output's JSON Schema


# --------------------------------------------------------------------------- helpers / fixtures


@pytest.fixture(scope="module")
def manifest(tiny_bundle) -> dict:
    return json.loads((tiny_bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def ref_model(tiny_checkpoint):
    """The PyTorch reference, loaded back from the checkpoint the bundle was exported from."""
    import pvlm

    model, _, _ = pvlm.load_checkpoint(tiny_checkpoint)
    return model.eval()


@pytest.fixture(scope="module")
def onnx_graphs(tiny_bundle) -> dict:
    return {name: onnx.load(str(tiny_bundle / name)) for name in GRAPHS}


@pytest.fixture(scope="module")
def sessions(tiny_bundle) -> dict:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return {name.split(".")[0]: ort.InferenceSession(str(tiny_bundle / name), opts, providers=["CPUExecutionProvider"])
            for name in GRAPHS}


def all_nodes(model):
    """Every node of the main graph, its subgraphs and local functions."""

    def walk(graph):
        for node in graph.node:
            yield node
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    yield from walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        yield from walk(g)

    yield from walk(model.graph)
    for fn in model.functions:
        for node in fn.node:
            yield node


def float_constants(model):
    """(name, array) for every floating-point initializer and Constant/ConstantOfShape value."""
    from onnx import numpy_helper

    out = [(t.name, numpy_helper.to_array(t)) for t in model.graph.initializer]
    for node in all_nodes(model):
        if node.op_type not in ("Constant", "ConstantOfShape"):
            continue
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                out.append((f"{node.name}.{attr.name}", numpy_helper.to_array(attr.t)))
            elif attr.name in ("value_float", "value_floats"):
                vals = [attr.f] if attr.name == "value_float" else list(attr.floats)
                out.append((f"{node.name}.{attr.name}", np.asarray(vals, np.float32)))
    return [(n, a) for n, a in out if np.issubdtype(a.dtype, np.floating)]


def dims(value_info) -> list:
    return [d.dim_param if d.dim_param else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def sample_pixels(model, n: int, seed: int) -> np.ndarray:
    """Normalised float32 (n, 3, H, W) synthetic person crops."""
    from pvlm.data import preprocess
    from pvlm.synth import render_person, sample_attributes

    rng = np.random.default_rng(seed)
    imgs = [render_person(sample_attributes(rng), rng, size=(96, 48)) for _ in range(n)]
    return torch.stack([preprocess(im, model.cfg) for im in imgs]).numpy()


def torch_cross_kv(model, pixels: np.ndarray):
    with torch.no_grad():
        k, v = model.cross_kv(model.encode_image(torch.from_numpy(pixels)))
    return k.numpy(), v.numpy()


def torch_step(model, tokens, positions, ck, cv, cache_k, cache_v):
    with torch.no_grad():
        logits, nk, nv = model.decode_step(*(torch.from_numpy(np.ascontiguousarray(a))
                                             for a in (tokens, positions, ck, cv, cache_k, cache_v)))
    return logits.numpy(), nk.numpy(), nv.numpy()


def decoder_feed(model, batch: int, cache: int, positions, seed: int, pixels_seed: int = 3) -> dict:
    """A decoder feed with real cross K/V and a random (valid-looking) cache."""
    cfg = model.cfg
    rng = np.random.default_rng(seed)
    ck, cv = torch_cross_kv(model, sample_pixels(model, batch, pixels_seed))
    shape = (cfg.n_layers, batch, cfg.n_heads, cache, cfg.head_dim)
    return {
        "tokens": rng.integers(4, cfg.vocab_size, (batch, 1)).astype(np.int64),
        "positions": np.asarray(positions, np.int64).reshape(batch, 1),
        "cross_k": ck, "cross_v": cv,
        "cache_k": rng.standard_normal(shape).astype(np.float32),
        "cache_v": rng.standard_normal(shape).astype(np.float32),
    }


# --------------------------------------------------------------------------- bundle layout / manifest


def test_bundle_holds_exactly_manifest_and_graphs(tiny_bundle):
    assert sorted(p.name for p in tiny_bundle.iterdir()) == sorted([*GRAPHS, *CARD, "manifest.json"])
    leftovers = [p.name for p in tiny_bundle.parent.iterdir() if p.name.startswith(f".{tiny_bundle.name}.tmp-")]
    assert leftovers == []


def test_manifest_header_model_vocab_specials(manifest, tiny_model, tiny_vocab):
    assert manifest["format"] == "pvlm-bundle"
    assert manifest["version"] == 1
    assert manifest["model"] == tiny_model.cfg.to_dict()
    assert manifest["vocab"]["tokens"] == tiny_vocab.itos
    assert manifest["special_tokens"] == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    for name, i in manifest["special_tokens"].items():
        assert manifest["vocab"]["tokens"][i] == f"<{name}>"


def test_manifest_preprocess(manifest, tiny_model):
    cfg = tiny_model.cfg
    pre = manifest["preprocess"]
    assert (pre["height"], pre["width"]) == cfg.image_size == (64, 32)
    assert pre["mean"] == pytest.approx(list(cfg.mean))
    assert pre["std"] == pytest.approx(list(cfg.std))
    assert pre["channel_order"].lower() == "rgb"
    assert pre["scale"] == pytest.approx(1 / 255)


def test_manifest_graph_specs(manifest, tiny_model):
    cfg = tiny_model.cfg
    L, H, N, Dh = cfg.n_layers, cfg.n_heads, cfg.n_visual, cfg.head_dim
    cross = {"dtype": "float32", "shape": [L, "batch", H, N, Dh]}
    cache = {"dtype": "float32", "shape": [L, "batch", H, "cache", Dh]}
    new = {"dtype": "float32", "shape": [L, "batch", H, 1, Dh]}
    enc, dec = manifest["graphs"]["encoder"], manifest["graphs"]["decoder"]
    assert enc["file"] == "encoder.onnx" and dec["file"] == "decoder.onnx"
    assert enc["inputs"] == {"pixels": {"dtype": "float32", "shape": ["batch", 3, 64, 32]}}
    assert enc["outputs"] == {"cross_k": cross, "cross_v": cross}
    assert list(dec["inputs"]) == DECODER_INPUTS
    assert list(dec["outputs"]) == DECODER_OUTPUTS
    assert dec["inputs"]["tokens"] == {"dtype": "int64", "shape": ["batch", 1]}
    assert dec["inputs"]["positions"] == {"dtype": "int64", "shape": ["batch", 1]}
    assert dec["inputs"]["cross_k"] == cross and dec["inputs"]["cross_v"] == cross
    assert dec["inputs"]["cache_k"] == cache and dec["inputs"]["cache_v"] == cache
    assert dec["outputs"]["logits"] == {"dtype": "float32", "shape": ["batch", cfg.vocab_size]}
    assert dec["outputs"]["next_ids"] == {"dtype": "int64", "shape": ["batch"]}
    assert dec["outputs"]["new_k"] == new and dec["outputs"]["new_v"] == new


def test_manifest_limits_opset_producer(manifest, tiny_model):
    assert manifest["limits"] == {"max_batch": 8, "max_new_tokens": 24, "max_positions": tiny_model.cfg.max_len}
    assert isinstance(manifest["opset"], int) and manifest["opset"] >= 17
    producer = manifest["producer"]
    for pkg in ("torch", "onnx", "onnxruntime", "personvlm-toolkit"):
        assert producer[pkg] == metadata.version(pkg)


def test_manifest_artifact_hashes_match_files(manifest, tiny_bundle):
    arts = manifest["artifacts"]
    assert set(arts) == {*GRAPHS, *CARD}
    for name in (*GRAPHS, *CARD):
        data = (tiny_bundle / name).read_bytes()
        assert arts[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert arts[name]["bytes"] == len(data)


def test_manifest_parity_report(manifest):
    ver = manifest["verification"]
    assert ver["failures"] == []
    p = ver["parity"]
    assert p["images"] >= 32
    assert p["sequences_identical"] == p["images"]
    assert sum(p["batch_sizes"]) == p["images"]
    assert 1 in p["batch_sizes"] and any(b > 1 for b in p["batch_sizes"])
    assert 0 <= p["encoder_max_abs_diff"] < 1e-4
    assert 0 <= p["logits_max_abs_diff"] < 1e-4
    assert p["steps_compared"] > 0 and p["token_agreement"] == 1.0
    ort_p = p["decoder_ort"]  # the ONNX Runtime graph is held to the same bar
    assert ort_p["sequences_identical"] == p["images"] and ort_p["token_agreement"] == 1.0
    assert 0 <= ort_p["logits_max_abs_diff"] < 1e-4 and ort_p["steps_compared"] == p["steps_compared"]


# --------------------------------------------------------------------------- graph structure


@pytest.mark.parametrize("name", GRAPHS)
def test_onnx_checker_full_and_opset(tiny_bundle, onnx_graphs, name):
    onnx.checker.check_model(str(tiny_bundle / name), full_check=True)
    model = onnx_graphs[name]
    default = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    assert default and default[0] >= 17
    if name != "cross_ort.onnx":  # the only graph without a LayerNorm: per-batch tables
        assert "LayerNormalization" in {n.op_type for n in all_nodes(model)}


def test_decoder_has_no_control_flow(onnx_graphs):
    ops = {n.op_type for n in all_nodes(onnx_graphs["decoder.onnx"])}
    assert not ops & {"If", "Loop", "Scan"}


def test_decoder_io_names(onnx_graphs):
    g = onnx_graphs["decoder.onnx"].graph
    assert [v.name for v in g.input] == DECODER_INPUTS
    assert [v.name for v in g.output] == DECODER_OUTPUTS
    enc = onnx_graphs["encoder.onnx"].graph
    assert [v.name for v in enc.input] == ["pixels"]
    assert [v.name for v in enc.output] == ["cross_k", "cross_v"]


@pytest.mark.parametrize("name", GRAPHS)
def test_batch_and_cache_dims_are_symbolic(onnx_graphs, manifest, name):
    model = onnx_graphs[name]
    spec = manifest["graphs"][name.split(".")[0]]
    for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
        for v in values:
            got, want = dims(v), spec[kind][v.name]["shape"]
            assert len(got) == len(want), v.name
            for g, w in zip(got, want):
                if isinstance(w, str):
                    assert isinstance(g, str) and g, f"{v.name}: {w} dim frozen to {g!r}"
                else:
                    assert g == w, v.name
    # the batch axis is one and the same symbol across every input and output of the graph
    batch_syms = {dims(v)[1 if v.name in STACKED else 0]
                  for v in [*model.graph.input, *model.graph.output]}
    assert len(batch_syms) == 1 and isinstance(next(iter(batch_syms)), str)


# --------------------------------------------------------------------------- polygraphy second opinion


@pytest.fixture(scope="module")
def poly():
    pytest.importorskip("polygraphy")
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner, SessionFromOnnx


def test_polygraphy_encoder_matches_pytorch(poly, tiny_bundle, ref_model):
    OnnxrtRunner, SessionFromOnnx = poly
    runner = OnnxrtRunner(SessionFromOnnx(str(tiny_bundle / "encoder.onnx"), providers=["cpu"]))
    pixels = sample_pixels(ref_model, 9, seed=11)
    with runner:
        start = 0
        for b in (1, 3, 5):
            x = pixels[start:start + b]
            start += b
            out = runner.infer({"pixels": x})
            ref_k, ref_v = torch_cross_kv(ref_model, x)
            assert out["cross_k"].shape == ref_k.shape == (2, b, 2, 2, 32)
            np.testing.assert_allclose(out["cross_k"], ref_k, rtol=0, atol=1e-4)
            np.testing.assert_allclose(out["cross_v"], ref_v, rtol=0, atol=1e-4)


@pytest.mark.parametrize("cache,positions", [(5, [0, 2, 4]), (24, [3, 11, 23])])
def test_polygraphy_decoder_matches_pytorch(poly, tiny_bundle, ref_model, cache, positions):
    OnnxrtRunner, SessionFromOnnx = poly
    feed = decoder_feed(ref_model, 3, cache, positions, seed=cache)
    ref_logits, ref_k, ref_v = torch_step(ref_model, *feed.values())
    with OnnxrtRunner(SessionFromOnnx(str(tiny_bundle / "decoder.onnx"), providers=["cpu"])) as runner:
        out = runner.infer(feed)
    assert out["logits"].shape == ref_logits.shape == (3, ref_model.cfg.vocab_size)
    np.testing.assert_allclose(out["logits"], ref_logits, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(out["next_ids"], ref_logits.argmax(-1))
    np.testing.assert_allclose(out["new_k"], ref_k, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["new_v"], ref_v, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- cache semantics


def test_unused_cache_slots_are_masked(sessions, ref_model):
    """Garbage in slots >= position changes nothing; garbage in a used slot does change the logits."""
    positions = [1, 3, 5]
    feed = decoder_feed(ref_model, 3, 8, positions, seed=7)
    rng = np.random.default_rng(8)
    zeros, garbage = dict(feed), dict(feed)
    for name in ("cache_k", "cache_v"):
        z, g = feed[name].copy(), feed[name].copy()
        for row, p in enumerate(positions):
            z[:, row, :, p:] = 0.0
            g[:, row, :, p:] = rng.standard_normal(g[:, row, :, p:].shape).astype(np.float32) * 50.0
        zeros[name], garbage[name] = z, g
    dec = sessions["decoder"]
    lz, iz, kz, vz = dec.run(None, zeros)
    lg, ig, kg, vg = dec.run(None, garbage)
    np.testing.assert_allclose(lg, lz, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(ig, iz)
    np.testing.assert_allclose(kg, kz, rtol=0, atol=1e-6)
    # control: the same garbage in a slot that IS attended to (slot 0 of row 2) must show up
    used = dict(zeros)
    used["cache_v"] = zeros["cache_v"].copy()
    used["cache_v"][:, 2, :, 0] += 50.0
    lu = dec.run(["logits"], used)[0]
    assert np.abs(lu[2] - lz[2]).max() > 1e-3
    np.testing.assert_allclose(lu[:2], lz[:2], rtol=0, atol=1e-6)


def test_per_row_positions_match_single_rows(sessions, ref_model):
    positions = [0, 4, 9]
    feed = decoder_feed(ref_model, 3, 12, positions, seed=21)
    dec = sessions["decoder"]
    batched = dec.run(None, feed)
    for row in range(3):
        single = {k: (v[row:row + 1] if k in ("tokens", "positions") else v[:, row:row + 1]) for k, v in feed.items()}
        logits, ids, nk, nv = dec.run(None, single)
        np.testing.assert_allclose(batched[0][row:row + 1], logits, rtol=0, atol=1e-5)
        assert batched[1][row] == ids[0]
        np.testing.assert_allclose(batched[2][:, row:row + 1], nk, rtol=0, atol=1e-5)
    ref_logits = torch_step(ref_model, *feed.values())[0]
    np.testing.assert_allclose(batched[0], ref_logits, rtol=0, atol=1e-4)


def test_stepwise_cache_reproduces_full_prefix_decode(sessions, ref_model):
    """The ONNX decoder, fed its own K/V at each position, equals re-running the whole prefix in PyTorch."""
    cfg = ref_model.cfg
    pixels = sample_pixels(ref_model, 2, seed=5)
    ck, cv = sessions["encoder"].run(None, {"pixels": pixels})
    prefix = np.array([[1, 10, 11, 12, 13, 14, 15], [1, 40, 41, 42, 43, 44, 45]], np.int64)
    cap = 10
    cache_k = np.zeros((cfg.n_layers, 2, cfg.n_heads, cap, cfg.head_dim), np.float32)
    cache_v = np.zeros_like(cache_k)
    for t in range(prefix.shape[1]):
        logits, _, nk, nv = sessions["decoder"].run(None, {
            "tokens": prefix[:, t:t + 1], "positions": np.full((2, 1), t, np.int64), "cross_k": ck, "cross_v": cv,
            "cache_k": cache_k, "cache_v": cache_v})
        cache_k[:, :, :, t], cache_v[:, :, :, t] = nk[:, :, :, 0], nv[:, :, :, 0]
    with torch.no_grad():
        rk, rv = ref_model.cross_kv(ref_model.encode_image(torch.from_numpy(pixels)))
        full = ref_model.decode_full(torch.from_numpy(prefix), rk, rv)[:, -1].numpy()
    np.testing.assert_allclose(logits, full, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- FP16 safety


def test_decoder_constants_are_fp16_safe(onnx_graphs):
    consts = float_constants(onnx_graphs["decoder.onnx"])
    assert consts, "no float constants found at all (the walk is broken)"
    lowest = np.finfo(np.float32).min
    for name, arr in consts:
        a = np.asarray(arr, np.float64)
        assert np.isfinite(a).all(), f"{name}: non-finite constant"
        assert not (a == lowest).any(), f"{name}: float32 finfo.min"
        assert a.size == 0 or a.min() > FP16_LOWEST, f"{name}: {a.min()} overflows FP16"
    # the attention mask is the finite -1e4 the graphs module documents (so the walk does see it)
    assert any((a == -1.0e4).any() for _, a in consts)


# --------------------------------------------------------------------------- failure path


def _copy_graphs_from(bundle: Path):
    """Stand-in for ``export_graph`` that copies the fixture bundle's graphs (skips a 15 s re-export)."""

    def fake_export_graph(module, spec, path, *args, **kwargs):
        shutil.copyfile(bundle / spec.file, path)

    return fake_export_graph


def _tmp_leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-")]


def test_failed_parity_raises_and_leaves_nothing(tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    import export
    import export.onnx as export_onnx_mod
    from export.validate import ParityReport

    calls = []

    def fake_parity(*args, **kwargs):
        calls.append(1)
        return ParityReport(), ["forced failure"]

    monkeypatch.setattr(export_onnx_mod, "export_graph", _copy_graphs_from(tiny_bundle))
    monkeypatch.setattr(export_onnx_mod, "check_parity", fake_parity)
    out = tmp_path / "bad"
    with pytest.raises(export.ValidationError) as info:
        export.export_onnx(tiny_checkpoint, out, max_batch=8, max_new_tokens=24)
    assert calls == [1]
    assert info.value.failures == ["forced failure"]
    assert "forced failure" in str(info.value)
    assert not out.exists()
    assert _tmp_leftovers(tmp_path, "bad") == []
    assert list(tmp_path.iterdir()) == []


def test_failed_export_with_force_keeps_previous_bundle(tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    import export
    import export.onnx as export_onnx_mod
    from export.validate import ParityReport

    monkeypatch.setattr(export_onnx_mod, "export_graph", _copy_graphs_from(tiny_bundle))
    monkeypatch.setattr(export_onnx_mod, "check_parity", lambda *a, **k: (ParityReport(), ["forced failure"]))
    out = tmp_path / "prev"
    shutil.copytree(tiny_bundle, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(export.ValidationError):
        export.export_onnx(tiny_checkpoint, out, max_batch=8, max_new_tokens=24, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _tmp_leftovers(tmp_path, "prev") == []


def test_exception_during_export_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    import export
    import export.onnx as export_onnx_mod

    def boom(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export_onnx_mod, "export_graph", boom)
    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export.export_onnx(tiny_checkpoint, out)
    assert not out.exists()
    assert _tmp_leftovers(tmp_path, "crash") == []


def test_structural_check_failure_is_reported(tiny_checkpoint, tiny_bundle, tmp_path, monkeypatch):
    """A graph whose I/O does not match the spec (encoder written where the decoder belongs) fails validation."""
    import export
    import export.onnx as export_onnx_mod

    def swapped(module, spec, path, *args, **kwargs):
        shutil.copyfile(tiny_bundle / "encoder.onnx", path)

    monkeypatch.setattr(export_onnx_mod, "export_graph", swapped)
    monkeypatch.setattr(export_onnx_mod, "check_parity",
                        lambda *a, **k: pytest.fail("parity must not run after structural failures"))
    out = tmp_path / "swapped"
    with pytest.raises(export.ValidationError) as info:
        export.export_onnx(tiny_checkpoint, out)
    assert any("decoder.onnx" in f and "input names" in f for f in info.value.failures)
    assert not out.exists() and _tmp_leftovers(tmp_path, "swapped") == []


@pytest.mark.parametrize("kwargs,match", [
    ({"opset": 11}, "opset"),
    ({"max_batch": 0}, "max-batch"),
    ({"max_new_tokens": 65}, "max-new-tokens"),
    ({"max_new_tokens": 0}, "max-new-tokens"),
])
def test_bad_arguments_rejected_before_writing(tiny_checkpoint, tmp_path, kwargs, match):
    import export

    with pytest.raises(ValueError, match=match):
        export.export_onnx(tiny_checkpoint, tmp_path / "x", **kwargs)
    assert list(tmp_path.iterdir()) == []
