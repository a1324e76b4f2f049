"""The precision gate: near-tie divergences pass, confident divergences and lost attributes fail.

Report-level tests apply ``gate_failures`` to figures recorded on trained models; graph-level
tests run real ONNX variants through the export's own verification, with a known error put
into a graph: a small one-sided nudge of the logits (it can only flip near-ties) or a fault
that hits some images and none of the teacher-forced ones (what an input-dependent overflow does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from export.precisions import SPECS, Gate, PrecisionSpec, Variant, precision_spec  # noqa: E402
from export.variants import gate_failures, summary  # noqa: E402
from runtime.verification import Divergence, GraphParity, VariantReport  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _lite0_fp16(divergences: tuple[Divergence, ...]) -> VariantReport:
    """The FP16 variant of the earlier lite0 quickstart model as its export measured it (64 crops):
    61/64 identical, token agreement 0.9679, attributes 0.9969, logits max abs diff 1.96e-1 (the number
    of attribute fields was not recorded; 320 stands in)."""
    return VariantReport(images=64, seed=1, max_new_tokens=48, sequences_identical=61, token_agreement=0.9679,
                         attribute_agreement=0.9969, attribute_fields=320, divergences=divergences,
                         logits_max_abs_diff=0.196, logits_max_abs=8.0, graphs=("decoder", "encoder"))


# Where its three differing sequences first differed: FP32's top-2 gaps 0.0003, 0.0041 and 0.0117. Only the
# gaps (and image 29, step 1 for the first) were recorded then: the other images and steps are placeholders,
# and the margins are taken equal to the gaps (the variant picked FP32's runner-up). The gate reads margins only.
LITE0_TIES = tuple(Divergence(image=i, step=s, gap=g, margin=g)
                   for i, s, g in ((29, 1, 0.0003), (0, 0, 0.0041), (1, 0, 0.0117)))


def test_near_ties_pass_where_the_exact_sequence_floor_failed():
    report = _lite0_fp16(LITE0_TIES)
    assert report.sequence_match_rate < 0.99  # the exact-sequence floor rejected this variant
    assert report.confident_divergences == () and gate_failures("fp16", report) == []
    assert "61/64 (3 differ at near-ties, 0 confidently)" in summary("fp16", report)


def test_a_confident_divergence_fails_fp16():
    fault = Divergence(image=40, step=2, gap=0.31, margin=0.9)  # FP32 sure of its token; the variant took another
    report = _lite0_fp16((*LITE0_TIES, fault))
    assert report.confident_divergences == (fault,) and report.confident_divergence_rate == 1 / 64
    (failure,) = gate_failures("fp16", report)
    assert failure.startswith("fp16: 1/64 sequences (1.6%, at most 0.5% allowed)")
    assert "margin (0.9000)" in failure and "1.96e-01" in failure and "not near-ties" in failure


def test_margin_not_gap_decides():
    """A variant that takes FP32's third choice past a near-tie between the first two is still a fault."""
    report = _lite0_fp16((Divergence(image=3, step=5, gap=0.001, margin=0.5),))
    assert len(report.confident_divergences) == 1 and gate_failures("fp16", report)
    at_error = _lite0_fp16((Divergence(image=3, step=5, gap=0.196, margin=0.196),))
    assert at_error.confident_divergences == ()  # at the measured error: not above it


def test_int8_allows_half_a_percent():
    """INT8's recorded fallback (decoder_ort only, 200 crops: 175 identical, attributes 0.9919; its field count
    and logits error were not recorded and stand in) with 1 and 2 confident divergences: 1/200 is 0.5%
    (allowed), 2/200 is more."""
    confident = [Divergence(image=i, step=0, gap=1.0, margin=1.0) for i in range(2)]
    report = VariantReport(images=200, sequences_identical=175, token_agreement=0.9485, attribute_agreement=0.9919,
                           attribute_fields=900, logits_max_abs_diff=0.3, graphs=("decoder_ort",))
    assert gate_failures("int8", replace(report, divergences=tuple(confident[:1]))) == []
    (failure,) = gate_failures("int8", replace(report, divergences=tuple(confident)))
    assert failure.startswith("int8: 2/200 sequences (1.0%, at most 0.5% allowed)")


