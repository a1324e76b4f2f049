"""FP16 variants: the precision plan, the converter, verification, the manifest, the Describer and the CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from export.precision_plan import PlanRules, fp32_nodes, fp32_outputs  # noqa: E402


@pytest.fixture(scope="module")
def fp16_bundle(tiny_checkpoint, tmp_path_factory, one_torch_thread) -> tuple[Path, str]:
    """The tiny checkpoint exported with --fp16 through the CLI; (bundle, CLI output)."""
    from click.testing import CliRunner

    from export.cli import main

    out = tmp_path_factory.mktemp("fp16") / "tiny"
    res = CliRunner().invoke(main, ["onnx", str(tiny_checkpoint), "--out", str(out), "--fp16", "--max-batch", "8",
                                    "--max-new-tokens", "24"])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_plan_keeps_numerically_fragile_nodes(tiny_bundle):
    for graph in ("encoder", "decoder", "decoder_ort"):
        model = onnx.load(str(tiny_bundle / f"{graph}.onnx"))
        plan = fp32_nodes(model)
        ops = {n.op_type for n in plan}
        assert {"LayerNormalization"} <= ops | {"SkipLayerNormalization"} or graph == "encoder"
        by_name = {n.name: n for n in model.graph.node}
        for node in plan:  # every entry names a real node and says why
            assert node.name in by_name and node.reason
            assert node.outputs == tuple(by_name[node.name].output)
    dec = onnx.load(str(tiny_bundle / "decoder.onnx"))
    plan = fp32_nodes(dec)
    kinds = {n.op_type for n in plan}
    assert {"Softmax", "ArgMax", "LayerNormalization"} <= kinds
    # every Softmax's score MatMul is pinned (self- and cross-attention), and the logits head
    softmaxes = sum(n.op_type == "Softmax" for n in dec.graph.node)
    score_matmuls = [n for n in plan if n.op_type in ("MatMul", "Gemm") and "scores" in n.reason]
    assert len(score_matmuls) >= softmaxes
    head = [n for n in plan if "logits head" in n.reason]
    assert head and "logits" in fp32_outputs(head)


def test_plan_rules_switch_off(tiny_bundle):
    dec = onnx.load(str(tiny_bundle / "decoder.onnx"))
    full = fp32_nodes(dec)
    assert fp32_nodes(dec, PlanRules(ops=False, scores=False, logits=False)) == []
    no_scores = fp32_nodes(dec, PlanRules(scores=False))
    assert len(no_scores) < len(full) and not any("attention scores" in n.reason for n in no_scores)


def test_fp16_export_verifies_and_lists_variant(fp16_bundle):
    bundle, output = fp16_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    v = manifest["variants"]["fp16"]
    assert v["graphs"] == {"encoder": "encoder.fp16.onnx", "decoder": "decoder.fp16.onnx"}
    for f in v["graphs"].values():
        assert (bundle / f).is_file() and f in manifest["artifacts"]
    # decoder_ort/cross_ort stay FP32 with the reason recorded (see export/fp16.py)
    assert set(v["plan"]["kept_fp32"]) == {"decoder_ort", "cross_ort"}
    assert "decoder" in v["plan"]["fp32_nodes"] and v["plan"]["fp32_nodes"]["decoder"]["nodes"]
    rep = v["verification"]
    assert rep["images"] == 64 and rep["nonfinite"] == 0 and not rep["accepted_mismatch"]
    assert rep["sequence_match_rate"] >= 0.99 and rep["token_agreement"] >= 0.99
    assert len(rep["divergence_logit_gaps"]) == rep["images"] - rep["sequences_identical"] == len(rep["divergences"])
    assert rep["confident_divergences"] == 0 and rep["failures"] == [] and rep["graphs"] == ["decoder", "encoder"]
    assert 0 < rep["logits_max_abs_diff"] < 0.05
    # the converted graph really is FP16 inside (FP32 at the edges)
    dec = onnx.load(str(bundle / "decoder.fp16.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in dec.graph.initializer)
    assert all(i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for i in [*dec.graph.input, *dec.graph.output])
    assert "fp16: greedy sequences identical to PyTorch FP32 " in output and "non-finite 0" in output
    assert " 0 confidently)" in output


def test_describer_fp16_runs_portable_decoder(fp16_bundle, synth_dir):
    from runtime import Describer

    bundle, _ = fp16_bundle
    images = sorted(p for p in synth_dir.rglob("*") if p.suffix in (".png", ".jpg"))[:4]
    d16 = Describer(bundle, backend="onnxruntime-cpu", precision="fp16")
    d32 = Describer(bundle, backend="onnxruntime-cpu")
    assert d16.precision == "fp16" and d16.backend.decoder_graph == "decoder"  # decoder_ort stays FP32
    out16, out32 = d16.describe(images), d32.describe(images)
    assert [o.tokens for o in out16] == [o.tokens for o in out32]


def test_bundle_without_fp16_gives_clear_error(tiny_bundle):
    from runtime import Describer
    from runtime.bundle import BundleError

    with pytest.raises(BundleError, match=r"no fp16 graphs .*pvlm-export onnx --fp16"):
        Describer(tiny_bundle, backend="onnxruntime-cpu", precision="fp16")


def test_describe_cli_fp16_missing_exits_2(tiny_bundle, synth_dir):
    from click.testing import CliRunner

    from runtime.cli import main

    image = next(p for p in synth_dir.rglob("*") if p.suffix in (".png", ".jpg"))
    res = CliRunner().invoke(main, [str(tiny_bundle), str(image), "--precision", "fp16"])
    assert res.exit_code == 2 and "no fp16 graphs" in res.output


def _unreachable_gate(monkeypatch, verify_images: int = 8) -> None:
    """FP16's attribute floor above 1 (every variant misses it), verified on ``verify_images`` images."""
    from export.precisions import SPECS, Gate

    monkeypatch.setitem(SPECS, "fp16", replace(SPECS["fp16"], gate=Gate(attribute_agreement=1.01),
                                               verify_images=verify_images))


