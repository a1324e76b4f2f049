"""``pvlm-data import msp60k``: the PersonVLM release's caption files (``image``, ``answer``, 58-bit ``one_hot``),
captions kept, one_hot mapped onto the schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pvlm.cli_data import main
from pvlm.datasets.msp60k import ONE_HOT, TABLE, clean_caption, one_hot_attributes


def _bits(*names: str) -> list[int]:
    return [int(n in names) for n in ONE_HOT]


ROWS = {
    "train": [("Here is a description of the image:\n\nThe image shows an elderly woman walking, seen from behind. "
               "She wears a dark coat and a hat and carries a plastic bag.",
               _bits("Female", "Elderly", "Normal", "Back", "Long sleeves", "Cotton-padded coat", "Hat", "Trousers",
                     "Casual shoes", "Plastic bag", "Walking")),
              ("Here's a description of the image: a man in a chef uniform standing.",
               _bits("Male", "Adult", "Front", "Chef uniform", "Shirt", "Trousers", "Others", "Standing"))],
    "val": [("A boy riding a scooter with a helmet.",
             _bits("Male", "Child", "Side", "Helmet", "Jacket", "Shorts", "Making a phone call", "Riding a scooter"))],
}


@pytest.fixture(scope="module")
def msp(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("msp")
    src, images = base / "caption_with_attribute_labels", base / "images"
    src.mkdir()
    images.mkdir()
    rng = np.random.default_rng(4)
    for split, rows in ROWS.items():
        lines = []
        for i, (caption, bits) in enumerate(rows):
            name = f"part1_{split}_{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 255, (100, 40, 3), dtype=np.uint8)).save(images / name)
            lines.append(json.dumps({"image": f"/workspace/data/MSP60k/SUBMIT/images/{name}", "one_hot": bits,
                                     "answer": caption}))
        (src / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return src, images


def test_captions_kept_and_one_hot_mapped(msp, tmp_path: Path) -> None:
    src, images = msp
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["import", "msp60k", str(src), "--images", str(images), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert len(train) == 2 and len(val) == 1  # the release's own files are the split
    first = train[0]
    assert first["caption_source"] == "dataset" and first["answer"].startswith("The image shows an elderly woman")
    assert first["one_hot"] == ROWS["train"][0][1]  # kept as the source had it
    assert Path(first["image"]).parent == images.resolve()  # found under --images by name
    assert first["attributes"] == {"upper": "coat", "upper_color": None, "upper_shade": None, "lower": "trousers",
                                   "lower_color": None, "lower_shade": None, "headwear": "hat",
                                   "carrying": ["handbag"], "posture": "walking", "view": "back",
                                   "gender": "female", "age": "adult", "shoes_color": None}
    second = train[1]["attributes"]
    assert second["upper"] is None and second["carrying"] is None  # chef uniform, an "other" object
    assert second["headwear"] == "none" and second["posture"] == "standing"
    third = val[0]["attributes"]
    assert third["headwear"] == "helmet" and third["posture"] == "riding" and third["carrying"] == ["phone"]
    assert third["age"] == "young" and third["upper"] == "jacket" and third["lower"] == "shorts"


def test_one_file_is_split_by_image(msp, tmp_path: Path) -> None:
    src, images = msp
    r = CliRunner().invoke(main, ["import", "msp60k", str(src / "train.jsonl"), "--images", str(images), "--out",
                                  str(tmp_path / "o"), "--val-fraction", "0.5", "--seed", "1", "-q"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "o" / "import.json").read_text())
    assert sum(summary["splits"].values()) == 2 and summary["caption_source"] == {"dataset": 2}


def test_a_bad_one_hot_names_file_and_line(tmp_path: Path) -> None:
    Image.new("RGB", (10, 20)).save(tmp_path / "a.jpg")
    rows = [{"image": "a.jpg", "answer": "a man", "one_hot": _bits("Male")},
            {"image": "a.jpg", "answer": "a man", "one_hot": [1, 0, 1]}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = CliRunner().invoke(main, ["import", "msp60k", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2 and f"{tmp_path / 'd.jsonl'}:2: one_hot is not 58 zeros and ones" in r.output


def test_one_hot_order_and_table() -> None:
    assert len(ONE_HOT) == 58 and len(set(ONE_HOT)) == 58
    assert ONE_HOT[:2] == ("Female", "Male") and ONE_HOT[17:20] == ("Front", "Back", "Side")
    assert set(TABLE) <= set(ONE_HOT)
    assert one_hot_attributes([0] * 57) is None and one_hot_attributes([2] * 58) is None
    assert clean_caption("Here is a description of the image:\n\nA  man.\n") == "A man."
    assert clean_caption("A woman. Here is more.") == "A woman. Here is more."
