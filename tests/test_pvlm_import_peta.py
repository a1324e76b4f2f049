"""``pvlm-data import peta`` on a fixture in the release's layout: ``<subset>/archive/`` with the crops and a
``Label.txt`` of ``<person id> <label> ...`` lines (identity-level labels, present ones only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pvlm.cli_data import main

LABELS = {
    "VIPeR": {
        "001": "personalFemale personalLess15 accessoryHat upperBodyRed upperBodyJacket lowerBodyBlue lowerBodyJeans "
               "footwearBlack carryingBackpack carryingUmbrella hairLong",
        "002": "personalMale personalLess45 accessoryNothing upperBodyBlack upperBodyWhite upperBodyTshirt "
               "lowerBodyGrey lowerBodyTrousers carryingNothing",
        "003": "personalMale personalLarger60 lowerBodyShortSkirt upperBodyMystery",
    },
    "CUHK": {
        "1": "personalFemale personalLess30 carryingFolder carryingBackpack upperBodySweater upperBodyLogo",
        "7": "personalMale personalLess60 accessoryMuffler carryingMessengerBag lowerBodyCapri",
    },
}
FILES = {"VIPeR": ["001_a.bmp", "001_b.bmp", "002_a.bmp", "003_a.bmp", "004_a.bmp"],
         "CUHK": ["0001.png", "0001_2.png", "0007.png"]}


@pytest.fixture(scope="module")
def peta(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("peta") / "PETA dataset"
    rng = np.random.default_rng(1)
    for subset, people in LABELS.items():
        archive = root / subset / "archive"
        archive.mkdir(parents=True)
        (archive / "Label.txt").write_text("".join(f"{pid} {labels}\n" for pid, labels in people.items()))
        for name in FILES[subset]:
            Image.fromarray(rng.integers(0, 255, (80, 30, 3), dtype=np.uint8)).save(archive / name)
    (root / "README").mkdir()  # a folder without archive/Label.txt is not a subset
    return root


def _import(peta: Path, out: Path, *extra: str) -> dict[str, list[dict]]:
    r = CliRunner().invoke(main, ["import", "peta", str(peta), "--out", str(out), "-q", *extra])
    assert r.exit_code == 0, r.output
    return {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val") if (out / f"{s}.jsonl").exists()}


def test_labels_map_per_person(peta: Path, tmp_path: Path) -> None:
    rows = _import(peta, tmp_path / "o", "--val-fraction", "0")["train"]
    by_image = {Path(r["image"]).parent.parent.name + "/" + Path(r["image"]).name: r for r in rows}
    assert len(rows) == 7 and "VIPeR/004_a.bmp" not in by_image  # no label line: skipped
    a = by_image["VIPeR/001_a.bmp"]["attributes"]
    assert a == {"upper": "jacket", "upper_color": "red", "upper_shade": None, "lower": "jeans", "lower_color": "blue",
                 "lower_shade": None, "headwear": "hat", "carrying": ["backpack", "umbrella"], "posture": None,
                 "view": None, "gender": "female", "age": "young", "shoes_color": "black"}
    assert by_image["VIPeR/001_b.bmp"]["attributes"] == a and by_image["VIPeR/001_b.bmp"]["person"] == "VIPeR/001"
    b = by_image["VIPeR/002_a.bmp"]["attributes"]
    assert b["upper_color"] is None and b["upper"] == "t-shirt"  # black and white: no one colour
    assert b["carrying"] == [] and b["headwear"] == "none" and b["lower_color"] == "grey" and b["age"] == "adult"
    c = by_image["VIPeR/003_a.bmp"]["attributes"]
    assert c["lower"] == "skirt" and c["carrying"] is None and c["headwear"] is None  # no carrying/accessory labels
    d = by_image["CUHK/0001.png"]["attributes"]  # "0001.png" belongs to id "1"
    assert by_image["CUHK/0001_2.png"]["person"] == "CUHK/1" and d["upper"] == "sweater"
    assert d["carrying"] is None  # a folder: an object with no word in the schema
    e = by_image["CUHK/0007.png"]["attributes"]
    assert e["carrying"] == ["handbag"] and e["lower"] == "trousers" and e["headwear"] == "none"
    assert all(r["caption_source"] == "template" for r in rows)
    summary = json.loads((tmp_path / "o" / "import.json").read_text())
    assert summary["unmapped_labels"] == ["upperBodyMystery"]


def test_hold_out_keeps_each_person_on_one_side(peta: Path, tmp_path: Path) -> None:
    splits = _import(peta, tmp_path / "o", "--val-fraction", "0.5", "--seed", "3")
    people = {s: {r["person"] for r in rows} for s, rows in splits.items()}
    assert people["train"] and people["val"] and not people["train"] & people["val"]
    assert sum(len(v) for v in splits.values()) == 7
    again = _import(peta, tmp_path / "o2", "--val-fraction", "0.5", "--seed", "3")
    assert [r["image"] for r in again["val"]] == [r["image"] for r in splits["val"]]


def test_copy_puts_the_crops_under_images(peta: Path, tmp_path: Path) -> None:
    from pvlm.data import load_jsonl

    out = tmp_path / "o"
    rows = _import(peta, out, "--val-fraction", "0", "--copy")["train"]
    assert all(not Path(r["image"]).is_absolute() and (out / r["image"]).is_file() for r in rows)
    assert (out / "images" / "VIPeR" / "001_a.bmp").is_file()
    assert len(load_jsonl(out / "train.jsonl")) == 7  # relative paths resolve against the JSONL's folder


def test_a_bad_label_line_names_file_and_line(tmp_path: Path) -> None:
    archive = tmp_path / "p" / "MIT" / "archive"
    archive.mkdir(parents=True)
    (archive / "Label.txt").write_text("1 personalMale\n2\n")
    Image.new("RGB", (10, 30)).save(archive / "1_a.png")
    r = CliRunner().invoke(main, ["import", "peta", str(tmp_path / "p"), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2 and f"{archive / 'Label.txt'}:2: expected '<person id> <label> ...'" in r.output
