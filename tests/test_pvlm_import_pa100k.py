"""``pvlm-data import pa100k`` on a fixture in the release's layout: ``annotation/annotation.mat`` (attributes,
{train,val,test}_images_name, {train,val,test}_label) and ``data/`` with the images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

sio = pytest.importorskip("scipy.io")

from pvlm.cli_data import main  # noqa: E402
from runtime.attributes import parse_attributes  # noqa: E402

NAMES = ["Female", "AgeOver60", "Age18-60", "AgeLess18", "Front", "Side", "Back", "Hat", "Glasses", "HandBag",
         "ShoulderBag", "Backpack", "HoldObjectsInFront", "ShortSleeve", "LongSleeve", "UpperStride", "UpperLogo",
         "UpperPlaid", "UpperSplice", "LowerStripe", "LowerPattern", "LongCoat", "Trousers", "Shorts", "Skirt&Dress",
         "boots"]
# per split: the positive labels of each image
ROWS = {
    "train": [["Female", "AgeLess18", "Back", "Hat", "Backpack", "HandBag", "LongCoat", "Skirt&Dress"],
              ["Age18-60", "Front", "Trousers", "Glasses", "ShortSleeve"],
              ["AgeOver60", "Side", "HoldObjectsInFront", "ShoulderBag", "Trousers", "Shorts"],
              ["Female", "Age18-60", "Front", "boots"]],
    "val": [["Age18-60", "Back", "Shorts"], ["Female", "Age18-60", "Side", "Backpack"]],
    "test": [["AgeLess18", "Front", "Hat"]],
}


def _cell(items: list[str]) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    out[:, 0] = items
    return out


@pytest.fixture(scope="module")
def pa100k(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pa100k") / "PA-100K"
    rng = np.random.default_rng(0)
    mat, k = {"attributes": _cell(NAMES)}, 0
    for split, rows in ROWS.items():
        names = [f"{k + i + 1:06d}.jpg" for i in range(len(rows))]
        k += len(rows)
        labels = np.zeros((len(rows), len(NAMES)), np.uint8)
        for i, (name, on) in enumerate(zip(names, rows)):
            (root / "data").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (90, 36, 3), dtype=np.uint8)).save(root / "data" / name)
            labels[i, [NAMES.index(n) for n in on]] = 1
        mat[f"{split}_images_name"], mat[f"{split}_label"] = _cell(names), labels
    (root / "annotation").mkdir()
    sio.savemat(root / "annotation" / "annotation.mat", mat)
    return root


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_partition_labels_and_template_captions(pa100k: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["import", "pa100k", str(pa100k), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    splits = {s: _rows(out / f"{s}.jsonl") for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 4, "val": 2, "test": 1}  # the release's partition
    first, second, third, fourth = (row["attributes"] for row in splits["train"])
    assert first == {"upper": "coat", "upper_color": None, "upper_shade": None, "lower": "skirt", "lower_color": None,
                     "lower_shade": None, "headwear": "hat", "carrying": ["backpack", "handbag"], "posture": None,
                     "view": "back", "gender": "female", "age": "young", "shoes_color": None}
    assert second["gender"] == "male" and second["headwear"] == "none" and second["carrying"] == []
    assert second["lower"] == "trousers" and second["upper"] is None  # no garment label: unknown, not "none"
    assert third["carrying"] is None  # an object held in front: the carried list is not known
    assert third["lower"] is None  # trousers and shorts both on: ambiguous
    assert fourth["view"] == "front" and fourth["shoes_color"] is None  # boots is dropped
    for row in splits["train"] + splits["val"] + splits["test"]:
        assert row["caption_source"] == "template" and row["dataset"] == "pa100k"
        assert Path(row["image"]).is_absolute() and Path(row["image"]).is_file()  # referenced, not copied
        parsed = parse_attributes(row["answer"])
        for key, value in row["attributes"].items():
            if value not in (None, "none", []) and key != "carrying":
                assert parsed[key] == value, (key, row["answer"])
    summary = json.loads((out / "import.json").read_text())
    assert summary["splits"] == {"train": 4, "val": 2, "test": 1} and summary["unmapped_labels"] == []
    assert summary["known_per_field"]["gender"] == 7 and summary["images"] == "referenced"
    assert not (out / "images").exists()


def test_trains_from_the_import(pa100k: Path, tmp_path: Path) -> None:
    """The imported JSONL is what pvlm.data reads: labels and captions come through."""
    from pvlm.data import load_jsonl

    out = tmp_path / "out"
    assert CliRunner().invoke(main, ["import", "pa100k", str(pa100k), "--out", str(out), "-q"]).exit_code == 0
    records = load_jsonl(out / "train.jsonl")
    assert len(records) == 4 and records[0].attributes["upper"] == "coat"
    assert records[0].caption.startswith("a young woman wearing a coat")


def test_missing_images_are_skipped_and_reported(pa100k: Path, tmp_path: Path) -> None:
    src = tmp_path / "copy"
    import shutil

    shutil.copytree(pa100k, src)
    (src / "data" / "000001.jpg").unlink()
    r = CliRunner().invoke(main, ["import", "pa100k", str(src), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0
    assert json.loads((tmp_path / "o" / "import.json").read_text())["missing_images"] == 1
    assert len(_rows(tmp_path / "o" / "train.jsonl")) == 3
    for p in (src / "data").iterdir():
        p.unlink()
    r = CliRunner().invoke(main, ["import", "pa100k", str(src), "--out", str(tmp_path / "none")])
    assert r.exit_code == 2 and "none of the 7 images it lists were found" in r.output
    assert not (tmp_path / "none").exists()


def test_a_file_that_is_not_the_release_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "annotation.mat").write_bytes(b"not a mat file")
    r = CliRunner().invoke(main, ["import", "pa100k", str(tmp_path), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2 and r.output.startswith(f"error: {tmp_path / 'annotation.mat'}: not a readable .mat")
    assert r.output.count("\n") == 1
    sio.savemat(tmp_path / "annotation.mat", {"something": np.zeros(3)})
    r = CliRunner().invoke(main, ["import", "pa100k", str(tmp_path), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2 and "no 'attributes' in the annotation" in r.output
