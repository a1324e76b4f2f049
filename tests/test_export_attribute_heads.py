"""Attribute heads end to end: exported as the encoder's third output (checked against PyTorch, calibrated on
held-out crops, passed through the FP16 variant), read by every ONNX Runtime decoder path into
``Description.attributes``, the ``--json`` line and ``pvlm-eval``; bundles without heads are unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export needs torch")


@pytest.fixture(scope="module")
def heads_checkpoint(tiny_vocab, tmp_path_factory):
    """The tiny preset with attribute heads (random init, seeded)."""
    from pvlm import PersonVLM, PersonVLMConfig, save_checkpoint

    torch.manual_seed(1)
    model = PersonVLM(PersonVLMConfig.preset("tiny", vocab_size=len(tiny_vocab), attribute_heads=True)).eval()
    return save_checkpoint(tmp_path_factory.mktemp("heads") / "heads.pt", model, tiny_vocab, {"note": "heads"})


@pytest.fixture(scope="module")
def heads_bundle(heads_checkpoint, synth_dir, tmp_path_factory, one_torch_thread):
    """Exported with an FP16 variant, calibrated on the synthetic validation split."""
    from export import export_onnx

    return export_onnx(heads_checkpoint, tmp_path_factory.mktemp("hb") / "bundle", max_batch=8, max_new_tokens=16,
                       precisions=("fp16",), accept_mismatch=True, calibration_data=synth_dir / "val.jsonl")


@pytest.fixture(scope="module")
def crops(synth_dir):
    return sorted(str(p) for p in (synth_dir / "images").iterdir())[:5]


def test_manifest_records_the_output_layout_and_calibration(heads_bundle):
    import onnx

    from pvlm.attribute_targets import HEAD_FIELDS
    from runtime.bundle import Bundle

    manifest = Bundle.load(heads_bundle).manifest
    heads = manifest.attribute_heads
    assert list(manifest.graphs["encoder"].outputs) == ["cross_k", "cross_v", "attributes"]
    assert [f.name for f in heads.fields] == [f.key for f in HEAD_FIELDS]
    assert [f.values for f in heads.fields] == [f.drawn for f in HEAD_FIELDS]
    assert manifest.graphs["encoder"].outputs["attributes"].shape == ("batch", heads.total_values)
    graph = onnx.load(str(heads_bundle / "encoder.onnx"), load_external_data=False)
    assert [o.name for o in graph.graph.output] == ["cross_k", "cross_v", "attributes"]
    cal = heads.calibration
    assert cal["source"].endswith("val.jsonl") and cal["images"] == 12
    for f in heads.fields:
        figures = cal["fields"][f.name]
        assert figures["temperature"] == f.temperature and figures["n"] == 12
        assert figures["nll_after"] <= figures["nll_before"] + 1e-6  # the fit minimises the NLL
    assert manifest.parity.encoder_max_abs_diff < 1e-4


def test_descriptions_carry_the_heads_calibrated_probabilities(heads_bundle, heads_checkpoint, crops):
    from PIL import Image

    from export.graphs import attribute_probabilities
    from pvlm.checkpoint import load_checkpoint
    from pvlm.data import preprocess
    from runtime import Describer
    from runtime.calibration import apply_temperature

    model, _, _ = load_checkpoint(heads_checkpoint)
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(p), model.cfg) for p in crops])
        raw = attribute_probabilities(model, model.encode_image(x)).numpy()
    results = {}
    for decoder in ("auto", "portable"):
        with Describer(heads_bundle, decoder=decoder) as d:
            results[decoder] = d.describe(crops)
            heads = d.attribute_heads
    with Describer(heads_bundle, precision="fp16") as d:
        results["fp16"] = d.describe(crops)
    for name, descriptions in results.items():
        tol = 1e-3 if name == "fp16" else 1e-5
        for i, desc in enumerate(descriptions):
            probs = desc.attributes["probabilities"]
            for f in heads.fields:
                want = apply_temperature(raw[i, f.offset:f.offset + len(f.values)], f.temperature)
                got = [probs[f.name][v] for v in f.values]
                np.testing.assert_allclose(got, want, atol=tol, err_msg=f"{name} {f.name}")
            assert desc.attributes["text"]["view"] == desc.attributes["text"].get("view")
            assert set(desc.attributes["confidence"]) == {f.name for f in heads.fields}
    assert [d.text for d in results["auto"]] == [d.text for d in results["portable"]]


def test_abstention_and_json_line(heads_bundle, crops):
    jsonschema = pytest.importorskip("jsonschema", reason="the dev extra installs jsonschema")
    from runtime import Describer
    from runtime.description_schema import description_record

    with Describer(heads_bundle, min_confidence=0.999) as d:  # random heads: nothing is that sure
        out = d.describe(crops)
    schema = json.loads((heads_bundle / "description.schema.json").read_text())
    for desc in out:
        attrs = desc.attributes
        assert all(attrs["confidence"][k] is None for k in attrs["confidence"])
        assert set(attrs["abstained"]) <= set(attrs["confidence"])
        for key in attrs["abstained"]:
            assert attrs[key] in (None, [])
        record = description_record("x.png", desc, bundle="0" * 16, backend=d.backend_name)
        jsonschema.validate(json.loads(json.dumps(record)), schema)
    with Describer(heads_bundle) as d:
        stated = d.describe(crops)
    assert any(a.attributes["abstained"] == [] for a in stated)


def test_cli_min_confidence(heads_bundle, tiny_bundle, crops):
    from click.testing import CliRunner

    from runtime.cli import main

    res = CliRunner().invoke(main, [str(heads_bundle), crops[0], "--json", "--min-confidence", "0.999"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.splitlines()[0])
    assert "probabilities" in line["attributes"] and line["attributes"]["abstained"]
    refused = CliRunner().invoke(main, [str(tiny_bundle), crops[0], "--min-confidence", "0.5"])
    assert refused.exit_code == 2 and "attribute heads" in refused.output


def test_bundles_without_heads_are_unchanged(tiny_bundle, crops):
    from runtime import Describer
    from runtime.attribute_schema import ATTRIBUTE_KEYS
    from runtime.bundle import Bundle

    assert Bundle.load(tiny_bundle).manifest.attribute_heads is None
    with Describer(tiny_bundle) as d:
        assert all(set(x.attributes) == set(ATTRIBUTE_KEYS) for x in d.describe(crops[:2]))
    with pytest.raises(ValueError, match="attribute heads"):
        Describer(tiny_bundle, min_confidence=0.5)


def test_manifest_checks_the_heads_section(heads_bundle, tmp_path):
    from export.manifest import write_manifest
    from runtime.bundle import Bundle, BundleError

    copy = tmp_path / "b"
    shutil.copytree(heads_bundle, copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["graphs"]["encoder"]["attribute_heads"]["fields"][0]["temperature"] = 3.0
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="content hash mismatch in graphs.encoder"):
        Bundle.load(copy)
    del raw["graphs"]["encoder"]["attribute_heads"]  # an output nobody describes
    with pytest.raises(BundleError, match='unexpected "attributes"'):
        write_manifest(copy, raw)


def test_parity_catches_wrong_probabilities(heads_checkpoint):
    from export.validate import _compare_encoder, _Run, parity_images
    from pvlm.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(heads_checkpoint)
    pixels = parity_images(model, 2)

    class Skewed:  # the right K/V, probabilities off by 0.05
        def run(self, _names, feeds):
            from export.graphs import EncoderGraph

            with torch.no_grad():
                ck, cv, p = EncoderGraph(model)(torch.from_numpy(feeds["pixels"]))
            return [ck.numpy(), cv.numpy(), p.numpy() + 0.05]

    run = _Run(tallies={})
    _compare_encoder(model, Skewed(), pixels, run)
    assert run.encoder_max_abs_diff == pytest.approx(0.05, abs=1e-4)


def test_eval_reports_calibration_and_abstention(heads_bundle, synth_dir):
    from bench.cli_quality import summary_lines
    from bench.quality import EvalConfig, evaluate

    r = evaluate(EvalConfig(model=str(heads_bundle), data=str(synth_dir / "val.jsonl"), progress=False,
                            reference=False, meteor=False, min_confidence=0.5))
    section = r["confidence"]
    assert section["available"] and section["min_confidence"] == 0.5
    assert set(section["fields"]) <= set(r["attributes"]["categories"]) and section["fields"]
    assert all(f["ece_before"] is not None and f["ece_after"] is not None for f in section["fields"].values())
    curve = {row["threshold"]: row for row in section["abstention"]}
    assert curve[0.0]["stated"] >= curve[0.5]["stated"] >= curve[0.99]["stated"]  # coverage only falls
    assert all(row["scorable"] == curve[0.0]["scorable"] for row in curve.values())
    text = "\n".join(summary_lines(r))
    assert "abstention" in text and "ECE" in text
