"""MSP60k caption files (the PersonVLM release's ``{train,val,test}.jsonl``): captions plus the 58-bit ``one_hot``.

Each row is ``{"image", "answer", "one_hot"}``. ``one_hot`` is MSP60K's attribute list (Jin et al., "Pedestrian
Attribute Recognition: A New Benchmark Dataset and A Large Language Model Augmented Framework", 57 attributes,
the order of the authors' ``Event-AHU/OpenPAR`` scripts) with ``Male`` inserted at position 1. The order was
checked against the 3,000 published validation captions: bits 0 and 1 always sum to 1, the age and view groups
have exactly one bit set, and the word a bit names ("glasses", "scarf", "sandals", "scooter", ...) is in most
captions with the bit set and in few of the others (the per-bit table is in docs/datasets.md).

SOURCE is one JSONL file (split by ``--val-fraction``) or a folder with ``train.jsonl`` / ``val.jsonl`` /
``test.jsonl``. The captions are kept, minus the "Here is a description of the image:" preamble.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..data import resolve_image
from .mapping import Rule, map_labels
from .matfile import SourceError
from .options import ImportOptions, ImportReport
from .record import SPLITS, ImportedRecord, held_out

ONE_HOT: tuple[str, ...] = (
    "Female", "Male", "Child", "Adult", "Elderly", "Fat", "Normal", "Thin",
    "Bald", "Long hair", "Black hair", "Hat", "Glasses", "Mask", "Helmet", "Scarf", "Gloves",
    "Front", "Back", "Side",
    "Short sleeves", "Long sleeves", "Shirt", "Jacket", "Suit", "Vest", "Cotton-padded coat", "Coat",
    "Graduation gown", "Chef uniform",
    "Trousers", "Shorts", "Jeans", "Long skirt", "Short skirt", "Dress",
    "Leather shoes", "Casual shoes", "Boots", "Sandals", "Other shoes",
    "Backpack", "Shoulder bag", "Handbag", "Plastic bag", "Paper bag", "Suitcase", "Others",
    "Making a phone call", "Smoking", "Hands behind back", "Arms crossed",
    "Walking", "Running", "Standing", "Riding a bicycle", "Riding a scooter", "Riding a skateboard",
)
_BAG = {"field": "carrying", "if_off": "none"}
TABLE: dict[str, Rule] = {
    "Female": Rule("gender", "female"), "Male": Rule("gender", "male"),
    "Child": Rule("age", "young"), "Adult": Rule("age", "adult"), "Elderly": Rule("age", "adult"),
    "Hat": Rule("headwear", "hat", if_off="none"), "Helmet": Rule("headwear", "helmet", if_off="none"),
    "Front": Rule("view", "front"), "Back": Rule("view", "back"), "Side": Rule("view", "side"),
    "Jacket": Rule("upper", "jacket"), "Suit": Rule("upper", "jacket"),
    "Vest": Rule("upper", "vest"), "Cotton-padded coat": Rule("upper", "coat"), "Coat": Rule("upper", "coat"),
    "Graduation gown": Rule("upper", None), "Chef uniform": Rule("upper", None),
    "Trousers": Rule("lower", "trousers"), "Shorts": Rule("lower", "shorts"), "Jeans": Rule("lower", "jeans"),
    "Long skirt": Rule("lower", "skirt"), "Short skirt": Rule("lower", "skirt"),
    "Backpack": Rule(value="backpack", **_BAG), "Shoulder bag": Rule(value="handbag", **_BAG),
    "Handbag": Rule(value="handbag", **_BAG), "Plastic bag": Rule(value="handbag", **_BAG),
    "Paper bag": Rule(value="handbag", **_BAG), "Suitcase": Rule(value="suitcase", **_BAG),
    "Others": Rule(value=None, **_BAG), "Making a phone call": Rule(value="phone", **_BAG),
    "Walking": Rule("posture", "walking"), "Running": Rule("posture", "running"),
    "Standing": Rule("posture", "standing"), "Riding a bicycle": Rule("posture", "riding"),
    "Riding a scooter": Rule("posture", "riding"), "Riding a skateboard": Rule("posture", "riding"),
}
DROPPED: dict[str, str] = {
    **dict.fromkeys(("Fat", "Normal", "Thin"), "body shape is not a field"),
    **dict.fromkeys(("Bald", "Long hair", "Black hair"), "hair is not a field"),
    **dict.fromkeys(("Glasses", "Mask", "Scarf", "Gloves"), "accessories other than headwear are not fields"),
    **dict.fromkeys(("Short sleeves", "Long sleeves"), "sleeve length is not a field"),
    **dict.fromkeys(("Leather shoes", "Casual shoes", "Boots", "Sandals", "Other shoes"),
                    "shoe type is not a field (only shoes_color)"),
    "Shirt": "ambiguous: of the validation crops with only this garment bit, 346 captions say shirt, 191 jacket",
    "Dress": "ambiguous: its validation captions describe a shirt, T-shirt or top with trousers or jeans",
    **dict.fromkeys(("Smoking", "Hands behind back", "Arms crossed"), "actions besides posture are not fields"),
}
_PREAMBLE = re.compile(r"^\s*here(?: is|'s) a (?:detailed )?description of the (?:image|person)\s*[:.]?\s*",
                       re.IGNORECASE)


def one_hot_attributes(bits: Any) -> dict[str, Any] | None:
    """A 58-long 0/1 ``one_hot`` as schema attributes; None when it is not one."""
    if not isinstance(bits, list) or len(bits) != len(ONE_HOT) or any(b not in (0, 1) for b in bits):
        return None
    return map_labels({n: bool(b) for n, b in zip(ONE_HOT, bits, strict=True)}, TABLE)


def clean_caption(text: str) -> str:
    """The caption on one line, without the "Here is a description of the image:" preamble."""
    return " ".join(_PREAMBLE.sub("", text).split())


def read(source: Path, opts: ImportOptions, report: ImportReport) -> Iterator[ImportedRecord]:
    """Every row of the split files (or the one file, split by ``opts.val_fraction``)."""
    for path, split in _files(source):
        for line_no, row in _rows(path):
            img = resolve_image(str(row["image"]), path.parent, opts.images)
            extra: dict[str, Any] = {}
            attributes = None
            if "one_hot" in row:
                attributes = one_hot_attributes(row["one_hot"])
                if attributes is None:
                    raise SourceError(f"{path}:{line_no}: one_hot is not {len(ONE_HOT)} zeros and ones")
                extra["one_hot"] = row["one_hot"]
            name = Path(str(row["image"])).name
            if split is None:
                split_of = "val" if held_out(name, opts.val_fraction, opts.seed) else "train"
            else:
                split_of = split
            caption = clean_caption(str(row["answer"]))
            if not caption:
                raise SourceError(f"{path}:{line_no}: empty caption")
            yield ImportedRecord(img, name, attributes or _unknown(), split_of, caption, extra=extra)


def _files(source: Path) -> list[tuple[Path, str | None]]:
    if source.is_file():
        return [(source, None)]
    found = [(source / f"{s}.jsonl", s) for s in SPLITS if (source / f"{s}.jsonl").is_file()]
    if not found:
        raise SourceError(f"{source}: neither a JSONL file nor a folder with train.jsonl / val.jsonl / test.jsonl")
    return found


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise SourceError(f"{path}:{line_no}: not a JSON line ({e})") from None
            if not isinstance(row, dict) or "image" not in row or "answer" not in row:
                raise SourceError(f"{path}:{line_no}: a row needs 'image' and 'answer'")
            yield line_no, row


def _unknown() -> dict[str, Any]:
    return map_labels({}, TABLE)


__all__ = ["DROPPED", "ONE_HOT", "TABLE", "clean_caption", "one_hot_attributes", "read"]
