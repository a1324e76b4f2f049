"""Structured person attributes parsed from a free-text description (standard library only).

Understands the synthetic captions of ``pvlm.synth`` and real MSP60k-style sentences such as
"The image shows a male adult with short black hair, wearing a dark blue jacket and gray pants,
carrying a laptop bag, walking".
"""

from __future__ import annotations

import re
from typing import Any

ATTRIBUTE_KEYS: tuple[str, ...] = (
    "upper",
    "upper_color",
    "lower",
    "lower_color",
    "headwear",
    "carrying",
    "posture",
    "view",
    "gender",
    "age",
    "shoes_color",
)

_COLORS: dict[str, str] = {
    **dict.fromkeys(("red", "crimson", "maroon", "burgundy", "scarlet", "wine"), "red"),
    **dict.fromkeys(("blue", "navy", "cyan", "teal", "turquoise", "azure", "cobalt", "indigo"), "blue"),
    **dict.fromkeys(("green", "olive", "lime", "emerald", "mint"), "green"),
    **dict.fromkeys(("yellow", "gold", "golden", "mustard"), "yellow"),
    "black": "black",
    **dict.fromkeys(("white", "cream", "ivory", "off-white"), "white"),
    **dict.fromkeys(("grey", "gray", "silver", "charcoal"), "grey"),
    "orange": "orange",
    **dict.fromkeys(("purple", "violet", "lavender", "lilac", "plum"), "purple"),
    **dict.fromkeys(("pink", "magenta", "fuchsia"), "pink"),
    **dict.fromkeys(("brown", "beige", "khaki", "tan", "camel", "chocolate", "coffee"), "brown"),
}

# category -> surface word -> canonical value
_NOUNS: dict[str, dict[str, str]] = {
    "upper": {
        **dict.fromkeys(("t-shirt", "t-shirts", "tee", "tees", "tshirt", "tshirts", "tee-shirt"), "t-shirt"),
        **dict.fromkeys(("shirt", "shirts", "blouse", "blouses", "polo"), "shirt"),
        **dict.fromkeys(("jacket", "jackets", "blazer", "windbreaker", "parka", "anorak"), "jacket"),
        **dict.fromkeys(("coat", "coats", "overcoat", "trenchcoat", "raincoat", "topcoat"), "coat"),
        **dict.fromkeys(("hoodie", "hoodies", "hoody", "sweatshirt", "sweatshirts"), "hoodie"),
        **dict.fromkeys(("sweater", "sweaters", "jumper", "pullover", "cardigan"), "sweater"),
        **dict.fromkeys(("top", "tops", "camisole"), "top"),
        **dict.fromkeys(("vest", "waistcoat", "gilet"), "vest"),
        **dict.fromkeys(("dress", "gown"), "dress"),
    },
    "lower": {
        **dict.fromkeys(("trousers", "trouser", "pants", "slacks", "chinos", "sweatpants", "joggers"), "trousers"),
        "jeans": "jeans",
        "shorts": "shorts",
        **dict.fromkeys(("skirt", "skirts", "miniskirt"), "skirt"),
        **dict.fromkeys(("leggings", "tights"), "leggings"),
    },
    "shoes": dict.fromkeys(
        (
            "shoes",
            "shoe",
            "sneakers",
            "sneaker",
            "boots",
            "boot",
            "trainers",
            "sandals",
            "heels",
            "loafers",
            "footwear",
            "slippers",
        ),
        "shoes",
    ),
    "headwear": {
        **dict.fromkeys(("cap", "caps"), "cap"),
        **dict.fromkeys(("hat", "hats", "beanie", "beret", "fedora"), "hat"),
        **dict.fromkeys(("helmet", "helmets"), "helmet"),
    },
    "carry": {
        **dict.fromkeys(("backpack", "backpacks", "rucksack", "knapsack", "schoolbag"), "backpack"),
        **dict.fromkeys(
            ("handbag", "handbags", "purse", "bag", "bags", "tote", "clutch", "satchel", "briefcase"), "handbag"
        ),
        **dict.fromkeys(("umbrella", "parasol"), "umbrella"),
        **dict.fromkeys(("phone", "cellphone", "smartphone", "mobile", "iphone"), "phone"),
        **dict.fromkeys(("suitcase", "suitcases", "luggage", "trolley"), "suitcase"),
    },
    # Not reported, but they soak up the colour in front of them ("black hair", "white stripes").
    "other": dict.fromkeys(
        (
            "hair",
            "haired",
            "stripes",
            "stripe",
            "belt",
            "scarf",
            "gloves",
            "socks",
            "glasses",
            "sunglasses",
            "mask",
            "tie",
            "logo",
            "pattern",
            "print",
            "collar",
            "sleeves",
            "strap",
            "straps",
            "skin",
            "skinned",
            "bicycle",
            "bike",
            "car",
            "wall",
            "background",
            "beard",
        ),
        "other",
    ),
}
_NOUN_INDEX: dict[str, tuple[str, str]] = {
    w: (cat, canon) for cat, words in _NOUNS.items() for w, canon in words.items()
}
_GARMENT_CATS = ("upper", "lower", "shoes")