def _fresh_copy(src: Path, dst: Path):
    from runtime.bundle import Manifest

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.pop("variants", None)
    return Manifest.from_dict(manifest)


def test_gate_failure_raises_unless_accepted(tiny_bundle, tiny_model, tmp_path, monkeypatch, one_torch_thread):
    from export import variants
    from export.validate import ValidationError

    _unreachable_gate(monkeypatch)
    manifest = _fresh_copy(tiny_bundle, tmp_path / "strict")
    with pytest.raises(ValidationError) as e:
        variants.add_variants(tiny_model, tmp_path / "strict", manifest, ("fp16",))
    assert any("below 1.01" in f for f in e.value.failures)
    # every try is named: all FP16, then the decoder back to FP32, then the encoder
    assert [f.split(" (with ")[-1] for f in e.value.failures if "below" in f][1:] == ["decoder in FP32)",
                                                                                     "encoder in FP32)"]
    manifest = _fresh_copy(tiny_bundle, tmp_path / "lenient")
    variants.add_variants(tiny_model, tmp_path / "lenient", manifest, ("fp16",), accept_mismatch=True)
    written = json.loads((tmp_path / "lenient" / "manifest.json").read_text())
    assert written["variants"]["fp16"]["verification"]["accepted_mismatch"] is True


