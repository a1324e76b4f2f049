"""Reading a SQLite store: the search plan of :mod:`runtime.search.reads` as FTS5 expressions, text
relevance as FTS5's bm25, one track's descriptions, cameras.

Only reads: every statement here is a SELECT, so a store opened read-only serves all of it, and a
store written by an older version is read as it is (the schema has not changed). Negated terms are
``NOT`` in both passes; the ranking pass checks the filter terms on each row's tokens
(:func:`required_sql`).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .query import Query, Term
from .rank import Candidate, bm25, word_counts
from .reads import RANK_SCAN, RANK_WINDOW
from .reads import Reader as _Plan
from .records import Scope, as_attributes, as_text, camera_token

_FETCH = 64  # rows per fetch of the stream past the window: it usually stops after a few
_COLS = "d.camera, d.track, d.ts, d.text, d.attributes, d.x0, d.y0, d.x1, d.y1, d.bundle"
_AVERAGES_ID = 1  # FTS5's row of the table's row and token counts in descriptions_fts_data
# The attributes JSON only of rows that hold probabilities (the rest cost nothing to read).
_PROBS = "CASE WHEN instr(d.attributes, '\"probabilities\"') THEN d.attributes END"


def _quote(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def term_expr(term: Term) -> str:
    """An FTS5 expression for ``term``: ``{attrs}: (...)`` or ``{text}: (...)``."""
    joiner = " AND " if term.negated and term.every else " OR "
    groups = ["(" + " OR ".join(_quote(t) for t in g) + ")" for g in term.groups]
    column = "text" if term.kind == "text" else "attrs"
    return f"{{{column}}}: ({joiner.join(groups)})"


def expressions(q: Query, camera: str | None) -> tuple[str, str | None]:
    """(base expression, ranking-pass expression or None): negated terms are excluded from both; the
    ranking pass's required terms are checked on each row it reads (:func:`required_sql`)."""
    required = [term_expr(t) for t in q.required]
    camera_expr = f"{{attrs}}: {_quote(camera_token(camera))}" if camera is not None else None
    if camera_expr:
        required.append(camera_expr)
    ranking = " OR ".join(f"({term_expr(t)})" for t in q.ranking)
    boosts = " OR ".join(f"({term_expr(t)})" for t in q.boosts)
    negated = " OR ".join(f"({term_expr(t)})" for t in q.excluded)
    base = " AND ".join(f"({e})" for e in required) if required else ranking
    ranked = None
    if q.required and boosts:
        ranked = f"({boosts}) AND ({camera_expr})" if camera_expr else boosts
    if negated:
        base = f"({base}) NOT ({negated})"
        ranked = None if ranked is None else f"({ranked}) NOT ({negated})"
    return base, ranked


def required_sql(q: Query) -> tuple[str, list[str]]:
    """A condition on ``d.tokens`` that every required attribute term holds (and its parameters)."""
    parts, params = [], []
    for t in q.required:
        toks = [tok for g in t.groups for tok in g]
        parts.append("(" + " OR ".join("instr(' ' || d.tokens || ' ', ?)" for _ in toks) + ")")
        params += [f" {tok} " for tok in toks]
    return " AND ".join(parts), params


def _varints(blob: bytes) -> list[int]:
    """SQLite varints (FTS5's record format): 7 bits per byte, high bit set on all but the last."""
    out, value, i = [], 0, 0
    while i < len(blob):
        b = blob[i]
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            out.append(value)
            value = 0
        i += 1
    return out


class Reader(_Plan):
PLACEHOLDER


def _scope_sql(scope: Scope) -> tuple[str, list[Any]]:
    where, params = "", []
    if scope.camera is not None:
        where += " AND d.camera = ?"
        params.append(scope.camera)
    if scope.since is not None:
        where += " AND d.ts >= ?"
        params.append(scope.since)
    if scope.until is not None:
        where += " AND d.ts <= ?"
        params.append(scope.until)
    return where, params
