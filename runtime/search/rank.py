"""How search orders hits: attribute points plus text relevance, the same rule on both engines.

A description's score is

    score = sum over the query's positive attribute terms of  weight x confidence   (per matching group)
          + relevance / (1 + relevance)

- weight is :data:`TERM_WEIGHT` (1) for the value asked for and ``NEAR_WEIGHT`` (0.5) for a near-synonym
  ("coat" for "jacket", see :data:`runtime.search.query.NEAR_VALUES`), so exact matches rank first; a term
  over every garment ("blue") scores once per garment that matches; required terms match every hit, so
  what orders hits is the ranking terms (shades, a colour on several garments), near-synonyms and the
  confidence;
- confidence is the record's probability for that attribute value when it has one
  (``attributes["probabilities"]``: ``{key: p}`` or ``{key: {value: p}}``, see :func:`confidence`),
  otherwise 1. :func:`token_weight` gives weight x confidence: the one place a per-attribute weight goes;
- a description found only through one of its n-best alternatives (the alternative matched, the shown
  text did not) scores :data:`ALTERNATIVE_WEIGHT` of that, and such hits come after every hit found in
  shown text (:func:`rank`); a description whose shown text has a term the query leaves out is not
  brought back by an alternative;
- relevance is the engine's full-text relevance of the query's free words: FTS5's bm25 on SQLite
  (computed from FTS5's own statistics, see :func:`bm25`), ``ts_rank`` on PostgreSQL. Squashed into
  [0, 1), it orders hits with the same attribute points and never outweighs one attribute.

Equal scores go newest first. Each hit lists the labels of the terms it matched and, for those weighed
by a stored probability, that probability (:func:`match_confidence`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..attribute_schema import COLORED_PARTS, FIELDS, SHADES
from .query import NEAR_WEIGHT, Query, Term
from .records import WORD_RE, Hit, attribute_token, hit_from_row

TERM_WEIGHT = 1.0
ALTERNATIVE_WEIGHT = 0.5  # of the points of a description found only through an n-best alternative
_NO_WORDS: frozenset[str] = frozenset()
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's constants
# index token -> (attribute key, value), for the confidence of a matched token
_TOKEN_FIELDS: dict[str, tuple[str, str]] = {
    **{attribute_token(f.key, v): (f.key, v) for f in FIELDS for v in f.values},
    **{attribute_token(f"{p}_shade", s): (f"{p}_shade", s) for p in COLORED_PARTS for s in SHADES},
}


class Candidate:
    """One stored description a search read, as light as ranking allows: its id and track, its index tokens
    (``tokens``: space-separated text is split on first use), its text (only when the query has free
    words), its raw text relevance (a function of the candidate, called on first use), and what of its
    attributes the score reads (``{"probabilities": ...}`` when it has them, else empty).

    An n-best alternative of description ``id`` has ``alternative`` (``{"rank", "text"}``) and ``shown``: the
    index tokens and words of the description's shown text (what the query's exclusions are checked on too)."""

    __slots__ = ("id", "camera", "track", "text", "attributes", "alternative", "shown", "_tokens", "_relevance",
                 "_words")

    def __init__(self, id: int, camera: Any, track: Any, tokens: str | Iterable[str], text: str = "",
                 relevance: float | Callable[[Candidate], float] = 0.0,
                 attributes: Mapping[str, Any] | None = None, alternative: Mapping[str, Any] | None = None,
                 shown: tuple[frozenset[str], frozenset[str]] | None = None) -> None:
        self.id, self.camera, self.track, self.text = id, camera, track, text
        self.attributes = attributes or {}
        self.alternative, self.shown = alternative, shown
        self._tokens: Any = tokens if isinstance(tokens, str) else frozenset(tokens)
        self._relevance = relevance
        self._words: list[str] | None = None

    @property
    def tokens(self) -> frozenset[str]:
        """The description's index tokens."""
        if isinstance(self._tokens, str):
            self._tokens = frozenset(self._tokens.split())
        return self._tokens

    @property
    def words(self) -> list[str]:
        """The lower-case words of the text, in order (as FTS5's unicode61 tokenizer splits ASCII text)."""
        if self._words is None:
            self._words = WORD_RE.findall(self.text.lower()) if self.text else []
        return self._words

    @property
    def relevance(self) -> float:
        """The engine's raw text relevance of the query's free words (0 without them)."""
        if callable(self._relevance):
            self._relevance = float(self._relevance(self))
        return self._relevance


@dataclass(frozen=True)
class Ranked:
    """The description chosen for one track: its id, score, the labels of the terms it matched, the stored
    probability of each matched term weighed by one, and the n-best alternative it was found through (if only)."""

    id: int
    score: float
    matched: tuple[str, ...]
    match_confidence: tuple[tuple[str, float], ...] = ()
    alternative: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Ranking:
    """What :func:`rank` found: the best description of each track, best track first, how many tracks it
    saw, and whether it stopped before the candidates ran out (``capped``)."""

    tracks: list[Ranked]
    counted: int
    capped: bool


