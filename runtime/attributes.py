"""Structured person attributes parsed from a free-text description (standard library only).

Understands the synthetic captions of ``pvlm.synth`` and real MSP60k sentences such as
"The image shows the back of an adult male walking away from the camera. He is wearing a
dark-colored, long-sleeved, cotton-padded coat, light blue trousers and a hat."

Grammar, in the order it is applied (one pass each over the tokens, no backtracking):

- Tokens are lower-cased words with hyphenated words split ("dark-colored" -> dark colored),
  except a few fixed words (t-shirt, off-white); sentences end at ``.``, ``!`` and ``?``.
- Other people are cut out: a sentence that mentions the background, and the rest of a sentence
  from "another person" / "other people" (and a following "This person ..." / "They ...").
- Nouns come from a small lexicon (``attribute_schema``: garments, headwear, carried objects; and "other" nouns such as
  hair or mask that soak up the colour in front of them). In "X or Y" the second garment is an
  alternative wording, never a second garment.
- A colour phrase is a run of colour words and modifiers ("dark maroon or burgundy-colored",
  "light-grey"); its value is the first base colour with the shade in front of it
  (``dark``/``light``), or the bare shade when that is all it says ("dark-colored" -> "dark").
  It binds forward to the next noun across adjectives and commas ("a dark-colored, long-sleeved,
  cotton-padded coat") but not across articles, "and", "with" or verbs; after the garment
  ("the jacket is red", "a coat in red"); and to every garment of a bare list that follows
  ("a dark-colored shirt, jacket, and trousers"; "a jacket and trousers, both a solid red color").
- Upper garment: the outermost of the first sentence that names one (coat > jacket > vest >
  hoodie > sweater > dress > shirt, t-shirt, top: "an orange vest over a short-sleeved shirt").
  Lower garment, headwear, posture, gender: the first mention. Negations ("no hat") and hedges
  ("might be walking", "possibly a phone") drop what they cover; a carried object needs a
  carrying word in its sentence when it is only "visible".

Colours: ``*_color`` is the base colour (one of ``attribute_schema.COLORS``) or ``dark``/``light`` when
the text says only that; ``*_shade`` is ``dark``/``light`` when a base colour carries it
("dark blue" -> color "blue", shade "dark"), so a query can match "blue" or "dark blue".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .attribute_schema import (AGE_WORDS, COLOR_WORDS, GENDER_WORDS, NOUN_WORDS, POSTURE_WORDS, SHADE_WORDS, SHADES,
                               empty_attributes)

_COLORS = COLOR_WORDS  # surface word -> (base colour, implied shade)
# modifier -> shade (None: a modifier that says nothing about dark/light, e.g. "bright")
_MODIFIERS: dict[str, str | None] = {
    **{w: shade for shade, words in SHADE_WORDS.items() for w in words},
    **dict.fromkeys(("bright", "neon", "faded", "vivid", "solid", "muted"), None),
}
_COLOR_FILLER = frozenset(("colored", "coloured", "color", "colour", "toned", "tone", "hued"))

# category -> surface word -> canonical value
_NOUNS: dict[str, dict[str, str]] = {
    **{cat: {w: value for value, words in values.items() for w in words} for cat, values in NOUN_WORDS.items()},
    # Not reported, but they soak up the colour in front of them ("black hair", "white stripes").
    "other": dict.fromkeys(
        ("hair", "haired", "stripes", "stripe", "belt", "scarf", "gloves", "socks", "glasses", "sunglasses",
         "mask", "tie", "logo", "pattern", "print", "collar", "sleeves", "strap", "straps", "skin", "skinned",
         "bicycle", "bike", "car", "wall", "background", "beard", "visor", "trim", "emblem", "clothing", "clothes",
         "outfit", "uniform", "apron", "jumpsuit", "coveralls", "scooter", "object", "container", "box", "floor",
         "sign", "poster", "door", "accents", "detailing", "hood", "bun", "ponytail", "text", "lettering"),
        "other",
    ),
}
_NOUN_INDEX: dict[str, tuple[str, str]] = {
    w: (cat, canon) for cat, words in _NOUNS.items() for w, canon in words.items()
}
_GARMENT_CATS = ("upper", "lower", "shoes")
# Outer garments first: the upper garment reported is the outermost one a sentence names.
_UPPER_RANK = {"coat": 0, "jacket": 1, "vest": 2, "hoodie": 3, "sweater": 4, "dress": 5}

_MALE = frozenset(GENDER_WORDS["male"])
_FEMALE = frozenset(GENDER_WORDS["female"])
_MALE_PRON = frozenset(("he", "him", "his", "himself"))
_FEMALE_PRON = frozenset(("she", "her", "hers", "herself"))
_YOUNG = frozenset(AGE_WORDS["young"])
_ADULT = frozenset(AGE_WORDS["adult"])
_POSTURES: dict[str, str] = {w: posture for posture, words in POSTURE_WORDS.items() for w in words}
_PEOPLE = frozenset(
    ("person", "persons", "people", "individual", "individuals", "child", "children", "woman", "women", "man", "men",
     "girl", "girls", "boy", "boys", "student", "students", "pedestrian", "pedestrians", "kid", "kids", "figure",
     "figures", "customer", "customers", "worker", "workers", "adult", "adults")
)
_FOLLOW_UP = frozenset(("they", "this", "one", "these", "both", "the"))  # "This person is wearing ..." after "another person"
_HEDGES = frozenset(("possibly", "perhaps", "maybe"))
_CARRY_WORDS = frozenset(
    ("carrying", "carries", "carry", "carried", "holding", "holds", "hold", "held", "has", "have", "with",
     "wearing", "wears", "on", "slung", "over", "across", "pulling", "pulls", "call", "using")
)

_NEGATIONS = frozenset(("no", "not", "without", "never", "none", "neither", "nor", "lacks", "lacking"))
# Tokens that end a negation's reach ("no hat, and a red coat").
_CLAUSE_END = frozenset(("but", "and", "while", "though", "although", "yet", "whereas"))
_COLOR_BREAK = frozenset(
    ("with", "wearing", "wears", "carrying", "carries", "holding", "holds", "is", "are", "was", "has", "have", "he",
     "she", "they", "his", "her", "their", "its", "a", "an", "the", "while", "who", "which", "that", "in", "on", "at",
     "over", "under", "to", "by", "for", "from", "plus", "but", "whose", "and", "or", "person", "man", "woman", "boy",
     "girl", "people", "pedestrian", "walking", "standing", "dressed", "paired", "underneath", "beneath", "of",
     "visible", "appears", "seems")
)
_POSTFIX_LINKS = frozenset(("in", "is", "are", "was", "were"))
_KEEP_HYPHEN = frozenset(("t-shirt", "t-shirts", "tee-shirt", "off-white", "middle-aged"))
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|[.,;:!?()/]")
_PUNCT = frozenset(".,;:!?()")
_SENTENCE_END = frozenset(".!?")
_VIEW_NOUNS = frozenset(("view", "angle", "shot", "perspective", "facing", "profile"))
_FACING_FRONT = frozenset(("camera", "forward", "forwards", "viewer", "us", "front"))
_AWAY_VERBS = frozenset(("walking", "walks", "facing", "faces", "turned", "moving", "heading", "looking"))
_POSSESSIVE = frozenset(("his", "her", "their", "its", "the", "a"))

Noun = tuple[str, str]
Color = tuple[str, str | None]  # (base colour or bare shade, shade of a base colour)


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


def _sentences(tokens: list[str]) -> list[int]:
    """Sentence index of every token."""
    out, s = [], 0
    for tok in tokens:
        out.append(s)
        if tok in _SENTENCE_END:
            s += 1
    return out


def _other_people(tokens: list[str], sent: list[int]) -> list[bool]:
    """Tokens about someone else: background sentences, and "another person ..." to the end of its sentence."""
    n = len(tokens)
    out = [False] * n
    starts = [i for i in range(n) if i == 0 or sent[i] != sent[i - 1]]
    prev_other = False
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else n
        words = tokens[start:end]
        cut: int | None = None
        if "background" in words:
            cut = 0
        elif prev_other and words and words[0] in _FOLLOW_UP:
            cut = 0
        else:
            for j, tok in enumerate(words):
                if tok in ("another", "other", "others") and (
                    tok == "others" or any(w in _PEOPLE for w in words[j + 1 : j + 4])
                ):
                    cut = j
                    break
        prev_other = cut is not None and "background" not in words
        if cut is not None:
            for i in range(start + cut, end):
                out[i] = True
    return out


def _negated(tokens: list[str], nouns: list[Noun | None]) -> list[bool]:
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


def _nouns(tokens: list[str]) -> list[Noun | None]:
    nouns: list[Noun | None] = [_NOUN_INDEX.get(t) for t in tokens]
    for i, tok in enumerate(tokens):
        nxt = nouns[i + 1] if i + 1 < len(tokens) else None
        # "dress shoes", "jeans jacket", "tote bag": the first noun only describes the second
        if nouns[i] and nxt and (nxt[0] in _GARMENT_CATS or nxt[0] == nouns[i][0]):
            nouns[i] = None
        # "top of", "back of": not a garment
        elif tok == "top" and i + 1 < len(tokens) and tokens[i + 1] == "of":
            nouns[i] = None
        elif tok == "mobile" and i + 1 < len(tokens) and tokens[i + 1] != "phone":
            nouns[i] = None  # "mobile" alone is a phone only as a noun; "mobile phone" keeps "phone"
    return nouns


def _alternatives(tokens: list[str], nouns: list[Noun | None]) -> list[bool]:
    """Nouns that only re-word the noun before them: "a shirt or t-shirt", "a skirt or dress"."""
    out = [False] * len(tokens)
    for j, noun in enumerate(nouns):
        if not noun or noun[0] == "other":
            continue
        k = j - 1
        while k >= 0 and j - k <= 4 and not nouns[k] and tokens[k] not in _PUNCT and tokens[k] != "or":
            k -= 1
        if k >= 1 and tokens[k] == "or":
            p = k - 1
            while p >= 0 and (tokens[p] in _COLOR_FILLER or tokens[p] in _PUNCT and tokens[p] == ","):
                p -= 1
            if p >= 0 and nouns[p] and nouns[p][0] != "other" and (
                nouns[p][0] == noun[0] or {nouns[p][0], noun[0]} <= {"upper", "lower"}
            ):
                out[j] = True
    return out


def _is_color_word(tok: str) -> bool:
    return tok in _COLORS or tok in _MODIFIERS or tok in _COLOR_FILLER


def _color_phrase(tokens: list[str], i: int) -> tuple[Color | None, int]:
    """The colour phrase starting at ``i`` -> (value, index after it); value None if it names no colour."""
    n = len(tokens)
    j = i
    base: str | None = None
    shade: str | None = None
    pending: str | None = None  # a modifier's shade, waiting for its colour
    bare: str | None = None  # "dark" / "light" said without a colour
    while j < n:
        tok = tokens[j]
        if tok in _COLORS:
            if base is None:
                base, implied = _COLORS[tok]
                shade = pending or implied
        elif tok in _MODIFIERS:
            if base is None:
                pending = _MODIFIERS[tok] or pending
                bare = bare or _MODIFIERS[tok]
        elif tok in _COLOR_FILLER:
            pass
        elif tok in ("or", "and", "/") and j + 1 < n and tokens[j + 1] in _COLORS.keys() | _MODIFIERS.keys():
            pass  # "black and white", "teal or green", "light-orange/peach"
        else:
            break
        j += 1
    if base is not None:
        return (base, shade), j
    if bare is not None:
        return (bare, None), j
    return None, j


def _bind_colors(tokens: list[str], nouns: list[Noun | None]) -> dict[int, list[Color]]:
    """Map noun index -> colours that describe it, first (primary) colour first."""
    bound: dict[int, list[Color]] = {}
    n = len(tokens)

    def bind(j: int, color: Color) -> None:
        bound.setdefault(j, []).append(color)

    i = 0
    while i < n:
        if nouns[i] or not (tokens[i] in _COLORS or tokens[i] in _MODIFIERS):
            i += 1
            continue
        color, end = _color_phrase(tokens, i)
        if color is None:
            i = end
            continue
        # postfix colour: "a jacket in red", "the jeans are dark blue"
        k = i - 1
        if k >= 1 and tokens[k] in _POSTFIX_LINKS and nouns[k - 1] and nouns[k - 1][0] != "other":
            bind(k - 1, color)
            i += 1  # "a coat in red and black shoes": the next colour starts its own phrase
            continue
        # "a jacket and trousers, both a solid red color"
        back = [t for t in tokens[max(0, i - 3) : i]]
        if "both" in back:
            k = i - 1
            while k >= 0 and tokens[k] != "both":
                k -= 1
            garments = [g for g in range(max(0, k - 8), k) if nouns[g] and nouns[g][0] in _GARMENT_CATS]
            for g in garments[-2:]:
                bind(g, color)
            i = end
            continue
        target: int | None = None
        for j in range(end, min(n, end + 10)):
            t = tokens[j]
            if nouns[j]:
                target = j
                break
            if t in _COLORS or t in _MODIFIERS or t in _COLOR_FILLER or t == "possibly":
                continue
            if t in ("and", "or", "/") and j + 1 < n and (tokens[j + 1] in _COLORS or tokens[j + 1] in _MODIFIERS):
                continue  # "dark-colored, possibly black and white patterned, skirt"
            if t == "," or t not in _PUNCT and t not in _COLOR_BREAK:
                continue  # adjectives: "a dark-colored, long-sleeved, cotton-padded coat"
            break
        if target is not None:
            bind(target, color)
            if nouns[target][0] in _GARMENT_CATS:
                _distribute(tokens, nouns, target, color, bind)
        i = end
    return bound


def _distribute(tokens: list[str], nouns: list[Noun | None], j: int, color: Color, bind: Any) -> None:
    """A colour before a bare list of garments describes all of them: "dark-colored shirt, jacket, and trousers".

    Only a bare shade ("dark-colored shirt and trousers"), a list of three, or two garments of the same
    kind ("red shirt and jacket"): "a pink hoodie and trousers" says nothing about the trousers' colour.
    """
    n = len(tokens)
    k = j + 1
    more: list[int] = []
    while k < n:
        if tokens[k] in (",", "and", "or"):
            k += 1
            continue
        if nouns[k] and nouns[k][0] in _GARMENT_CATS and tokens[k - 1] in (",", "and", "or"):
            more.append(k)
            k += 1
            continue
        break
    if more and (color[0] in SHADES or len(more) >= 2 or nouns[more[0]][0] == nouns[j][0]):
        for k in more:
            bind(k, color)


def _view(tokens: list[str], skip: list[bool]) -> str | None:
    n = len(tokens)

    def at(k: int) -> str:
        return tokens[k] if 0 <= k < n else ""

    for i, tok in enumerate(tokens):
        if skip[i]:
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
            if nxt == "side" or nxt in ("left", "right") and at(k + 1) != "to":
                return "side"
        elif tok in ("front", "frontal") and (at(i + 1) in _VIEW_NOUNS or tok == "frontal"):
            return "front"
        elif tok == "front" and at(i + 1) == "and" and at(i + 2) in ("center", "centre"):
            return "front"
        elif tok in ("back", "rear") and at(i + 1) in _VIEW_NOUNS:
            return "back"
        elif tok in ("back", "backs") and at(i - 1) == "the" and at(i + 1) == "of" and at(i + 2) in (
            "a", "an", "several", "two", "three", "some", "many", "the", "this"
        ):
            return "back"  # "the image shows the back of a woman"
        elif tok == "back" and at(i - 1) in _POSSESSIVE and at(i + 1) in ("to", "turned", "towards", "facing"):
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


def _hedged(tokens: list[str], i: int) -> bool:
    """"might be walking", "possibly a phone": said as a guess."""
    before = tokens[max(0, i - 3) : i]
    return any(t in _HEDGES for t in before[-2:]) or (len(before) >= 2 and before[-1] == "be" and before[-2] in (
        "might", "may", "could"))


_VIEW_WORDS = frozenset(
    ("front", "frontal", "back", "behind", "rear", "side", "sideways", "profile", "view", "facing", "away", "camera")
)


def interpreted_words() -> frozenset[str]:
    """Words :func:`parse_attributes` turns into attribute values (a search ranks by the other words)."""
    nouns = {w for cat, words in _NOUNS.items() if cat != "other" for w in words}
    return frozenset(
        {*_COLORS, *_MODIFIERS, *_COLOR_FILLER, *nouns, *_MALE, *_FEMALE, *_YOUNG, *_ADULT, *_POSTURES, *_VIEW_WORDS}
    )


def _split_color(color: Color | None) -> tuple[str | None, str | None]:
    return (None, None) if color is None else color


@dataclass(frozen=True)
class _Parse:
    """One description's tokens and what each token position means (every list is per token)."""

    tokens: list[str]
    sent: list[int]
    nouns: list[Any]
    negated: list[bool]
    other: list[bool]
    alt: list[bool]
    colors: dict[int, Any]
    skip: list[bool]
    sentence_words: dict[int, set[str]]

    @classmethod
    def of(cls, text: str) -> "_Parse":
        tokens = _tokenize(text or "")
        sent = _sentences(tokens)
        nouns = _nouns(tokens)
        negated = _negated(tokens, nouns)
        other = _other_people(tokens, sent)
        sentence_words: dict[int, set[str]] = {}
        for i, tok in enumerate(tokens):
            sentence_words.setdefault(sent[i], set()).add(tok)
        return cls(tokens, sent, nouns, negated, other, _alternatives(tokens, nouns), _bind_colors(tokens, nouns),
                   [a or b for a, b in zip(negated, other)], sentence_words)


