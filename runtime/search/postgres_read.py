"""Reading a PostgreSQL store: the search plan of :mod:`runtime.search.reads` as array and tsvector
conditions, text relevance as ``ts_rank`` of the query's free words, tracks, cameras.

Every statement is a SELECT, so a read-only session serves it all; a search runs in one transaction. A store
of an earlier version (no ``probabilities`` column, no ``pvlm_alternatives``) is read as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .query import Query, Term
from .rank import Candidate
from .reads import RANK_WINDOW, alternative_candidate
from .reads import Reader as _Plan
from .records import Scope, as_attributes, as_text

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


def _rest(q: Query, scope: Scope) -> tuple[list[str], list[Any]]:
    """The conditions every pass adds: no negated term, the camera and the time range."""
    excluded, xp = _all(q.excluded, " OR ")
    parts, params = ([f"NOT ({excluded})"], xp) if excluded else ([], [])
    for sql, value in (("camera = %s", scope.camera), ("ts >= %s", scope.since), ("ts <= %s", scope.until)):
        if value is not None:
            parts.append(sql)
            params.append(value)
    return parts, params


def conditions(q: Query, scope: Scope, terms: tuple[Term, ...] | None = None) -> tuple[str | None, list[Any]]:
    """The base pass's WHERE (``terms`` None: every required term, or with none any ranking term) or a ranking
    pass's (any of ``terms``; None without required terms or ``terms``), and its parameters. A ranking pass's
    required terms are checked after its bounded read (:meth:`PgReader._ranked`)."""
    if terms is None:
        first, params = _all(q.required, " AND ") if q.required else _all(q.ranking, " OR ")
    elif q.required and terms:
        first, params = _all(terms, " OR ")
    else:
        return None, []
    rest, rest_params = _rest(q, scope)
    return " AND ".join([f"({first})", *rest]), [*params, *rest_params]


def _probabilities(value: Any) -> dict[str, Any] | None:
    return {"probabilities": value} if isinstance(value, dict) else None


def _candidate(r: Sequence[Any], with_text: bool) -> Candidate:
    """A candidate of a row (id, camera, track, attrs, probabilities[, ts_rank, text])."""
    tokens = [as_text(t) for t in r[3]] if isinstance(r[3], list) else []
    attrs = _probabilities(r[4])
    if with_text:
        return Candidate(int(r[0]), r[1], r[2], tokens, as_text(r[6]), float(r[5] or 0.0), attrs)
    return Candidate(int(r[0]), r[1], r[2], tokens, attributes=attrs)


class PgReader(_Plan):
    """The read side of one psycopg connection; the caller holds the connection's lock."""

    def __init__(self, db: Any) -> None:
        super().__init__(db)
        self._probs = self._alts = False  # what of the newer schema the store has (looked up until it has it all)

    def _refresh_schema(self) -> None:
        if self._probs and self._alts:
            return
        self._probs, self._alts = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND "
            "table_name = 'pvlm_descriptions' AND column_name = 'probabilities'), "
            "to_regclass('pvlm_alternatives') IS NOT NULL").fetchone()

    @property
    def _prob_col(self) -> str:
        """The stated probabilities, or NULL in a store of an earlier version."""
        return "probabilities" if self._probs else "NULL"

    def _has_alternatives(self) -> bool:
        return bool(self._alts)

    def _alternatives(self, q: Query, scope: Scope, limit: int) -> list[Candidate]:
        """The newest ``limit`` alternatives in ``scope`` matching the base conditions, with their description's
        shown tokens and text (for the query's exclusions)."""
        where, params = conditions(q, scope)
        rows = self.db.execute(
            "SELECT a.description, a.camera, a.track, a.attrs, a.probabilities, a.rank, a.text, d.attrs, d.text "
            f"FROM (SELECT * FROM pvlm_alternatives WHERE {where} ORDER BY id DESC LIMIT {int(limit)}) a "
            "JOIN pvlm_descriptions d ON d.id = a.description", params).fetchall()
        return [alternative_candidate(r, _probabilities(r[4]), q.words) for r in rows]

    def _snapshot(self) -> Any:
        return self.db.transaction()

    def _word_stored(self, word: str) -> bool:
        return self.db.execute("SELECT 1 FROM pvlm_descriptions WHERE tsv @@ to_tsquery('simple', %s) LIMIT 1",
                               (word,)).fetchone() is not None

    def _ranked(self, q: Query, scope: Scope, terms: tuple[Term, ...], limit: int) -> list[Candidate]:
        """Of the newest ``limit`` rows holding any of ``terms``, those with every required term."""
        ranked, ranked_params = conditions(q, scope, terms)
        if ranked is None:
            return []
        required, required_params = _all(q.required, " AND ")
        scan = (f"SELECT * FROM (SELECT * FROM pvlm_descriptions WHERE {ranked} ORDER BY id DESC "
                f"LIMIT {int(limit)}) pvlm_descriptions WHERE {required}")
        return list(self._rows(scan, [*ranked_params, *required_params], " | ".join(q.words)))

    def _walk(self, q: Query, scope: Scope) -> Iterator[Candidate]:
        """The newest :data:`RANK_WINDOW` rows (with ``ts_rank`` and text when there are free words), then the
        older ones streamed light through a server-side cursor."""
        where, params = conditions(q, scope)
        head = list(self._rows(f"SELECT * FROM pvlm_descriptions WHERE {where} ORDER BY id DESC "
                               f"LIMIT {RANK_WINDOW}", params, " | ".join(q.words)))
        yield from head
        if len(head) < RANK_WINDOW:
            return
        with self.db.cursor(name="pvlm_rest") as cur:
            cur.itersize = _ITERSIZE
            cur.execute(f"SELECT id, camera, track, attrs, {self._prob_col} FROM pvlm_descriptions "
                        f"WHERE {where} AND id < %s ORDER BY id DESC", [*params, head[-1].id])
            for r in cur:
                yield _candidate(r, False)

    def _rows(self, source: str, params: list[Any], words: str) -> Iterator[Candidate]:
        """Candidates of the rows ``source`` selects (a SELECT * over the table), with their text and
        ``ts_rank`` when there are free ``words``."""
        rel = ", ts_rank(tsv, to_tsquery('simple', %s)), text" if words else ""
        rows = self.db.execute(f"SELECT id, camera, track, attrs, {self._prob_col}{rel} FROM ({source}) s",
                               [words, *params] if words else params).fetchall()
        for r in rows:
            yield _candidate(r, bool(words))

    def _full(self, q: Query, ids: list[int]) -> dict[int, tuple[tuple[Any, ...], Candidate]]:
        """id -> (stored columns, candidate with its text relevance) of the descriptions ``ids``."""
        if not ids:
            return {}
        words = " | ".join(q.words)
        rel = "ts_rank(tsv, to_tsquery('simple', %s))" if words else "0.0"
        rows = self.db.execute(f"SELECT id, {_COLS}, attrs, {rel} FROM pvlm_descriptions WHERE id = ANY(%s)",
                               [words, ids] if words else [ids]).fetchall()
        out = {}
        for r in rows:
            row, tokens = r[1:11], [as_text(t) for t in r[11]] if isinstance(r[11], list) else []
            c = (Candidate(r[0], row[0], row[1], tokens, as_text(row[3]), float(r[12] or 0.0), as_attributes(row[4]))
                 if words else Candidate(r[0], row[0], row[1], tokens))
            out[r[0]] = (row, c)
        return out

    def _track_rows(self, camera: str, track: str, limit: int) -> list[Any]:
        return self.db.execute(f"SELECT {_COLS}, 0.0 FROM pvlm_descriptions WHERE camera = %s AND track = %s "
                               f"ORDER BY ts LIMIT %s", (camera, track, limit)).fetchall()

    def _spans(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
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
