"""The SQLite engine of the description store: one file, FTS5 for text, WAL for readers beside a writer."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .reads import StoreReads
from .records import (
    FORMAT,
    Progress,
    Record,
    StoreError,
    StoreUnavailable,
    alternative_rows,
    attribute_tokens,
    camera_token,
    record_rows,
    show,
)
from .sqlite_read import Reader

_CHUNK = 5_000  # records per INSERT batch inside the one ingest transaction (and per progress report)
BUSY_TIMEOUT_S = 30.0  # how long SQLite waits for another connection's lock before giving up

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS descriptions (
    id INTEGER PRIMARY KEY,
    camera TEXT NOT NULL,
    track TEXT NOT NULL,
    ts REAL NOT NULL,
    x0 REAL, y0 REAL, x1 REAL, y1 REAL,
    text TEXT NOT NULL,
    attributes TEXT NOT NULL,
    bundle TEXT,
    tokens TEXT NOT NULL,  -- attribute tokens, copied into descriptions_fts.attrs
    probabilities TEXT,  -- stated values' probabilities, JSON (records.stated_probabilities); NULL: none
    UNIQUE (camera, track, ts)
);
CREATE INDEX IF NOT EXISTS descriptions_ts ON descriptions (ts);
CREATE VIRTUAL TABLE IF NOT EXISTS descriptions_fts USING fts5 (
    text, attrs, content='', tokenize='unicode61'
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO store_meta VALUES ('format', '{FORMAT}');
"""
# The n-best alternatives of descriptions (added to a store of an earlier version when it is next opened to write).
_ALTERNATIVES = """
CREATE TABLE IF NOT EXISTS alternatives (
    id INTEGER PRIMARY KEY,
    description INTEGER NOT NULL,  -- descriptions.id
    rank INTEGER NOT NULL,  -- position in the n-best list (0: best)
    camera TEXT NOT NULL, track TEXT NOT NULL, ts REAL NOT NULL,  -- the description's, for the search scope
    text TEXT NOT NULL,
    attributes TEXT NOT NULL,
    score REAL,
    probabilities TEXT,
    tokens TEXT NOT NULL,
    UNIQUE (description, rank)
);
CREATE VIRTUAL TABLE IF NOT EXISTS alternatives_fts USING fts5 (
    text, attrs, content='', tokenize='unicode61'
);
"""
_INSERT = ("INSERT OR IGNORE INTO descriptions (camera, track, ts, x0, y0, x1, y1, text, attributes, bundle, "
           "probabilities, tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
_INSERT_ALTERNATIVE = ("INSERT OR IGNORE INTO alternatives (description, rank, camera, track, ts, text, attributes, "
                       "score, probabilities, tokens) VALUES (?,?,?,?,?,?,?,?,?,?)")
# SQLite primary result codes (https://sqlite.org/rescode.html) that say the environment failed, not the input,
# and what they mean for a store.
_SQLITE_NOTADB, _SQLITE_CANTOPEN = 26, 14
_SQLITE_ENVIRONMENT = frozenset({5, 6, 7, 8, 10, 13, _SQLITE_CANTOPEN, 15})  # BUSY LOCKED NOMEM READONLY IOERR FULL
_SQLITE_HINTS = {5: "another process holds its lock", 6: "another process holds its lock",
                 8: "the file or its directory is read-only",
                 _SQLITE_CANTOPEN: "check the permissions of the file and its directory"}


def _sqlite_code(e: sqlite3.Error) -> int:
    return (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF


def _sqlite_error(path: str, e: sqlite3.Error, doing: str, writing: bool = False) -> StoreError:
    """One-line error for a failed SQLite call: StoreUnavailable when the environment failed, which a
    failed write of checked records always is."""
    code = _sqlite_code(e)
    if code == _SQLITE_NOTADB:
        return StoreError(f"store {path}: not a description store ({e})")
    hint = f" ({_SQLITE_HINTS[code]})" if code in _SQLITE_HINTS else ""
    cls = StoreUnavailable if writing or code in _SQLITE_ENVIRONMENT else StoreError
    return cls(f"store {path}: {doing}: {e}{hint}")


def _decode_text(raw: bytes) -> str:
    # Text another writer stored as invalid UTF-8 reads with replacement characters instead of failing the query.
    return raw.decode("utf-8", "replace")


def _undecodable(e: Exception) -> bool:
    """Whether ``e`` is sqlite3's refusal of text that is not UTF-8 (the message is all that says so)."""
    return isinstance(e, sqlite3.OperationalError) and str(e).startswith("Could not decode to UTF-8")


def _store_format(db: sqlite3.Connection, path: str) -> str | None:
    """The store's format tag; None for a database with no tables; StoreError for another application's."""
    names = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')"))
    if not names:
        return None
    if "store_meta" not in names or "descriptions" not in names:
        shown = ", ".join(show(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        raise StoreError(f"store {path}: not a description store (it holds other tables: {shown})")
    row = db.execute("SELECT value FROM store_meta WHERE key = 'format'").fetchone()
    if row is None or row[0] != FORMAT:
        raise StoreError(f"store {path}: unknown format {show(row and row[0])} (expected {FORMAT})")
    return FORMAT


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether ``table`` has ``column`` (a store of an earlier version lacks the newer ones)."""
    return any(r[1] == column for r in db.execute(f"PRAGMA table_info({table})"))


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a store of an earlier version of this format up to date: the ``probabilities`` column (NULL in its old
    rows) and the alternatives tables. Only adds; old rows are read as they are."""
    if has_column(db, "descriptions", "probabilities") and \
            db.execute("SELECT 1 FROM sqlite_master WHERE name = 'alternatives_fts'").fetchone():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if not has_column(db, "descriptions", "probabilities"):
            db.execute("ALTER TABLE descriptions ADD COLUMN probabilities TEXT")
        for statement in _ALTERNATIVES.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _wal_in_use(path: Path) -> bool:
    """Whether ``path`` has a non-empty write-ahead log (changes not yet in the file itself)."""
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except OSError:
        return False


def _tokens(attributes: dict[str, Any], camera: str) -> str:
    return " ".join([*attribute_tokens(attributes), camera_token(camera)])


class SQLiteStore(StoreReads):
    """SQLite + FTS5 store in one file (``":memory:"`` for a throwaway one). Thread-safe (one lock).

    ``readonly``: open an existing store read-only; nothing is created or changed (schema, journal
    mode), and a database of another application is refused untouched.
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._file = self.path if self.path == ":memory:" else str(Path(self.path).expanduser())
        self._db = self._open_readonly() if readonly else self._open_writable()
        self._lock = threading.Lock()
        self._reader = Reader(self._db)

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        # Text is decoded by sqlite3 itself (a Python decoder per value costs a search about a millisecond); a
        # row another writer stored as invalid UTF-8 switches this connection to the lenient decoder (_lenient).
        return sqlite3.connect(target, uri=uri, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)

    def _open_writable(self) -> sqlite3.Connection:
        if self._file != ":memory:":
            parent = Path(self._file).resolve().parent
            if not parent.is_dir():
                raise StoreError(f"store {self.path}: directory {parent} does not exist")
            if Path(self._file).is_dir():
                raise StoreError(f"store {self.path} is a directory")
            # SQLite only says "unable to open database file" when it cannot create its journal next to the file.
            for where in (parent, Path(self._file)):
                if where.exists() and not os.access(where, os.W_OK):
                    raise StoreUnavailable(f"store {self.path}: read-only ({where} cannot be written)")
        try:
            db = self._connect(self._file)
        except sqlite3.Error as e:
            raise _sqlite_error(self.path, e, "cannot open") from None
        try:
            if _store_format(db, self.path) is None:  # a new (or empty) file: make it a store
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}{_ALTERNATIVES}COMMIT;")
            else:
                _migrate(db)
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            db.close()
            raise _sqlite_error(self.path, e, "cannot open") from None
        except BaseException:
            db.close()
            raise
        return db

    def _open_readonly(self) -> sqlite3.Connection:
        path = Path(self._file)
        if not _is_file(path):
            raise StoreError(f"store {self.path} does not exist" if not path.exists() else
                             f"store {self.path} is not a file")
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            return self._checked(uri)
        except sqlite3.Error as e:
            if _sqlite_code(e) != _SQLITE_CANTOPEN or _wal_in_use(path):
                raise _sqlite_error(self.path, e, "cannot open") from None
        # A read-only directory or mount cannot take the -shm file that WAL readers share. Nothing can
        # write there either, so reading the file as immutable sees the same data.
        try:
            return self._checked(uri + "&immutable=1")
        except sqlite3.Error as e:
            raise _sqlite_error(self.path, e, "cannot open") from None

    def _checked(self, uri: str) -> sqlite3.Connection:
        db = self._connect(uri, uri=True)
        try:
            if _store_format(db, self.path) is None:
                raise StoreError(f"store {self.path}: not a description store (it holds no tables)")
        except BaseException:
            db.close()
            raise
        return db

    def add(self, records: Iterable[Record], progress: Progress | None = None) -> int:
        """Insert records in one transaction; a (camera, track, timestamp) already stored is skipped.

        Returns how many were new. Every record is validated first: one bad record adds nothing. A
        failed write (a full disk, a lock held too long) rolls all of them back and raises
        StoreUnavailable naming the cause. ``progress`` is called with each batch's size as it is written.
        """
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only")
        rows, alternatives = [], {}
        for cols, attrs, alts in record_rows(records):
            rows.append((*cols, _tokens(attrs, cols[0])))
            if alts:
                alternatives.setdefault(cols[:3], (cols, alts))  # the first record of a key is the one stored
        if not rows:
            return 0
        with self._lock:
            try:
                return self._insert(rows, alternatives, progress)
            except sqlite3.Error as e:
                self._abort()
                raise _sqlite_error(self.path, e, "ingest failed, nothing was stored", writing=True) from None
            except BaseException:
                self._abort()
                raise

    def _insert(self, rows: list[tuple[Any, ...]], alternatives: dict[tuple[Any, ...], Any],
                progress: Progress | None) -> int:
        db = self._db
        # Move committed pages out of the write-ahead log first: if this ingest then fills the disk, the log
        # holds nothing but the rolled-back pages and can be emptied (a checkpoint would need free space).
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        db.execute("BEGIN IMMEDIATE")
        # New rows get ids above the current maximum (rows are never deleted), so the full-text
        # index is filled from them in one statement instead of a round trip per row.
        last = db.execute("SELECT coalesce(max(id), 0) FROM descriptions").fetchone()[0]
        before = db.total_changes
        for i in range(0, len(rows), _CHUNK):
            db.executemany(_INSERT, rows[i : i + _CHUNK])
            if progress is not None:
                progress(len(rows[i : i + _CHUNK]))
        added = db.total_changes - before
        db.execute("INSERT INTO descriptions_fts (rowid, text, attrs) "
                   "SELECT id, text, tokens FROM descriptions WHERE id > ?", (last,))
        if alternatives:
            self._insert_alternatives(alternatives, last)
        db.execute("COMMIT")
        return added

    def _insert_alternatives(self, alternatives: dict[tuple[Any, ...], Any], last: int) -> None:
        """The alternatives of the descriptions this ingest stored (ids above ``last``), and their full-text rows."""
        db = self._db
        first = db.execute("SELECT coalesce(max(id), 0) FROM alternatives").fetchone()[0]
        rows = []
        for id_, camera, track, ts in db.execute("SELECT id, camera, track, ts FROM descriptions WHERE id > ?",
                                                 (last,)):
            if (found := alternatives.get((camera, track, ts))) is not None:
                cols, alts = found
                rows += [(*r, _tokens(a["attributes"], camera))
                         for r, a in zip(alternative_rows(id_, cols, alts), alts)]
        db.executemany(_INSERT_ALTERNATIVE, rows)
        db.execute("INSERT INTO alternatives_fts (rowid, text, attrs) "
                   "SELECT id, text, tokens FROM alternatives WHERE id > ?", (first,))

    def _abort(self) -> None:
        """Roll back (SQLite may have already, on a full disk) and give the log's space back; never raises."""
        db = self._db
        with contextlib.suppress(sqlite3.Error):
            if db.in_transaction:
                db.execute("ROLLBACK")
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA busy_timeout=0")  # do not wait for readers: the log is emptied on close anyway
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with contextlib.suppress(sqlite3.Error):
            db.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

    def count(self) -> int:
        """Number of stored descriptions."""
        with self._lock:
            try:
                return int(self._db.execute("SELECT count(*) FROM descriptions").fetchone()[0])
            except sqlite3.Error as e:
                raise _sqlite_error(self.path, e, "count failed") from None

    @property
    def _driver_errors(self) -> tuple[type[Exception], ...]:
        return (sqlite3.Error,)

    def _store_error(self, e: Exception, doing: str) -> Exception:
        assert isinstance(e, sqlite3.Error)
        return _sqlite_error(self.path, e, doing)

    def _lenient(self, e: Exception) -> bool:
        if self._db.text_factory is _decode_text or not _undecodable(e):
            return False
        self._db.text_factory = _decode_text
        return True
