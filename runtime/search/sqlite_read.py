"""Reading a SQLite store: the search plan of :mod:`runtime.search.reads` as FTS5 expressions, text
relevance as FTS5's bm25, one track's descriptions, cameras.

Only reads: every statement here is a SELECT, so a store opened read-only serves all of it, and a
store written by an older version is read as it is (without the ``probabilities`` column and the
alternatives tables, which a writer adds when it next opens it). Negated terms are ``NOT`` in every
pass; the ranking pass checks the filter terms on each row's tokens (:func:`required_sql`).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .query import Query, Term
from .rank import Candidate, bm25, word_counts
from .reads import RANK_WINDOW, alternative_candidate
from .reads import Reader as _Plan
from .records import Scope, as_attributes, as_text, camera_token

_FETCH = 64  # rows per fetch of the stream past the window: it usually stops after a few
_COLS = "d.camera, d.track, d.ts, d.text, d.attributes, d.x0, d.y0, d.x1, d.y1, d.bundle"
_AVERAGES_ID = 1  # FTS5's row of the table's row and token counts in descriptions_fts_data


def _quote(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def term_expr(term: Term) -> str:
    """An FTS5 expression for ``term``: ``{attrs}: (...)`` or ``{text}: (...)``."""
    joiner = " AND " if term.negated and term.every else " OR "
    groups = ["(" + " OR ".join(_quote(t) for t in g) + ")" for g in term.groups]
    column = "text" if term.kind == "text" else "attrs"
    return f"{{{column}}}: ({joiner.join(groups)})"


def _any(terms: Iterable[Term]) -> str:
    return " OR ".join(f"({term_expr(t)})" for t in terms)


def _camera_expr(camera: str | None) -> str | None:
    return f"{{attrs}}: {_quote(camera_token(camera))}" if camera is not None else None


def _without(expr: str, q: Query) -> str:
    negated = _any(q.excluded)
    return f"({expr}) NOT ({negated})" if negated else expr


def base_expression(q: Query, camera: str | None) -> str:
    """The base pass's expression: every required term and the camera (or, with none, any ranking term),
    negated terms excluded."""
    required = [term_expr(t) for t in q.required]
    camera_expr = _camera_expr(camera)
    if camera_expr:
        required.append(camera_expr)
    return _without(" AND ".join(f"({e})" for e in required) if required else _any(q.ranking), q)


def scan_expression(q: Query, terms: tuple[Term, ...], camera: str | None) -> str | None:
    """A ranking pass's expression, any of ``terms`` in the camera, negated terms excluded (None: no pass);
    its rows are checked for the required terms on their tokens (:func:`required_sql`)."""
    if not (q.required and terms):
        return None
    camera_expr = _camera_expr(camera)
    return _without(f"({_any(terms)}) AND ({camera_expr})" if camera_expr else _any(terms), q)


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


def _probabilities(value: Any) -> dict[str, Any] | None:
    """A stored ``probabilities`` column as the candidate's attributes (what ranking reads)."""
    return None if value is None else {"probabilities": as_attributes(value)}


