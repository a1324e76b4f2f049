"""The read half of the store API, the same over both engines: each engine supplies ``_read`` (run a
function with its reader under the engine's lock and error mapping), ``_lock`` and ``_db``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .query import parse_query
from .records import Hit, Page, check_query_value, check_search


class StoreReads:
    """page, search, track, spans, cameras and close, written once for :class:`SQLiteStore` and
    :class:`PostgresStore`."""

    _lock: Any
    _db: Any

    def _read(self, doing: str, fn: Any) -> Any:
        raise NotImplementedError

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
