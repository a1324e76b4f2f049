"""Reading a PostgreSQL store: search (array and tsvector conditions, two passes, ts_rank), tracks, cameras.

The same plan as :mod:`runtime.search.sqlite_read`: a ranking pass (the newest :data:`RANK_SCAN`
descriptions with a ranking term, kept when they have every required term), then the base pass
(required terms) whose newest :data:`RANK_WINDOW` rows join the ranked pool and whose rest follows
newest first. Text relevance is ``ts_rank`` of the query's free words. Every statement is a SELECT:
a read-only session serves it all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .query import Query, Term
from .rank import Candidate, Ranked, hit, rank, score
from .records import Hit, Page, Scope, as_attributes, as_text, hit_from_row
from .sqlite_read import RANK_SCAN, RANK_WINDOW

_COLS = "camera, track, ts, text, attributes, x0, y0, x1, y1, bundle"
_ITERSIZE = 256


def term_sql(term: Term) -> tuple[str, list[Any]]:
    """A condition for ``term`` (positive form; the caller negates) and its parameters."""
    if term.kind == "text":
        words = [w for g in term.groups for w in g]
        return "tsv @@ to_tsquery('simple', %s)", [" | ".join(words)]
    if term.negated and term.every:
        return "(" + " AND ".join("attrs && %s" for _ in term.groups) + ")", [list(g) for g in term.groups]
    return "attrs && %s", [[t for g in term.groups for t in g]]


def _all(terms: Iterable[Term], joiner: str) -> tuple[str, list[Any]]:
    parts, params = [], []
    for t in terms:
        sql, p = term_sql(t)
        parts.append(sql)
        params += p
    return joiner.join(parts), params


def conditions(q: Query, scope: Scope) -> tuple[str, list[Any], str | None, list[Any]]:
    """(base WHERE and its parameters, the ranking pass's WHERE or None and its parameters); the ranking
    pass's required terms are checked after its bounded read (:meth:`PgReader.page`)."""
    required, rp = _all(q.required, " AND ")
    ranking, kp = _all(q.ranking, " OR ")
    excluded, xp = _all(q.excluded, " OR ")
    scope_sql, sp = [], []
    for sql, value in (("camera = %s", scope.camera), ("ts >= %s", scope.since), ("ts <= %s", scope.until)):
        if value is not None:
            scope_sql.append(sql)
            sp.append(value)
    neg = [f"NOT ({excluded})"] if excluded else []
    base = [required if required else f"({ranking})", *neg, *scope_sql]
    base_params = [*(rp if required else kp), *xp, *sp]
    if not (required and ranking):
        return " AND ".join(base), base_params, None, []
    return " AND ".join(base), base_params, " AND ".join([f"({ranking})", *neg, *scope_sql]), [*kp, *xp, *sp]


def _candidate(r: Sequence[Any], with_text: bool) -> Candidate:
    """A candidate of a row (id, camera, track, attrs, probabilities[, ts_rank, text])."""
    tokens = [as_text(t) for t in r[3]] if isinstance(r[3], list) else []
    attrs = {"probabilities": r[4]} if r[4] is not None else None
    if with_text:
        return Candidate(int(r[0]), r[1], r[2], tokens, as_text(r[6]), float(r[5] or 0.0), attrs)
    return Candidate(int(r[0]), r[1], r[2], tokens, attributes=attrs)


def _hit(q: Query, r: Ranked, row: tuple[Any, ...], tokens: list[str], relevance: float) -> Hit:
    """The hit of a chosen row; with free words it is scored again from its full text (a row read past the
    ranked window was read without it)."""
    if q.words:
        c = Candidate(r.id, row[0], row[1], [as_text(t) for t in tokens], as_text(row[3]), relevance,
                      as_attributes(row[4]))
        again = score(q, c)
        r = Ranked(r.id, *again) if again is not None else r
    return hit(row, r)


class PgReader:
    """The read side of one psycopg connection; the caller holds the connection's lock."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._known: set[str] = set()  # words seen in the text (rows are never deleted, so they stay)

    def known_word(self, word: str) -> bool:
        """Whether any stored description's text holds ``word`` (a GIN index lookup)."""
        if word not in self._known:
            if len(self._known) > 10_000:
                self._known.clear()
            row = self.db.execute("SELECT 1 FROM pvlm_descriptions WHERE tsv @@ to_tsquery('simple', %s) LIMIT 1",
                                  (word,)).fetchone()
            if row is None:
                return False
            self._known.add(word)
        return True

    def page(self, q: Query, scope: Scope, count_rows: int = 0) -> Page:
        """One page of hits for ``q``, and the tracks counted in the first ``count_rows`` descriptions read."""
        need = scope.need + 1  # one more: is there a next page?
        where, params, ranked, ranked_params = conditions(q, scope)
        required, required_params = _all(q.required, " AND ")
        words = " | ".join(q.words)
        with self.db.transaction():
            pool: list[Candidate] = []
            if ranked is not None:
                scan = (f"SELECT * FROM (SELECT * FROM pvlm_descriptions WHERE {ranked} ORDER BY id DESC "
                        f"LIMIT {RANK_SCAN}) pvlm_descriptions WHERE {required}")
                pool = list(self._rows(scan, [*ranked_params, *required_params], words))
            head = list(self._rows(f"SELECT * FROM pvlm_descriptions WHERE {where} ORDER BY id DESC "
                                   f"LIMIT {RANK_WINDOW}", params, words))
            rest: Iterator[Candidate] = iter(())
            if len(head) == RANK_WINDOW:  # past the ranked window only ids, tracks and tokens are read
                rest = self._stream(f"SELECT * FROM pvlm_descriptions WHERE {where} AND id < %s ORDER BY id DESC",
                                    [*params, head[-1].id])
            try:
                result = rank(q, pool + head, rest, need)
            finally:
                getattr(rest, "close", lambda: None)()
            chosen = result.tracks
            more = len(chosen) > scope.need
            shown = chosen[scope.offset : scope.need]
            full = self._full([r.id for r in shown], words)
            counted, capped = self._count(where, params, count_rows) if count_rows else (result.counted, result.capped)
        hits = [_hit(q, r, *full[r.id]) for r in shown if r.id in full]
        return Page(q, hits, max(counted, len(chosen) - more), capped, more)

    def _count(self, where: str, params: list[Any], rows: int) -> tuple[int, bool]:
        """(distinct tracks among the newest ``rows`` matching descriptions, whether more match)."""
        n, tracks = self.db.execute(f"SELECT count(*), count(DISTINCT (camera, track)) FROM (SELECT camera, track "
                                    f"FROM pvlm_descriptions WHERE {where} ORDER BY id DESC LIMIT %s) s",
                                    [*params, rows + 1]).fetchone()
        return int(tracks), n > rows

    def _rows(self, source: str, params: list[Any], words: str) -> Iterator[Candidate]:
        """Candidates of the rows ``source`` selects (a SELECT * over the table), with their text and
        ``ts_rank`` when there are free ``words``."""
        rel = ", ts_rank(tsv, to_tsquery('simple', %s)), text" if words else ""
        rows = self.db.execute(f"SELECT id, camera, track, attrs, attributes -> 'probabilities'{rel} FROM ({source}) s",
                               [words, *params] if words else params).fetchall()
        for r in rows:
            yield _candidate(r, bool(words))

    def _stream(self, source: str, params: list[Any]) -> Iterator[Candidate]:
        # A server-side cursor streams rows, so collecting tracks stops as soon as it has enough.
        with self.db.cursor(name="pvlm_rest") as cur:
            cur.itersize = _ITERSIZE
            cur.execute(f"SELECT id, camera, track, attrs, attributes -> 'probabilities' FROM ({source}) s", params)
            for r in cur:
                yield _candidate(r, False)

    def _full(self, ids: list[int], words: str) -> dict[int, tuple[tuple[Any, ...], list[str], float]]:
        """id -> (stored columns, index tokens, text relevance) of the descriptions ``ids``."""
        if not ids:
            return {}
        rel = "ts_rank(tsv, to_tsquery('simple', %s))" if words else "0.0"
        rows = self.db.execute(f"SELECT id, {_COLS}, attrs, {rel} FROM pvlm_descriptions WHERE id = ANY(%s)",
                               [words, ids] if words else [ids]).fetchall()
        return {r[0]: (r[1:11], r[11] if isinstance(r[11], list) else [], float(r[12] or 0.0)) for r in rows}

    def track(self, camera: str, track: str, limit: int) -> list[Hit]:
        """Every stored description of one track, oldest first (at most ``limit``)."""
        rows = self.db.execute(f"SELECT {_COLS}, 0.0 FROM pvlm_descriptions WHERE camera = %s AND track = %s "
                               f"ORDER BY ts LIMIT %s", (camera, track, limit)).fetchall()
        return [hit_from_row(r) for r in rows]

    def spans(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
        """(first seen, last seen, descriptions) of each (camera, track), in one statement."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        rows = self.db.execute("SELECT camera, track, min(ts), max(ts), count(*) FROM pvlm_descriptions "
                               "WHERE (camera, track) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
                               "GROUP BY camera, track", ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
        return {(c, t): (lo, hi, n) for c, t, lo, hi, n in rows}

    def cameras(self, limit: int) -> list[str]:
        """Distinct cameras, sorted (one index seek each)."""
        rows = self.db.execute(
            "WITH RECURSIVE c(name) AS (SELECT min(camera) FROM pvlm_descriptions UNION ALL "
            "SELECT (SELECT min(camera) FROM pvlm_descriptions WHERE camera > c.name) FROM c "
            "WHERE c.name IS NOT NULL) SELECT name FROM c WHERE name IS NOT NULL LIMIT %s", (limit,)).fetchall()
        return [as_text(r[0]) for r in rows]
