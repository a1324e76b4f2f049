"""The read half of the store, written once for both engines: the store API (:class:`StoreReads`) and the
plan of a search (:class:`Reader`); each engine supplies only its statements.

A search reads, newest first:

- the *ranking* pass (:meth:`Reader._ranked`): the newest :data:`RANK_SCAN` descriptions holding any
  ranking term (a shade, a free word) that also have every filter term: a bounded read, however rare
  the combination; and, for a filter widened to near-synonyms ("jacket": a coat too), the *exact* pass,
  the same over the newest :data:`RANK_WINDOW` descriptions holding the exact value, so that exact
  matches rank first;
- the *base* pass (:meth:`Reader._walk`), one statement streaming the descriptions with every filter
  term (or, for a query with none, any ranking term): its newest :data:`RANK_WINDOW` join the ranked
  pool, the rest follow newest first until the page is full, and the same stream goes on to count the
  matching tracks (:class:`Walk`), so the index is walked once per search;
- the *alternatives* pass (:meth:`Reader._alternatives`), only when the descriptions' shown texts did not
  fill the page: the newest :data:`RANK_SCAN` n-best alternatives matching the base pass's expression,
  ranked after every shown-text match.

:func:`runtime.search.rank.rank` orders the pool; the chosen descriptions are then read in full.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from .query import Query, Term, parse_query
from .rank import Candidate, Ranked, hit, rank, score, word_counts
from .records import (
    WORD_RE,
    Hit,
    Page,
    Scope,
    as_text,
    check_query_value,
    check_search,
    hit_from_row,
)

T = TypeVar("T")
RANK_WINDOW = 100  # newest candidates of the base pass that are ranked; past them, newest first
RANK_SCAN = 500  # newest descriptions with a ranking term that the ranking pass reads
_KNOWN_CACHE = 10_000  # words remembered by known_word before the cache starts again


class Walk:
    """The base pass's candidates, newest first, read once: ranking takes the head and as much of the rest
    as the page needs; :meth:`count` then reads on to count the tracks among the first ``count_rows``."""

    def __init__(self, rows: Iterator[Candidate], count_rows: int) -> None:
        self._rows, self._limit = rows, count_rows
        self.read = 0
        self.tracks: set[tuple[Any, Any]] = set()

    def __iter__(self) -> Iterator[Candidate]:
        for c in self._rows:
            self.read += 1
            if self.read <= self._limit:
                self.tracks.add((c.camera, c.track))
            yield c

    def take(self, n: int) -> list[Candidate]:
        """The next ``n`` candidates (fewer at the end)."""
        out = []
        for c in self:
            out.append(c)
            if len(out) >= n:
                break
        return out

    def count(self) -> tuple[int, bool]:
        """(distinct tracks among the first ``count_rows`` descriptions, whether more descriptions match)."""
        if self.read <= self._limit:
            for _ in self:
                if self.read > self._limit:
                    break
        return len(self.tracks), self.read > self._limit

    def close(self) -> None:
        """Stop the underlying statement."""
        getattr(self._rows, "close", lambda: None)()


class Reader:
    """The read side of one connection (the caller holds its lock): the search plan, the known-word cache and
    the track/camera reads, over the engine's statements (the ``_``-methods an engine overrides)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._known: set[str] = set()  # words seen in the text (rows are never deleted, so they stay)

    def known_word(self, word: str) -> bool:
        """Whether any stored description's text holds ``word`` (an index lookup, remembered when true)."""
        if word not in self._known:
            if len(self._known) > _KNOWN_CACHE:
                self._known.clear()
            if not self._word_stored(word):
                return False
            self._known.add(word)
        return True

    def page(self, q: Query, scope: Scope, count_rows: int = 0) -> Page:
        """One page of hits for ``q``, and the tracks counted in the first ``count_rows`` descriptions read."""
        need = scope.need + 1  # one more: is there a next page?
        self._refresh_schema()
        with self._snapshot():
            pool = [*self._ranked(q, scope, q.ranking, RANK_SCAN), *self._ranked(q, scope, q.widened, RANK_WINDOW)]
            walk = Walk(self._walk(q, scope), count_rows)
            alternatives = None
            if self._has_alternatives():
                alternatives = functools.cache(lambda: self._alternatives(q, scope, RANK_SCAN))
            try:
                ranked = pool + walk.take(RANK_WINDOW)  # read with their text: scored in full already
                result = rank(q, ranked, walk, need, alternatives)
                counted, capped = walk.count() if count_rows else (result.counted, result.capped)
                if count_rows and not capped and alternatives is not None:  # every shown match is counted
                    counted += len(alternative_tracks(q, alternatives()) - walk.tracks)
            finally:
                walk.close()
            chosen = result.tracks
            more = len(chosen) > scope.need
            shown = chosen[scope.offset : scope.need]
            full = self._full(q, [r.id for r in shown])
        complete = {c.id for c in ranked} if q.words else set()
        hits = [_scored_hit(q, r, *full[r.id], r.id in complete) for r in shown if r.id in full]
        return Page(q, hits, max(counted, len(chosen) - more), capped, more)

    def track(self, camera: str, track: str, limit: int) -> list[Hit]:
        """Every stored description of one track, oldest first (at most ``limit``)."""
        return [hit_from_row(r) for r in self._track_rows(camera, track, limit)]

    def spans(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
        """(first seen, last seen, descriptions) of each (camera, track), in one statement."""
        keys = list(dict.fromkeys(keys))
        return self._spans(keys) if keys else {}

    # What an engine provides.
    def _snapshot(self) -> Any:
        """A context in which the search's statements read one state of the store."""
        return contextlib.nullcontext()

    def _word_stored(self, word: str) -> bool:
        raise NotImplementedError

    def _refresh_schema(self) -> None:
        """Look up what of the newer schema (probabilities, alternatives) the store has, until it has it all."""

    def _has_alternatives(self) -> bool:
        """Whether the store has the alternatives table (a store of an earlier version, read-only, has not)."""
        return False

    def _alternatives(self, q: Query, scope: Scope, limit: int) -> list[Candidate]:
        """The newest ``limit`` n-best alternatives in ``scope`` matching the base pass's expression, as candidates
        of their description (``alternative`` and ``shown`` set; text relevance: the query's words they hold)."""
        return []

    def _ranked(self, q: Query, scope: Scope, terms: tuple[Term, ...], limit: int) -> list[Candidate]:
        """Of the newest ``limit`` descriptions in ``scope`` holding any of ``terms`` (and none of the query's negated
        ones), those with every filter term; none when the query has no filter term or ``terms`` is empty."""
        raise NotImplementedError

    def _walk(self, q: Query, scope: Scope) -> Iterator[Candidate]:
        """The base pass, newest first: the first :data:`RANK_WINDOW` with their text relevance (when the query
        has free words), the rest light (id, track, tokens, probabilities); a generator the caller closes."""
        raise NotImplementedError

    def _full(self, q: Query, ids: list[int]) -> dict[int, tuple[tuple[Any, ...], Candidate]]:
        """id -> (stored columns, the candidate with its full text and relevance) of the descriptions ``ids``."""
        raise NotImplementedError

    def _track_rows(self, camera: str, track: str, limit: int) -> list[Any]:
        raise NotImplementedError

    def _spans(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
        raise NotImplementedError


def alternative_candidate(r: Sequence[Any], attributes: dict[str, Any] | None, words: tuple[str, ...]) -> Candidate:
    """The candidate of an alternative's row (description id, camera, track, tokens, -, rank, text, the description's
    tokens and text; tokens as a space-separated string or a list) with ``attributes`` (its probabilities); its
    text relevance is how many of the query's ``words`` it holds."""
    def tokens(v: Any) -> list[str]:
        return [as_text(t) for t in v] if isinstance(v, list) else as_text(v).split()

    text = as_text(r[6])
    shown = (frozenset(tokens(r[7])), frozenset(WORD_RE.findall(as_text(r[8]).lower())))
    return Candidate(int(r[0]), r[1], r[2], tokens(r[3]), text, lambda c: len(word_counts(c.words, words)),
                     attributes, {"rank": r[5], "text": text}, shown)


def alternative_tracks(q: Query, candidates: Iterable[Candidate]) -> set[tuple[Any, Any]]:
    """The tracks of the alternatives ``candidates`` that match ``q`` (none of its exclusions)."""
    return {(c.camera, c.track) for c in candidates if score(q, c) is not None}


def _scored_hit(q: Query, r: Ranked, row: tuple[Any, ...], c: Candidate, complete: bool = False) -> Hit:
    """The hit of a chosen row; with free words it is scored again from its full text unless it was ranked with
    it (``complete``: a row read past the ranked window was read without it; an alternative with its own)."""
    if q.words and r.alternative is None and not complete:
        again = score(q, c)
        r = dataclasses.replace(r, score=again[0], matched=again[1]) if again is not None else r
    return hit(row, r)


class StoreReads:
    """page, search, track, spans, cameras and close, written once for :class:`SQLiteStore` and
    :class:`PostgresStore`; each supplies ``_reader``, ``_lock``, ``_db``, the driver's error types
    (``_driver_errors``), :meth:`_store_error` and, optionally, :meth:`_lenient`."""

    _lock: Any
    _db: Any
    _reader: Any

    @property
    def _driver_errors(self) -> tuple[type[Exception], ...]:
        raise NotImplementedError

    def _store_error(self, e: Exception, doing: str) -> Exception:
        raise NotImplementedError

    def _lenient(self, e: Exception) -> bool:
        """Whether ``e`` is worth a second try, after the connection was set to read more leniently."""
        return False

    def _read(self, doing: str, fn: Callable[[Any], T]) -> T:
        """``fn`` on this connection's reader, under the lock; driver errors as one-line StoreErrors."""
        errors = self._driver_errors
        with self._lock:
            for last in (False, True):
                try:
                    return fn(self._reader)
                except errors as e:
                    if last or not self._lenient(e):
                        raise self._store_error(e, doing) from None
        raise AssertionError("unreachable")

    def page(self, query: str, camera: str | None = None, since: float | str | None = None,
             until: float | str | None = None, offset: int = 0, limit: int = 10, drop: Iterable[str] = (),
             count_rows: int = 0) -> Page:
        """One page of tracks matching ``query``, best first (see :mod:`runtime.search.rank`), with the parsed
        query and the matching tracks counted among the first ``count_rows`` descriptions read (``total``,
        a lower bound when ``capped``). Times: epoch seconds or ISO 8601, both ends included; ``drop``: ids
        of query terms to leave out."""
        scope = check_search(camera, since, limit, until, offset)
        return self._read("search failed", lambda r: r.page(parse_query(query, r.known_word, drop), scope,
                                                            count_rows))

    def search(self, query: str, camera: str | None = None, since: float | str | None = None,
               limit: int = 10, until: float | str | None = None, offset: int = 0,
               drop: Iterable[str] = ()) -> list[Hit]:
        """Tracks matching ``query`` (best first), each with its best description; see :meth:`page`."""
        return self.page(query, camera, since, until, offset, limit, drop).hits

    def track(self, camera: str, track: str, limit: int = 1000) -> list[Hit]:
        """Every stored description of one track, oldest first (at most ``limit``)."""
        check_query_value(camera, "camera")
        check_query_value(track, "track")
        return self._read("reading a track failed", lambda r: r.track(camera, track, limit))

    def spans(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]:
        """(first seen, last seen, number of descriptions) of each (camera, track) key that is stored."""
        keys = list(keys)
        return self._read("reading tracks failed", lambda r: r.spans(keys))

    def cameras(self, limit: int = 1000) -> list[str]:
        """The stored cameras, sorted (at most ``limit``)."""
        return self._read("listing cameras failed", lambda r: r.cameras(limit))

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
