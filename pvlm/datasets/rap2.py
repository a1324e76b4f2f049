"""RAP v2 (Li et al., IEEE TIP 2018, "A Richly Annotated Pedestrian Dataset for Person Retrieval in Real
Surveillance Scenarios"): ``RAP_annotation/RAP_annotation.mat`` and ``RAP_dataset/``.

``RAP_annotation`` is a struct with ``name`` (the image names), ``attribute`` (152 label names), ``data``
(one row per image: 1 present, 0 absent, 2 uncertain, read as unknown), ``partition_attribute`` (five
partitions, each with 1-based ``train_index`` / ``val_index`` / ``test_index``) and, where present,
``person_identity``. Labels are read by name from the file (a name no rule reads, such as the age group over 60
whose name is not confirmed, is reported, not guessed). ``--partition`` (1-5) picks the partition.
No captions: template ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .mapping import Rule, color_rule, map_labels
from .matfile import SourceError, field, items, load_mat, matrix, strings
from .options import ImportOptions, ImportReport, find_file, find_image_dir
from .record import ImportedRecord

_BAG = {"field": "carrying", "if_off": "none"}
TABLE: dict[str, Rule] = {
    "Femal": Rule("gender", "female", if_off="male"),
    "AgeLess16": Rule("age", "young"), "Age17-30": Rule("age", "adult"), "Age31-45": Rule("age", "adult"),
    "Age46-60": Rule("age", "adult"),
    "hs-Hat": Rule("headwear", "hat", if_off="none"),
    "ub-Shirt": Rule("upper", "shirt"), "ub-Sweater": Rule("upper", "sweater"), "ub-Vest": Rule("upper", "vest"),
    "ub-TShirt": Rule("upper", "t-shirt"), "ub-Cotton": Rule("upper", "coat"), "ub-Jacket": Rule("upper", "jacket"),
    "ub-SuitUp": Rule("upper", "jacket"), "lb-Dress": Rule("upper", "dress"),
    "lb-LongTrousers": Rule("lower", "trousers"), "lb-Skirt": Rule("lower", "skirt"),
    "lb-ShortSkirt": Rule("lower", "skirt"), "lb-Jeans": Rule("lower", "jeans"),
    "lb-TightTrousers": Rule("lower", "trousers"),
    "attachment-Backpack": Rule(value="backpack", **_BAG), "attachment-ShoulderBag": Rule(value="handbag", **_BAG),
    "attachment-HandBag": Rule(value="handbag", **_BAG), "attachment-PlasticBag": Rule(value="handbag", **_BAG),
    "attachment-PaperBag": Rule(value="handbag", **_BAG), "attachment-HandTrunk": Rule(value="suitcase", **_BAG),
    "attachment-Box": Rule(value=None, **_BAG), "attachment-Other": Rule(value=None, **_BAG),
    "action-Calling": Rule(value="phone", **_BAG),
}
# TABLE's names are the release's (the authors' selected_attribute_name.txt, "Femal" included). The colour and
# view labels' names are not confirmed: they are read by pattern, ub-<Colour> / lb-<Colour> / shoes-<Colour> and
# face-<front|back|left|right>, and any name no rule reads is listed in import.json's unmapped_labels.
COLOR_PREFIXES = {"ub-": "upper_color", "lb-": "lower_color", "shoes-": "shoes_color"}
_VIEW = re.compile(r"^face[-_ ]?(front|back|left|right)$", re.IGNORECASE)
DROPPED: dict[str, str] = {
    **dict.fromkeys(("BodyFat", "BodyNormal", "BodyThin"), "body shape is not a field"),
    **dict.fromkeys(("Customer", "Employee"), "role is not a field"),
    **dict.fromkeys(("hs-BaldHead", "hs-LongHair", "hs-BlackHair"), "hair is not a field"),
    "hs-Glasses": "no glasses field",
    **dict.fromkeys(("ub-Tight", "ub-ShortSleeve", "ub-Others"), "no upper garment type it names"),
    **dict.fromkeys(("shoes-Leather", "shoes-Sports", "shoes-Boots", "shoes-Cloth", "shoes-Casual", "shoes-Other"),
                    "shoe type is not a field (only shoes_color)"),
    **dict.fromkeys(("action-Talking", "action-Gathering", "action-Holding", "action-Pushing", "action-Pulling",
                     "action-CarryingByArm", "action-CarryingByHand", "action-Other"),
                    "actions are not fields (posture is not labelled in RAP)"),
}


def table_for(names: list[str]) -> dict[str, Rule]:
    """:data:`TABLE` plus the colour and view labels among the file's ``names``."""
    out = dict(TABLE)
    for name in names:
        for prefix, key in COLOR_PREFIXES.items():
            rule = color_rule(name, key, prefix)
            if rule is not None:
                out[name] = rule
        m = _VIEW.match(name)
        if m:
            side = m.group(1).lower()
            out[name] = Rule("view", "side" if side in ("left", "right") else side)
    return out


def read(source: Path, opts: ImportOptions, report: ImportReport) -> Iterator[ImportedRecord]:
    """The images of the chosen partition's train / val / test indices, with their mapped labels."""
    ann_path = opts.annotation or find_file(source, ("RAP_annotation/RAP_annotation.mat", "RAP_annotation.mat"))
    ann = field(load_mat(ann_path), "RAP_annotation", ann_path)
    files = strings(field(ann, "name", ann_path))
    names = strings(field(ann, "attribute", ann_path))
    data = matrix(field(ann, "data", ann_path), len(files), ann_path, "data")
    if data.shape[1] != len(names):
        raise SourceError(f"{ann_path}: data has {data.shape[1]} columns for {len(names)} attributes")
    table = table_for(names)
    report.labels(names, [*table, *DROPPED])
    ids = _identities(ann, len(files))
    images = opts.images or find_image_dir(source, ("RAP_dataset", "images", "."), files[0])
    for split, index in _partition(ann, ann_path, opts.partition, len(files)).items():
        for i in index:
            flags = {n: _state(v) for n, v in zip(names, data[i], strict=True)}
            yield ImportedRecord(_image(images, files[i]), files[i], map_labels(flags, table), split, person=ids[i])


def _state(v: float) -> bool | None:
    return True if v == 1 else False if v == 0 else None


def _image(folder: Path, name: str) -> Path:
    p = folder / name
    if not p.is_file() and (folder / f"{p.stem}.png").is_file():  # the release's names say .jpg for .png files
        return folder / f"{p.stem}.png"
    return p


def _partition(ann: object, path: Path, number: int, n: int) -> dict[str, np.ndarray]:
    parts = items(field(ann, "partition_attribute", path))
    if number > len(parts):
        raise SourceError(f"{path}: --partition {number}, but the file has {len(parts)} partitions")
    part = parts[number - 1]
    out = {}
    for split in ("train", "val", "test"):
        index = np.atleast_1d(np.asarray(field(part, f"{split}_index", path), dtype=np.int64)) - 1
        if index.size and (index.min() < 0 or index.max() >= n):
            raise SourceError(f"{path}: partition {number} {split}_index is outside 1..{n}")
        out[split] = index
    return out


def _identities(ann: object, n: int) -> list[str | None]:
    ids = getattr(ann, "person_identity", None)
    if ids is None or np.size(ids) != n:
        return [None] * n
    return [str(int(v)) if int(v) >= 0 else None for v in np.asarray(ids).ravel()]


__all__ = ["COLOR_PREFIXES", "DROPPED", "TABLE", "read", "table_for"]