def test_attribute_floors():
    # INT8's recorded first try (INT8 encoder + decoder_ort): 10/200 identical, attributes 0.7615 (fields and
    # logits error stand in)
    first_try = VariantReport(images=200, sequences_identical=10, attribute_agreement=0.7615, attribute_fields=880,
                              logits_max_abs_diff=2.1)
    (failure,) = gate_failures("int8", first_try)
    assert failure.startswith("int8: attribute agreement 0.7615 is below 0.98 (880 parsed fields; 10/200")
    assert gate_failures("fp16", _lite0_fp16(LITE0_TIES)) == []
    (failure,) = gate_failures("fp16", replace(_lite0_fp16(LITE0_TIES), attribute_agreement=0.994))
    assert "below 0.995" in failure
    assert gate_failures("fp16", replace(_lite0_fp16(()), nonfinite=3)) == [
        "fp16: 3 non-finite values (overflow) in encoder outputs or logits"]


def test_report_round_trips_through_the_manifest_form():
    report = replace(_lite0_fp16(LITE0_TIES), decoder_ort=GraphParity(0.01, 40, 30, 0.99), fallback_fp32=("decoder",),
                     accepted_mismatch=True, failures=("x",))
    data = json.loads(json.dumps(report.to_dict()))
    assert VariantReport.from_dict(data) == report
    assert data["sequence_match_rate"] == 61 / 64 and data["confident_divergences"] == 0
    assert data["divergence_logit_gaps"] == [0.0003, 0.0041, 0.0117]
    # a report written before divergences were recorded still reads
    old = {"images": 64, "sequences_identical": 63, "divergence_logit_gaps": [0.01], "accepted_mismatch": False}
    assert VariantReport.from_dict(old) == VariantReport(images=64, sequences_identical=63)
    assert "63/64" in summary("fp16", old)


def test_overflowing_report_stays_strict_json():
    """An overflowing variant kept with --accept-mismatch: its NaN figures are written as null and read as NaN."""
    import math

    nan = float("nan")
    report = replace(_lite0_fp16((Divergence(1, 0, 0.01, 0.01),)), logits_max_abs_diff=nan, nonfinite=12,
                     decoder_ort=GraphParity(logits_max_abs_diff=nan), accepted_mismatch=True)
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = VariantReport.from_dict(json.loads(text))
    assert math.isnan(back.logits_max_abs_diff) and math.isnan(back.decoder_ort.logits_max_abs_diff)
    assert back.nonfinite == 12 and back.divergences == report.divergences
    assert any("non-finite" in f for f in gate_failures("fp16", back))


def test_precision_specs():
    assert precision_spec("int8").gate == Gate(attribute_agreement=0.98, confident_divergence_rate=0.005)
    assert SPECS["fp16"].file("encoder.onnx") == "encoder.fp16.onnx"
    assert PrecisionSpec("int8", Gate(0.9), 1).file("sub/decoder_ort.onnx") == "sub/decoder_ort.int8.onnx"
    with pytest.raises(ValueError, match="unknown precision 'bf16'; choose from fp16, int8"):
        precision_spec("bf16")


def test_builders_import_without_the_verifier():
    """fp16.py and int8.py take their shared records from precisions.py, not from variants.py (no import circle)."""
    code = "import sys, export.fp16, export.int8; assert 'export.variants' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# ---- real graphs through the export's verification ----

def _insert_after_producer(model, name: str, nodes: list, initializers: list) -> None:
    """Reroute graph tensor ``name`` through ``nodes``: its producer now writes ``name``_raw, ``nodes`` (which
    read ``name``_raw and end in ``name``) follow the producer, so every consumer reads the altered tensor."""
    graph = model.graph
    at = next(i for i, n in enumerate(graph.node) if name in n.output)
    producer = graph.node[at]
    producer.output[list(producer.output).index(name)] = f"{name}_raw"
    for offset, node in enumerate(nodes, 1):
        graph.node.insert(at + offset, node)
    graph.initializer.extend(initializers)


