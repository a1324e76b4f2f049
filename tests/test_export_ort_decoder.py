"""decoder_ort.onnx + cross_ort.onnx: ONNX Runtime's fused kernels, the KV cache bound in place (IO binding).

The same binding code runs on CPU here and on CUDA where onnxruntime-gpu sees a GPU.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    import pvlm

    return pvlm.load_checkpoint(tiny_checkpoint)[0].eval()


@pytest.fixture(scope="module", params=["tables", "attention"])
def bound(request, model, tmp_path_factory):
    """A BoundDecoder on the tiny model's ONNX Runtime graphs in each cross-attention form."""
    from export.ort_decoder import export_ort_decoder
    from export.spec import graph_specs
    from runtime.backends.ort_bound import BoundDecoder
    from runtime.bundle import ModelConfig

    out = tmp_path_factory.mktemp(f"ort-{request.param}")
    export_ort_decoder(model, graph_specs(model.cfg, cross=request.param), out, 20)
    step, cross = (ort.InferenceSession(str(out / f"{g}.onnx"), providers=["CPUExecutionProvider"])
                   for g in ("decoder_ort", "cross_ort"))
    return BoundDecoder(ort, step, cross, ModelConfig.from_dict(model.cfg.to_dict()), "cpu")


@pytest.fixture(scope="module")
def encoder(tiny_bundle):
    return ort.InferenceSession(str(tiny_bundle / "encoder.onnx"), providers=["CPUExecutionProvider"])


def _pixels(model, batch: int, seed: int) -> np.ndarray:
    h, w = model.cfg.image_size
    return np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)


def _optimised_nodes(path, tmp_path) -> list[str]:
    import onnx

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp_path / f"{path.stem}.opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]


def test_fewer_nodes_and_fused_attention(tiny_bundle, model, tmp_path):
    portable = _optimised_nodes(tiny_bundle / "decoder.onnx", tmp_path)
    fused = _optimised_nodes(tiny_bundle / "decoder_ort.onnx", tmp_path)
    assert fused.count("MultiHeadAttention") == model.cfg.n_layers  # self-attention; cross goes through tables
    assert len(fused) < 0.6 * len(portable), (len(fused), len(portable))
    import onnx

    graph = onnx.load(str(tiny_bundle / "decoder_ort.onnx")).graph
    inputs = {i.name for i in graph.input}
    tables = {f"{kind}_{i}" for i in range(model.cfg.n_layers) for kind in ("cross_qk", "cross_qkb", "cross_ov")}
    assert tables <= inputs and not any(name.startswith(("cross_k", "cross_v")) for name in inputs)
    cross = onnx.load(str(tiny_bundle / "cross_ort.onnx")).graph
    assert [i.name for i in cross.input] == ["cross_k", "cross_v"] and {o.name for o in cross.output} == tables
    self_attn = [n for n in graph.node if n.op_type == "MultiHeadAttention" and len(n.input) > 3]
    # past_sequence_length and cache_indirection both given: what the CUDA kernel needs to share past/present
    assert len(self_attn) == model.cfg.n_layers
    assert all(n.input[8] == "past_length" and n.input[9] == "cache_indirection" for n in self_attn)


def test_cross_form_follows_the_break_even_batch():
    """Tables where by bytes they pay up to a batch above 4: d_model / (visual tokens x (heads - 1))."""
    from export.spec import TABLES_MIN_BREAK_EVEN, cross_form, cross_form_of, graph_specs
    from pvlm import PersonVLMConfig

    forms = {name: cross_form(PersonVLMConfig.preset(name)) for name in ("seed-7m", "small", "lite0", "tiny")}
    assert forms == {"seed-7m": "tables", "small": "tables", "lite0": "attention", "tiny": "tables"}  # 10.7, 8, 3.6, 32
    tiny = PersonVLMConfig.preset("tiny")
    assert TABLES_MIN_BREAK_EVEN == 4 and cross_form(tiny.replace(image_size=(128, 64))) == "tables"  # 64 / 8 = 8
    assert cross_form(tiny.replace(image_size=(256, 256), n_heads=1)) == "tables"  # one head: tables = K/V in size
    square = tiny.replace(image_size=(128, 128))  # 16 visual tokens: 64 / 16 = 4
    assert cross_form(square) == "attention"
    specs = graph_specs(square)
    assert set(specs["cross_ort"].outputs) == {f"cross_{kv}_{i}" for kv in "kv" for i in range(2)}
    assert specs["decoder_ort"].inputs["cross_k_0"].shape == ("batch", 2, 16, 32)
    assert graph_specs(square, "auto") == specs and "cross_qk_0" in graph_specs(square, "tables")["decoder_ort"].inputs
    assert [cross_form_of(graph_specs(square, f)["decoder_ort"].inputs) for f in ("tables", "attention")] == [
        "tables", "attention"] and cross_form_of(None) is None
    with pytest.raises(ValueError, match="auto, tables or attention, got 'fused'"):
        graph_specs(tiny, cross="fused")


