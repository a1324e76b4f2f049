"""PA-100K (Liu et al., ICCV 2017, "HydraPlus-Net"): ``annotation.mat`` and the image folder.

The release's ``annotation.mat`` holds ``attributes`` (the 26 names), ``train_images_name`` / ``val_images_name``
/ ``test_images_name`` and ``train_label`` / ``val_label`` / ``test_label`` (0/1, one row per image, columns in
``attributes`` order). Labels are read by name from the file, so the column order is the file's. The
dataset's own 80,000 / 10,000 / 10,000 partition becomes train / val / test. No captions: template ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .mapping import Rule, map_labels
from .matfile import SourceError, field, load_mat, matrix, strings
from .options import ImportOptions, ImportReport, find_file, find_image_dir
from .record import ImportedRecord

TABLE: dict[str, Rule] = {
    "Female": Rule("gender", "female", if_off="male"),
    "AgeOver60": Rule("age", "adult"),
    "Age18-60": Rule("age", "adult"),
    "AgeLess18": Rule("age", "young"),
    "Front": Rule("view", "front"),
    "Side": Rule("view", "side"),
    "Back": Rule("view", "back"),
    "Hat": Rule("headwear", "hat", if_off="none"),
    "HandBag": Rule("carrying", "handbag", if_off="none"),
    "ShoulderBag": Rule("carrying", "handbag", if_off="none"),
    "Backpack": Rule("carrying", "backpack", if_off="none"),
    "HoldObjectsInFront": Rule("carrying", None, if_off="none"),
    "LongCoat": Rule("upper", "coat"),
    "Trousers": Rule("lower", "trousers"),
    "Shorts": Rule("lower", "shorts"),
    "Skirt&Dress": Rule("lower", "skirt"),
}
DROPPED: dict[str, str] = {
    "Glasses": "no glasses field",
    "ShortSleeve": "sleeve length is not a field", "LongSleeve": "sleeve length is not a field",
    "UpperStride": "patterns are not a field", "UpperLogo": "patterns are not a field",
    "UpperPlaid": "patterns are not a field", "UpperSplice": "patterns are not a field",
    "LowerStripe": "patterns are not a field", "LowerPattern": "patterns are not a field",
    "boots": "shoe type is not a field (only shoes_color)",
}
SPLIT_NAMES = {"train": "train", "val": "val", "test": "test"}


def read(source: Path, opts: ImportOptions, report: ImportReport) -> Iterator[ImportedRecord]:
    """Every image of the three partitions with its mapped labels."""
    ann_path = opts.annotation or find_file(source, ("annotation.mat", "annotation/annotation.mat"))
    mat = load_mat(ann_path)
    names = strings(field(mat, "attributes", ann_path))
    report.labels(names, [*TABLE, *DROPPED])
    first = strings(field(mat, "train_images_name", ann_path))[0]
    images = opts.images or find_image_dir(
        source, ("data", "data/release_data/release_data", "release_data/release_data", "images", "."), first)
    for ours, theirs in SPLIT_NAMES.items():
        files = strings(field(mat, f"{theirs}_images_name", ann_path))
        labels = matrix(field(mat, f"{theirs}_label", ann_path), len(files), ann_path, f"{theirs}_label")
        if labels.shape[1] != len(names):
            raise SourceError(f"{ann_path}: {theirs}_label has {labels.shape[1]} columns for {len(names)} attributes")
        for name, row in zip(files, labels, strict=True):
            flags = {n: bool(v) for n, v in zip(names, row, strict=True)}
            yield ImportedRecord(images / name, name, map_labels(flags, TABLE), ours)


__all__ = ["DROPPED", "TABLE", "read"]
