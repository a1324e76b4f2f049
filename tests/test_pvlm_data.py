"""pvlm.data: JSONL loading (path resolution, bad rows), the image transform, dataset and collate."""

from __future__ import annotations

import json
import logging
import builtins
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from pvlm import PersonVLMConfig, Vocabulary  # noqa: E402
from pvlm.attribute_targets import HEAD_FIELDS, IGNORE, attribute_targets  # noqa: E402
from pvlm.data import CaptionDataset, Record, collate, data_hash, load_jsonl, preprocess, resolve_image  # noqa: E402


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, lines: list[str | dict]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


# --------------------------------------------------------------------------- load_jsonl


def test_load_synth_dataset(synth_dir: Path) -> None:
    rows = _rows(synth_dir / "train.jsonl")
    records = load_jsonl(synth_dir / "train.jsonl")
    assert len(records) == len(rows) == 36
    assert len(load_jsonl(synth_dir / "val.jsonl")) == 12
    for rec, row in zip(records, rows):
        assert isinstance(rec, Record)
        assert rec.image.is_file() and rec.image == synth_dir / row["image"]
        assert rec.caption == row["answer"] and rec.caption
        assert rec.attributes == row["attributes"]


def test_relative_paths_resolve_against_image_root(synth_dir: Path, tmp_path: Path) -> None:
    rows = _rows(synth_dir / "train.jsonl")[:3]
    jsonl = _write_jsonl(tmp_path / "elsewhere.jsonl", rows)  # images are not next to this file
    assert not (tmp_path / rows[0]["image"]).exists()
    records = load_jsonl(jsonl, image_root=synth_dir)
    assert [r.image for r in records] == [synth_dir / r["image"] for r in rows]
    assert all(r.image.is_file() for r in records)
    assert load_jsonl(jsonl, image_root=str(synth_dir))[0].image == records[0].image  # str accepted too
    assert load_jsonl(jsonl) == []  # relative to the JSONL's own folder: nothing there


def test_resolve_image_rules(tmp_path: Path) -> None:
    existing = tmp_path / "real.png"
    existing.write_bytes(b"x")
    root = tmp_path / "root"
    assert resolve_image(str(existing), tmp_path / "j", root) == existing  # absolute and existing: kept
    assert resolve_image("/gone/elsewhere/p.png", tmp_path, root) == root / "p.png"  # absolute, missing: by name
    assert resolve_image("sub/p.png", tmp_path, root) == root / "sub" / "p.png"
    assert resolve_image("sub/p.png", tmp_path, None) == tmp_path / "sub" / "p.png"


def test_bad_rows_are_skipped_with_a_warning(synth_dir: Path, tmp_path: Path, caplog) -> None:
    good = _rows(synth_dir / "train.jsonl")[:2]
    for row in good:  # absolute paths so the JSONL can live elsewhere
        row["image"] = str(synth_dir / row["image"])
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    lines = [
        good[0],
        {"image": "does_not_exist.png", "answer": "a missing image"},
        {"image": "corrupt.png", "answer": "a corrupt image"},
        "{this is not json",
        {"image": "x.png"},  # no answer
        "",
        good[1],
    ]
    jsonl = _write_jsonl(tmp_path / "mixed.jsonl", lines)
    with open(jsonl, "ab") as f:  # a line that is not UTF-8 costs that line only
        f.write(b'{"image": "x.png", "answer": "caf\xe9"}\n')
    with caplog.at_level(logging.WARNING, logger="pvlm.data"):
        records = load_jsonl(jsonl)
    assert [r.caption for r in records] == [good[0]["answer"], good[1]["answer"]]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert str(jsonl) in msg
    assert "3 malformed line(s)" in msg and "2 missing/unreadable image(s)" in msg and "2 usable" in msg


