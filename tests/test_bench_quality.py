"""bench.quality / bench.quality_html / bench.cli_quality: metrics, attribute accuracy, parity, HTML, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("pycocoevalcap")

from bench.cli_quality import main, summary_lines  # noqa: E402
from bench.quality import (  # noqa: E402
    ATTRIBUTE_CATEGORIES,
    CAPTION_METRICS,
    EvalConfig,
    attribute_accuracy,
    caption_metrics,
    evaluate,
    majority_baseline,
    meteor_score,
    normalize_attribute,
    token_parity,
    tokenize_caption,
)
from bench.quality_html import write_html  # noqa: E402

CAPTIONS = [
    "A man wearing a red jacket and blue jeans, carrying a backpack, walking.",
    "The woman is dressed in a white shirt with a black skirt; she wears a cap.",
    "A young boy in a green hoodie and grey shorts stands facing the camera, holding an umbrella.",
]


@pytest.fixture(scope="module")
def bundle_report(tiny_bundle, synth_dir):
    """evaluate() on the tiny bundle, two backends (auto resolves to onnxruntime-cpu here)."""
    cfg = EvalConfig(model=str(tiny_bundle), data=str(synth_dir / "val.jsonl"), limit=8, batch_size=4,
                     backends=("onnxruntime-cpu", "auto"), progress=False, meteor=False)
    return evaluate(cfg)


# --------------------------------------------------------------------------- evaluate()


def test_evaluate_bundle_metrics(bundle_report):
    r = bundle_report
    assert r["n_images"] == 8 and r["skipped"] == 0 and len(r["rows"]) == 8
    m = r["caption_metrics"]
    for key in CAPTION_METRICS:
        assert isinstance(m[key], float), key
    for key in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["CIDEr"] >= 0.0
    assert m["SPICE"].startswith("unavailable:")
    assert m["METEOR"].startswith("unavailable:")  # disabled in this test (Java takes ~12 s to start)
    json.dumps(r)  # the report is plain JSON


def test_evaluate_bundle_attributes(bundle_report):
    attrs = bundle_report["attributes"]
    assert attrs["source"] == "labels"  # synthetic rows carry their labels
    cats = attrs["categories"]
    assert set(ATTRIBUTE_CATEGORIES) | {"gender", "age"} == set(cats)
    for name, c in cats.items():
        assert c["n"] == 8, name
        assert 0.0 <= c["accuracy"] <= 1.0 and c["correct"] == round(c["accuracy"] * 8)
    assert attrs["mean"] == pytest.approx(sum(c["accuracy"] for c in cats.values()) / len(cats))
    row = bundle_report["rows"][0]
    assert set(row["attributes"]) == set(cats)
    assert isinstance(row["attributes"]["carrying"]["expected"], list)
    # the row-level marks add up to the table
    for name, c in cats.items():
        assert sum(rw["attributes"][name]["correct"] for rw in bundle_report["rows"]) == c["correct"]


def test_evaluate_bundle_parity_and_throughput(bundle_report, tiny_checkpoint):
    parity = bundle_report["parity"]
    assert parity["available"] and parity["reason"] is None
    assert Path(parity["reference"]) == Path(tiny_checkpoint)
    for name in ("onnxruntime-cpu", "auto"):
        p = parity["backends"][name]
        assert p["n"] == 8
        assert p["exact_match_rate"] == 1.0
        assert p["token_agreement"] == 1.0
    assert all(row["matches_reference"] for row in bundle_report["rows"])
    for name, t in bundle_report["throughput"].items():
        assert t["images"] == 8 and t["seconds"] > 0 and t["images_per_s"] > 0 and t["errors"] == 0
        assert t["batch_size"] == 4
    assert bundle_report["throughput"]["auto"]["backend"] == "onnxruntime-cpu"
    assert bundle_report["machine"]["cores"] >= 1


def test_evaluate_without_reference(tiny_bundle, synth_dir):
    r = evaluate(EvalConfig(model=str(tiny_bundle), data=str(synth_dir / "val.jsonl"), limit=2, progress=False,
                            reference=False, meteor=False, max_new_tokens=4))
    assert r["parity"]["available"] is False and "disabled" in r["parity"]["reason"]
    assert all(len(row["generated"].split()) <= 4 for row in r["rows"])
    assert "matches_reference" not in r["rows"][0]


def test_bundle_whose_checkpoint_is_gone(tiny_bundle, synth_dir, tmp_path):
    import shutil

    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "moved"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["source"].update(checkpoint="deleted.pt", checkpoint_absolute=str(tmp_path / "deleted.pt"))
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(main, [str(bundle), str(synth_dir / "val.jsonl"), "--limit", "2", "--quiet",
                                    "--no-meteor", "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "parity: not measured (the bundle's source checkpoint is missing" in res.output
    assert "deleted.pt" in res.output


def test_evaluate_checkpoint_model(tiny_checkpoint, synth_dir):
    r = evaluate(EvalConfig(model=str(tiny_checkpoint), data=str(synth_dir / "val.jsonl"), limit=3, batch_size=4,
                            max_new_tokens=8, progress=False, meteor=False))
    assert r["model"]["kind"] == "checkpoint" and r["n_images"] == 3
    assert r["timing"]["export_s"] > 0
    p = r["parity"]["backends"]["onnxruntime-cpu"]
    assert p["exact_match_rate"] == 1.0 and p["token_agreement"] == 1.0
    assert r["throughput"]["onnxruntime-cpu"]["max_new_tokens"] == 8


def test_evaluate_bad_input(tiny_bundle, synth_dir, tmp_path):
    data = str(synth_dir / "val.jsonl")
    with pytest.raises(ValueError, match="unknown backend"):
        evaluate(EvalConfig(model=str(tiny_bundle), data=data, backends=("nope",)))
    with pytest.raises(FileNotFoundError):
        evaluate(EvalConfig(model=str(tmp_path / "missing"), data=data))
    with pytest.raises(ValueError, match="limit"):
        evaluate(EvalConfig(model=str(tiny_bundle), data=data, limit=0))


# --------------------------------------------------------------------------- metrics


def test_tokenize_caption():
    assert tokenize_caption("A man, wearing a T-shirt; he's WALKING.") == "a man wearing a t-shirt he's walking"
    assert tokenize_caption("") == ""


def test_caption_metrics_identical_beats_shuffled():
    same = caption_metrics(CAPTIONS, CAPTIONS)
    shuffled = caption_metrics(CAPTIONS[1:] + CAPTIONS[:1], CAPTIONS)
    assert same["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert same["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert same["ROUGE-L"] == pytest.approx(1.0)
    assert same["CIDEr"] > 1.0
    for key in CAPTION_METRICS:
        assert same[key] > shuffled[key], key
    # punctuation and case do not matter
    assert caption_metrics([c.upper().replace(",", " ,") for c in CAPTIONS], CAPTIONS)["BLEU-4"] == pytest.approx(
        1.0, abs=1e-6)
    # several references per image are accepted
    multi = caption_metrics(CAPTIONS, [[c, "a person"] for c in CAPTIONS])
    assert multi["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError):
        caption_metrics(CAPTIONS, CAPTIONS[:2])


def test_meteor_unavailable_without_java(monkeypatch):
    import bench.quality as ev

    monkeypatch.setattr(ev.shutil, "which", lambda name: None)
    assert meteor_score({0: ["a man"]}, {0: ["a man"]}) == "unavailable: java not found on PATH"


# --------------------------------------------------------------------------- attributes and parity


def test_normalize_attribute():
    assert normalize_attribute("headwear", "none") is None
    assert normalize_attribute("headwear", None) is None
    assert normalize_attribute("headwear", "Cap") == "cap"
    assert normalize_attribute("carrying", "none") == []
    assert normalize_attribute("carrying", None) == []
    assert normalize_attribute("carrying", "backpack") == ["backpack"]
    assert normalize_attribute("carrying", ["umbrella", "phone", "umbrella"]) == ["phone", "umbrella"]


def test_attribute_accuracy_hand_built():
    expected = [  # synthetic-label conventions
        {"upper": "jacket", "headwear": "none", "carrying": "none", "view": "front"},
        {"upper": "coat", "headwear": "cap", "carrying": "backpack", "view": "back"},
        {"upper": "shirt", "headwear": "none", "carrying": "phone", "view": "side"},
    ]
    predicted = [  # parse_attributes conventions
        {"upper": "jacket", "headwear": None, "carrying": [], "view": "front"},
        {"upper": "jacket", "headwear": "cap", "carrying": ["backpack"], "view": None},
        {"upper": "shirt", "headwear": "hat", "carrying": ["phone", "umbrella"], "view": "side"},
    ]
    acc = attribute_accuracy(predicted, expected, ["upper", "headwear", "carrying", "view"])
    cats = acc["categories"]
    assert {k: cats["upper"][k] for k in ("accuracy", "correct", "n")} == {
        "accuracy": pytest.approx(2 / 3), "correct": 2, "n": 3}
    assert cats["headwear"]["correct"] == 2  # "none" == None
    assert cats["carrying"]["correct"] == 2  # "none" == [], "backpack" == ["backpack"]; one extra item is wrong
    assert cats["view"]["correct"] == 2
    assert acc["mean"] == pytest.approx(2 / 3)
    # ground truth parsed from a caption: silence is "unknown" (not counted), except for headwear/carrying
    sources = [dict.fromkeys(("upper", "headwear", "carrying", "view"), "caption")] * 2
    acc = attribute_accuracy([{"view": "front", "headwear": None, "carrying": []}] * 2,
                             [{"view": None, "headwear": None, "carrying": []}, {"view": "front"}],
                             ["view", "headwear", "carrying"], sources)
    assert {k: acc["categories"]["view"][k] for k in ("accuracy", "correct", "n")} == {
        "accuracy": 1.0, "correct": 1, "n": 1}
    assert acc["categories"]["headwear"]["n"] == 2 and acc["categories"]["carrying"]["accuracy"] == 1.0
    empty = attribute_accuracy([], [], ["upper"])
    assert empty["categories"]["upper"]["n"] == 0 and empty["mean"] is None


def test_majority_rate_and_confusion_expose_mode_collapse():
    truth = ["helmet"] * 3 + ["none"] * 4 + ["cap"] * 3
    collapsed = attribute_accuracy([{"headwear": "helmet"}] * 10, [{"headwear": t} for t in truth], ["headwear"])
    h = collapsed["categories"]["headwear"]
    assert h["accuracy"] == pytest.approx(0.3) and h["majority"] == "none" and h["majority_rate"] == pytest.approx(0.4)
    assert h["accuracy"] < h["majority_rate"]  # worse than ignoring the image
    assert h["top_prediction"] == "helmet" and h["top_prediction_rate"] == 1.0
    assert h["confusion"] == {"helmet": {"helmet": 3}, "none": {"helmet": 4}, "cap": {"helmet": 3}}
    good = attribute_accuracy([{"headwear": t if i else "cap"} for i, t in enumerate(truth)],
                              [{"headwear": t} for t in truth], ["headwear"])["categories"]["headwear"]
    assert good["accuracy"] == pytest.approx(0.9) and good["majority_rate"] == pytest.approx(0.4)
    assert good["confusion"]["helmet"] == {"cap": 1, "helmet": 2} and good["top_prediction"] == "cap"  # 4-4 tie with none
    # carried lists and absence get one label each; ties break alphabetically
    carry = attribute_accuracy([{"carrying": ["phone", "umbrella"]}, {"carrying": []}],
                               [{"carrying": "phone"}, {"carrying": "none"}], ["carrying"])["categories"]["carrying"]
    assert carry["confusion"] == {"phone": {"phone+umbrella": 1}, "none": {"none": 1}}
    assert carry["majority"] == "none" and carry["majority_rate"] == 0.5
    assert majority_baseline({})["majority_rate"] is None


def test_console_summary_shows_baselines_and_confusion():
    truth = ["helmet"] * 3 + ["none"] * 7
    attrs = attribute_accuracy([{"headwear": "helmet"}] * 10, [{"headwear": t} for t in truth], ["headwear"])
    report = {"n_images": 10, "skipped": 0, "scored_backend": "onnxruntime-cpu", "caption_metrics": {},
              "attributes": {**attrs, "source": "labels"}, "parity": {"available": False, "reason": "off"},
              "throughput": {}}
    text = "\n".join(summary_lines(report))
    assert re.search(r"headwear\s+30\.0%\s+70\.0%\s+-40 pt\s+helmet 100%", text), text
    assert "confusion headwear (rows: true, columns: predicted)" in text
    assert re.search(r"  none\s+7\s+\.\n", text) and re.search(r"  helmet\s+3\s+\.\n", text), text  # all said helmet


def test_token_parity_hand_built():
    p = token_parity([[5, 6, 7], [8, 9], []], [[5, 6, 7], [8, 1, 2], []])
    assert p["exact_match_rate"] == pytest.approx(2 / 3)
    assert p["token_agreement"] == pytest.approx((3 + 1) / (3 + 3))
    assert p["mismatched"] == [1] and p["n_mismatched"] == 1


# --------------------------------------------------------------------------- HTML


def _hand_report(images: list[Path]) -> dict:
    rows = [{"image": str(p), "reference": f"ref {i} & more", "generated": f"a <b>man</b> {i} wearing a coat",
             "error": None, "matches_reference": i % 2 == 0,
             "attributes": {"upper": {"predicted": "coat", "expected": "coat", "correct": True},
                            "carrying": {"predicted": [], "expected": ["backpack"] if i < 2 else [],
                                         "correct": i >= 2}}}
            for i, p in enumerate(images)]
    rows.append({"image": "/nonexistent/x.png", "reference": "r", "generated": "g", "error": "input 9: file not found",
                 "attributes": {}})
    return {
        "config": {"model": "m<odel", "data": "d.jsonl", "backends": ["onnxruntime-cpu"]},
        "n_images": len(rows), "skipped": 1, "scored_backend": "onnxruntime-cpu",
        "caption_metrics": {"BLEU-4": 0.5, "CIDEr": 1.25, "SPICE": "unavailable: offline"},
        "attributes": {"categories": {"upper": {"accuracy": 1.0, "correct": 3, "n": 3, "majority": "coat",
                                                "majority_rate": 1.0, "top_prediction": "coat",
                                                "top_prediction_rate": 1.0, "confusion": {"coat": {"coat": 3}}}},
                       "mean": 1.0,
                       "source": "labels"},
        "parity": {"available": False, "reason": "reference <disabled>", "backends": {}},
        "throughput": {"onnxruntime-cpu": {"images_per_s": 12.5, "seconds": 0.24, "batch_size": 8}},
        "machine": {"cpu": "test cpu", "cores": 2, "gpu": None}, "rows": rows,
    }


def test_html_report_hand_built(synth_dir, tmp_path):
    images = sorted((synth_dir / "images").glob("*.png"))[:3]
    out = write_html(_hand_report(images), tmp_path / "sub" / "report.html")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert text.count('<img src="data:image/jpeg;base64,') == 3
    assert "image unavailable" in text  # the missing image gets a placeholder, not a crash
    for i in range(3):
        assert f"a &lt;b&gt;man&lt;/b&gt; {i} wearing a coat" in text
        assert f"ref {i} &amp; more" in text
    assert "<b>man</b>" not in text and "m&lt;odel" in text and "reference &lt;disabled&gt;" in text
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    assert "&#10003;" in text and "&#10007;" in text and "expected backpack" in text
    assert not list(out.parent.glob(".*.tmp"))
    # thumbnails are 160 px high JPEGs
    import base64
    import io

    from PIL import Image

    b64 = re.search(r'data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', text).group(1)
    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.format == "JPEG" and im.height == 160
    # mistakes first: the failed row, then the ones with a wrong attribute, then the all-correct one
    assert "Confusion (rows: true, columns: predicted)" in text and "majority rate" in text
    assert text.index("input 9: file not found") < text.index("ref 0 &amp; more") < text.index("ref 2 &amp; more")
    assert text.index("ref 1 &amp; more") < text.index("ref 2 &amp; more")
    assert "2 image(s) with a mistake" not in text and "3 image(s) with a mistake, listed first" in text
    # max_images caps the cards; linked (not inlined) images use relative paths
    short = write_html(_hand_report(images), tmp_path / "short.html", images_inline=False, max_images=2).read_text()
    assert "showing 2 of 4 images" in short and "base64" not in short
    assert short.count("<img src=") == 2


# --------------------------------------------------------------------------- CLI


def test_cli_happy_path(tiny_bundle, synth_dir, tmp_path):
    html_path, json_path = tmp_path / "r.html", tmp_path / "r.json"
    res = CliRunner().invoke(main, [str(tiny_bundle), str(synth_dir / "val.jsonl"), "--limit", "4", "--quiet",
                                    "--no-meteor", "--batch-size", "2", "--html", str(html_path),
                                    "--max-images", "3", "--json-out", str(json_path)])
    assert res.exit_code == 0, res.output
    assert "BLEU-4" in res.output and "CIDEr" in res.output
    assert "parity onnxruntime-cpu vs PyTorch FP32: exact match 1.000" in res.output
    assert "throughput onnxruntime-cpu" in res.output and "images/s" in res.output
    assert f"wrote {html_path}" in res.output and f"wrote {json_path}" in res.output
    report = json.loads(json_path.read_text())
    assert report["n_images"] == 4 and len(report["rows"]) == 4
    text = html_path.read_text(encoding="utf-8")
    assert text.count('<img src="data:image/jpeg;base64,') == 3 and "showing 3 of 4 images" in text
    assert "majority" in res.output and "confusion view" in res.output
    assert all("majority_rate" in c and "confusion" in c for c in report["attributes"]["categories"].values())
    assert "http://" not in text and "https://" not in text


@pytest.mark.parametrize("case", ["missing-data", "unknown-backend", "missing-model", "empty-dataset"])
def test_cli_bad_input(case, tiny_bundle, synth_dir, tmp_path):
    model, data, extra = str(tiny_bundle), str(synth_dir / "val.jsonl"), []
    if case == "missing-data":
        data = str(tmp_path / "nope.jsonl")
    elif case == "unknown-backend":
        extra = ["--backend", "onnxruntime-cpu,warp-drive"]
    elif case == "missing-model":
        model = str(tmp_path / "no-bundle")
    else:
        (tmp_path / "empty.jsonl").write_text(json.dumps({"image": "gone.png", "answer": "a man"}) + "\n")
        data = str(tmp_path / "empty.jsonl")
    res = CliRunner().invoke(main, [model, data, "--quiet", "--no-meteor", *extra])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    if case == "unknown-backend":
        assert "warp-drive" in lines[0]
    if case == "empty-dataset":
        assert "no usable images" in lines[0]


# --------------------------------------------------------------------------- decodings


def test_decodings_side_by_side(tiny_bundle, synth_dir):
    """Metrics and attribute accuracy per decoding; the original repository's sampling as a preset; the guarded
    greedy decoding keeps exact parity with the (unguarded) PyTorch reference cut where the guard ends a row."""
    from runtime.decoding import DecodingOptions

    r = evaluate(EvalConfig(model=str(tiny_bundle), data=str(synth_dir / "val.jsonl"), limit=6, batch_size=4,
                            progress=False, meteor=False, max_new_tokens=24,
                            decoding=DecodingOptions(seed=3), decodings=("greedy", "beams3", "original")))
    assert list(r["decodings"]) == ["greedy", "beams3", "original"] and r["decoding"] == "greedy"
    assert r["decodings"]["greedy"]["caption_metrics"] == r["caption_metrics"]
    original = r["decodings"]["original"]["options"]
    assert (original["temperature"], original["top_k"], original["top_p"], original["seed"]) == (0.7, 50, 0.9, 3)
    for d in r["decodings"].values():
        assert set(d["attribute_accuracy"]) == set(r["attributes"]["categories"])
        assert d["throughput"]["images"] == 6 and isinstance(d["caption_metrics"]["CIDEr"], float)
    assert r["parity"]["available"] and r["parity"]["no_repeat_ngram_size"] == 10
    assert r["parity"]["backends"]["onnxruntime-cpu"]["exact_match_rate"] == 1.0
    lines = "\n".join(summary_lines(r))
    assert "per decoding" in lines and "original" in lines and "beams3" in lines


def test_beam_decoding_scored_and_parity_skipped(tiny_bundle, synth_dir):
    from runtime.decoding import DecodingOptions

    r = evaluate(EvalConfig(model=str(tiny_bundle), data=str(synth_dir / "val.jsonl"), limit=2, progress=False,
                            meteor=False, max_new_tokens=8, decoding=DecodingOptions(beams=2)))
    assert r["decoding"] == "beams2" and list(r["decodings"]) == ["beams2"]
    assert not r["parity"]["available"] and "greedily" in r["parity"]["reason"]


def test_cli_decoding_flags(tiny_bundle, synth_dir):
    res = CliRunner().invoke(main, [str(tiny_bundle), str(synth_dir / "val.jsonl"), "--limit", "2", "--quiet",
                                    "--no-meteor", "--no-reference", "--max-new-tokens", "6", "--sample",
                                    "--top-p", "0.9", "--decoding", "greedy,beams2"])
    assert res.exit_code == 0, res.output
    assert "descriptions from onnxruntime-cpu (sample)" in res.output
    assert re.search(r"^  beams2 ", res.output, re.MULTILINE) and re.search(r"^  greedy ", res.output, re.MULTILINE)
    bad = CliRunner().invoke(main, [str(tiny_bundle), str(synth_dir / "val.jsonl"), "--quiet", "--top-p", "1.5",
                                    "--sample"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines()[-1] == "error: top_p must be in (0, 1], got 1.5"
