"""``pvlm-data import market1501`` on a fixture in the release's layout: ``bounding_box_train`` /
``bounding_box_test`` crops and ``market_attribute.mat`` (struct ``market_attribute`` with ``train`` and ``test``,
each 1 x identities arrays coded 1/2, age 1-4, and ``image_index``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

sio = pytest.importorskip("scipy.io")

from pvlm.cli_data import main  # noqa: E402

UP = ["upblack", "upwhite", "upred", "uppurple", "upyellow", "upgray", "upblue", "upgreen"]
DOWN = ["downblack", "downwhite", "downpink", "downpurple", "downyellow", "downgray", "downblue", "downgreen",
        "downbrown"]
# identity -> codes that differ from 1 ("no" / the first value)
PEOPLE = {
    "train": {"0002": {"gender": 2, "age": 2, "hat": 2, "backpack": 2, "bag": 2, "clothes": 1, "upred": 2,
                       "downblack": 2},
              "0007": {"age": 3, "clothes": 2, "down": 2, "upblack": 2, "upwhite": 2, "downblue": 2}},
    "test": {"0011": {"age": 4, "clothes": 2, "handbag": 2, "upgreen": 2, "downbrown": 2}},
}
CROPS = {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c1s1_000551_01.jpg",
                                "-1_c1s1_000401_03.jpg"],
         "bounding_box_test": ["0011_c3s1_000976_01.jpg", "0000_c1s1_000001_01.jpg"]}


def _half(people: dict[str, dict[str, int]]) -> dict:
    ids = list(people)
    out = {n: np.ones((1, len(ids)), np.uint8) for n in
           ["age", "backpack", "bag", "handbag", "clothes", "down", "up", "hair", "hat", "gender", *UP, *DOWN]}
    for j, pid in enumerate(ids):
        for n, v in people[pid].items():
            out[n][0, j] = v
    index = np.empty((1, len(ids)), dtype=object)
    index[0, :] = ids
    out["image_index"] = index
    return out


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("market") / "Market-1501-v15.09.15"
    rng = np.random.default_rng(3)
    for folder, names in CROPS.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(root / folder / name)
    sio.savemat(root / "market_attribute.mat",
                {"market_attribute": {"train": _half(PEOPLE["train"]), "test": _half(PEOPLE["test"])}})
    return root


def test_identity_labels_for_every_crop(market: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["import", "market1501", str(market), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (out / "val.jsonl").read_text().splitlines()]
    assert [Path(x["image"]).name[:4] for x in train] == ["0002", "0002", "0007"]  # junk -1: skipped
    assert [x["person"] for x in val] == ["0011"]  # test identities -> val; distractor 0000 skipped
    a = train[0]["attributes"]
    assert a == {"upper": None, "upper_color": "red", "upper_shade": None, "lower": "skirt", "lower_color": "black",
                 "lower_shade": None, "headwear": "hat", "carrying": ["backpack", "handbag"], "posture": None,
                 "view": None, "gender": "female", "age": "young", "shoes_color": None}
    assert train[1]["attributes"] == a  # labels are per identity
    b = train[2]["attributes"]
    assert b["gender"] == "male" and b["age"] == "adult" and b["lower"] == "shorts" and b["upper_color"] is None
    assert b["lower_color"] == "blue" and b["carrying"] == [] and b["headwear"] == "none"
    c = val[0]["attributes"]
    assert c["lower"] == "trousers" and c["carrying"] == ["handbag"] and c["age"] == "adult"
    assert c["upper_color"] == "green" and c["lower_color"] == "brown"
    assert json.loads((out / "import.json").read_text())["unmapped_labels"] == []


def test_labels_elsewhere_with_annotation(market: Path, tmp_path: Path) -> None:
    import shutil

    labels = tmp_path / "labels" / "market_attribute.mat"
    labels.parent.mkdir()
    shutil.copy(market / "market_attribute.mat", labels)
    src = tmp_path / "m"
    shutil.copytree(market, src, ignore=shutil.ignore_patterns("*.mat"))
    r = CliRunner().invoke(main, ["import", "market1501", str(src), "--out", str(tmp_path / "x"), "-q"])
    assert r.exit_code == 2 and "market_attribute.mat" in r.output and "--annotation" in r.output
    r = CliRunner().invoke(main, ["import", "market1501", str(src), "--annotation", str(labels), "--out",
                                  str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
