"""INT8 variants: a trained tiny model exported with ``--int8 --calibration``, verified, described and benchmarked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained_tiny(synth_dir, tmp_path_factory) -> Path:
    """The tiny preset trained for a few steps on the synthetic set (it emits attribute phrases, unlike random weights)."""
    from pvlm.train import TrainConfig, train

    out = tmp_path_factory.mktemp("int8-train") / "run"
    result = train(TrainConfig(train=str(synth_dir / "train.jsonl"), val=str(synth_dir / "val.jsonl"), out=str(out),
                               preset="tiny", epochs=3, batch_size=8, lr=3e-3, warmup_steps=2, progress=False,
                               min_freq=1, device="cpu"))
    return Path(result["best"])


@pytest.fixture(scope="module")
def int8_export(trained_tiny, synth_dir, tmp_path_factory):
    """``pvlm-export onnx CKPT --int8 --calibration train.jsonl`` (the CLI result and the bundle)."""
    from export.cli import main

    out = tmp_path_factory.mktemp("int8-bundle") / "tiny"
    res = CliRunner().invoke(main, ["onnx", str(trained_tiny), "--out", str(out), "--max-batch", "8",
                                    "--max-new-tokens", "24", "--int8", "--calibration",
                                    str(synth_dir / "train.jsonl")])
    assert res.exit_code == 0, res.output
    return res, out


def test_int8_export_verified_and_recorded(int8_export, synth_dir):
    res, bundle = int8_export
    manifest = json.loads((bundle / "manifest.json").read_text())
    variant = manifest["variants"]["int8"]
    assert variant["graphs"] == {"encoder": "encoder.int8.onnx", "decoder_ort": "decoder_ort.int8.onnx"}
    assert variant["plan"]["fp32"] == ["decoder", "cross_ort"]
    plan = variant["plan"]
    assert plan["calibration"]["source"] == str(synth_dir / "train.jsonl") and plan["calibration"]["images"] == 36
    assert plan["encoder"]["per_channel"] and plan["encoder"]["nodes_quantized"]["Conv"] > 0
    rep = variant["verification"]
    assert rep["images"] == 200 and not rep["accepted_mismatch"] and rep["nonfinite"] == 0
    assert rep["attribute_agreement"] >= 0.98
    assert 0 <= rep["sequences_identical"] <= 200 and rep["token_agreement"] > 0.9
    # every differing sequence is recorded; at most 0.5% of them differ confidently (beyond the logits error)
    assert len(rep["divergences"]) == 200 - rep["sequences_identical"]
    confident = [d for d in rep["divergences"] if d["margin"] > rep["logits_max_abs_diff"]]
    assert rep["confident_divergences"] == len(confident) <= 1 and rep["failures"] == []
    assert "\u2713 int8: greedy sequences identical" in res.stdout
    assert {"encoder.int8.onnx", "decoder_ort.int8.onnx"} <= set(manifest["artifacts"])
    assert plan["decoder_ort"]["nodes_quantized"]["MatMulInteger"] == 2 * 4 + 1  # 4 weight MatMuls per layer + head


def test_int8_encoder_is_quantized(int8_export):
    _, bundle = int8_export
    fp32, int8 = (onnx.load(str(bundle / f)) for f in ("encoder.onnx", "encoder.int8.onnx"))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    conv = [t for t in int8.graph.initializer if len(t.dims) == 4]  # convolution weights
    assert conv and all(t.data_type == onnx.TensorProto.INT8 for t in conv)
    scales = {n.input[1] for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == conv[0].name}
    (scale,) = [t for t in int8.graph.initializer if t.name in scales]
    assert scale.dims == [conv[0].dims[0]]  # one scale per output channel
    assert (bundle / "encoder.int8.onnx").stat().st_size < 0.8 * (bundle / "encoder.onnx").stat().st_size
    assert [i.name for i in int8.graph.input] == [i.name for i in fp32.graph.input] == ["pixels"]


def test_describer_int8_agrees_with_fp32(int8_export):
    from pvlm.synth import synth_example
    from runtime import Describer

    _, bundle = int8_export
    images = [synth_example(5, i, (256, 128), True)[0] for i in range(12)]
    d8 = Describer(bundle, backend="onnxruntime-cpu", precision="int8")
    d32 = Describer(bundle, backend="onnxruntime-cpu")
    assert d8.bundle.precisions == ("fp32", "int8")
    out8, out32 = d8.describe(images), d32.describe(images)
    same = total = 0
    for a, b in zip(out8, out32):
        assert a.error is None and a.text and a.tokens
        keys = [k for k in set(a.attributes) | set(b.attributes)
                if a.attributes.get(k) not in (None, []) or b.attributes.get(k) not in (None, [])]
        same += sum(a.attributes.get(k) == b.attributes.get(k) for k in keys)
        total += len(keys)
    agree = sum(x == y for a, b in zip(out8, out32) for x, y in zip(a.tokens, b.tokens))
    assert agree / sum(max(len(a.tokens), len(b.tokens)) for a, b in zip(out8, out32)) >= 0.9
    assert total == 0 or same / total >= 0.9  # a few training steps may not reach attribute phrases


def test_bench_rows_for_every_precision(int8_export, trained_tiny):
    from bench.speed import BenchConfig, run_bench

    _, bundle = int8_export
    report = run_bench(BenchConfig(bundle=str(bundle), checkpoint=str(trained_tiny), backends=("torch", "onnxruntime-cpu"),
                                   precisions=("auto",), batches=(2,), new_tokens=4, warmup=0, iters=1, progress=False))
    assert list(report["results"]) == ["torch", "onnxruntime-cpu", "onnxruntime-cpu-int8"]
    assert list(report["config"]["backends"]) == ["torch", "onnxruntime-cpu", "onnxruntime-cpu-int8"]
    assert {c["backend"] for c in report["comparisons"]} == {"onnxruntime-cpu", "onnxruntime-cpu-int8"}
    assert report["results"]["onnxruntime-cpu-int8"]["2"]["tokens"] == [8]


def test_bundle_without_int8_is_a_clear_error(tiny_bundle):
    from bench.cli_speed import main as bench_main
    from runtime import Describer
    from runtime.bundle import BundleError
    from runtime.cli import main as describe_main

    with pytest.raises(BundleError, match="no int8 graphs.*--int8"):
        Describer(tiny_bundle, backend="onnxruntime-cpu", precision="int8")
    res = CliRunner().invoke(describe_main, [str(tiny_bundle), __file__, "--precision", "int8"])
    assert res.exit_code == 2 and "no int8 graphs" in res.stderr
    res = CliRunner().invoke(bench_main, [str(tiny_bundle), "--precision", "int8", "--quiet"])
    assert res.exit_code == 2 and res.stderr.startswith("error: ") and "no int8 graphs" in res.stderr


def test_calibration_jsonl_without_images(tiny_model, tmp_path):
    from export.int8 import calibration_images
    from export.variants import VariantOptions

    data = tmp_path / "none.jsonl"
    data.write_text(json.dumps({"image": "missing.jpg", "answer": "a person"}) + "\n")
    with pytest.raises(ValueError, match="no readable images"):
        calibration_images(tiny_model, VariantOptions(calibration=data))
    images, source = calibration_images(tiny_model, VariantOptions(calibration_images=8))
    assert images.shape == (8, 3, 64, 32) and source["seed"] != 1  # never the verification images


def test_attention_form_exports_verified_int8_and_runs(trained_tiny, tmp_path):
    """``--cross-attention attention``: FP32 parity at export, the cross projections in INT8 too, same ids as portable."""
    import numpy as np

    from export.cli import main
    from runtime import Describer

    out = tmp_path / "kv"
    res = CliRunner().invoke(main, ["onnx", str(trained_tiny), "--out", str(out), "--max-batch", "4",
                                    "--max-new-tokens", "12", "--int8", "--cross-attention", "attention"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert "cross_k_0" in manifest["graphs"]["decoder_ort"]["inputs"]
    parity = manifest["verification"]["parity"]
    assert parity["decoder_ort"]["sequences_identical"] == parity["images"] and parity["decoder_ort"]["steps_compared"]
    plan = manifest["variants"]["int8"]["plan"]
    assert plan["decoder_ort"]["nodes_quantized"]["MatMulInteger"] == 2 * 6 + 1  # + the cross q and o projections
    pixels = np.random.default_rng(3).standard_normal((3, 3, 64, 32)).astype(np.float32)
    fused, portable = Describer(out), Describer(out, decoder="portable")
    assert fused.generate_ids(pixels, 12, stop_at_eos=False)[0] == portable.generate_ids(pixels, 12, stop_at_eos=False)[0]
    black = [np.zeros((64, 32, 3), np.uint8)]
    assert all(r.ok for r in Describer(out, precision="int8").describe(black, channel_order="rgb"))
    res = CliRunner().invoke(main, ["onnx", str(trained_tiny), "--out", str(tmp_path / "x"), "--cross-attention", "kv"])
    assert res.exit_code == 2 and "'kv' is not one of" in res.output and not (tmp_path / "x").exists()