def test_clean_file_logs_nothing(synth_dir: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="pvlm.data"):
        load_jsonl(synth_dir / "val.jsonl")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_verify_false_keeps_unreadable_images(tmp_path: Path) -> None:
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    jsonl = _write_jsonl(tmp_path / "d.jsonl", [{"image": "corrupt.png", "answer": "x"}])
    assert load_jsonl(jsonl) == []
    assert [r.image for r in load_jsonl(jsonl, verify=False)] == [tmp_path / "corrupt.png"]


def _ascii_locale_open(file, mode="r", *args, encoding=None, **kwargs):
    """``open`` as on a machine whose locale encoding is ASCII (what a bare ``open(path)`` would use there)."""
    if "b" not in mode and encoding is None:
        encoding = "ascii"
    return builtins.open(file, mode, *args, encoding=encoding, **kwargs)


def test_non_ascii_captions_load_under_any_locale(tmp_path: Path, monkeypatch) -> None:
    """The JSONL is read as UTF-8 even where the locale's default encoding is not."""
    import pvlm.data

    caption = "a man in a café — smiling"
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(json.dumps({"image": "x.png", "answer": caption}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_jsonl(jsonl, verify=False)[0].caption == caption
    monkeypatch.setattr(pvlm.data, "open", _ascii_locale_open, raising=False)
    assert load_jsonl(jsonl, verify=False)[0].caption == caption


def test_missing_jsonl_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such dataset file"):
        load_jsonl(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------- transform


def test_preprocess_grey_image_normalisation() -> None:
    cfg = PersonVLMConfig.preset("tiny")
    x = preprocess(Image.new("RGB", (50, 90), (128, 128, 128)), cfg)
    assert x.shape == (3, 64, 32) and x.dtype == torch.float32 and x.is_contiguous()
    expected = (128 / 255 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    torch.testing.assert_close(x, expected.view(3, 1, 1).expand(3, 64, 32), atol=1e-6, rtol=0)


def test_preprocess_orientation_and_modes() -> None:
    cfg = PersonVLMConfig.preset("tiny")  # (height, width) = (64, 32)
    arr = np.zeros((128, 64, 3), np.uint8)
    arr[:64, :, 0] = 255  # top half red, bottom half black
    x = preprocess(Image.fromarray(arr), cfg)
    assert x.shape == (3, 64, 32)
    assert float(x[0, :20].mean()) > float(x[0, -20:].mean()) + 3  # the red stays on top
    assert torch.allclose(x[1, :20], x[1, -20:])  # green channel is black everywhere
    grey_l = preprocess(Image.new("L", (32, 64), 128), cfg)
    grey_rgba = preprocess(Image.new("RGBA", (32, 64), (128, 128, 128, 255)), cfg)
    grey_rgb = preprocess(Image.new("RGB", (32, 64), (128, 128, 128)), cfg)
    assert torch.equal(grey_l, grey_rgb) and torch.equal(grey_rgba, grey_rgb)
    # transparency is composited on white, as the runtime does (runtime.preprocess.pil_to_rgb)
    faint = preprocess(Image.new("RGBA", (32, 64), (128, 128, 128, 10)), cfg)
    assert torch.equal(faint, preprocess(Image.new("RGB", (32, 64), (250, 250, 250)), cfg))


# --------------------------------------------------------------------------- dataset and collate


def test_caption_dataset(synth_dir: Path) -> None:
    records = load_jsonl(synth_dir / "val.jsonl")[:4]
    vocab = Vocabulary.build([r.caption for r in records], min_freq=1)
    cfg = PersonVLMConfig.preset("tiny", vocab_size=len(vocab), max_len=8)
    ds = CaptionDataset(records, vocab, cfg, progress=False)
    assert len(ds) == 4
    x, ids, targets = ds[0]
    assert targets.tolist() == attribute_targets(records[0].attributes) and IGNORE not in targets.tolist()
    with Image.open(records[0].image) as im:
        assert torch.equal(x, preprocess(im, cfg))
    assert ids.dtype == torch.long and ids[0] == vocab.bos_id
    assert len(ids) <= 8  # truncated to max_len
    assert ids.tolist() == vocab.encode(records[0].caption)[:8]


def test_collate_pads_with_pad_id() -> None:
    batch = [(torch.zeros(3, 4, 2), torch.tensor([1, 5, 2]), torch.tensor([0, IGNORE])),
             (torch.ones(3, 4, 2), torch.tensor([1, 6, 7, 8, 2]), torch.tensor([3, 1]))]
    pixels, ids, targets = collate(batch, pad_id=9)
    assert pixels.shape == (2, 3, 4, 2) and torch.equal(pixels[1], torch.ones(3, 4, 2))
    assert ids.tolist() == [[1, 5, 2, 9, 9], [1, 6, 7, 8, 2]]
    assert ids.dtype == torch.long
    assert targets.tolist() == [[0, IGNORE], [3, 1]]
    assert collate(batch)[1].tolist()[0] == [1, 5, 2, 0, 0]  # default pad id 0


def test_attribute_targets() -> None:
    """Labels become indices into each head field's drawn values; unknown, missing or several items are ignored."""
    keys = [f.key for f in HEAD_FIELDS]
    labelled = attribute_targets({"upper": "coat", "carrying": "none", "gender": "female", "upper_color": "navy"})
    by_key = dict(zip(keys, labelled))
    assert by_key["upper"] == HEAD_FIELDS[keys.index("upper")].drawn.index("coat")
    assert by_key["carrying"] == 0 and HEAD_FIELDS[keys.index("carrying")].drawn[0] == "none"
    assert by_key["gender"] == HEAD_FIELDS[keys.index("gender")].drawn.index("female")
    assert by_key["upper_color"] == IGNORE  # not a drawn value
    assert by_key["view"] == IGNORE  # missing
    assert attribute_targets({"carrying": ["phone"]})[keys.index("carrying")] == HEAD_FIELDS[keys.index("carrying")].drawn.index("phone")
    assert attribute_targets({"carrying": ["phone", "handbag"]})[keys.index("carrying")] == IGNORE
    assert attribute_targets({"carrying": []})[keys.index("carrying")] == 0  # an empty list: nothing carried
    assert attribute_targets({}) == [IGNORE] * len(HEAD_FIELDS)


def test_data_hash(synth_dir: Path, tmp_path: Path) -> None:
    records = load_jsonl(synth_dir / "train.jsonl")
    h = data_hash(records)
    assert len(h) == 16 and h == data_hash(list(records))
    assert data_hash(records[:-1]) != h
    changed = [Record(records[0].image, records[0].caption + "!")] + records[1:]
    assert data_hash(changed) != h
    copy = tmp_path / "copy"
    shutil.copytree(synth_dir, copy)
    assert data_hash(load_jsonl(copy / "train.jsonl")) == h  # names and captions only, not folders


def test_msp60k_one_hot_rows_get_schema_labels(tmp_path: Path) -> None:
    """A row with MSP60k's one_hot and no attributes is labelled through the MSP60k table; attributes win."""
    from PIL import Image

    Image.new("RGB", (16, 32)).save(tmp_path / "a.png")
    bits = [0] * 58
    for b in (0, 4, 18, 26, 41):  # female, elderly, back, cotton-padded coat, backpack
        bits[b] = 1
    rows = [{"image": "a.png", "answer": "x", "one_hot": bits},
            {"image": "a.png", "answer": "x", "one_hot": bits, "attributes": {"gender": "male"}},
            {"image": "a.png", "answer": "x", "one_hot": [1, 0]}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second, third = load_jsonl(tmp_path / "d.jsonl")
    assert first.attributes["gender"] == "female" and first.attributes["age"] == "adult"
    assert first.attributes["view"] == "back" and first.attributes["upper"] == "coat"
    assert first.attributes["carrying"] == ["backpack"] and first.attributes["upper_color"] is None
    assert second.attributes == {"gender": "male"}
    assert third.attributes == {}  # not a 58-bit vector: no labels