def parse_attributes(text: str) -> dict[str, Any]:
    """Parse a person description into ``attribute_schema.ATTRIBUTE_KEYS`` (missing -> None, ``carrying`` -> list)."""
    p = _Parse.of(text)
    out: dict[str, Any] = empty_attributes()
    garments: dict[str, list[int]] = {"upper": [], "lower": []}
    pron_gender: str | None = None
    for i, tok in enumerate(p.tokens):
        if p.nouns[i] and not p.skip[i]:
            _take_noun(p, i, out, garments)
        if p.other[i]:
            continue
        _take_person(p, i, out)
        if pron_gender is None:
            pron_gender = "male" if tok in _MALE_PRON else "female" if tok in _FEMALE_PRON else None
    _take_garments(p, garments, out)
    if out["gender"] is None:
        out["gender"] = pron_gender
    out["view"] = _view(p.tokens, p.skip)
    return out


def _take_noun(p: _Parse, i: int, out: dict[str, Any], garments: dict[str, list[int]]) -> None:
    """Token ``i`` names a thing: note a garment mention, or set shoes colour, headwear or a carried item."""
    cat, canon = p.nouns[i]
    if cat in garments and not p.alt[i]:
        garments[cat].append(i)
    elif cat == "shoes" and out["shoes_color"] is None and i in p.colors:
        base, _ = p.colors[i][0]
        out["shoes_color"] = base
    elif cat == "headwear" and out["headwear"] is None and not _hedged(p.tokens, i):
        out["headwear"] = canon
    elif (
        cat == "carrying"
        and canon not in out["carrying"]
        and not _hedged(p.tokens, i)
        and ("visible" not in p.sentence_words[p.sent[i]] or p.sentence_words[p.sent[i]] & _CARRY_WORDS)
    ):
        out["carrying"].append(canon)


