"""Market-1501 with its attribute annotation (Lin et al., "Improving person re-identification by attribute and
identity learning", Pattern Recognition 2019; ``market_attribute.mat`` from ``vana77/Market-1501_Attribute``).

``market_attribute`` is a struct with ``train`` and ``test``, each a struct of 1 x identities arrays (1 = no /
the first value, 2 = yes / the second, ``age`` 1-4) and ``image_index`` (the identities, e.g. ``0002``).
Labels are per identity: every crop ``<id>_c<cam>s<seq>_<frame>_<box>.jpg`` of ``bounding_box_train`` /
``bounding_box_test`` gets its identity's labels (distractors ``0000`` and junk ``-1`` have none and are
skipped). The release's identity partition decides the split: train identities -> train, test identities ->
val (disjoint people, so no leakage). No captions: template ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .mapping import Rule, color_rule, map_labels
from .matfile import SourceError, field, load_mat, strings
from .options import ImportOptions, ImportReport, find_file
from .record import ImportedRecord

_BAG = {"field": "carrying", "if_off": "none"}
# Labels as "<name>=<meaning>" of the release's 1/2 (or 1-4) codes; the lower garment combines two of them.
CODES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female"), "age": ("young", "teenager", "adult", "old"), "hat": ("no", "yes"),
    "backpack": ("no", "yes"), "bag": ("no", "yes"), "handbag": ("no", "yes"),
    "clothes": ("dress", "pants"), "down": ("long", "short"), "up": ("long", "short"), "hair": ("short", "long"),
}
TABLE: dict[str, Rule] = {
    "gender=male": Rule("gender", "male"), "gender=female": Rule("gender", "female"),
    "age=young": Rule("age", "young"), "age=teenager": Rule("age", "young"),
    "age=adult": Rule("age", "adult"), "age=old": Rule("age", "adult"),
    "hat=yes": Rule("headwear", "hat", if_off="none"),
    "backpack=yes": Rule(value="backpack", **_BAG), "bag=yes": Rule(value="handbag", **_BAG),
    "handbag=yes": Rule(value="handbag", **_BAG),
    "clothes=pants,down=long": Rule("lower", "trousers"), "clothes=pants,down=short": Rule("lower", "shorts"),
    "clothes=dress": Rule("lower", "skirt"),
}
COLOR_PREFIXES = {"up": "upper_color", "down": "lower_color"}  # upblack ... upgreen, downblack ... downbrown
DROPPED: dict[str, str] = {"up": "sleeve length is not a field", "hair": "hair is not a field"}
_FOLDERS = {"train": "bounding_box_train", "test": "bounding_box_test"}
_SPLIT = {"train": "train", "test": "val"}


def read(source: Path, opts: ImportOptions, report: ImportReport) -> Iterator[ImportedRecord]:
    """Every labelled crop of the two bounding-box folders."""
    ann_path = opts.annotation or find_file(source, ("market_attribute.mat", "attribute/market_attribute.mat"))
    root = field(load_mat(ann_path), "market_attribute", ann_path)
    base = opts.images or (source.parent if source.is_file() else source)
    for part, folder in _FOLDERS.items():
        people = _people(field(root, part, ann_path), ann_path, part, report)
        images = base / folder
        if not images.is_dir():
            raise SourceError(f"{images}: no such folder (give the Market-1501 folder, or --images)")
        for img in sorted(images.glob("*.jpg")):
            pid = img.name.split("_")[0]
            if pid in people:
                yield ImportedRecord(img, f"{folder}/{img.name}", people[pid], _SPLIT[part], person=pid)


def _people(part: Any, path: Path, name: str, report: ImportReport) -> dict[str, dict[str, Any]]:
    """Identity -> mapped attributes for one half of the annotation."""
    ids = [s.zfill(4) if s.isdigit() else s for s in strings(field(part, "image_index", path))]
    labels = [n for n in part._fieldnames if n != "image_index"]
    report.labels(labels, [*CODES, *_colors(labels)])
    columns = {n: np.atleast_1d(np.asarray(getattr(part, n))).ravel() for n in labels}
    for n, col in columns.items():
        if col.size != len(ids):
            raise SourceError(f"{path}: {name}.{n} has {col.size} values for {len(ids)} identities")
    table = {**TABLE, **_colors(labels)}
    return {pid: map_labels(_flags({n: int(c[i]) for n, c in columns.items()}, table), table)
            for i, pid in enumerate(ids)}


def _flags(codes: dict[str, int], table: dict[str, Rule]) -> dict[str, bool | None]:
    """The release's codes as on/off labels; a name is ``label=meaning`` (``,`` joins two), a bare colour label
    means ``=yes``; an unexpected code is unknown."""
    flags: dict[str, bool | None] = {}
    for name in table:
        wanted = [tuple(p.split("=")) if "=" in p else (p, "yes") for p in name.split(",")]
        if all(k in codes for k, _ in wanted):
            meant = [_meaning(k, codes[k]) for k, _ in wanted]
            flags[name] = None if None in meant else all(m == v for m, (_, v) in zip(meant, wanted, strict=True))
    return flags


def _meaning(label: str, code: int) -> str | None:
    values = CODES.get(label, ("no", "yes"))
    return values[code - 1] if 1 <= code <= len(values) else None


def _colors(labels: list[str]) -> dict[str, Rule]:
    out = {}
    for name in labels:
        for prefix, key in COLOR_PREFIXES.items():
            rule = color_rule(name, key, prefix)
            if rule is not None:
                out[name] = rule
    return out


__all__ = ["CODES", "COLOR_PREFIXES", "DROPPED", "TABLE", "read"]