@pytest.mark.parametrize("form", ["tables", "attention"])
def test_cross_form_graphs(model, tmp_path, form):
    """The attention form runs the cross-attention kernel on per-layer K/V; the tables form reads tables, no kernel."""
    import onnx

    from export.ort_decoder import export_ort_decoder
    from export.spec import graph_specs

    export_ort_decoder(model, graph_specs(model.cfg, cross=form), tmp_path, 20)
    step, cross = (onnx.load(str(tmp_path / f"{g}.onnx")) for g in ("decoder_ort", "cross_ort"))
    for m in (step, cross):
        onnx.checker.check_model(m)
    layers, inputs = model.cfg.n_layers, {i.name for i in step.graph.input}
    attention = [n for n in step.graph.node if n.op_type == "MultiHeadAttention"]
    kv = [f"cross_{kind}_{i}" for i in range(layers) for kind in "kv"]
    tables = {f"cross_{kind}_{i}" for kind in ("qk", "qkb", "ov") for i in range(layers)}
    if form == "attention":
        assert len(attention) == 2 * layers and set(kv) <= inputs and not tables & inputs
        assert [o.name for o in cross.graph.output] == kv and {n.op_type for n in cross.graph.node} == {"Gather"}
    else:
        assert len(attention) == layers and tables <= inputs and not set(kv) & inputs
        assert {o.name for o in cross.graph.output} == tables


def test_cache_appended_in_place_and_equal_to_torch(bound, encoder, model):
    """Steps write K/V into the bound buffers themselves (same memory every step) and match PyTorch."""
    cfg, b, steps, capacity = model.cfg, 3, 6, 10
    pixels = _pixels(model, b, seed=1)
    ck, cv = encoder.run(None, {"pixels": pixels})
    state = bound.start(ck, cv, capacity)
    pointers = [v.data_ptr() for v in state.cache]
    with torch.no_grad():
        ref_k, ref_v = model.cross_kv(model.encode_image(torch.from_numpy(pixels)))
        t_k, t_v = model.empty_cache(b, capacity)
        tokens = np.full((b, 1), cfg.bos_id, np.int64)
        for t in range(steps):
            ids = bound.step(state, tokens, t)
            logits, k, v = model.decode_step(torch.from_numpy(tokens), torch.full((b, 1), t), ref_k, ref_v, t_k, t_v)
            t_k[:, :, :, t], t_v[:, :, :, t] = k[:, :, :, 0], v[:, :, :, 0]
            np.testing.assert_allclose(bound.logits(state), logits.numpy(), atol=1e-4)
            assert ids.tolist() == logits.argmax(-1).tolist()
            assert [v.data_ptr() for v in state.cache] == pointers  # no reallocation, no copy
            tokens = ids[:, None]
    cache_k, cache_v = bound.cache(state)
    np.testing.assert_allclose(cache_k[:, :, :, :steps], t_k[:, :, :, :steps].numpy(), atol=1e-5)
    np.testing.assert_allclose(cache_v[:, :, :, :steps], t_v[:, :, :, :steps].numpy(), atol=1e-5)
    assert not cache_k[:, :, :, steps:].any()  # slots past the last step untouched


def test_keep_drops_rows_without_changing_the_others(bound, encoder, model):
    pixels = _pixels(model, 3, seed=2)
    ck, cv = encoder.run(None, {"pixels": pixels})
    full = bound.start(ck, cv, 8)
    tokens = np.full((3, 1), model.cfg.bos_id, np.int64)
    for t in range(3):
        tokens = bound.step(full, tokens, t)[:, None]
    rows = np.array([0, 2])
    bound.keep(full, rows)
    kept_ids = bound.step(full, tokens[rows], 3)
    # the same two rows decoded on their own from the start
    alone = bound.start(np.ascontiguousarray(ck[:, rows]), np.ascontiguousarray(cv[:, rows]), 8)
    t2 = np.full((2, 1), model.cfg.bos_id, np.int64)
    for t in range(4):
        ids = bound.step(alone, t2, t)
        t2 = ids[:, None]
    assert kept_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(bound.logits(full), bound.logits(alone), atol=1e-5)


