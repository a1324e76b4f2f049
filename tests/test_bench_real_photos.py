"""The real-photograph check: labels that fit the schema and the photographs, crops pvlm-eval scores, the fixed guess."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from bench.real_photos import FIXED_GUESS, comparison, fixed_guess_accuracy, labels, locate, main, write_check


def test_labels_fit_the_schema_and_the_photographs():
    rows = labels()
    assert len(rows) >= 12 and len({r["id"] for r in rows}) == len(rows)
    assert {r["package"] for r in rows} >= {"scikit-image", "matplotlib"}
    for r in rows:
        assert r["licence"] and r["answer"]
        x0, y0, x1, y1 = r["box"]
        assert 0 <= x0 < x1 and 0 <= y0 < y1
        src = locate(r["package"], r["file"])
        if src is None:
            continue
        with Image.open(src) as im:
            assert x1 <= im.width and y1 <= im.height, r["id"]


def test_a_value_outside_the_schema_is_refused(tmp_path):
    bad = tmp_path / "labels.jsonl"
    bad.write_text(json.dumps({"id": "x", "attributes": {"upper": "cape"}}) + "\n")
    with pytest.raises(ValueError, match="x: upper='cape'"):
        labels(bad)


def test_crops_are_written_for_installed_packages(tmp_path):
    rows = labels()
    data, missing = write_check(tmp_path / "check", rows)
    written = [json.loads(line) for line in data.read_text().splitlines()]
    present = [r for r in rows if locate(r["package"], r["file"]) is not None]
    assert len(written) == len(present) and {r["package"] for r in rows} - {r["package"] for r in present} == set(missing)
    first = next(r for r in present)
    with Image.open(tmp_path / "check" / written[0]["image"]) as crop:
        x0, y0, x1, y1 = first["box"]
        assert crop.size == (x1 - x0, y1 - y0) and crop.mode == "RGB"


def test_fixed_guess_scores_only_labelled_fields():
    rows = [{"answer": "a woman in a red coat", "attributes": {"gender": "female", "upper": "coat", "headwear": "none"}},
            {"answer": "a man in a black jacket", "attributes": {"gender": "male", "upper": "jacket"}}]
    cats = fixed_guess_accuracy(rows)["categories"]
    assert cats["gender"]["accuracy"] == 0.5 and cats["upper"]["accuracy"] == 0.5
    assert cats["upper_color"]["n"] == 2 and cats["upper_color"]["accuracy"] == 0.5  # from the captions
    assert cats["lower"]["n"] == 0  # neither caption nor label says it: not scored
    assert cats["headwear"]["accuracy"] == 1.0 and FIXED_GUESS["headwear"] is None


def test_eval_report_beside_the_fixed_guess(tiny_bundle, tmp_path):
    from bench.cli_quality import main as eval_main

    data, _ = write_check(tmp_path / "check")
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(eval_main, [str(tiny_bundle), str(data), "--json-out", str(out), "--no-reference",
                                         "--no-meteor", "-q"])
    assert res.exit_code == 0, res.output
    rows = comparison(json.loads(out.read_text()), fixed_guess_accuracy(
        [r for r in labels() if locate(r["package"], r["file"]) is not None]))
    assert {r["field"] for r in rows} >= {"upper_color", "gender", "view"}
    assert all(r["model"] is None or 0.0 <= r["model"] <= 1.0 for r in rows)
    res = CliRunner().invoke(main, ["--report", str(out)])
    assert res.exit_code == 0 and "| gender |" in res.output and "| mean |" in res.output


def test_out_is_written_whole_and_replaced_only_when_ours(tmp_path):
    out = tmp_path / "check"
    assert CliRunner().invoke(main, ["--out", str(out)]).exit_code == 0
    again = CliRunner().invoke(main, ["--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert CliRunner().invoke(main, ["--out", str(out), "--force"]).exit_code == 0
    assert (out / "data.jsonl").is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    res = CliRunner().invoke(main, ["--out", str(theirs), "--force"])
    assert res.exit_code == 2 and (theirs / "notes.txt").read_text() == "keep me"
    assert CliRunner().invoke(main, []).exit_code == 2  # neither --out nor --report


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import PIL.Image

    def broken_save(self, *a, **kw):
        raise OSError("No space left on device")

    monkeypatch.setattr(PIL.Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        write_check(tmp_path / "check")
    assert list(tmp_path.iterdir()) == []