_MALE = frozenset(
    ("man", "men", "male", "males", "boy", "boys", "gentleman", "gentlemen", "guy", "guys", "father", "businessman")
)
_FEMALE = frozenset(
    ("woman", "women", "female", "females", "girl", "girls", "lady", "ladies", "mother", "businesswoman")
)
_MALE_PRON = frozenset(("he", "him", "his", "himself"))
_FEMALE_PRON = frozenset(("she", "her", "hers", "herself"))
_YOUNG = frozenset(
    (
        "young",
        "younger",
        "youth",
        "child",
        "children",
        "kid",
        "kids",
        "teen",
        "teens",
        "teenager",
        "teenage",
        "teenaged",
        "boy",
        "boys",
        "girl",
        "girls",
        "adolescent",
        "toddler",
        "juvenile",
        "schoolboy",
        "schoolgirl",
    )
)
_ADULT = frozenset(("adult", "adults", "elderly", "old", "older", "senior", "middle-aged", "grown", "mature", "elder"))
_POSTURES: dict[str, str] = {
    **dict.fromkeys(("walking", "walks", "walk", "strolling", "striding", "stride"), "walking"),
    **dict.fromkeys(("standing", "stands", "stand", "stood"), "standing"),
    **dict.fromkeys(("running", "runs", "run", "jogging", "jogs", "sprinting"), "running"),
    **dict.fromkeys(("sitting", "sits", "sit", "seated"), "sitting"),
}

_NEGATIONS = frozenset(("no", "not", "without", "never", "none", "neither", "nor", "lacks", "lacking"))
# Tokens that end a negation's reach ("no hat, and a red coat") or a colour's reach ("red, and a coat").
_CLAUSE_END = frozenset(("but", "and", "while", "though", "although", "yet", "whereas"))
_COLOR_BREAK = frozenset(
    (
        "with",
        "wearing",
        "wears",
        "carrying",
        "carries",
        "holding",
        "holds",
        "is",
        "are",
        "was",
        "has",
        "have",
        "he",
        "she",
        "they",
        "his",
        "her",
        "their",
        "its",
        "a",
        "an",
        "the",
        "while",
        "who",
        "which",
        "that",
        "in",
        "on",
        "at",
        "over",
        "under",
        "to",
        "by",
        "for",
        "from",
        "plus",
        "but",
        "whose",
        "and",
        "or",
        "person",
        "man",
        "woman",
        "boy",
        "girl",
        "people",
        "pedestrian",
        "walking",
        "standing",
        "dressed",
        "paired",
    )
)
_POSTFIX_LINKS = frozenset(("in", "is", "are", "was", "were"))
_COLOR_MODIFIERS = frozenset(("dark", "light", "bright", "pale", "deep", "pastel", "neon", "faded", "navy"))
_KEEP_HYPHEN = frozenset(("t-shirt", "t-shirts", "tee-shirt", "off-white", "middle-aged"))
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|[.,;:!?()/]")
_PUNCT = frozenset(".,;:!?()")
_VIEW_NOUNS = frozenset(("view", "angle", "shot", "perspective", "facing", "profile"))
_FACING_FRONT = frozenset(("camera", "forward", "forwards", "viewer", "us", "front"))
_AWAY_VERBS = frozenset(("walking", "walks", "facing", "faces", "turned", "moving", "heading", "looking"))
_POSSESSIVE = frozenset(("his", "her", "their", "its", "the", "a"))


