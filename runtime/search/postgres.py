"""PostgreSQL description store (psycopg 3): same API as :class:`runtime.search.SQLiteStore`, for many writers.

Attribute tokens live in a ``text[]`` column with a GIN index (a filter is ``attrs @> ARRAY[...]``);
the description text in a generated ``tsvector`` column with a GIN index (the ``simple`` configuration,
no stemming, like the SQLite store). Several nodes may ingest at once: uniqueness on (camera, track,
timestamp) with ``ON CONFLICT DO NOTHING`` keeps ingest idempotent. One ingest is one transaction.
n-best alternatives live in ``pvlm_alternatives`` (the same columns and indexes, plus the description's id and
the alternative's rank); a store of an earlier version gets that table and the ``probabilities`` column when it
is next opened to write.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from .postgres_read import PgReader
from .reads import StoreReads
from .records import (
    Progress,
    Record,
    StoreError,
    StoreUnavailable,
    alternative_rows,
    attribute_tokens,
    record_rows,
)

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
    probabilities JSONB,
    UNIQUE (camera, track, ts)
);
CREATE INDEX IF NOT EXISTS pvlm_descriptions_attrs ON pvlm_descriptions USING gin (attrs);
CREATE INDEX IF NOT EXISTS pvlm_descriptions_tsv ON pvlm_descriptions USING gin (tsv);
CREATE INDEX IF NOT EXISTS pvlm_descriptions_ts ON pvlm_descriptions (ts);
CREATE TABLE IF NOT EXISTS pvlm_alternatives (
    id BIGSERIAL PRIMARY KEY,
    description BIGINT NOT NULL,
    rank INTEGER NOT NULL,
    camera TEXT NOT NULL,
    track TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    text TEXT NOT NULL,
    attributes JSONB NOT NULL,
    score DOUBLE PRECISION,
    probabilities JSONB,
    attrs TEXT[] NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED,
    UNIQUE (description, rank)
);
CREATE INDEX IF NOT EXISTS pvlm_alternatives_attrs ON pvlm_alternatives USING gin (attrs);
CREATE INDEX IF NOT EXISTS pvlm_alternatives_tsv ON pvlm_alternatives USING gin (tsv);
"""
# A table of an earlier version lacks the column; ALTER TABLE only runs then (it locks the table).
_HAS_PROBABILITIES = ("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                      "AND table_name = 'pvlm_descriptions' AND column_name = 'probabilities'")
_ADD_PROBABILITIES = "ALTER TABLE pvlm_descriptions ADD COLUMN IF NOT EXISTS probabilities JSONB"
_INSERT = ("INSERT INTO pvlm_descriptions (camera, track, ts, x0, y0, x1, y1, text, attributes, bundle, probabilities, "
           "attrs) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s) "
           "ON CONFLICT (camera, track, ts) DO NOTHING RETURNING id")
_INSERT_ALTERNATIVE = ("INSERT INTO pvlm_alternatives (description, rank, camera, track, ts, text, attributes, score, "
                       "probabilities, attrs) VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s) "
                       "ON CONFLICT (description, rank) DO NOTHING")
_CHUNK = 5_000  # records per executemany inside the one ingest transaction


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ImportError("the PostgreSQL store needs psycopg 3: pip install 'personvlm-toolkit[search]'") from None
    return psycopg


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages)."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)


def _pg_error(where: str, e: Exception, doing: str, writing: bool = False) -> StoreError:
    """One line for a failed PostgreSQL call: StoreUnavailable when the server or connection failed, which a
    failed write of checked records always is."""
    psycopg = _psycopg()
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    environment = writing or isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))
    cls = StoreUnavailable if environment else StoreError
    return cls(f"store {where}: {doing}: {first}")


class PostgresStore(StoreReads):
    """Description store in PostgreSQL at ``url`` (``postgresql://user@host:port/db``). Thread-safe (one lock).

    ``readonly``: a read-only session on an existing store; no schema is created.
    """

    def __init__(self, url: str, readonly: bool = False) -> None:
        psycopg = _psycopg()
        self.url = url
        self.readonly = readonly
        self._where = redact(url)
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.Error as e:
            raise _pg_error(self._where, e, "cannot connect") from None
        try:
            self._prepare()
        except psycopg.Error as e:
            self._db.close()
            raise _pg_error(self._where, e, "cannot open") from None
        except BaseException:
            self._db.close()
            raise
        self._lock = threading.Lock()
        self._reader = PgReader(self._db)

    def _prepare(self) -> None:
        if self.readonly:
            self._db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            if self._db.execute("SELECT to_regclass('pvlm_descriptions')").fetchone()[0] is None:
                raise StoreError(f"store {self._where}: holds no description store (pvlm-index creates one)")
            return
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            if self._db.execute("SELECT to_regclass('pvlm_descriptions')").fetchone()[0] is not None and \
                    self._db.execute(_HAS_PROBABILITIES).fetchone() is None:
                self._db.execute(_ADD_PROBABILITIES)  # a store of an earlier version
            self._db.execute(_SCHEMA)

    def add(self, records: Iterable[Record], progress: Progress | None = None) -> int:
        """Insert records in one transaction; a (camera, track, timestamp) already stored is skipped.

        Returns how many were new. Every record is validated first: one bad record adds nothing. A
        failed write rolls all of them back and raises StoreUnavailable naming the cause. ``progress`` is called
        with each batch's size as it is written. Each record's n-best alternatives are stored with it.
        """
        if self.readonly:
            raise StoreError(f"store {self._where} is open read-only")
        rows = [((*cols, attribute_tokens(attrs)), alts) for cols, attrs, alts in record_rows(records)]
        if not rows:
            return 0
        psycopg = _psycopg()
        with self._lock:
            try:
                return self._insert(rows, progress)
            except psycopg.Error as e:
                raise _pg_error(self._where, e, "ingest failed, nothing was stored", writing=True) from None

    def _insert(self, rows: list[tuple[tuple[Any, ...], list[dict[str, Any]]]], progress: Progress | None) -> int:
        added = 0
        with self._db.transaction(), self._db.cursor() as cur:
            for i in range(0, len(rows), _CHUNK):
                chunk = rows[i : i + _CHUNK]
                cur.executemany(_INSERT, [cols for cols, _ in chunk], returning=True)
                ids = [(row[0] if (row := cur.fetchone()) else None) for _ in cur.results()]
                added += sum(x is not None for x in ids)
                alts = [(*r, attribute_tokens(a["attributes"])) for id_, (cols, found) in zip(ids, chunk)
                        if id_ is not None for r, a in zip(alternative_rows(id_, cols, found), found)]
                if alts:
                    cur.executemany(_INSERT_ALTERNATIVE, alts)
                if progress is not None:
                    progress(len(chunk))
        return added

    def count(self) -> int:
        """Number of stored descriptions."""
        psycopg = _psycopg()
        with self._lock:
            try:
                return int(self._db.execute("SELECT count(*) FROM pvlm_descriptions").fetchone()[0])
            except psycopg.Error as e:
                raise _pg_error(self._where, e, "count failed") from None

    @property
    def _driver_errors(self) -> tuple[type[Exception], ...]:
        return (_psycopg().Error,)

    def _store_error(self, e: Exception, doing: str) -> Exception:
        return _pg_error(self._where, e, doing)
