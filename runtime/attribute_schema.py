"""The person-attribute schema, defined once: each field, its values, and the words that say each value.

Standard library only. Everything that names attributes reads it:

- ``runtime.attributes`` (the parser) takes its lexicon from the ``*_WORDS`` tables and fills :data:`ATTRIBUTE_KEYS`;
- ``pvlm.synth`` draws each crop's labels from :attr:`AttributeField.drawn` and writes captions with words
  the parser reads (``tests/test_pvlm_synth.py`` parses every caption back);
- ``bench.quality`` scores the drawn fields; ``runtime.description_schema`` (the ``--json`` line's JSON Schema),
  ``runtime.search`` (index tokens) and the model card list :data:`FIELDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Base colours: the values of every ``*_color`` field besides a bare shade, and synth's palette. The order
# is synth's draw order (changing it changes every crop of a seed).
COLORS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "black", "white", "grey", "orange", "purple", "pink", "brown",
)
SHADES: tuple[str, ...] = ("dark", "light")
VIEWS: tuple[str, ...] = ("front", "back", "side")

# surface word -> (base colour, implied shade)
COLOR_WORDS: dict[str, tuple[str, str | None]] = {
    **dict.fromkeys(("red", "crimson", "maroon", "burgundy", "scarlet", "wine", "reddish"), ("red", None)),
    **dict.fromkeys(
        ("blue", "cyan", "teal", "turquoise", "azure", "cobalt", "indigo", "bluish"), ("blue", None)
    ),
    "navy": ("blue", "dark"),
    **dict.fromkeys(("green", "olive", "lime", "emerald", "mint", "greenish"), ("green", None)),
    **dict.fromkeys(("yellow", "gold", "golden", "mustard", "yellowish"), ("yellow", None)),
    **dict.fromkeys(("black", "blackish"), ("black", None)),
    **dict.fromkeys(("white", "cream", "ivory", "off-white", "whitish"), ("white", None)),
    **dict.fromkeys(("grey", "gray", "silver", "charcoal", "grayish", "greyish"), ("grey", None)),
    **dict.fromkeys(("orange", "peach", "coral", "orangish", "apricot"), ("orange", None)),
    **dict.fromkeys(("purple", "violet", "lavender", "lilac", "plum", "mauve", "purplish"), ("purple", None)),
    **dict.fromkeys(("pink", "magenta", "fuchsia", "salmon", "rose", "pinkish"), ("pink", None)),
    **dict.fromkeys(("brown", "khaki", "tan", "camel", "chocolate", "coffee", "brownish"), ("brown", None)),
    "beige": ("brown", "light"),
}
# shade -> the modifiers that say it ("dark blue", "light-colored")
SHADE_WORDS: dict[str, tuple[str, ...]] = {
    "dark": ("dark", "darker", "deep"),
    "light": ("light", "lighter", "pale", "pastel"),
}

# noun category -> value -> the words that name it ("shoes" only carries shoes_color)
NOUN_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "upper": {
        "t-shirt": ("t-shirt", "t-shirts", "tee", "tees", "tshirt", "tshirts", "tee-shirt"),
        "shirt": ("shirt", "shirts", "blouse", "blouses", "polo"),
        "jacket": ("jacket", "jackets", "blazer", "windbreaker", "parka", "anorak"),
        "coat": ("coat", "coats", "overcoat", "trenchcoat", "raincoat", "topcoat"),
        "hoodie": ("hoodie", "hoodies", "hoody", "sweatshirt", "sweatshirts"),
        "sweater": ("sweater", "sweaters", "jumper", "pullover", "cardigan"),
        "top": ("top", "tops", "camisole", "tunic"),
        "vest": ("vest", "vests", "waistcoat", "gilet"),
        "dress": ("dress", "dresses", "gown"),
    },
    "lower": {
        "trousers": ("trousers", "trouser", "pants", "slacks", "chinos", "sweatpants", "joggers"),
        "jeans": ("jeans",),
        "shorts": ("shorts",),
        "skirt": ("skirt", "skirts", "miniskirt"),
        "leggings": ("leggings", "tights"),
    },
    "shoes": {
        "shoes": ("shoes", "shoe", "sneakers", "sneaker", "boots", "boot", "trainers", "sandals", "heels", "loafers",
                  "footwear", "slippers"),
    },
    "headwear": {
        "cap": ("cap", "caps"),
        "hat": ("hat", "hats", "beanie", "beret", "fedora"),
        "helmet": ("helmet", "helmets"),
    },
    "carrying": {
        "backpack": ("backpack", "backpacks", "rucksack", "knapsack", "schoolbag"),
        "handbag": ("handbag", "handbags", "purse", "bag", "bags", "tote", "clutch", "satchel", "briefcase"),
        "umbrella": ("umbrella", "parasol"),
        "phone": ("phone", "cellphone", "smartphone", "mobile", "iphone"),
        "suitcase": ("suitcase", "suitcases", "luggage", "trolley"),
    },
}
POSTURE_WORDS: dict[str, tuple[str, ...]] = {
    "walking": ("walking", "walks", "walk", "strolling", "striding", "stride"),
    "standing": ("standing", "stands", "stand", "stood"),
    "running": ("running", "runs", "run", "jogging", "jogs", "sprinting"),
    "sitting": ("sitting", "sits", "sit", "seated"),
    "riding": ("riding", "rides", "cycling", "biking"),
}
GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "male": ("man", "men", "male", "males", "boy", "boys", "gentleman", "gentlemen", "guy", "guys", "father",
             "businessman"),
    "female": ("woman", "women", "female", "females", "girl", "girls", "lady", "ladies", "mother", "businesswoman"),
}
AGE_WORDS: dict[str, tuple[str, ...]] = {
    "young": ("young", "younger", "youth", "child", "children", "kid", "kids", "teen", "teens", "teenager", "teenage",
              "teenaged", "boy", "boys", "girl", "girls", "adolescent", "toddler", "juvenile", "schoolboy",
              "schoolgirl"),
    "adult": ("adult", "adults", "elderly", "old", "older", "senior", "middle-aged", "grown", "mature", "elder"),
}


@dataclass(frozen=True)
class AttributeField:
    """One key of the parsed attributes.

    ``values``: what the parser reports (besides None, or an empty list for ``many``); ``drawn``: what
    ``pvlm.synth`` draws as a crop's label, in draw order (``"none"``: the crop has no such item; empty:
    not drawn); ``kind``: ``"item"`` (a garment type, object, posture, ...), ``"color"`` (a base colour or a
    bare shade of ``part``'s garment) or ``"shade"`` (``dark``/``light`` of ``part``'s base colour);
    ``person``: a fact about the person rather than the look (gender, age), which a caption may leave out.
    """

    key: str
    values: tuple[str, ...]
    drawn: tuple[str, ...] = ()
    kind: str = "item"
    part: str | None = None
    many: bool = False
    person: bool = False


def _color(part: str) -> AttributeField:
    return AttributeField(f"{part}_color", COLORS + SHADES, COLORS, "color", part)


def _shade(part: str) -> AttributeField:
    return AttributeField(f"{part}_shade", SHADES, (), "shade", part)


# In the parser's output order (the ``--json`` line's key order).
FIELDS: tuple[AttributeField, ...] = (
    AttributeField("upper", tuple(NOUN_WORDS["upper"]), ("t-shirt", "shirt", "jacket", "coat", "hoodie", "sweater")),
    _color("upper"),
    _shade("upper"),
    AttributeField("lower", tuple(NOUN_WORDS["lower"]), ("trousers", "jeans", "shorts", "skirt")),
    _color("lower"),
    _shade("lower"),
    AttributeField("headwear", tuple(NOUN_WORDS["headwear"]), ("none", *NOUN_WORDS["headwear"])),
    AttributeField("carrying", tuple(NOUN_WORDS["carrying"]), ("none", *NOUN_WORDS["carrying"]), many=True),
    AttributeField("posture", tuple(POSTURE_WORDS), ("standing", "walking")),
    AttributeField("view", VIEWS, VIEWS),
    AttributeField("gender", tuple(GENDER_WORDS), tuple(GENDER_WORDS), person=True),
    AttributeField("age", tuple(AGE_WORDS), ("adult", "young"), person=True),
    _color("shoes"),
)
FIELD: dict[str, AttributeField] = {f.key: f for f in FIELDS}
ATTRIBUTE_KEYS: tuple[str, ...] = tuple(f.key for f in FIELDS)
# Garment parts with a colour field (``upper_color``, ...), in field order.
COLORED_PARTS: tuple[str, ...] = tuple(f.part for f in FIELDS if f.kind == "color" and f.part)
# Fields about the person (gender, age), in field order.
PERSON_KEYS: tuple[str, ...] = tuple(f.key for f in FIELDS if f.person)

# The canonical phrase of a drawn value, for text written from labels (search queries, template captions):
# words the parser reads back to the same value.
VALUE_PHRASES: dict[str, dict[str, str]] = {
    "view": {"front": "seen from the front", "back": "seen from behind", "side": "seen from the side"},
    "carrying": {"backpack": "carrying a backpack", "handbag": "with a handbag", "umbrella": "holding an umbrella",
                 "phone": "holding a phone", "suitcase": "with a suitcase"},
}


def empty_attributes() -> dict[str, Any]:
    """Every key of :data:`ATTRIBUTE_KEYS` unset: None, or ``[]`` for a list-valued field."""
    return {f.key: [] if f.many else None for f in FIELDS}


__all__ = ["AGE_WORDS", "ATTRIBUTE_KEYS", "COLORED_PARTS", "COLORS", "COLOR_WORDS", "FIELD", "FIELDS", "GENDER_WORDS",
           "NOUN_WORDS", "PERSON_KEYS", "POSTURE_WORDS", "SHADES", "VALUE_PHRASES", "SHADE_WORDS", "VIEWS", "AttributeField", "empty_attributes"]