def test_position_past_capacity_is_refused(bound, encoder, model):
    ck, cv = encoder.run(None, {"pixels": _pixels(model, 1, seed=3)})
    state = bound.start(ck, cv, 2)
    with pytest.raises(ValueError, match="capacity"):
        bound.step(state, np.ones((1, 1), np.int64), 2)


def test_describer_paths_agree(tiny_bundle, model):
    from runtime import Describer

    fused, portable = Describer(tiny_bundle), Describer(tiny_bundle, decoder="portable")
    assert (fused.backend.decoder_graph, portable.backend.decoder_graph) == ("decoder_ort", "decoder")
    pixels = _pixels(model, 5, seed=4)
    a, _ = fused.generate_ids(pixels, 12, stop_at_eos=False)
    b, _ = portable.generate_ids(pixels, 12, stop_at_eos=False)
    assert a == b


@pytest.mark.parametrize("missing", [("decoder_ort", "cross_ort"), ("cross_ort",)],
                         ids=["no-ort-graphs", "first-decoder_ort-layout"])
def test_old_bundle_without_the_graphs_falls_back(tiny_bundle, tmp_path, missing, caplog):
    """Bundles from before decoder_ort, or with its first layout (cross K/V per step, no cross_ort)."""
    from runtime import Describer
    from runtime.backends import BackendUnavailable

    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    for graph in missing:
        del manifest["graphs"][graph], manifest["artifacts"][f"{graph}.onnx"]
        (old / f"{graph}.onnx").unlink()
    (old / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        d = Describer(old)
    assert d.backend.decoder_graph == "decoder"
    assert ("Re-export the bundle" in caplog.text) == ("decoder_ort" not in missing)  # only the first layout
    assert d.describe(np.zeros((64, 32, 3), np.uint8), channel_order="rgb")[0].ok
    with pytest.raises(BackendUnavailable, match="cross_ort \\+ decoder_ort"):
        Describer(old, decoder="ort")
    with pytest.raises(ValueError, match="decoder must be one of"):
        Describer(tiny_bundle, decoder="fast")


def _mlp_bias(m) -> torch.Tensor:  # in the step graph
    return m.blocks[-1].mlp[3].bias


def _cross_query_bias(m) -> torch.Tensor:  # folded into cross_ort's tables, or the step's attention-kernel bias
    return m.blocks[0].cross.q.bias


@pytest.mark.parametrize("form", ["tables", "attention"])
@pytest.mark.parametrize("param", [_mlp_bias, _cross_query_bias], ids=["decoder_ort", "cross_ort"])
def test_validation_catches_a_wrong_ort_graph(tiny_bundle, model, tmp_path, param, form):
    """ONNX Runtime graphs built from slightly different weights fail the export's parity check."""
    from export.ort_decoder import export_ort_decoder
    from export.spec import graph_specs
    from export.validate import check_parity

    wrong = copy.deepcopy(model)
    with torch.no_grad():
        param(wrong)[::2] += 0.5  # not a uniform shift, which a LayerNorm or softmax would remove
    export_ort_decoder(wrong, graph_specs(model.cfg, cross=form), tmp_path, 20)
    rep, failures = check_parity(model, tiny_bundle / "encoder.onnx", tiny_bundle / "decoder.onnx", 6,
                                 batches=(1, 2), ort_paths=(tmp_path / "cross_ort.onnx", tmp_path / "decoder_ort.onnx"))
    assert any(f.startswith("decoder_ort logits differ") for f in failures), failures
    assert not any(f.startswith(("decoder logits", "decoder:")) for f in failures)  # the portable graph passes
    assert rep.decoders["decoder_ort"].logits_max_abs_diff > 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not any(p == "CUDAExecutionProvider" for p in ort.get_available_providers()),
                    reason="needs onnxruntime-gpu and an NVIDIA GPU (CUDAExecutionProvider not available)")
def test_cuda_cache_stays_on_the_device(tiny_bundle, model):
    from runtime import Describer

    cuda = Describer(tiny_bundle, backend="onnxruntime-cuda", decoder="ort")
    assert cuda.backend.bound is not None and cuda.backend.bound.device == "cuda"
    pixels = _pixels(model, 4, seed=5)
    state = cuda.backend.encode(pixels, 4)
    assert {v.device_name().lower() for v in state.cache} == {"cuda"}
    a, _ = cuda.generate_ids(pixels, 12, stop_at_eos=False)
    b, _ = Describer(tiny_bundle, backend="onnxruntime-cpu").generate_ids(pixels, 12, stop_at_eos=False)
    assert a == b