class Reader(_Plan):
    """The read side of one SQLite connection; the caller holds the connection's lock."""

    def __init__(self, db: sqlite3.Connection) -> None:
        super().__init__(db)
        self._hits: dict[str, tuple[int, int]] = {}  # word -> (rows in the table then, rows holding it)
        self._probs = self._alts = False  # what of the newer schema the store has (looked up until it has it all)

    def _refresh_schema(self) -> None:
        if self._probs and self._alts:
            return
        self._probs = any(r[1] == "probabilities" for r in self.db.execute("PRAGMA table_info(descriptions)"))
        self._alts = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alternatives_fts'").fetchone() \
            is not None

    @property
    def _prob_col(self) -> str:
        """The stated probabilities, or NULL in a store of an earlier version."""
        return "d.probabilities" if self._probs else "NULL"

    def _has_alternatives(self) -> bool:
        return self._alts

    def _word_stored(self, word: str) -> bool:
        return self.db.execute("SELECT 1 FROM descriptions_fts WHERE descriptions_fts MATCH ? LIMIT 1",
                               (f"{{text}}: {_quote(word)}",)).fetchone() is not None

    def _select(self, expr: str, scope: Scope, cols: str, join: str = "") -> tuple[str, list[Any]]:
        where, params = _scope_sql(scope)
        sql = (f"SELECT {cols} FROM descriptions_fts f JOIN descriptions d ON d.id = f.rowid{join} "
               f"WHERE descriptions_fts MATCH ?{where} ORDER BY f.rowid DESC")
        return sql, [expr, *params]

    def _ranked(self, q: Query, scope: Scope, terms: tuple[Term, ...], limit: int) -> list[Candidate]:
        """Of the newest ``limit`` rows holding any of ``terms``, those with every required term (checked on their
        tokens; only those rows' text is read)."""
        expr = scan_expression(q, terms, scope.camera)
        if expr is None:
            return []
        stats = self._stats() if q.words else None
        inner, params = self._select(expr, scope, "d.id, d.camera, d.track, d.tokens")
        cond, cond_params = required_sql(q)
        text = ", d.text, z.sz" if q.words else ""
        join = (" JOIN descriptions d ON d.id = s.id LEFT JOIN descriptions_fts_docsize z ON z.id = s.id"
                if q.words else " JOIN descriptions d ON d.id = s.id")
        sql = (f"SELECT s.id, s.camera, s.track, s.tokens, {self._prob_col}{text} "
               f"FROM ({inner} LIMIT {int(limit)}) s{join}"
               + (f" WHERE {cond.replace('d.tokens', 's.tokens')}" if cond else ""))
        return list(self._make(self.db.execute(sql, [*params, *cond_params]), stats, q.words))

    def _walk(self, q: Query, scope: Scope) -> Iterator[Candidate]:
        """The base expression's rows, newest first, in one statement: the first :data:`RANK_WINDOW` with their
        text (when there are free words), the rest as light candidates."""
        base = base_expression(q, scope.camera)
        stats = self._stats() if q.words else None
        text = ", d.text, z.sz" if q.words else ""
        join = " LEFT JOIN descriptions_fts_docsize z ON z.id = f.rowid" if q.words else ""
        sql, params = self._select(base, scope, f"d.id, d.camera, d.track, d.tokens, {self._prob_col}{text}", join)
        cur = self.db.execute(sql, params)
        try:
            yield from self._make(cur.fetchmany(RANK_WINDOW), stats, q.words)
            while rows := cur.fetchmany(_FETCH):
                yield from self._make(rows, None, ())
        finally:
            cur.close()

    def _make(self, rows: Iterable[Sequence[Any]], stats: tuple[int, int] | None,
              words: tuple[str, ...]) -> Iterator[Candidate]:
        """Candidates of rows (id, camera, track, tokens, probabilities JSON[, text, docsize])."""
        for r in rows:
            attrs = _probabilities(r[4])
            if words:
                rel = functools.partial(self._relevance, size=r[6], stats=stats, words=words) if stats else 0.0
                yield Candidate(r[0], r[1], r[2], as_text(r[3]), as_text(r[5]), rel, attrs)
            else:
                yield Candidate(r[0], r[1], r[2], as_text(r[3]), attributes=attrs)

    def _alternatives(self, q: Query, scope: Scope, limit: int) -> list[Candidate]:
        """The newest ``limit`` alternatives in ``scope`` matching the base expression, with their description's
        shown tokens and text (for the query's exclusions)."""
        where, params = _scope_sql(scope)
        rows = self.db.execute(
            "SELECT d.description, d.camera, d.track, d.tokens, d.probabilities, d.rank, d.text, p.tokens, p.text "
            "FROM alternatives_fts f JOIN alternatives d ON d.id = f.rowid JOIN descriptions p ON p.id = d.description "
            f"WHERE alternatives_fts MATCH ?{where} ORDER BY f.rowid DESC LIMIT ?",
            [base_expression(q, scope.camera), *params, int(limit)]).fetchall()
        return [alternative_candidate(r, _probabilities(r[4]), q.words) for r in rows]

    def _full(self, q: Query, ids: list[int]) -> dict[int, tuple[tuple[Any, ...], Candidate]]:
        """id -> (stored columns, candidate with its text relevance) of the descriptions ``ids``."""
        if not ids:
            return {}
        stats = self._stats() if q.words else None
        size, join = (", z.sz", " LEFT JOIN descriptions_fts_docsize z ON z.id = d.id") if stats else (", NULL", "")
        rows = self.db.execute(f"SELECT d.id, {_COLS}, d.tokens{size} FROM descriptions d{join} WHERE d.id IN "
                               f"({','.join('?' * len(ids))})", ids).fetchall()
        out = {}
        for r in rows:
            row = r[1:11]
            if q.words:
                rel = functools.partial(self._relevance, size=r[12], stats=stats, words=q.words) if stats else 0.0
                c = Candidate(r[0], row[0], row[1], as_text(r[11]), as_text(row[3]), rel, as_attributes(row[4]))
            else:
                c = Candidate(r[0], row[0], row[1], as_text(r[11]))
            out[r[0]] = (row, c)
        return out

    def _relevance(self, c: Candidate, size: Any, stats: tuple[int, int], words: tuple[str, ...]) -> float:
        """FTS5's bm25 of candidate ``c`` for the free ``words`` (``size``: its row of FTS5's docsize table)."""
        freqs = word_counts(c.words, words)
        if not freqs:
            return 0.0
        n_rows, total = stats
        doc = sum(_varints(size)) if isinstance(size, bytes) else len(c.words)
        return bm25(freqs, doc, n_rows, total, {w: self._rows_with(w, n_rows) for w in freqs})

    def _stats(self) -> tuple[int, int] | None:
        """(rows, tokens in every column) from FTS5's averages record; None when it cannot be read."""
        row = self.db.execute("SELECT block FROM descriptions_fts_data WHERE id = ?", (_AVERAGES_ID,)).fetchone()
        if row is None or not isinstance(row[0], bytes):
            return None
        values = _varints(row[0])
        return (values[0], sum(values[1:])) if len(values) >= 2 else None

    def _rows_with(self, word: str, n_rows: int) -> int:
        cached = self._hits.get(word)
        if cached is None or cached[0] != n_rows:
            if len(self._hits) > 10_000:
                self._hits.clear()
            n = self.db.execute("SELECT count(*) FROM descriptions_fts WHERE descriptions_fts MATCH ?",
                                (f"{{text}}: {_quote(word)}",)).fetchone()[0]
            cached = self._hits[word] = (n_rows, int(n))
        return cached[1]

    def _track_rows(self, camera: str, track: str, limit: int) -> list[Any]:
        return self.db.execute(f"SELECT {_COLS}, 0.0 FROM descriptions d WHERE d.camera = ? AND d.track = ? "
                               f"ORDER BY d.ts LIMIT ?", (camera, track, limit)).fetchall()

    def _spans(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
        values = ",".join("(?, ?)" for _ in keys)
        rows = self.db.execute(f"SELECT d.camera, d.track, min(d.ts), max(d.ts), count(*) FROM (VALUES {values}) k "
                               f"JOIN descriptions d ON d.camera = k.column1 AND d.track = k.column2 "
                               f"GROUP BY d.camera, d.track", [v for k in keys for v in k]).fetchall()
        return {(as_text(c), as_text(t)): (lo, hi, n) for c, t, lo, hi, n in rows}

    def cameras(self, limit: int) -> list[str]:
        """Distinct cameras, sorted (one index seek each)."""
        rows = self.db.execute(
            "WITH RECURSIVE c(name) AS (SELECT (SELECT min(camera) FROM descriptions) UNION ALL "
            "SELECT (SELECT min(camera) FROM descriptions WHERE camera > c.name) FROM c "
            "WHERE c.name IS NOT NULL LIMIT ?) SELECT name FROM c WHERE name IS NOT NULL", (limit,)).fetchall()
        return [as_text(r[0]) for r in rows]


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