def probability(attributes: Mapping[str, Any], key: str, value: str) -> float | None:
    """The record's stored probability of ``key`` being ``value``, or None when it states none.

    Read from ``attributes["probabilities"][key]`` (one number for the key's value) or
    ``attributes["probabilities"][key][value]`` (per value, as pvlm-describe writes them). Anything else
    (absent, not a number, outside [0, 1]) is None.
    """
    probs = attributes.get("probabilities") if isinstance(attributes, Mapping) else None
    p = probs.get(key) if isinstance(probs, Mapping) else None
    if isinstance(p, Mapping):
        p = p.get(value)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        return None
    return float(p)


def confidence(attributes: Mapping[str, Any], key: str, value: str) -> float:
    """:func:`probability` of ``key`` being ``value``, in [0, 1]; 1 when the record states none."""
    p = probability(attributes, key, value)
    return 1.0 if p is None else p


def token_weight(term: Term, token: str, attributes: Mapping[str, Any] | None = None) -> float:
    """The weight of ``term`` matched by index token ``token`` in a description with ``attributes``:
    :data:`TERM_WEIGHT` (``NEAR_WEIGHT`` of it for a near-synonym) times the stored probability of the value the
    token names (:func:`confidence`; 1 without one)."""
    weight = TERM_WEIGHT * NEAR_WEIGHT if token in term.near else TERM_WEIGHT
    if attributes and token in _TOKEN_FIELDS:
        weight *= confidence(attributes, *_TOKEN_FIELDS[token])
    return weight


def _group_points(term: Term, group: frozenset[str], tokens: frozenset[str], attributes: Mapping[str, Any]) -> float:
    if not attributes and not term.near:  # no probabilities, one weight: a matching group is worth the weight
        return 0.0 if tokens.isdisjoint(group) else TERM_WEIGHT
    return max((token_weight(term, tok, attributes) for tok in group if tok in tokens), default=0.0)


def match_confidence(q: Query, c: Candidate) -> tuple[tuple[str, float], ...]:
    """(label, stored probability) of each positive attribute term ``c`` matched through a value with a stored
    probability (the best such value of the term)."""
    out = []
    for term in q.terms:
        if term.negated or term.kind == "text" or not _matches(term, c.tokens, _NO_WORDS):
            continue
        ps = [p for g in term.sets for tok in g & c.tokens if tok in _TOKEN_FIELDS
              and (p := probability(c.attributes, *_TOKEN_FIELDS[tok])) is not None]
        if ps:
            out.append((term.matched_label(c.tokens) if term.near else term.label, max(ps)))
    return tuple(out)


def term_points(term: Term, tokens: frozenset[str], words: frozenset[str], attributes: Mapping[str, Any]) -> float:
    """Points ``term`` gives a description (0: no match); text terms give none (relevance counts them)."""
    if term.kind == "text":
        return 0.0
    sets = term.sets
    if len(sets) == 1 and not attributes and not term.near:  # the common filter term: one group, one weight
        return 0.0 if tokens.isdisjoint(sets[0]) else TERM_WEIGHT
    return sum(_group_points(term, g, tokens, attributes) for g in sets)


def _matches(term: Term, tokens: frozenset[str], words: frozenset[str]) -> bool:
    have = words if term.kind == "text" else tokens
    if term.negated and term.every:
        return all(not have.isdisjoint(g) for g in term.sets)
    return not have.isdisjoint(term.union)  # some group matches


def squash(relevance: float) -> float:
    """``relevance`` (>= 0) mapped into [0, 1): r / (1 + r)."""
    return relevance / (1.0 + relevance) if relevance > 0 else 0.0


def _excluded(q: Query, tokens: frozenset[str], words: frozenset[str]) -> bool:
    return any(_matches(t, tokens, words) for t in q.excluded)


def score(q: Query, c: Candidate) -> tuple[float, tuple[str, ...]] | None:
    """(score, matched labels) of candidate ``c`` for ``q``; None when it matches a negated term (or, for an
    alternative, its description's shown text does)."""
    if c.shown is not None and _excluded(q, *c.shown):
        return None
    tokens = c.tokens
    words = frozenset(c.words) if c.text and q.has_text_terms else _NO_WORDS
    total, matched = 0.0, []
    for term in q.terms:
        if not _matches(term, tokens, words):
            continue
        if term.negated:
            return None
        matched.append(term.matched_label(tokens) if term.near else term.label)
        total += term_points(term, tokens, words, c.attributes)
    total += squash(c.relevance)
    return round(total * ALTERNATIVE_WEIGHT if c.alternative is not None else total, 6), tuple(matched)