def test_ir_version_loadable_by_older_runtimes(tiny_bundle):
    """The hand-built graph declares the opset's minimum IR version, not the installed onnx's newest
    (ONNX Runtime 1.30 refuses IR 14, which onnx 1.23 writes by default)."""
    import onnx

    fused = onnx.load(str(tiny_bundle / "decoder_ort.onnx"), load_external_data=False)
    portable = onnx.load(str(tiny_bundle / "decoder.onnx"), load_external_data=False)
    assert fused.ir_version <= portable.ir_version and fused.ir_version <= 10


@pytest.mark.parametrize("version, ok", [("1.30.0", False), ("1.31.1", True), ("1.32.0", True), ("2.0.0", True),
                                         ("1.9.0", False), ("dev", False)])
def test_version_floor(version, ok):
    from runtime.backends.ort_bound import supports_bound_cache

    assert supports_bound_cache(version) is ok


def test_older_onnxruntime_falls_back_to_the_portable_graph(tiny_bundle, monkeypatch, caplog):
    """ONNX Runtime 1.30 corrupts the heap on this graph: the runtime must not hand it over."""
    from runtime import Describer
    from runtime.backends import BackendUnavailable

    monkeypatch.setattr(ort, "__version__", "1.30.0")
    with caplog.at_level("WARNING"):
        d = Describer(tiny_bundle)
    assert d.backend.decoder_graph == "decoder" and "onnxruntime>=1.31" in caplog.text
    assert d.describe(np.zeros((64, 32, 3), np.uint8), channel_order="rgb")[0].ok
    with pytest.raises(BackendUnavailable, match=r"onnxruntime>=1\.31 \(this is 1\.30\.0\)"):
        Describer(tiny_bundle, decoder="ort")


def test_export_with_older_onnxruntime_leaves_the_graph_out(model, tiny_vocab, tmp_path, monkeypatch):
    from export.onnx import build_bundle

    monkeypatch.setattr(ort, "__version__", "1.30.0")
    manifest = build_bundle(model, tiny_vocab, tmp_path, max_batch=2, max_new_tokens=4)
    assert set(manifest["graphs"]) == {"encoder", "decoder"} and set(manifest["artifacts"]) == {"encoder.onnx",
                                                                                              "decoder.onnx"}
    assert not (tmp_path / "decoder_ort.onnx").exists() and not (tmp_path / "cross_ort.onnx").exists()
    assert manifest["verification"]["parity"]["decoder_ort"] is None


SHARED_POOL_SCRIPT = """
import json, sys
import numpy as np
from runtime import Describer
pixels = np.load(sys.argv[2])
d = Describer(sys.argv[1], shared_threads=True)
again = Describer(sys.argv[1], shared_threads=True)  # a second Describer joins the same pool
print(json.dumps({"pool": [d.backend.thread_pool, again.backend.thread_pool],
                  "ids": d.generate_ids(pixels, 10, stop_at_eos=False)[0],
                  "again": again.generate_ids(pixels, 10, stop_at_eos=False)[0]}))
"""


def test_shared_thread_pool_gives_the_same_tokens(tiny_bundle, model, tmp_path):
    """ONNX Runtime's process-wide pool changes every later session in the process: checked in a subprocess."""
    import subprocess
    import sys

    from runtime import Describer

    pixels = _pixels(model, 3, seed=6)
    np.save(tmp_path / "pixels.npy", pixels)
    out = subprocess.run([sys.executable, "-c", SHARED_POOL_SCRIPT, str(tiny_bundle), str(tmp_path / "pixels.npy")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    want, _ = Describer(tiny_bundle).generate_ids(pixels, 10, stop_at_eos=False)
    assert got["pool"] == ["shared", "shared"]
    assert got["ids"] == want and got["again"] == want
    assert Describer(tiny_bundle).backend.thread_pool == "per-session"  # the default leaves the process alone


def test_auto_takes_the_bound_cache_only_where_it_is_verified(tiny_bundle):
    """``auto`` on a device outside ``VERIFIED_DEVICES`` (CUDA until a GPU run checks it) takes decoder.onnx."""
    from runtime.backends.ort import choose_decoder
    from runtime.backends.ort_bound import VERIFIED_DEVICES
    from runtime.bundle import Bundle

    bundle = Bundle.load(tiny_bundle)
    assert "cuda" not in VERIFIED_DEVICES
    assert choose_decoder(ort, bundle, "auto", device="cpu") == "decoder_ort"
    assert choose_decoder(ort, bundle, "auto", device="cuda") == "decoder"
    assert choose_decoder(ort, bundle, "ort", device="cuda") == "decoder_ort"
