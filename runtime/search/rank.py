"""How search orders hits: attribute points plus text relevance, the same rule on both engines.

A description's score is

    score = sum over the query's positive attribute terms of  weight x confidence   (per matching group)
          + relevance / (1 + relevance)

- weight is :data:`TERM_WEIGHT` (1) for the value asked for and ``NEAR_WEIGHT`` (0.5) for a near-synonym
  ("coat" for "jacket", see :data:`runtime.search.query.NEAR_VALUES`), so exact matches rank first
  (:func:`token_weight` is the one place a per-attribute weight goes); a term over every garment
  ("blue") scores once per garment that matches; required terms match every hit, so what orders hits
  is the ranking terms (shades, a colour on several garments), near-synonyms and the confidence;
- confidence is the record's probability for that attribute value when it has one
  (``attributes["probabilities"]``: ``{key: p}`` or ``{key: {value: p}}``, see :func:`confidence`),
  otherwise 1;
- relevance is the engine's full-text relevance of the query's free words: FTS5's bm25 on SQLite
  (computed from FTS5's own statistics, see :func:`bm25`), ``ts_rank`` on PostgreSQL. Squashed into
  [0, 1), it orders hits with the same attribute points and never outweighs one attribute.

Equal scores go newest first. Each hit lists the labels of the terms it matched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..attribute_schema import COLORED_PARTS, FIELDS, SHADES
from .query import NEAR_WEIGHT, Query, Term
from .records import WORD_RE, Hit, attribute_token, hit_from_row

TERM_WEIGHT = 1.0
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
    attributes the score reads (``{"probabilities": ...}`` when it has them, else empty)."""

    __slots__ = ("id", "camera", "track", "text", "attributes", "_tokens", "_relevance", "_words")

    def __init__(self, id: int, camera: Any, track: Any, tokens: str | Iterable[str], text: str = "",
                 relevance: float | Callable[[Candidate], float] = 0.0,
                 attributes: Mapping[str, Any] | None = None) -> None:
        self.id, self.camera, self.track, self.text = id, camera, track, text
        self.attributes = attributes or {}
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
    """The description chosen for one track: its id, score and the labels of the terms it matched."""

    id: int
    score: float
    matched: tuple[str, ...]


@dataclass(frozen=True)
class Ranking:
    """What :func:`rank` found: the best description of each track, best track first, how many tracks it
    saw, and whether it stopped before the candidates ran out (``capped``)."""

    tracks: list[Ranked]
    counted: int
    capped: bool


def confidence(attributes: Mapping[str, Any], key: str, value: str) -> float:
    """The record's probability of ``key`` being ``value``, in [0, 1]; 1 when it states none.

    Read from ``attributes["probabilities"][key]`` (one number for the key's value) or
    ``attributes["probabilities"][key][value]`` (per value, as for ``carrying``). Anything else
    (absent, not a number, outside [0, 1]) counts as 1.
    """
    probs = attributes.get("probabilities") if isinstance(attributes, Mapping) else None
    p = probs.get(key) if isinstance(probs, Mapping) else None
    if isinstance(p, Mapping):
        p = p.get(value)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        return 1.0
    return float(p)


def token_weight(term: Term, token: str) -> float:
    """The weight of ``term`` matched by index token ``token``: :data:`TERM_WEIGHT`, or ``NEAR_WEIGHT`` of it for
    a near-synonym."""
    return TERM_WEIGHT * NEAR_WEIGHT if token in term.near else TERM_WEIGHT


def _group_points(term: Term, group: frozenset[str], tokens: frozenset[str], attributes: Mapping[str, Any]) -> float:
    if not attributes and not term.near:  # no probabilities, one weight: a matching group is worth the weight
        return 0.0 if tokens.isdisjoint(group) else TERM_WEIGHT
    best = 0.0
    for tok in group:
        if tok in tokens:
            key, value = _TOKEN_FIELDS.get(tok, ("", ""))
            best = max(best, token_weight(term, tok) * (confidence(attributes, key, value) if key else 1.0))
    return best


def term_points(term: Term, tokens: frozenset[str], words: frozenset[str], attributes: Mapping[str, Any]) -> float:
    """Points ``term`` gives a description (0: no match); text terms give none (relevance counts them)."""
    if term.kind == "text":
        return 0.0
    return sum(_group_points(term, g, tokens, attributes) for g in term.sets)


def _matches(term: Term, tokens: frozenset[str], words: frozenset[str]) -> bool:
    have = words if term.kind == "text" else tokens
    if term.negated and term.every:
        return all(not have.isdisjoint(g) for g in term.sets)
    return any(not have.isdisjoint(g) for g in term.sets)


def squash(relevance: float) -> float:
    """``relevance`` (>= 0) mapped into [0, 1): r / (1 + r)."""
    return relevance / (1.0 + relevance) if relevance > 0 else 0.0


def score(q: Query, c: Candidate) -> tuple[float, tuple[str, ...]] | None:
    """(score, matched labels) of candidate ``c`` for ``q``; None when it matches a negated term."""
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
    return round(total + squash(c.relevance), 6), tuple(matched)


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


def rank(q: Query, pool: Iterable[Candidate], rest: Iterable[Candidate], need: int) -> Ranking:
    """The best description of each of the first ``need`` tracks: ``pool`` ranked by score (newest first among
    equals), then ``rest`` in the order it comes (newest first), read only as far as the page needs."""
    scored: list[tuple[float, int, Ranked, tuple[Any, Any]]] = []
    seen: set[int] = set()
    flat = _flat_score(q)
    for c in pool:
        if c.id not in seen:
            seen.add(c.id)
            result = flat if flat is not None and not c.attributes else score(q, c)
            if result is not None:
                scored.append((result[0], c.id, Ranked(c.id, *result), (c.camera, c.track)))
    scored.sort(key=lambda s: (-s[0], -s[1]))
    best: dict[tuple[Any, Any], Ranked] = {}
    for _, _, r, key in scored:
        if len(best) >= need:
            break
        best.setdefault(key, r)
    counted = {key for *_, key in scored}
    for c in rest:
        if len(best) >= need:
            return Ranking(list(best.values()), len(counted), True)
        key = (c.camera, c.track)
        if c.id in seen or key in counted:  # a track counted already has its description (or the page is full)
            continue
        result = flat if flat is not None and not c.attributes else score(q, c)
        if result is None:
            continue
        best[key] = Ranked(c.id, *result)
        counted.add(key)
    return Ranking(list(best.values()), len(counted), False)


def hit(row: Sequence[Any], ranked: Ranked) -> Hit:
    """The :class:`Hit` of a stored row (camera, track, ts, text, attributes_json, x0, y0, x1, y1, bundle)."""
    base = hit_from_row((*row, ranked.score))
    return Hit(base.camera, base.track, base.timestamp, base.text, base.attributes, base.box, base.bundle,
               ranked.score, ranked.matched)


__all__ = ["BM25_B", "BM25_K1", "Candidate", "Ranked", "Ranking", "TERM_WEIGHT", "bm25", "confidence", "hit", "rank",
           "score", "squash", "term_points", "token_weight", "word_counts"]