def test_cli_gate_failure_writes_nothing(tiny_checkpoint, tmp_path, monkeypatch, one_torch_thread):
    from click.testing import CliRunner

    from export import variants
    from export.cli import main

    _unreachable_gate(monkeypatch)
    out = tmp_path / "b"
    res = CliRunner().invoke(main, ["onnx", str(tiny_checkpoint), "--out", str(out), "--fp16", "--max-batch", "4",
                                    "--max-new-tokens", "8"])
    assert res.exit_code != 0 and "below 1.01" in res.output and "no bundle written" in res.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_unconvertible_graph_stays_fp32(tiny_bundle, tiny_model, tmp_path, monkeypatch):
    """A graph ONNX Runtime cannot load after conversion is dropped from the variant, with its reason."""
    from export import fp16
    from export.spec import graph_specs
    from export.variants import VariantOptions

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    monkeypatch.setattr(fp16, "loads_in_onnxruntime", lambda p: "no kernel" if "encoder" in p.name else None)
    specs = {k: s for k, s in graph_specs(tiny_model.cfg).items() if k in ("encoder", "decoder")}
    v = fp16.build_fp16(tiny_model, bundle, specs, VariantOptions())
    assert v.graphs == {"decoder": "decoder.fp16.onnx"} and "no kernel" in v.plan["kept_fp32"]["encoder"]
    assert not (bundle / "encoder.fp16.onnx").exists()


@pytest.mark.parametrize("culprit, kept, tries", [
    ("decoder", "encoder", [["decoder", "encoder"], ["encoder"]]),
    ("encoder", "decoder", [["decoder", "encoder"], ["encoder"], ["decoder"]]),
])
def test_graph_back_to_fp32_when_fp16_misses_its_floor(tiny_bundle, tiny_model, tmp_path, monkeypatch,
                                                       one_torch_thread, culprit, kept, tries):
    """Below the gate, one graph goes back to FP32 at a time and the rest is verified again (real verification)."""
    from export import variants
    from export.precisions import SPECS
    from runtime import Describer
    from runtime.bundle import Bundle

    real = variants.verify_variant
    seen = []

    def culprit_costs_attributes(model, bundle_dir, precision, *args, **kwargs):
        report = real(model, bundle_dir, precision, *args, **kwargs)
        graphs = Bundle.load(bundle_dir).variant_graphs(precision)
        seen.append(sorted(graphs))
        if culprit in graphs:
            report = replace(report, attribute_agreement=0.5)
        return report

    monkeypatch.setattr(variants, "verify_variant", culprit_costs_attributes)
    monkeypatch.setitem(SPECS, "fp16", replace(SPECS["fp16"], verify_images=8))
    bundle = tmp_path / "b"
    manifest = _fresh_copy(tiny_bundle, bundle)
    variants.add_variants(tiny_model, bundle, manifest, ("fp16",))
    assert seen == tries
    written = json.loads((bundle / "manifest.json").read_text())
    v = written["variants"]["fp16"]
    assert v["graphs"] == {kept: f"{kept}.fp16.onnx"}
    assert v["plan"]["fallback"]["fp32"] == [culprit] and "below 0.995" in v["plan"]["fallback"]["reason"]
    assert v["verification"]["sequence_match_rate"] >= 0.99 and not v["verification"]["accepted_mismatch"]
    assert v["verification"]["graphs"] == [kept] and v["verification"]["fallback_fp32"] == [culprit]
    assert f"({culprit} back to FP32" in variants.summary("fp16", v["verification"])
    gone = f"{culprit}.fp16.onnx"
    assert not (bundle / gone).exists() and gone not in written["artifacts"]
    d16 = Describer(bundle, backend="onnxruntime-cpu", precision="fp16")  # sha256 of every listed file checked
    # the FP32 fast decoder with an FP16 encoder; the portable FP16 decoder when that is the variant
    assert d16.backend.decoder_graph == ("decoder_ort" if kept == "encoder" else "decoder")


def test_accept_mismatch_keeps_the_first_try(tiny_bundle, tiny_model, tmp_path, monkeypatch, one_torch_thread):
    from export import variants

    _unreachable_gate(monkeypatch)
    bundle = tmp_path / "b"
    manifest = _fresh_copy(tiny_bundle, bundle)
    variants.add_variants(tiny_model, bundle, manifest, ("fp16",), accept_mismatch=True)
    v = json.loads((bundle / "manifest.json").read_text())["variants"]["fp16"]
    assert set(v["graphs"]) == {"encoder", "decoder"} and "fallback" not in v["plan"]
