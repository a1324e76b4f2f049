"""Reading a SQLite store: search (FTS5 expressions, two passes, bm25), one track's descriptions, cameras.

Only reads: every statement here is a SELECT, so a store opened read-only serves all of it, and a
store written by an older version is read as it is (the schema has not changed).

A search runs up to two passes over FTS5, newest description first, reading only ids, tracks and
index tokens (and the text when the query has free words):

- the *ranking* pass reads the newest :data:`RANK_SCAN` descriptions holding any ranking term (a
  shade, a free word) and keeps those with every required term: a bounded read, however rare the
  combination;
- the *base* pass streams the descriptions with every required term (or, for a query with none,
  any ranking term); its newest :data:`RANK_WINDOW` join the ranked pool, the rest follow newest
  first until the page is full and the tracks are counted.

:func:`runtime.search.rank.rank` orders the pool; the chosen descriptions are then read in full.
Negated terms are ``NOT`` in both passes.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .query import Query, Term
from .rank import Candidate, Ranked, bm25, hit, rank, score, word_counts
from .records import Hit, Page, Scope, as_attributes, as_text, camera_token, hit_from_row

RANK_WINDOW = 100  # newest candidates of the base pass that are ranked; past them, newest first
RANK_SCAN = 500  # newest descriptions with a ranking term that the ranking pass reads
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
    negated = " OR ".join(f"({term_expr(t)})" for t in q.excluded)
    base = " AND ".join(f"({e})" for e in required) if required else ranking
    ranked = None
    if q.required and ranking:
        ranked = f"({ranking}) AND ({camera_expr})" if camera_expr else ranking
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


class Reader:
    """The read side of one SQLite connection; the caller holds the connection's lock."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._hits: dict[str, tuple[int, int]] = {}  # word -> (rows in the table then, rows holding it)
        self._known: set[str] = set()  # words seen in the text (rows are never deleted, so they stay)

    def known_word(self, word: str) -> bool:
        """Whether any stored description's text holds ``word`` (an index lookup)."""
        if word not in self._known:
            if len(self._known) > 10_000:
                self._known.clear()
            row = self.db.execute("SELECT 1 FROM descriptions_fts WHERE descriptions_fts MATCH ? LIMIT 1",
                                  (f"{{text}}: {_quote(word)}",)).fetchone()
            if row is None:
                return False
            self._known.add(word)
        return True

    def page(self, q: Query, scope: Scope, count_rows: int = 0) -> Page:
        """One page of hits for ``q``, and the tracks counted in the first ``count_rows`` descriptions read."""
        need = scope.need + 1  # one more: is there a next page?
        base, ranked = expressions(q, scope.camera)
        stats = self._stats() if q.words else None
        pool = self._scan(ranked, scope, stats, q) if ranked is not None else []
        head = self._candidates(base, scope, stats, q.words, limit=RANK_WINDOW)
        # Past the ranked window only ids, tracks and tokens are read; the rows a page shows are read in full.
        rest = self._candidates(base, scope, None, (), before=head[-1].id) if len(head) == RANK_WINDOW else iter(())
        try:
            result = rank(q, pool + head, rest, need)
        finally:
            getattr(rest, "close", lambda: None)()
        chosen = result.tracks
        more = len(chosen) > scope.need
        shown = chosen[scope.offset : scope.need]
        full = self._full([r.id for r in shown], stats)
        hits = [self._hit(q, r, *full[r.id], stats) for r in shown if r.id in full]
        counted, capped = self._count(base, scope, count_rows) if count_rows else (result.counted, result.capped)
        return Page(q, hits, max(counted, len(chosen) - more), capped, more)

    def _count(self, expr: str, scope: Scope, rows: int) -> tuple[int, bool]:
        """(distinct tracks among the newest ``rows`` descriptions of ``expr``, whether more descriptions match),
        counted by SQLite alone."""
        sql, params = self._select(expr, scope, "length(d.camera) || ':' || d.camera || d.track AS k")
        n, tracks = self.db.execute(f"SELECT count(*), count(DISTINCT k) FROM ({sql} LIMIT ?)",
                                    [*params, rows + 1]).fetchone()
        return int(tracks), n > rows

    def _select(self, expr: str, scope: Scope, cols: str, join: str = "", before: int | None = None
                ) -> tuple[str, list[Any]]:
        where, params = _scope_sql(scope)
        if before is not None:
            where += " AND f.rowid < ?"
            params.append(before)
        return (f"SELECT {cols} FROM descriptions_fts f JOIN descriptions d ON d.id = f.rowid{join} "
                f"WHERE descriptions_fts MATCH ?{where} ORDER BY f.rowid DESC", [expr, *params])

    def _scan(self, expr: str, scope: Scope, stats: tuple[int, int] | None, q: Query) -> list[Candidate]:
        """The ranking pass: of the newest :data:`RANK_SCAN` rows of ``expr``, those with every required term
        (checked on their tokens; only those rows' text is read)."""
        inner, params = self._select(expr, scope, "d.id, d.camera, d.track, d.tokens")
        cond, cond_params = required_sql(q)
        text = ", d.text, z.sz" if q.words else ""
        join = (" JOIN descriptions d ON d.id = s.id LEFT JOIN descriptions_fts_docsize z ON z.id = s.id"
                if q.words else " JOIN descriptions d ON d.id = s.id")
        sql = (f"SELECT s.id, s.camera, s.track, s.tokens, {_PROBS}{text} FROM ({inner} LIMIT {RANK_SCAN}) s{join}"
               + (f" WHERE {cond.replace('d.tokens', 's.tokens')}" if cond else ""))
        return list(self._make(self.db.execute(sql, [*params, *cond_params]), stats, q.words))

    def _candidates(self, expr: str, scope: Scope, stats: tuple[int, int] | None, words: tuple[str, ...],
                    limit: int | None = None, before: int | None = None) -> Any:
        """Rows of ``expr`` in ``scope``, newest first: a list of the first ``limit`` (with their text when
        there are free ``words``), or, without ``limit``, a generator of light rows older than ``before``."""
        text = ", d.text, z.sz" if words else ""
        join = " LEFT JOIN descriptions_fts_docsize z ON z.id = f.rowid" if words else ""
        sql, params = self._select(expr, scope, f"d.id, d.camera, d.track, d.tokens, {_PROBS}{text}", join, before)
        if limit is not None:
            return list(self._make(self.db.execute(f"{sql} LIMIT {int(limit)}", params), stats, words))
        return self._stream(sql, params)

    def _stream(self, sql: str, params: list[Any]) -> Iterator[Candidate]:
        cur = self.db.execute(sql, params)
        try:
            while page := cur.fetchmany(_FETCH):
                yield from self._make(page, None, ())
        finally:
            cur.close()

    def _make(self, rows: Iterable[Sequence[Any]], stats: tuple[int, int] | None,
              words: tuple[str, ...]) -> Iterator[Candidate]:
        """Candidates of rows (id, camera, track, tokens, probabilities JSON[, text, docsize])."""
        for r in rows:
            attrs = as_attributes(r[4]) if r[4] is not None else None
            if words:
                rel = functools.partial(self._relevance, size=r[6], stats=stats, words=words) if stats else 0.0
                yield Candidate(r[0], r[1], r[2], as_text(r[3]), as_text(r[5]), rel, attrs)
            else:
                yield Candidate(r[0], r[1], r[2], as_text(r[3]), attributes=attrs)

    def _full(self, ids: list[int], stats: tuple[int, int] | None) -> dict[int, tuple[tuple[Any, ...], str, Any]]:
        """id -> (stored columns, index tokens, docsize row) of the descriptions ``ids``."""
        if not ids:
            return {}
        size, join = (", z.sz", " LEFT JOIN descriptions_fts_docsize z ON z.id = d.id") if stats else (", NULL", "")
        rows = self.db.execute(f"SELECT d.id, {_COLS}, d.tokens{size} FROM descriptions d{join} WHERE d.id IN "
                               f"({','.join('?' * len(ids))})", ids).fetchall()
        return {r[0]: (r[1:11], as_text(r[11]), r[12]) for r in rows}

    def _hit(self, q: Query, r: Ranked, row: tuple[Any, ...], tokens: str, size: Any,
             stats: tuple[int, int] | None) -> Hit:
        """The hit of a chosen row; with free words it is scored again from its full text (a row read past the
        ranked window was read without it)."""
        if q.words:
            rel = functools.partial(self._relevance, size=size, stats=stats, words=q.words) if stats else 0.0
            c = Candidate(r.id, row[0], row[1], tokens, as_text(row[3]), rel, as_attributes(row[4]))
            again = score(q, c)
            r = Ranked(r.id, *again) if again is not None else r
        return hit(row, r)

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

    def track(self, camera: str, track: str, limit: int) -> list[Hit]:
        """Every stored description of one track, oldest first (at most ``limit``)."""
        rows = self.db.execute(f"SELECT {_COLS}, 0.0 FROM descriptions d WHERE d.camera = ? AND d.track = ? "
                               f"ORDER BY d.ts LIMIT ?", (camera, track, limit)).fetchall()
        return [hit_from_row(r) for r in rows]

    def spans(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
        """(first seen, last seen, descriptions) of each (camera, track), in one statement."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
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
