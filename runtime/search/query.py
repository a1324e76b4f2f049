"""A search query, parsed: the attribute terms it asks for, the words that rank, what it leaves out, its typos.

``"womn in a dark blue jaket without a hat, with glasses"`` becomes

- required attribute terms, which every hit has: ``female``, ``jacket``, ``blue upper``; a garment
  widens to its near-synonyms (:data:`NEAR_VALUES`: a jacket or a coat), which score less than the
  value asked for, so every exact match ranks above them;
- ranking terms, which order the hits but filter nothing: the shade ``dark upper`` (a description
  rarely says one) and the word ``glasses`` (text relevance);
- negative terms, which no hit has: ``no headwear`` ("without a hat": no hat, cap or helmet);
- corrections: ``womn -> woman``, ``jaket -> jacket`` (a word that is neither in the schema's vocabulary
  nor in the store's text, one or two edits away from a schema word).

A colour or shade that names no garment ("blue", "person in dark clothes") is a term over every
garment: the upper, the lower garment and the shoes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..attribute_schema import COLOR_WORDS, COLORED_PARTS, FIELD, SHADE_WORDS, SHADES
from ..attributes import interpreted_words, parse_attributes
from .records import MAX_QUERY_CHARS, WORD_RE, QueryError, attribute_token, check_query_value, show

# Words that carry no meaning in a query once its attributes are parsed.
STOPWORDS = frozenset(
    "a an the in on of with and or wearing wears wear carrying carries carry holding holds hold who is are was "
    "were has have having person people someone somebody pedestrian individual find show me any some who's that "
    "which whose his her their its dressed clothes clothing look looking for at to from by pair also seen viewed "
    "shown shows photo image picture appears appearing like looks outfit but while yet though".split()
)
# Words descriptions use that name no attribute value: never taken for a typo of one ("short" is not "shirt").
COMMON_WORDS = frozenset(
    "short long sleeve sleeves sleeved sleeveless hair haired glasses sunglasses hood hooded striped stripes "
    "pattern patterned plaid checked logo print printed zip zipper collar collared button buttoned knit belt "
    "scarf gloves socks mask beard tie uniform vest apron bald blonde blond brunette curly straight tall thin "
    "large small big heavy slim front back side left right near far inside outside street store shop door "
    "crossing bike bicycle car scooter dog child children baby stroller cart near".split()
)
NEGATORS = frozenset(("no", "not", "without", "never", "none", "nor", "lacking", "isn't", "isnt", "doesn't",
                      "doesnt", "aren't", "arent", "non"))
# "without a hat" leaves out every headwear; "without a helmet" only helmets.
_ANY_HEADWEAR = frozenset(("hat", "hats", "headwear", "headgear"))
# A negation reaches up to its first noun ("no hat, and a red coat"), across at most this many words.
_NEGATION_REACH = 6
_CLAUSE_END = frozenset(("but", "and", "while", "though", "although", "yet", "with", "wearing", "carrying",
                         "holding", "in"))
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*|[.,;:!?()/]")
# Shades with the colour that is one: a dark garment may be described as black, a light one as white.
_SHADE_COLOR = {"dark": "black", "light": "white"}
_PART_NAMES = {"upper": "upper", "lower": "lower", "shoes": "shoes"}
_VIEW_LABELS = {"front": "seen from the front", "back": "seen from behind", "side": "seen from the side"}

# Garment values an operator would accept for the one typed (a model may call a jacket a coat): they match
# too, at NEAR_WEIGHT of a point. Only schema values; never for a negation ("without a hat" stays exact).
NEAR_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "upper": {"jacket": ("coat",), "coat": ("jacket",), "hoodie": ("sweater",), "sweater": ("hoodie",),
              "shirt": ("t-shirt",), "t-shirt": ("shirt",), "top": ("t-shirt", "shirt")},
    "lower": {"trousers": ("jeans",), "jeans": ("trousers",), "leggings": ("trousers",)},
    "headwear": {"cap": ("hat",), "hat": ("cap",)},
}
NEAR_WEIGHT = 0.5
NEAR_PREFIX = "~"  # the id of a term's near-synonyms (a chip of their own): "~upper:jacket"

KnownWord = Callable[[str], bool]


@dataclass(frozen=True)
class Term:
    """One thing a query asks for (or, ``negated``, leaves out).

    ``groups``: index tokens (``kind="attribute"``) or description words (``kind="text"``); a group
    matches a description holding any of its tokens. A positive term matches when any group does
    and scores one point per matching group (a colour over every garment: one per garment); a
    negated term excludes a description that matches any group (``every``: all of them, as in
    "not in a red jacket"). ``required``: a filter every hit passes; otherwise it only ranks.
    """

    id: str
    label: str
    groups: tuple[tuple[str, ...], ...]
    kind: str = "attribute"
    required: bool = True
    negated: bool = False
    every: bool = False
    near: tuple[str, ...] = ()  # tokens in ``groups`` that are near-synonyms (worth NEAR_WEIGHT)
    near_label: str = ""  # what they name ("coat")

    @functools.cached_property
    def sets(self) -> tuple[frozenset[str], ...]:
        """``groups`` as sets (what scoring tests a description's tokens against)."""
        return tuple(frozenset(g) for g in self.groups)

    @functools.cached_property
    def union(self) -> frozenset[str]:
        """Every token of every group: a description holding none of them matches no group."""
        return frozenset(tok for g in self.groups for tok in g)

    @property
    def role(self) -> str:
        """``filter`` (required), ``rank`` or ``exclude`` (negated)."""
        return "exclude" if self.negated else "filter" if self.required else "rank"

    def to_json(self) -> dict[str, Any]:
        """The term as the page shows it: id (for ``drop``), label, kind and role."""
        return {"id": self.id, "label": self.label, "kind": self.kind, "role": self.role}

    def near_json(self) -> dict[str, Any]:
        """The chip of this term's near-synonyms: dropping its id keeps the term to the value asked for."""
        return {"id": NEAR_PREFIX + self.id, "label": f"or {self.near_label}", "kind": self.kind, "role": "near"}

    @property
    def exact(self) -> Term:
        """This term without its near-synonyms, as a ranking term (what the ranking pass reads first)."""
        groups = tuple(tuple(t for t in g if t not in self.near) for g in self.groups)
        return Term(self.id, self.label, groups, self.kind, required=False)

    def matched_label(self, tokens: frozenset[str]) -> str:
        """The label of this term as a description with ``tokens`` matched it: ``"coat (near jacket)"`` when
        only a near-synonym matched."""
        if self.near and all(tokens.isdisjoint(t for t in g if t not in self.near) for g in self.groups):
            return f"{self.near_label} (near {self.label})"
        return self.label


@dataclass(frozen=True)
class Query:
    """A parsed query: its terms, the attributes of its positive part, and the typos corrected in it."""

    text: str
    attributes: dict[str, Any]
    terms: tuple[Term, ...]
    corrections: dict[str, str] = field(default_factory=dict)
    dropped: tuple[Term, ...] = ()  # terms the query has but the caller asked to leave out
    narrowed: tuple[Term, ...] = ()  # terms whose near-synonyms the caller asked to leave out (widened form)

    def to_json(self) -> dict[str, Any]:
        """The parse as the page shows it: terms and near-synonyms (chips), what was dropped, corrected typos."""
        terms = [c for t in self.terms for c in ([t.to_json(), t.near_json()] if t.near else [t.to_json()])]
        dropped = [t.to_json() for t in self.dropped] + [t.near_json() for t in self.narrowed]
        return {"text": self.text, "terms": terms, "dropped": dropped, "corrections": dict(self.corrections)}

    @property
    def required(self) -> tuple[Term, ...]:
        """Filter terms: every hit matches each of them."""
        return tuple(t for t in self.terms if t.required and not t.negated)

    @property
    def ranking(self) -> tuple[Term, ...]:
        """Terms that order hits but filter nothing (shades, free words)."""
        return tuple(t for t in self.terms if not t.required and not t.negated)

    @property
    def widened(self) -> tuple[Term, ...]:
        """The exact value of each filter widened to near-synonyms, as ranking terms (the exact pass reads them)."""
        return tuple(t.exact for t in self.required if t.near)

    @property
    def excluded(self) -> tuple[Term, ...]:
        """Negated terms: no hit matches one."""
        return tuple(t for t in self.terms if t.negated)

    @property
    def filters(self) -> tuple[str, ...]:
        """Index tokens of the required attribute terms (each term's first group)."""
        return tuple(tok for t in self.required for g in t.groups for tok in g)

    @functools.cached_property
    def has_text_terms(self) -> bool:
        """Whether any term (positive or negated) is about the description's words rather than its attributes."""
        return any(t.kind == "text" for t in self.terms)

    @property
    def words(self) -> tuple[str, ...]:
        """The positive free words (text relevance ranks by them)."""
        return tuple(g[0] for t in self.ranking if t.kind == "text" for g in t.groups)


@functools.lru_cache(maxsize=1)
def _schema_words() -> frozenset[str]:
    return interpreted_words()


@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[frozenset[str], tuple[str, ...]]:
    """(words a query may use as they are, schema words a typo is corrected to)."""
    schema = _schema_words()
    targets = tuple(sorted(w for w in schema if w.isalpha() and len(w) >= 3))
    return schema | STOPWORDS | NEGATORS | COMMON_WORDS, targets


def edit_distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (optimal string alignment) of ``a`` and ``b``; ``limit + 1`` once past ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def correct_word(word: str) -> str | None:
    """The schema word ``word`` is a typo of, or None: 1 edit for 4-7 letters, 2 from 8; ties go to the
    word with the same first letter, then alphabetically."""
    if len(word) < 4 or not word.isalpha():
        return None
    limit = 1 if len(word) < 8 else 2
    best: tuple[int, bool, str] | None = None
    for target in _vocabulary()[1]:
        d = edit_distance(word, target, limit)
        if d <= limit:
            key = (d, target[0] != word[0], target)
            best = key if best is None or key < best else best
    return None if best is None else best[2]


def _corrected(text: str, known: KnownWord | None) -> tuple[str, dict[str, str]]:
    """``text`` lower-cased with its typos replaced, and what was replaced."""
    vocab = _vocabulary()[0]
    fixes: dict[str, str] = {}

    def fix(m: re.Match[str]) -> str:
        word = m[0]
        if word in vocab or word in fixes:
            return fixes.get(word, word)
        if known is not None and known(word):
            return word  # a word the store's descriptions use ("short", "stripes"): not a typo
        target = correct_word(word)
        if target is None:
            return word
        fixes[word] = target
        return target

    return WORD_RE.sub(fix, text.lower()), fixes


def _split_negations(tokens: list[str]) -> tuple[list[str], list[list[str]]]:
    """(the positive tokens, each negated span): a negator's span ends after its first noun (nouns joined
    by "or"/"nor" stay in it), at a clause end or punctuation, or after a few words."""
    vocab = _schema_words()
    colour_like = set(COLOR_WORDS) | {w for ws in SHADE_WORDS.values() for w in ws}
    positive: list[str] = []
    spans: list[list[str]] = []
    i = 0
    while i < len(tokens):
        if tokens[i] not in NEGATORS:
            positive.append(tokens[i])
            i += 1
            continue
        span: list[str] = []
        i += 1
        headed = False
        while i < len(tokens) and len(span) < _NEGATION_REACH:
            tok = tokens[i]
            if tok in NEGATORS:
                break
            if headed and tok not in ("or", "nor", "/"):
                break
            if not span and tok in ("wearing", "carrying", "holding", "with", "in"):
                span.append(tok)  # "not wearing a hat"
                i += 1
                continue
            if not tok.isalnum() and "-" not in tok and "'" not in tok or (tok in _CLAUSE_END and span):
                break
            span.append(tok)
            i += 1
            if tok in ("or", "nor", "/"):
                headed = False  # "without glasses or a bag": the next noun is left out too
                continue
            head = tok not in STOPWORDS and tok not in colour_like
            headed = headed or (head and (tok in vocab or tok.isalpha()))
        spans.append(span)
    return positive, spans


def _label_value(key: str, value: str) -> str:
    f = FIELD[key]
    if f.kind == "color":
        return f"{value} {_PART_NAMES[f.part or '']}"
    if f.kind == "shade":
        return f"{value} {_PART_NAMES[f.part or '']}"
    if key == "view":
        return _VIEW_LABELS.get(value, value)
    return value


def _attribute_terms(attrs: dict[str, Any]) -> list[Term]:
    """The positive terms of parsed attributes: values filter, shades rank."""
    terms: list[Term] = []
    for key in ("gender", "age", "upper", "lower", "headwear", "posture", "view"):
        value = attrs.get(key)
        if value:
            terms.append(_value_term(key, value))
    for part in COLORED_PARTS:
        color, shade = attrs.get(f"{part}_color"), attrs.get(f"{part}_shade")
        if color in SHADES:
            color, shade = None, color
        if color:
            terms.append(Term(f"{part}_color:{color}", f"{color} {part}",
                              ((attribute_token(f"{part}_color", color),),)))
        if shade:
            terms.append(_shade_term(shade, (part,), f"{part}_shade:{shade}", f"{shade} {part}"))
    for item in attrs.get("carrying") or ():
        terms.append(Term(f"carrying:{item}", item, ((attribute_token("carrying", item),),)))
    return terms


def _value_term(key: str, value: str) -> Term:
    """A filter on one value, widened to its near-synonyms (:data:`NEAR_VALUES`)."""
    near = NEAR_VALUES.get(key, {}).get(value, ())
    tokens = tuple(attribute_token(key, v) for v in near)
    return Term(f"{key}:{value}", _label_value(key, value), ((attribute_token(key, value), *tokens),), near=tokens,
                near_label=" or ".join(near))


def _narrow(terms: list[Term], drop: tuple[str, ...]) -> tuple[list[Term], list[Term]]:
    """(``terms`` with the near-synonyms of those named ``~ID`` in ``drop`` left out, the widened terms that were)."""
    kept, narrowed = [], []
    for t in terms:
        if t.near and NEAR_PREFIX + t.id in drop:
            narrowed.append(t)
            t = Term(t.id, t.label, t.exact.groups, t.kind)
        kept.append(t)
    return kept, narrowed


def _shade_term(shade: str, parts: Sequence[str], term_id: str, label: str) -> Term:
    """A shade over ``parts``: a ranking term; per part the shade's tone or the colour that is that shade."""
    groups = tuple((attribute_token(f"{p}_shade", shade), attribute_token(f"{p}_color", _SHADE_COLOR[shade]))
                   for p in parts)
    return Term(term_id, label, groups, required=False)


def _bare_color_terms(tokens: list[str], attrs: dict[str, Any]) -> list[Term]:
    """Colours and shades that name no garment ("blue", "dark clothes"): terms over every garment."""
    if any(attrs.get(f"{p}_color") for p in COLORED_PARTS):
        return []
    colors = list(dict.fromkeys(COLOR_WORDS[t][0] for t in tokens if t in COLOR_WORDS))
    shades = [s for s, words in SHADE_WORDS.items() if any(t in words for t in tokens)]
    shades += [COLOR_WORDS[t][1] for t in tokens if t in COLOR_WORDS and COLOR_WORDS[t][1]]  # navy: dark
    terms = [Term(f"color:{c}", f"{c} (any garment)",
                  tuple((attribute_token(f"{p}_color", c),) for p in COLORED_PARTS)) for c in colors]
    terms += [_shade_term(s, COLORED_PARTS, f"shade:{s}", f"{s} (any garment)") for s in dict.fromkeys(shades)]
    return terms


def _text_terms(tokens: Iterable[str], negated: bool = False) -> list[Term]:
    vocab = _schema_words()
    words = dict.fromkeys(w for t in tokens for w in WORD_RE.findall(t)
                          if w not in STOPWORDS and w not in NEGATORS and w not in vocab and len(w) > 1)
    sign = "-" if negated else ""
    return [Term(f"{sign}text:{w}", f"no {w}" if negated else w, ((w,),), kind="text", required=False,
                 negated=negated) for w in words]


def _negative_terms(span: list[str]) -> list[Term]:
    """What one negated span leaves out."""
    attrs = parse_attributes(" ".join(span))
    out: list[Term] = []
    head = attrs.get("headwear")
    if head:
        generic = any(t in _ANY_HEADWEAR for t in span)
        values = FIELD["headwear"].values if generic else (head,)
        out.append(Term("-headwear:" + ("any" if generic else head), "no headwear" if generic else f"no {head}",
                        (tuple(attribute_token("headwear", v) for v in values),), negated=True))
    for item in attrs.get("carrying") or ():
        out.append(Term(f"-carrying:{item}", f"no {item}", ((attribute_token("carrying", item),),), negated=True))
    for key in ("posture", "view"):
        if attrs.get(key):
            out.append(Term(f"-{key}:{attrs[key]}", f"not {_label_value(key, attrs[key])}",
                            ((attribute_token(key, attrs[key]),),), negated=True))
    for part in ("upper", "lower"):
        if attrs.get(part) or attrs.get(f"{part}_color"):
            out.append(_negative_garment(attrs, part))
    if not any(attrs.get(f"{p}_color") for p in COLORED_PARTS):
        for c in dict.fromkeys(COLOR_WORDS[t][0] for t in span if t in COLOR_WORDS):
            out.append(Term(f"-color:{c}", f"no {c}", tuple((attribute_token(f"{p}_color", c),) for p in
                                                           COLORED_PARTS), negated=True))
    return out + _text_terms(span, negated=True)


def _negative_garment(attrs: dict[str, Any], part: str) -> Term:
    kind, color = attrs.get(part), attrs.get(f"{part}_color")
    if color in SHADES:
        color = None
    groups = []
    if kind:
        groups.append((attribute_token(part, kind),))
    if color:
        groups.append((attribute_token(f"{part}_color", color),))
    label = " ".join(v for v in (color, kind or part) if v)
    return Term(f"-{part}:{'-'.join(v for v in (color, kind) if v)}", f"no {label}", tuple(groups), negated=True,
                every=True)


def parse_query(text: str, known: KnownWord | None = None, drop: Iterable[str] = ()) -> Query:
    """Parse a natural-language query; QueryError when it asks for nothing.

    ``known``: whether a word occurs in the store's descriptions (such a word is never "corrected");
    ``drop``: term ids to leave out (the page's removed chips; ``~ID``: term ID's near-synonyms).
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty query: describe the person, e.g. 'woman in a red jacket with a backpack'")
    check_query_value(text, "query", MAX_QUERY_CHARS)
    fixed, corrections = _corrected(text, known)
    positive, spans = _split_negations(_TOKEN_RE.findall(fixed))
    attrs = parse_attributes(" ".join(positive))
    terms = [*_attribute_terms(attrs), *_bare_color_terms(positive, attrs), *_text_terms(positive)]
    terms += [t for span in spans for t in _negative_terms(span)]
    unique = list({t.id: t for t in terms}.values())
    drop = tuple(dict.fromkeys(d for d in drop if isinstance(d, str)))
    kept, narrowed = _narrow([t for t in unique if t.id not in drop], drop)
    if not any(not t.negated for t in kept):
        if any(not t.negated for t in unique):
            raise QueryError("every term of the query was removed: nothing left to search for")
        if unique:
            raise QueryError(f"query {show(text)} only says what to leave out: name something to look for")
        raise QueryError(f"query {show(text)} names no attribute or word to search for")
    return Query(text, attrs, tuple(kept), corrections, tuple(t for t in unique if t.id in drop), tuple(narrowed))


__all__ = ["KnownWord", "NEAR_PREFIX", "NEAR_VALUES", "NEAR_WEIGHT", "NEGATORS", "Query", "STOPWORDS", "Term",
           "correct_word", "edit_distance", "parse_query"]
