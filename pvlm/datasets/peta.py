"""PETA (Deng et al., ACM MM 2014, "Pedestrian attribute recognition at far distance"): per-subset ``Label.txt``.

The release is ``PETA dataset/<subset>/archive/`` (3DPeS, CAVIAR4REID, CUHK, GRID, i-LID, MIT, PRID, SARC3D,
TownCentre, VIPeR), each folder holding the crops and a ``Label.txt`` whose lines are
``<person id> <label> <label> ...``: the labels that are present for that person (identity-level), every
other label absent. A crop belongs to the person its file name starts with (``<id>_...`` or ``<id>.png``).
PETA has no official validation partition: ``--val-fraction`` of the people (per subset and id, seeded) is
held out, so no person is on both sides. No captions: template ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from .mapping import Rule, color_rule, map_labels
from .matfile import SourceError
from .options import ImportOptions, ImportReport
from .record import ImportedRecord, held_out

_BAG = {"field": "carrying", "if_off": "none"}
TABLE: dict[str, Rule] = {
    "personalMale": Rule("gender", "male"), "personalFemale": Rule("gender", "female"),
    "personalLess15": Rule("age", "young"), "personalLess30": Rule("age", "adult"),
    "personalLess45": Rule("age", "adult"), "personalLess60": Rule("age", "adult"),
    "personalLarger60": Rule("age", "adult"),
    "accessoryHat": Rule("headwear", "hat", if_off="none"),
    "upperBodyTshirt": Rule("upper", "t-shirt"), "upperBodyJacket": Rule("upper", "jacket"),
    "upperBodySweater": Rule("upper", "sweater"), "upperBodySuit": Rule("upper", "jacket"),
    "lowerBodyTrousers": Rule("lower", "trousers"), "lowerBodyJeans": Rule("lower", "jeans"),
    "lowerBodyCapri": Rule("lower", "trousers"), "lowerBodySuits": Rule("lower", "trousers"),
    "lowerBodyShorts": Rule("lower", "shorts"), "lowerBodyHotPants": Rule("lower", "shorts"),
    "lowerBodyShortSkirt": Rule("lower", "skirt"), "lowerBodyLongSkirt": Rule("lower", "skirt"),
    "carryingBackpack": Rule(value="backpack", **_BAG), "carryingMessengerBag": Rule(value="handbag", **_BAG),
    "carryingPlasticBags": Rule(value="handbag", **_BAG), "carryingUmbrella": Rule(value="umbrella", **_BAG),
    "carryingLuggageCase": Rule(value="suitcase", **_BAG), "carryingSuitcase": Rule(value="suitcase", **_BAG),
    "carryingFolder": Rule(value=None, **_BAG), "carryingShoppingTro": Rule(value=None, **_BAG),
    "carryingBabyBuggy": Rule(value=None, **_BAG), "carryingOther": Rule(value=None, **_BAG),
}
# A person's line without any label of a group leaves that group's fields unknown rather than "absent".
_GROUPS = {"carrying": "carrying", "accessory": "headwear"}
# colour labels, read by name: upperBody<Colour> -> upper_color, lowerBody<Colour> -> lower_color, footwear<Colour>
COLOR_PREFIXES = {"upperBody": "upper_color", "lowerBody": "lower_color", "footwear": "shoes_color"}
DROPPED: dict[str, str] = {
    **dict.fromkeys(("hairBald", "hairLong", "hairShort", "hairBlack", "hairBlue", "hairBrown", "hairGreen", "hairGrey",
                     "hairOrange", "hairPink", "hairPurple", "hairRed", "hairWhite", "hairYellow"),
                    "hair is not a field"),
    **dict.fromkeys(("accessoryHeadphone", "accessoryHairBand", "accessoryKerchief", "accessoryMuffler",
                     "accessorySunglasses", "accessoryNothing", "accessoryFaceMask", "accessoryShawl"),
                    "accessories other than hats are not fields (absent hat: headwear none)"),
    "carryingNothing": "no rule of its own: every object label off gives carrying [] (no carrying label: unknown)",
    **dict.fromkeys(("upperBodyCasual", "upperBodyFormal", "upperBodyPlaid", "upperBodyLogo", "upperBodyThinStripes",
                     "upperBodyThickStripes", "upperBodyVNeck", "upperBodyOther", "upperBodyLongSleeve",
                     "upperBodyNoSleeve", "upperBodyShortSleeve", "lowerBodyCasual", "lowerBodyFormal",
                     "lowerBodyPlaid", "lowerBodyThinStripes", "lowerBodyThickStripes", "lowerBodyLogo"),
                    "style, pattern and sleeve labels are not fields"),
    **dict.fromkeys(("footwearBoots", "footwearLeatherShoes", "footwearSandals", "footwearShoes", "footwearSneakers",
                     "footwearSneaker", "footwearStocking"), "shoe type is not a field (only shoes_color)"),
}


def read(source: Path, opts: ImportOptions, report: ImportReport) -> Iterator[ImportedRecord]:
    """Every crop of every subset that has an ``archive/Label.txt``, labelled from its person's line."""
    subsets = sorted(p.parent.parent for p in source.glob("*/archive/Label.txt"))
    if not subsets:
        raise SourceError(f"{source}: no <subset>/archive/Label.txt (give the 'PETA dataset' folder)")
    for subset in subsets:
        archive = subset / "archive"
        people = _labels(archive / "Label.txt")
        for img in sorted(p for p in archive.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")):
            pid = _person_of(img.name, people)
            if pid is None:
                continue  # a crop without a label line: nothing to map
            labels = people[pid]
            report.labels(labels, [*TABLE, *DROPPED, *_color_table(labels)])
            table = {**TABLE, **_color_table(labels)}
            flags = _flags(labels, table)
            person = f"{subset.name}/{pid}"
            split = "val" if held_out(person, opts.val_fraction, opts.seed) else "train"
            yield ImportedRecord(img, f"{subset.name}/{img.name}", map_labels(flags, table), split, person=person)


def _color_table(labels: set[str]) -> dict[str, Rule]:
    out = {}
    for name in labels:
        for prefix, key in COLOR_PREFIXES.items():
            rule = color_rule(name, key, prefix)
            if rule is not None:
                out[name] = rule
    return out


def _flags(labels: set[str], table: dict[str, Rule]) -> dict[str, bool | None]:
    silent = {key for prefix, key in _GROUPS.items() if not any(n.startswith(prefix) for n in labels)}
    return {name: None if rule.field in silent else name in labels for name, rule in table.items()}


def _labels(path: Path) -> dict[str, set[str]]:
    people: dict[str, set[str]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2:
            raise SourceError(f"{path}:{line_no}: expected '<person id> <label> ...', got {line.strip()!r}")
        people[words[0]] = set(words[1:])
    return people


def _person_of(file_name: str, people: dict[str, set[str]]) -> str | None:
    """The Label.txt id a crop belongs to: its name up to the first ``_`` or ``.``, as text or as a number."""
    head = file_name.split("_")[0].split(".")[0]
    if head in people:
        return head
    if head.isdigit():
        by_number = {int(k): k for k in people if k.isdigit()}
        return by_number.get(int(head))
    return None


__all__ = ["COLOR_PREFIXES", "DROPPED", "TABLE", "read"]
