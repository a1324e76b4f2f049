"""``pvlm-data import rap2`` on a fixture in the release's layout: ``RAP_annotation/RAP_annotation.mat`` (a struct
``RAP_annotation`` with name, attribute, data, partition_attribute, person_identity) and ``RAP_dataset/``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

sio = pytest.importorskip("scipy.io")

from pvlm.cli_data import main  # noqa: E402

NAMES = ["Femal", "AgeLess16", "Age17-30", "Age31-45", "BodyFat", "hs-Hat", "hs-Glasses", "ub-Shirt", "ub-Jacket",
         "ub-TShirt", "ub-Black", "ub-Red", "ub-Mixture", "lb-LongTrousers", "lb-Jeans", "lb-Dress", "lb-Blue",
         "shoes-White", "attachment-Backpack", "attachment-HandBag", "attachment-Box", "action-Calling",
         "face-front", "face-back", "face-left", "face-right", "occlusion-Up"]
# per image: label -> value (1 present, 2 uncertain); everything else 0
IMAGES = [
    {"Femal": 1, "AgeLess16": 1, "hs-Hat": 1, "ub-Jacket": 1, "ub-Shirt": 1, "ub-Red": 1, "lb-Jeans": 1, "lb-Blue": 1,
     "shoes-White": 1, "attachment-Backpack": 1, "action-Calling": 1, "face-left": 1},
    {"Age17-30": 1, "ub-TShirt": 1, "ub-Black": 1, "ub-Red": 1, "lb-LongTrousers": 1, "face-back": 1},
    {"Femal": 2, "Age31-45": 1, "lb-Dress": 1, "attachment-HandBag": 2, "face-front": 1},
    {"Age31-45": 1, "attachment-Box": 1, "face-front": 1, "hs-Hat": 2},
    {"Femal": 1, "Age17-30": 1, "face-right": 1},
    {"Age17-30": 1, "face-front": 1},
]


def _cell(items: list[str]) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    out[:, 0] = items
    return out


def _partition(train: list[int], val: list[int], test: list[int]) -> dict:
    return {"train_index": np.array(train, float), "val_index": np.array(val, float), "test_index": np.array(test, float)}


@pytest.fixture(scope="module")
def rap2(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rap2") / "RAP"
    (root / "RAP_dataset").mkdir(parents=True)
    (root / "RAP_annotation").mkdir()
    rng = np.random.default_rng(2)
    names, data = [], np.zeros((len(IMAGES), len(NAMES)), np.uint8)
    for i, labels in enumerate(IMAGES):
        names.append(f"CAM01_2014-02-15_2014021516_tarid{i}_frame{i}_line1.png")
        for n, v in labels.items():
            data[i, NAMES.index(n)] = v
        Image.fromarray(rng.integers(0, 255, (120, 50, 3), dtype=np.uint8)).save(root / "RAP_dataset" / names[-1])
    names[5] = names[5].replace(".png", ".jpg")  # the .mat may say .jpg for a .png file
    parts = np.empty((1, 2), dtype=object)
    parts[0, 0] = _partition([1, 2, 3, 4], [5], [6])  # 1-based, as MATLAB writes them
    parts[0, 1] = _partition([3, 4, 5, 6], [1], [2])
    ann = {"name": _cell(names), "attribute": _cell(NAMES), "data": data, "selected_attribute": np.arange(1, 6),
           "partition_attribute": parts, "person_identity": np.array([[3], [3], [8], [9], [-1], [12]])}
    sio.savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": ann})
    return root


def _import(rap2: Path, out: Path, *extra: str) -> dict[str, list[dict]]:
    r = CliRunner().invoke(main, ["import", "rap2", str(rap2), "--out", str(out), "-q", *extra])
    assert r.exit_code == 0, r.output
    return {s: [json.loads(x) for x in (out / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "val", "test")}


def test_partition_and_labels(rap2: Path, tmp_path: Path) -> None:
    splits = _import(rap2, tmp_path / "o")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    a, b, c, d = (r["attributes"] for r in splits["train"])
    assert a == {"upper": "jacket", "upper_color": "red", "upper_shade": None, "lower": "jeans", "lower_color": "blue",
                 "lower_shade": None, "headwear": "hat", "carrying": ["backpack", "phone"], "posture": None,
                 "view": "side", "gender": "female", "age": "young", "shoes_color": "white"}
    assert b["gender"] == "male" and b["upper"] == "t-shirt" and b["upper_color"] is None  # two colours
    assert b["view"] == "back" and b["lower"] == "trousers" and b["carrying"] == [] and b["headwear"] == "none"
    assert c["gender"] is None and c["upper"] == "dress" and c["carrying"] is None  # 2 = uncertain: unknown
    assert d["carrying"] is None and d["headwear"] is None  # a box: no word for it; hat uncertain
    assert [r["person"] for r in splits["train"]] == ["3", "3", "8", "9"]
    assert "person" not in splits["val"][0]  # identity -1: unknown
    assert Path(splits["test"][0]["image"]).suffix == ".png"  # found under its .png name
    summary = json.loads((tmp_path / "o" / "import.json").read_text())
    assert summary["unmapped_labels"] == ["occlusion-Up", "ub-Mixture"]  # reported, not guessed


def test_other_partition_and_a_missing_one(rap2: Path, tmp_path: Path) -> None:
    splits = _import(rap2, tmp_path / "o", "--partition", "2")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 1, 1]
    assert splits["val"][0]["attributes"]["age"] == "young"  # image 1
    r = CliRunner().invoke(main, ["import", "rap2", str(rap2), "--out", str(tmp_path / "x"), "--partition", "3", "-q"])
    assert r.exit_code == 2 and "--partition 3, but the file has 2 partitions" in r.output