def _nudge_logits(path: Path, tokens: list[int], delta: float) -> None:
    """Add ``delta`` to the logits of ``tokens``, before the argmax.

    The variant's logits error is then ``delta`` on those tokens and 0 on the others, so it can
    overturn FP32's choice only where FP32's margin is below ``delta``: a near-tie by construction.
    """
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    vocab = next(o for o in model.graph.output if o.name == "logits").type.tensor_type.shape.dim[-1].dim_value
    nudge = np.zeros(vocab, np.float32)
    nudge[tokens] = delta
    _insert_after_producer(model, "logits", [helper.make_node("Add", ["logits_raw", "nudge"], ["logits"])],
                           [numpy_helper.from_array(nudge, "nudge")])
    onnx.save(model, str(path))


def _fault_on_bright_images(path: Path, threshold: float, gain: float = 4.0) -> None:
    """Scale ``cross_v`` by 1 + ``gain`` for every image whose mean normalised pixel is above ``threshold``."""
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    consts = {"fault_axes": np.array([1, 2, 3], np.int64), "fault_threshold": np.array(threshold, np.float32),
              "fault_shape": np.array([1, -1, 1, 1, 1], np.int64), "fault_gain": np.array(gain, np.float32),
              "fault_one": np.array(1.0, np.float32)}
    nodes = [helper.make_node("ReduceMean", ["pixels", "fault_axes"], ["fault_mean"], keepdims=0),  # (B,)
             helper.make_node("Greater", ["fault_mean", "fault_threshold"], ["fault_hit"]),
             helper.make_node("Cast", ["fault_hit"], ["fault_hit_f"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["fault_hit_f", "fault_shape"], ["fault_hit_b"]),  # (1, B, 1, 1, 1)
             helper.make_node("Mul", ["fault_hit_b", "fault_gain"], ["fault_scaled"]),
             helper.make_node("Add", ["fault_scaled", "fault_one"], ["fault_factor"]),
             helper.make_node("Mul", ["cross_v_raw", "fault_factor"], ["cross_v"])]
    _insert_after_producer(model, "cross_v", nodes, [numpy_helper.from_array(v, k) for k, v in consts.items()])
    onnx.save(model, str(path))


def _fresh_copy(src: Path, dst: Path):
    from runtime.bundle import Manifest

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.pop("variants", None)
    return Manifest.from_dict(manifest)


def test_near_tie_divergences_pass_with_real_graphs(tiny_bundle, tiny_model, tmp_path, monkeypatch,
                                                    one_torch_thread):
    """A decoder whose logits carry a small one-sided error: sequences differ (below the former 99% exact
    floor), every first difference is at a margin within the measured error, and the variant is kept."""
    import torch

    from export import variants
    from export.validate import parity_images
    from runtime import Describer

    # FP32's first step on the verification images: the same runner-up everywhere, a few thousandths behind
    pixels = parity_images(tiny_model, SPECS["fp16"].verify_images, seed=1)
    with torch.no_grad():
        top = tiny_model(torch.from_numpy(pixels), torch.full((len(pixels), 1), tiny_model.cfg.bos_id))[:, 0].topk(2)
    runner_up = int(top.indices[:, 1].mode().values)
    gaps = np.sort((top.values[:, 0] - top.values[:, 1]).numpy())
    k = int(np.argmax(np.diff(gaps[:len(gaps) // 2])))
    delta = float(gaps[k:k + 2].mean())  # between two images' gaps, well clear of both: k + 1 images are closer

    def nudged_decoder(model, out, specs, options):
        shutil.copy(out / specs["decoder"].file, out / "decoder.fp16.onnx")
        _nudge_logits(out / "decoder.fp16.onnx", [runner_up], delta)
        return Variant("fp16", {"decoder": "decoder.fp16.onnx"}, {"test": "FP32 decoder, one logit nudged"})

    monkeypatch.setitem(variants.BUILDERS, "fp16", nudged_decoder)
    bundle = tmp_path / "b"
    variants.add_variants(tiny_model, bundle, _fresh_copy(tiny_bundle, bundle), ("fp16",))
    v = json.loads((bundle / "manifest.json").read_text())["variants"]["fp16"]
    rep = VariantReport.from_dict(v["verification"])
    assert rep.logits_max_abs_diff == pytest.approx(delta, abs=1e-5)
    assert rep.divergences and rep.sequence_match_rate < 0.99
    assert all(d.margin <= rep.logits_max_abs_diff and d.gap <= d.margin for d in rep.divergences)
    assert rep.confident_divergences == () and v["verification"]["confident_divergences"] == 0
    assert rep.failures == () and not rep.accepted_mismatch and "fallback" not in v["plan"]
    assert v["graphs"] == {"decoder": "decoder.fp16.onnx"}
    # the recorded first difference is where the variant's runtime output really leaves FP32's
    d = rep.divergences[0]
    one = pixels[d.image:d.image + 1]
    ours = Describer(bundle, backend="onnxruntime-cpu", precision="fp16").generate_ids(one, 24)[0][0]
    want = Describer(bundle, backend="onnxruntime-cpu").generate_ids(one, 24)[0][0]
    assert ours[:d.step] == want[:d.step] and ours[d.step:d.step + 1] != want[d.step:d.step + 1]


def test_confident_divergences_fail_and_the_faulty_graph_goes_back(tiny_bundle, tiny_model, tmp_path, monkeypatch,
                                                                   one_torch_thread):
    """A real FP16 variant whose encoder goes wrong on bright images that the teacher-forced images do not
    include: its logits error stays small, the sequences of those images differ at large margins, the gate
    fails, and the fallback keeps the FP16 decoder with the FP32 encoder."""
    from export import variants
    from export.fp16 import build_fp16
    from export.validate import PARITY_BATCHES, ValidationError, parity_images

    teacher_forced = parity_images(tiny_model, sum(PARITY_BATCHES), seed=0).mean(axis=(1, 2, 3))
    verified = parity_images(tiny_model, SPECS["fp16"].verify_images, seed=1).mean(axis=(1, 2, 3))
    above = verified[verified > teacher_forced.max()]
    # halfway: ONNX Runtime's mean differs from numpy's in the last bits
    threshold = float(teacher_forced.max() + above.min()) / 2 if len(above) else float(teacher_forced.max())
    hit = len(above)
    assert hit / len(verified) > 0.005  # precondition: the fault reaches more than the allowed share

    def faulty_encoder(model, out, specs, options):
        variant = build_fp16(model, out, specs, options)
        _fault_on_bright_images(out / variant.graphs["encoder"], threshold)
        return variant

    monkeypatch.setitem(variants.BUILDERS, "fp16", faulty_encoder)
    strict, spec = tmp_path / "strict", SPECS["fp16"]
    monkeypatch.setitem(SPECS, "fp16", replace(spec, fallbacks=()))
    with pytest.raises(ValidationError) as e:
        variants.add_variants(tiny_model, strict, _fresh_copy(tiny_bundle, strict), ("fp16",))
    (failure,) = [f for f in e.value.failures if "not near-ties" in f]  # the attributes may suffer too
    assert failure.startswith(f"fp16: {hit}/64 sequences")
    rep = VariantReport.from_dict(e.value.report)
    assert rep.logits_max_abs_diff < 0.01 and len(rep.confident_divergences) == hit
    assert {d.image for d in rep.confident_divergences} == set(np.flatnonzero(verified > threshold).tolist())

    monkeypatch.setitem(SPECS, "fp16", spec)
    bundle = tmp_path / "fallback"
    variants.add_variants(tiny_model, bundle, _fresh_copy(tiny_bundle, bundle), ("fp16",))
    v = json.loads((bundle / "manifest.json").read_text())["variants"]["fp16"]
    assert v["graphs"] == {"decoder": "decoder.fp16.onnx"} and v["plan"]["fallback"]["fp32"] == ["encoder"]
    assert v["plan"]["fallback"]["reason"] in e.value.failures  # the first try's first failure line
    assert f"{hit} confidently" in v["plan"]["fallback"]["first_try"]
    assert v["verification"]["confident_divergences"] == 0 and not (bundle / "encoder.fp16.onnx").exists()