def _tokenize(text: str) -> list[str]:
    raw = _TOKEN_RE.findall(text.lower().replace("\u2019", "'"))
    tokens: list[str] = []
    for tok in raw:
        if tok.endswith("'s"):
            tok = tok[:-2]
        if "-" in tok and tok not in _KEEP_HYPHEN:
            tokens.extend(p for p in tok.split("-") if p)
        else:
            tokens.append(tok)
    merged: list[str] = []
    for tok in tokens:  # "t shirt", "tee shirt", "sweat shirt" written apart
        if merged and tok == "shirt" and merged[-1] in ("t", "tee"):
            merged[-1] = "t-shirt"
        elif merged and tok == "shirt" and merged[-1] == "sweat":
            merged[-1] = "sweatshirt"
        else:
            merged.append(tok)
    return merged


def _negated(tokens: list[str], nouns: list[tuple[str, str] | None]) -> list[bool]:
    """Tokens under a negation: up to its first noun (or nouns joined by "or"), a clause end, or 6 tokens."""
    out = [False] * len(tokens)
    left, done = 0, False
    for i, tok in enumerate(tokens):
        if tok in _PUNCT or tok in _CLAUSE_END:
            left = 0
        elif left:
            if done and tok not in ("or", "nor", "/"):
                left = 0
            else:
                out[i] = True
                left -= 1
                done = bool(nouns[i] or tok in _POSTURES)
        if tok in _NEGATIONS or tok.endswith("n't"):
            left, done = 6, False
    return out


def _nouns(tokens: list[str]) -> list[tuple[str, str] | None]:
    nouns: list[tuple[str, str] | None] = [_NOUN_INDEX.get(t) for t in tokens]
    for i, tok in enumerate(tokens):
        nxt = nouns[i + 1] if i + 1 < len(tokens) else None
        # "dress shoes", "jeans jacket", "sweater vest": the first noun only describes the second
        if nouns[i] and nxt and nxt[0] in _GARMENT_CATS:
            nouns[i] = None
        # "top of", "back of": not a garment
        elif tok == "top" and i + 1 < len(tokens) and tokens[i + 1] == "of":
            nouns[i] = None
    return nouns


def _bind_colors(tokens: list[str], nouns: list[tuple[str, str] | None]) -> dict[int, list[str]]:
    """Map noun index -> colours that describe it, first (primary) colour first."""
    bound: dict[int, list[str]] = {}
    n = len(tokens)
    for i, tok in enumerate(tokens):
        color = _COLORS.get(tok)
        if color is None or nouns[i]:
            continue
        # postfix colour: "a jacket in red", "the jeans are dark blue"
        k = i - 1
        while k >= 0 and (tokens[k] in _COLOR_MODIFIERS or tokens[k] in _COLORS):
            k -= 1
        if k >= 1 and tokens[k] in _POSTFIX_LINKS and nouns[k - 1] and nouns[k - 1][0] != "other":
            bound.setdefault(k - 1, []).append(color)
            continue
        for j in range(i + 1, min(n, i + 6)):
            t = tokens[j]
            if nouns[j]:
                bound.setdefault(j, []).append(color)
                break
            if t in _COLORS or t in _COLOR_MODIFIERS:
                continue
            if (
                t in ("and", "or", "/")
                and j + 1 < n
                and (tokens[j + 1] in _COLORS or tokens[j + 1] in _COLOR_MODIFIERS)
            ):
                continue  # "black and white shirt"
            if t in _PUNCT or t in _COLOR_BREAK:
                break
    return bound


