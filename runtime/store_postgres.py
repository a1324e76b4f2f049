"""PostgreSQL description store (psycopg 3): same API as :class:`runtime.store.SQLiteStore`, for many writers.

Attribute tokens live in a ``text[]`` column with a GIN index (a filter is ``attrs @> ARRAY[...]``);
the description text in a generated ``tsvector`` column with a GIN index (the ``simple`` configuration,
no stemming, like the SQLite store). Several nodes may ingest at once: uniqueness on (camera, track,
timestamp) with ``ON CONFLICT DO NOTHING`` keeps ingest idempotent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from .store import Hit, QueryError, Record, StoreError, attribute_tokens, collect_tracks, parse_query, \
    record_rows, to_timestamp

_SCHEMA_LOCK = 0x70766C6D  # advisory lock id ("pvlm"): nodes starting together create the schema once
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pvlm_descriptions (
    id BIGSERIAL PRIMARY KEY,
    camera TEXT NOT NULL,
    track TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    x0 DOUBLE PRECISION, y0 DOUBLE PRECISION, x1 DOUBLE PRECISION, y1 DOUBLE PRECISION,
    text TEXT NOT NULL,
    attributes JSONB NOT NULL,
    bundle TEXT,
    attrs TEXT[] NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    UNIQUE (camera, track, ts)
);
CREATE INDEX IF NOT EXISTS pvlm_descriptions_attrs ON pvlm_descriptions USING gin (attrs);
CREATE INDEX IF NOT EXISTS pvlm_descriptions_tsv ON pvlm_descriptions USING gin (tsv);
CREATE INDEX IF NOT EXISTS pvlm_descriptions_ts ON pvlm_descriptions (ts);
"""
_COLS = "camera, track, ts, text, attributes, x0, y0, x1, y1, bundle"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ImportError("the PostgreSQL store needs psycopg 3: pip install 'personvlm-toolkit[search]'") from None
    return psycopg


class PostgresStore:
    """Description store in PostgreSQL at ``url`` (``postgresql://user@host:port/db``). Thread-safe (one lock)."""

    def __init__(self, url: str) -> None:
        psycopg = _psycopg()
        self.url = url
        try:
            self._db = psycopg.connect(url, autocommit=True)
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self._db.execute(_SCHEMA)
        except psycopg.Error as e:
            raise StoreError(f"store {url}: {str(e).strip()}") from None
        self._lock = threading.Lock()

    def add(self, records: Iterable[Record]) -> int:
        """Insert records in one transaction; a (camera, track, timestamp) already stored is skipped.

        Returns how many were new. Every record is validated first: one bad record adds nothing.
        """
        rows = [(*cols, attribute_tokens(attrs)) for cols, attrs in record_rows(records)]
        if not rows:
            return 0
        with self._lock, self._db.transaction(), self._db.cursor() as cur:
            cur.executemany(
                "INSERT INTO pvlm_descriptions (camera, track, ts, x0, y0, x1, y1, text, attributes, bundle, attrs) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s) ON CONFLICT (camera, track, ts) DO NOTHING",
                rows)
            return max(0, cur.rowcount)

    def count(self) -> int:
        """Number of stored descriptions."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM pvlm_descriptions").fetchone()[0])

    def search(self, query: str, camera: str | None = None, since: float | None = None,
               limit: int = 10) -> list[Hit]:
        """Tracks matching ``query`` (best first), each with its best description; ``since``: epoch seconds."""
        if not isinstance(limit, int) or limit < 1:
            raise QueryError(f"limit must be a positive integer, got {limit!r}")
        q = parse_query(query)
        where, params = [], []
        if q.filters:
            where.append("attrs @> %s")
            params.append(list(q.filters))
        if camera is not None:
            where.append("camera = %s")
            params.append(camera)
        if since is not None:
            where.append("ts >= %s")
            params.append(to_timestamp(since))
        hits: list[Hit] = []
        with self._lock, self._db.transaction():
            if q.words:
                sql = (f"SELECT {_COLS}, ts_rank(tsv, q) AS score FROM pvlm_descriptions, "
                       f"to_tsquery('simple', %s) q WHERE tsv @@ q"
                       + "".join(f" AND {w}" for w in where) + " ORDER BY score DESC, id DESC")
                hits = self._tracks(sql, [" | ".join(q.words), *params], limit)
            if len(hits) < limit and q.filters:
                sql = f"SELECT {_COLS}, 0.0 FROM pvlm_descriptions WHERE " + " AND ".join(where) + " ORDER BY id DESC"
                have = {(h.camera, h.track) for h in hits}
                more = self._tracks(sql, params, limit + len(hits))
                hits += [h for h in more if (h.camera, h.track) not in have][: limit - len(hits)]
        return hits

    def _tracks(self, sql: str, params: list[Any], limit: int) -> list[Hit]:
        psycopg = _psycopg()
        try:
            # A server-side cursor streams rows, so collecting tracks stops as soon as it has enough.
            with self._db.cursor(name="pvlm_search") as cur:
                cur.itersize = 512
                cur.execute(sql, params)
                return collect_tracks(cur, limit)
        except psycopg.Error as e:
            raise QueryError(f"search failed: {str(e).strip()}") from None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
