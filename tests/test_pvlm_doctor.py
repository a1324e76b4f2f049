"""``pvlm-data doctor``: each check on a small dataset built with one problem of each kind, the text and JSON
reports, and the exit codes (0 clean or warnings only, 1 errors, 2 unusable input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pvlm.cli_data import main
from pvlm.doctor import check_dataset


def _image(path: Path, seed: int, size: tuple[int, int] = (96, 40)) -> str:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path.name


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def flawed(tmp_path: Path) -> tuple[Path, Path]:
    cap = "a man wearing a red jacket and black trousers, walking"
    male = {"gender": "male", "view": "front"}
    train = [{"image": _image(tmp_path / f"t{i}.png", i), "answer": cap, "attributes": male} for i in range(24)]
    train[1]["image"] = train[0]["image"]  # the same file twice
    train[2]["image"] = "gone.png"
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    train[3]["image"] = "broken.png"
    train[4] = {"image": _image(tmp_path / "tiny.png", 99, (20, 8)), "answer": cap}
    train[5] = {**train[5], "answer": " "}
    train[6] = {**train[6], "answer": " ".join(["word"] * 70)}
    train[7] = {**train[7], "person": "17", "dataset": "peta"}
    train.append("{not json")
    val = [{"image": _image(tmp_path / "v0.png", 500), "answer": cap},
           {"image": _image(tmp_path / "leak.png", 8), "answer": cap},  # same pixels as t8.png
           {"image": _image(tmp_path / "v2.png", 501), "answer": cap, "person": "17", "dataset": "peta"}]
    return _write(tmp_path / "train.jsonl", train), _write(tmp_path / "val.jsonl", val)


def test_each_check_finds_its_problem(flawed) -> None:
    train, val = flawed
    report = check_dataset(train, val, progress=False)
    found = {(f.level, f.check): f for f in report.findings}
    assert not report.ok
    assert found["error", "lines"].examples == [f"{train}:25"]
    images = found["error", "images"]
    assert images.message.startswith("2 image(s)") and f"{train}:3: missing" in images.examples[0]
    assert f"{train}:4: unreadable" in images.examples[1]
    assert found["warning", "duplicates"].examples == [f"{train}:1 = {train}:2"]
    assert found["error", "leakage"].examples == [f"{train}:9 = {val}:2"]
    assert f"{val}:3 (peta/17)" in found["warning", "person-leakage"].examples[0]
    assert found["warning", "small-crops"].examples == [f"{train}:5: 20x8"]
    captions = [f for f in report.findings if f.check == "captions"]
    assert {(f.level, f.examples[0].split(": ")[0]) for f in captions} == {("error", f"{train}:6"),
                                                                           ("warning", f"{train}:7")}
    assert found["warning", "labels"].message.startswith("gender: 'male' is 100% of the 21 known labels")
    assert report.stats["labels"]["gender"] == {"known": 21, "unknown": 1, "values": {"male": 21}}
    assert report.stats["vocabulary"]["coverage"]["val"] == 1.0


def test_cli_reports_and_exit_codes(flawed, synth_dir: Path) -> None:
    train, val = flawed
    r = CliRunner().invoke(main, ["doctor", str(train), "--val", str(val), "-q"])
    assert r.exit_code == 1
    assert "ERR leakage: 1 validation image(s) are also in training" in r.output
    assert "  ok  vocabulary" in r.output and "        " + f"{train}:25" in r.output  # examples indented
    assert r.output.rstrip().endswith("result: 4 error(s)")
    r = CliRunner().invoke(main, ["doctor", str(train), "--val", str(val), "--json"])
    doc = json.loads(r.output)
    assert r.exit_code == 1 and doc["ok"] is False
    assert {e["check"] for e in doc["errors"]} == {"lines", "images", "leakage", "captions"}
    clean = CliRunner().invoke(main, ["doctor", str(synth_dir / "train.jsonl"), "--val", str(synth_dir / "val.jsonl"),
                                      "--json"])
    assert clean.exit_code == 0 and json.loads(clean.output)["ok"] is True
    text = CliRunner().invoke(main, ["doctor", str(synth_dir / "train.jsonl"), "-q"]).output
    assert "  ok  images" in text and "  ok  leakage" in text and "labels (train):" in text


def test_unusable_input_is_exit_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["doctor", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 2 and r.output.strip() == f"error: {tmp_path / 'nope.jsonl'}: no such dataset file"
    _write(tmp_path / "d.jsonl", [])
    r = CliRunner().invoke(main, ["doctor", str(tmp_path / "d.jsonl"), "--min-size", "48by16"])
    assert r.exit_code == 2 and "--min-size" in r.output
