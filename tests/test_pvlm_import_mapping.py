"""pvlm.datasets: the label-table engine, template captions read back by the caption parser, the documented
tables, and the import command's shared behaviour (--force, bad options)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from click.testing import CliRunner

from pvlm.cli_data import IMPORT_FORMATS, main
from pvlm.datasets import FORMATS, format_module
from pvlm.datasets.mapping import Rule, color_rule, map_labels
from pvlm.datasets.record import held_out
from pvlm.datasets.template import template_caption
from runtime.attribute_schema import ATTRIBUTE_KEYS, FIELD
from runtime.attributes import parse_attributes

DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
TABLE = {
    "Female": Rule("gender", "female", if_off="male"),
    "Hat": Rule("headwear", "hat", if_off="none"), "Helmet": Rule("headwear", "helmet", if_off="none"),
    "Coat": Rule("upper", "coat"), "Shirt": Rule("upper", "shirt"), "Gown": Rule("upper", None),
    "Jeans": Rule("lower", "jeans"), "Trousers": Rule("lower", "trousers"), "Shorts": Rule("lower", "shorts"),
    "Red": Rule("upper_color", "red"), "Blue": Rule("upper_color", "blue"),
    "Backpack": Rule("carrying", "backpack", if_off="none"), "Bag": Rule("carrying", "handbag", if_off="none"),
    "Box": Rule("carrying", None, if_off="none"),
}


def test_engine_decides_each_field_from_its_labels() -> None:
    a = map_labels({"Female": False, "Hat": False, "Helmet": True, "Coat": True, "Shirt": True, "Jeans": True,
                    "Trousers": True, "Red": True, "Backpack": True, "Bag": True, "Box": False}, TABLE)
    assert set(a) == set(ATTRIBUTE_KEYS)
    assert a["gender"] == "male"  # Female off says male
    assert a["headwear"] == "helmet"  # what is on wins over Hat's off
    assert a["upper"] == "coat"  # the outermost garment
    assert a["lower"] == "jeans" and a["upper_color"] == "red"
    assert a["carrying"] == ["backpack", "handbag"]  # in the schema's order
    assert a["view"] is None and a["posture"] is None  # no label speaks about them
    b = map_labels({"Female": None, "Hat": False, "Helmet": False, "Gown": True, "Coat": True, "Shorts": True,
                    "Trousers": True, "Red": True, "Blue": True, "Backpack": False, "Bag": False, "Box": False}, TABLE)
    assert b["gender"] is None  # unknown stays unknown
    assert b["headwear"] == "none" and b["carrying"] == []  # every label off, each saying so
    assert b["upper"] is None  # a garment the schema has no word for is on
    assert b["lower"] is None and b["upper_color"] is None  # two values: ambiguous
    c = map_labels({"Backpack": True, "Bag": False, "Box": True}, TABLE)
    assert c["carrying"] is None  # an object with no word: the list would be incomplete
    assert map_labels({"Backpack": False, "Bag": None}, TABLE)["carrying"] is None


def test_color_rule_reads_colour_names() -> None:
    assert color_rule("upperBodyGrey", "upper_color", "upperBody") == Rule("upper_color", "grey")
    assert color_rule("ub-Silver", "upper_color", "ub-") == Rule("upper_color", "grey")
    assert color_rule("downbrown", "lower_color", "down") == Rule("lower_color", "brown")
    assert color_rule("ub-Mixture", "upper_color", "ub-") is None
    assert color_rule("lowerBodyBlack", "upper_color", "upperBody") is None


def _combinations():
    drawn = {k: FIELD[k].drawn for k in ("upper", "lower", "headwear", "posture", "view", "gender", "age")}
    colors = ("red", "grey", None)
    for i, combo in enumerate(itertools.islice(itertools.product(*drawn.values()), 0, None, 37)):
        a = dict(zip(drawn, combo))
        a.update(upper_color=colors[i % 3], lower_color=colors[(i + 1) % 3], shoes_color=colors[(i + 2) % 3])
        a["carrying"] = [["backpack"], [], ["umbrella", "phone"], None][i % 4]
        yield a


def test_template_captions_read_back_to_their_labels() -> None:
    seen = 0
    for a in _combinations():
        a = {**{k: None for k in ATTRIBUTE_KEYS}, **a}
        text = template_caption(a)
        parsed = parse_attributes(text)
        for key in ("upper", "lower", "headwear", "posture", "view", "gender", "age", "upper_color", "lower_color",
                    "shoes_color"):
            if a[key] is not None and a[key] != "none":
                assert parsed[key] == a[key], (key, text, parsed)
        if a["carrying"]:
            assert sorted(parsed["carrying"]) == sorted(a["carrying"]), text
        seen += 1
    assert seen > 50
    unknown = template_caption({k: None for k in ATTRIBUTE_KEYS})
    assert unknown == "a person."
    colour_only = template_caption({**{k: None for k in ATTRIBUTE_KEYS}, "upper_color": "red", "gender": "male"})
    assert parse_attributes(colour_only)["upper"] is None  # no garment type is invented


def test_held_out_is_stable_and_near_the_fraction() -> None:
    keys = [f"p{i}" for i in range(2000)]
    share = sum(held_out(k, 0.1, 0) for k in keys) / len(keys)
    assert 0.08 < share < 0.12
    assert [held_out(k, 0.1, 0) for k in keys] == [held_out(k, 0.1, 0) for k in keys]
    assert [held_out(k, 0.1, 0) for k in keys] != [held_out(k, 0.1, 1) for k in keys]
    assert not any(held_out(k, 0.0, 0) for k in keys)


def test_every_mapped_and_dropped_label_is_documented() -> None:
    assert IMPORT_FORMATS == FORMATS
    docs = DOCS.read_text(encoding="utf-8")
    for name in FORMATS:
        module = format_module(name)
        for label in [*module.TABLE, *module.DROPPED]:
            shown = label.split(",")[0] if name == "market1501" else label
            assert f"`{shown}`" in docs or re.search(rf"`[^`]*\b{re.escape(shown)}\b[^`]*`", docs), (name, label)


def test_unknown_format_and_bad_options_are_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["import", "coco", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "coco" in r.output
    r = CliRunner().invoke(main, ["import", "peta", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and r.output.strip() == f"error: {tmp_path / 'nowhere'}: no such file or folder"
    r = CliRunner().invoke(main, ["import", "peta", str(tmp_path), "--out", str(tmp_path / "o"), "--val-fraction", "1"])
    assert r.exit_code == 2 and "--val-fraction must be in [0, 1)" in r.output
    r = CliRunner().invoke(main, ["import", "peta", str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "archive/Label.txt" in r.output
    assert not (tmp_path / "o").exists()


def test_force_replaces_only_an_imported_folder(tmp_path: Path) -> None:
    from PIL import Image

    archive = tmp_path / "peta" / "VIPeR" / "archive"
    archive.mkdir(parents=True)
    Image.new("RGB", (20, 50)).save(archive / "001_a.bmp")
    (archive / "Label.txt").write_text("001 personalMale\n")
    out = tmp_path / "o"
    args = ["import", "peta", str(tmp_path / "peta"), "--out", str(out), "--val-fraction", "0", "-q"]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--force" in again.output
    assert CliRunner().invoke(main, [*args, "--force"]).exit_code == 0
    (out / "mine.txt").write_text("keep")
    refused = CliRunner().invoke(main, [*args, "--force"])
    assert refused.exit_code == 2 and (out / "mine.txt").read_text() == "keep"