def bm25(freqs: Mapping[str, int], doc_tokens: int, n_rows: int, total_tokens: int, hits: Mapping[str, int]) -> float:
    """FTS5's bm25 of one row (positive: FTS5's ``bm25()`` is its negative), from FTS5's statistics.

    ``freqs``: occurrences of each query word in the row's text; ``doc_tokens``: the row's tokens in
    every column; ``n_rows``, ``total_tokens``: the table's rows and tokens (every column); ``hits``:
    rows holding each word. Same constants and IDF floor as FTS5 (k1 = 1.2, b = 0.75, IDF >= 1e-6).
    """
    if n_rows <= 0 or total_tokens <= 0:
        return 0.0
    avgdl = total_tokens / n_rows
    out = 0.0
    for word, f in freqs.items():
        n = hits.get(word, 0)
        idf = math.log((n_rows - n + 0.5) / (n + 0.5))
        idf = idf if idf > 0.0 else 1e-6
        out += idf * (f * (BM25_K1 + 1.0)) / (f + BM25_K1 * (1.0 - BM25_B + BM25_B * doc_tokens / avgdl))
    return out


def word_counts(found: Sequence[str], words: Iterable[str]) -> dict[str, int]:
    """How often each of ``words`` occurs in the word list ``found`` (:attr:`Candidate.words`)."""
    return {w: n for w in words if (n := found.count(w))}


def _flat_score(q: Query) -> tuple[float, tuple[str, ...]] | None:
    """The one score every candidate without probabilities gets, when the query leaves nothing to rank by
    (only required terms of one group each and no near-synonyms, which every candidate matches alike)."""
    if q.ranking or any(len(t.groups) != 1 or t.near for t in q.required):
        return None
    return float(len(q.required)) * TERM_WEIGHT, tuple(t.label for t in q.required)


def _scored(q: Query, c: Candidate, flat: tuple[float, tuple[str, ...]] | None) -> Ranked | None:
    result = flat if flat is not None and not c.attributes and c.alternative is None else score(q, c)
    return None if result is None else Ranked(c.id, *result, alternative=c.alternative)


Chosen = dict[tuple[Any, Any], tuple[Ranked, Candidate]]


def rank(q: Query, pool: Iterable[Candidate], rest: Iterable[Candidate], need: int,
         alternatives: Callable[[], Iterable[Candidate]] | None = None) -> Ranking:
    """The best description of each of the first ``need`` tracks: ``pool`` ranked by score (newest first among
    equals), then ``rest`` in the order it comes (newest first), read only as far as the page needs; then, when
    the shown texts ran out first, the tracks found only through an n-best alternative (``alternatives()``,
    called then), ranked by score."""
    scored: list[tuple[float, int, Ranked, Candidate]] = []
    seen: set[int] = set()
    flat = _flat_score(q)
    for c in pool:
        if c.id not in seen:
            seen.add(c.id)
            if (r := _scored(q, c, flat)) is not None:
                scored.append((r.score, c.id, r, c))
    scored.sort(key=lambda s: (-s[0], -s[1]))
    best: Chosen = {}
    for _, _, r, c in scored:
        if len(best) >= need:
            break
        best.setdefault((c.camera, c.track), (r, c))
    counted = {(c.camera, c.track) for *_, c in scored}
    for c in rest:
        if len(best) >= need:
            return _ranking(q, best, len(counted), True)
        key = (c.camera, c.track)
        if c.id in seen or key in counted:  # a track counted already has its description (or the page is full)
            continue
        if (r := _scored(q, c, flat)) is None:
            continue
        best[key] = (r, c)
        counted.add(key)
    if alternatives is not None and len(best) < need:
        _add_alternatives(q, alternatives(), best, counted, need)
    return _ranking(q, best, len(counted), False)


def _add_alternatives(q: Query, candidates: Iterable[Candidate], best: Chosen, counted: set[tuple[Any, Any]],
                      need: int) -> None:
    """Add to ``best`` (up to ``need``) and ``counted`` the tracks of ``candidates`` (alternatives) not counted yet."""
    found = [(r.score, c.id, r, c) for c in candidates
             if (c.camera, c.track) not in counted and (r := _scored(q, c, None)) is not None]
    found.sort(key=lambda s: (-s[0], -s[1]))
    for _, _, r, c in found:
        key = (c.camera, c.track)
        if key not in counted:
            counted.add(key)
            if len(best) < need:
                best[key] = (r, c)


def _ranking(q: Query, best: Chosen, counted: int, capped: bool) -> Ranking:
    return Ranking([replace(r, match_confidence=match_confidence(q, c)) for r, c in best.values()], counted, capped)


def hit(row: Sequence[Any], ranked: Ranked) -> Hit:
    """The :class:`Hit` of a stored row (camera, track, ts, text, attributes_json, x0, y0, x1, y1, bundle)."""
    base = hit_from_row((*row, ranked.score))
    return Hit(base.camera, base.track, base.timestamp, base.text, base.attributes, base.box, base.bundle,
               ranked.score, ranked.matched, dict(ranked.match_confidence), ranked.alternative)


__all__ = ["ALTERNATIVE_WEIGHT", "BM25_B", "BM25_K1", "Candidate", "Ranked", "Ranking", "TERM_WEIGHT", "bm25",
           "confidence", "hit", "match_confidence", "probability", "rank", "score", "squash", "term_points",
           "token_weight", "word_counts"]