def _take_person(p: _Parse, i: int, out: dict[str, Any]) -> None:
    """Token ``i`` (about the described person): the first gender, age and posture words win."""
    tok = p.tokens[i]
    if out["gender"] is None:
        if tok in _MALE:
            out["gender"] = "male"
        elif tok in _FEMALE:
            out["gender"] = "female"
    if out["age"] is None:
        if tok == "old" and _age_from_years(p.tokens, i):
            out["age"] = _age_from_years(p.tokens, i)
        elif tok in _YOUNG:
            out["age"] = "young"
        elif tok in _ADULT:
            out["age"] = "adult"
    if out["posture"] is None and tok in _POSTURES and not p.negated[i] and not _hedged(p.tokens, i):
        out["posture"] = _POSTURES[tok]


def _take_garments(p: _Parse, garments: dict[str, list[int]], out: dict[str, Any]) -> None:
    """Upper and lower garment from their mentions in the first sentence that names one, with its colour."""
    for cat, idx in garments.items():
        if not idx:
            continue
        first = [i for i in idx if p.sent[i] == p.sent[idx[0]]]
        if cat == "upper":
            first.sort(key=lambda i: _UPPER_RANK.get(p.nouns[i][1], 9))  # stable: ties keep text order
        pick = first[0]
        canon = p.nouns[pick][1]
        out[cat] = canon
        # the chosen mention's colour, else the first colour given to the same garment elsewhere
        color = next((p.colors[i][0] for i in [pick, *idx] if p.nouns[i][1] == canon and i in p.colors), None)
        out[f"{cat}_color"], out[f"{cat}_shade"] = _split_color(color)