def _view(tokens: list[str], negated: list[bool]) -> str | None:
    n = len(tokens)

    def at(k: int) -> str:
        return tokens[k] if 0 <= k < n else ""

    for i, tok in enumerate(tokens):
        if negated[i]:
            continue
        if tok == "from":
            k = i + 1
            while at(k) in ("the", "his", "her", "their", "its", "a"):
                k += 1
            nxt = at(k)
            if nxt == "front":
                return "front"
            if nxt in ("behind", "back", "rear", "backside"):
                return "back"
            if nxt in ("side", "left", "right"):
                return "side"
        elif tok in ("front", "frontal") and (at(i + 1) in _VIEW_NOUNS or tok == "frontal"):
            return "front"
        elif tok in ("back", "rear") and at(i + 1) in _VIEW_NOUNS:
            return "back"
        elif tok == "back" and at(i - 1) in _POSSESSIVE and at(i + 1) in ("to", "turned", "towards"):
            return "back"  # "with his back to the camera"
        elif tok in ("side", "lateral") and at(i + 1) in _VIEW_NOUNS | {"on"}:
            return "side"
        elif tok == "profile" and at(i - 1) != "low":
            return "side"
        elif tok == "sideways" and at(i - 1) not in ("facing", "faces"):
            return "side"
        elif tok in ("facing", "faces", "face"):
            k = i + 1
            while at(k) in ("the", "towards", "toward", "to"):
                k += 1
            nxt = at(k)
            if nxt in _FACING_FRONT:
                return "front"
            if nxt == "away":
                return "back"
            if nxt in ("left", "right", "sideways"):
                return "side"
        elif tok == "away" and at(i - 1) in _AWAY_VERBS:
            return "back"
    return None


def _age_from_years(tokens: list[str], i: int) -> str | None:
    # "a 7 years old boy" / "30 year old man"
    if i >= 2 and tokens[i - 1] in ("years", "year", "yrs") and tokens[i - 2].isdigit():
        return "young" if int(tokens[i - 2]) < 18 else "adult"
    return None


def parse_attributes(text: str) -> dict[str, Any]:
    """Parse a person description into :data:`ATTRIBUTE_KEYS` (missing -> None, ``carrying`` -> list)."""
    tokens = _tokenize(text or "")
    nouns = _nouns(tokens)
    negated = _negated(tokens, nouns)
    colors = _bind_colors(tokens, nouns)
    out: dict[str, Any] = dict.fromkeys(ATTRIBUTE_KEYS)
    out["carrying"] = []
    pron_gender: str | None = None
    for i, tok in enumerate(tokens):
        noun = nouns[i]
        if noun and not negated[i]:
            cat, canon = noun
            color = colors.get(i, [None])[0]
            if cat in ("upper", "lower"):
                if out[cat] is None:
                    out[cat] = canon
                if out[cat] == canon and out[f"{cat}_color"] is None:
                    out[f"{cat}_color"] = color
            elif cat == "shoes" and out["shoes_color"] is None:
                out["shoes_color"] = color
            elif cat == "headwear" and out["headwear"] is None:
                out["headwear"] = canon
            elif cat == "carry" and canon not in out["carrying"]:
                out["carrying"].append(canon)
        if out["gender"] is None:
            if tok in _MALE:
                out["gender"] = "male"
            elif tok in _FEMALE:
                out["gender"] = "female"
        if pron_gender is None:
            pron_gender = "male" if tok in _MALE_PRON else "female" if tok in _FEMALE_PRON else None
        if out["age"] is None:
            if tok == "old" and _age_from_years(tokens, i):
                out["age"] = _age_from_years(tokens, i)
            elif tok in _YOUNG:
                out["age"] = "young"
            elif tok in _ADULT:
                out["age"] = "adult"
        if out["posture"] is None and tok in _POSTURES and not negated[i]:
            out["posture"] = _POSTURES[tok]
    if out["gender"] is None:
        out["gender"] = pron_gender
    out["view"] = _view(tokens, negated)
    return out
