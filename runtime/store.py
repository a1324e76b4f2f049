"""Description store: descriptions with camera, track, time and box, searched by natural language.

One API over two engines: SQLite with FTS5 (embedded default, standard library) and PostgreSQL
(``runtime.store_postgres``, for fleets with several writer nodes). :func:`open_store` picks by URL.

A query ("woman in a red jacket with a backpack") is parsed by :func:`runtime.attributes.parse_attributes`
into attribute filters, which every hit must match, and the query's other words ("glasses",
"stripes"), which rank hits by full-text relevance. Attributes are indexed as tokens
(``uppercolorred``, ``carryingbackpack``, ...) so a filter is an inverted-index intersection, not a
scan. Search returns tracks, each with its best description.

Every value is checked at the door (:func:`validate_record`): what the store accepts, it can read
back and print. Reading is defensive too, so a row written by an older version cannot break a search.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import reprlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from .attribute_schema import COLORED_PARTS, FIELDS, SHADES
from .attributes import interpreted_words, parse_attributes

Box = tuple[float, float, float, float]
Progress = Callable[[int], Any]  # called with the number of records just written

# What a record may hold. The timestamp window refuses milliseconds (and micro-, nanoseconds) sent as
# seconds: they land thousands of years ahead, past what a date can show.
MIN_TIMESTAMP = 0.0  # 1970-01-01T00:00:00Z
MAX_TIMESTAMP = 4_102_444_800.0  # 2100-01-01T00:00:00Z (exclusive)
MAX_ID_CHARS = 256  # camera, track, bundle
MAX_TEXT_CHARS = 10_000
MAX_VALUE_CHARS = 64  # one attribute value
MAX_ITEMS = 32  # values of a list-valued attribute (carrying)
MAX_COORDINATE = 1e6  # |box coordinate| in pixels
MAX_QUERY_CHARS = 2_000
FORMAT = "pvlm-store/1"

# Words that carry no meaning in a query once its attributes are parsed.
_STOPWORDS = frozenset(
    "a an the in on of with and or wearing wears wear carrying carries carry holding holds hold who is are was "
    "were has have having person people someone somebody pedestrian individual find show me any some who's that "
    "which whose his her their its dressed clothes clothing look looking for at to from by pair also seen viewed "
    "shown shows photo image picture appears appearing like looks".split()
)
_WORD_RE = re.compile(r"[a-z0-9]+")
# one-valued fields indexed as they are: upper, lower, headwear, posture, view, gender, age
_TOKEN_ATTRS = tuple(f.key for f in FIELDS if f.kind == "item" and not f.many)
# Rows fetched per page while collecting distinct tracks.
_PAGE = 512
_CHUNK = 5_000  # records per INSERT batch inside the one ingest transaction (and per progress report)
BUSY_TIMEOUT_S = 30.0  # how long SQLite waits for another connection's lock before giving up
RANK_WINDOW = 1000  # newest candidates that contain a query word, ranked (see SQLiteStore.search)


class StoreError(ValueError):
    """A record or store location that cannot be used (the message names it)."""


class StoreUnavailable(StoreError):
    """The store could not be read or written (locked, disk full, read-only, unreachable); nothing was written."""


class QueryError(ValueError):
    """A search query that cannot be run (the message says why)."""


def show(value: Any) -> str:
    """A short, one-line ``repr`` of an input value for error messages (safe on deep or huge values)."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlevel = 40, 40, 2
    try:
        return short.repr(value)
    except (ValueError, RecursionError):  # an integer too long to print in decimal
        return f"<{type(value).__name__}>"


@dataclass(frozen=True)
class Record:
    """One description of one track at one time. ``timestamp``: seconds since the epoch (UTC)."""

    camera: str
    track: str
    timestamp: float
    text: str
    attributes: Mapping[str, Any] | None = None  # None: parsed from ``text``
    box: Box | None = None  # (x0, y0, x1, y1) in frame pixels
    bundle: str | None = None

    @classmethod
    def from_description(cls, description: Any, camera: str, track: str, timestamp: float | str | datetime,
                         box: Sequence[float] | None = None, bundle: str | None = None) -> Record:
        """A record from a :class:`runtime.Description` (its text and parsed attributes)."""
        if getattr(description, "error", None):
            raise StoreError(f"description of track {show(track)} has an error: {description.error}")
        return cls(camera, str(track), to_timestamp(timestamp), description.text, description.attributes,
                   None if box is None else check_box(box), bundle)


@dataclass(frozen=True)
class Hit:
    """One track found by a search, with its best-matching description."""

    camera: str
    track: str
    timestamp: float  # NaN for a stored value that is not a number (a row from an older writer)
    text: str
    attributes: dict[str, Any]
    box: Box | None
    bundle: str | None
    score: float  # higher is better; 0.0 when the query has no words to rank by

    @property
    def time(self) -> str | None:
        """The timestamp as ISO 8601 UTC, or None when it is outside what a date can show."""
        return iso_time(self.timestamp)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamp also as ISO 8601; both null when the stored time is unreadable)."""
        ts = self.timestamp if math.isfinite(self.timestamp) else None
        return {"camera": self.camera, "track": self.track, "timestamp": ts, "time": self.time, "text": self.text,
                "attributes": self.attributes, "box": self.box, "bundle": self.bundle, "score": self.score}


@dataclass(frozen=True)
class Query:
    """A parsed query: attribute tokens every hit must have, and words that rank hits."""

    text: str
    attributes: dict[str, Any]
    filters: tuple[str, ...]
    words: tuple[str, ...] = field(default=())


class Store(Protocol):
    """What both engines provide."""

    def add(self, records: Iterable[Record], progress: Progress | None = None) -> int: ...
    def search(self, query: str, camera: str | None = None, since: float | str | None = None,
               limit: int = 10) -> list[Hit]: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def iso_time(ts: float) -> str | None:
    """``ts`` (epoch seconds) as ISO 8601 UTC, or None when no date can show it."""
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError, TypeError):
        return None


def to_timestamp(value: float | int | str | datetime) -> float:
    """Seconds since the epoch from a number, an ISO 8601 string (naive means UTC) or a datetime."""
    if isinstance(value, bool):
        raise StoreError(f"timestamp must be a number or ISO 8601 time, got {value!r}")
    try:
        if isinstance(value, (int, float)):
            ts = float(value)
        elif isinstance(value, datetime):
            ts = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
        elif isinstance(value, str):
            ts = _parse_time(value)
        else:
            raise StoreError(f"timestamp must be a number or ISO 8601 time, got {type(value).__name__}")
    except OverflowError:
        raise StoreError(f"timestamp {show(value)} is too large") from None
    if not math.isfinite(ts):
        raise StoreError(f"timestamp must be finite, got {show(value)}")
    return ts


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise StoreError(f"timestamp {show(text)} is neither seconds since the epoch nor ISO 8601") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def check_timestamp(value: float | int | str | datetime) -> float:
    """:func:`to_timestamp`, refused outside 1970-01-01..2100-01-01 (milliseconds sent as seconds, say)."""
    ts = to_timestamp(value)
    if MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
        return ts
    hint = ""
    if not isinstance(value, (str, datetime)) or _is_number(value):
        hint = next((f"; {unit} since the epoch? send seconds" for unit, scale in
                     (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9))
                     if MIN_TIMESTAMP <= ts / scale < MAX_TIMESTAMP), "")
    raise StoreError(f"timestamp {show(value)} is outside 1970-01-01..2100-01-01{hint}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_string(value: Any, name: str, max_chars: int, empty: bool = False) -> str:
    """``value`` if it is a string the store can keep and give back; StoreError naming ``name`` otherwise.

    Refused: other types, empty (unless ``empty``), longer than ``max_chars``, a NUL character
    (PostgreSQL cannot store it) or invalid Unicode (a lone surrogate, which UTF-8 cannot encode).
    """
    if not isinstance(value, str):
        raise StoreError(f"{name} must be a string, got {show(value)}")
    if not value and not empty:
        raise StoreError(f"{name} must not be empty")
    if len(value) > max_chars:
        raise StoreError(f"{name} is {len(value)} characters long (at most {max_chars})")
    if "\x00" in value:
        raise StoreError(f"{name} contains a NUL character (at index {value.index(chr(0))})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise StoreError(f"{name} is not valid Unicode (a lone surrogate at index {e.start})") from None
    return value


def check_box(box: Any) -> Box:
    """``(x0, y0, x1, y1)`` as floats: four finite numbers within +-1e6 pixels, x0 <= x1 and y0 <= y1."""
    want = "must be 4 numbers [x0, y0, x1, y1]"
    if isinstance(box, (str, bytes, Mapping)) or not isinstance(box, Sequence) or len(box) != 4:
        raise StoreError(f"box {want}, got {show(box)}")
    out = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise StoreError(f"box {want}, got {show(box)}")
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not abs(f) <= MAX_COORDINATE:  # also NaN
            raise StoreError(f"box coordinates must be finite and within +-{MAX_COORDINATE:g}, got {show(v)}")
        out.append(f)
    x0, y0, x1, y1 = out
    if x0 > x1 or y0 > y1:
        raise StoreError(f"box must have x0 <= x1 and y0 <= y1, got {show(box)}")
    return x0, y0, x1, y1


def check_attributes(attributes: Any, text: str) -> dict[str, Any]:
    """Every schema key with a checked value (a short string or None; a list of them for ``carrying``).

    None: parsed from ``text``. Keys outside the schema are dropped; a null list means an empty one.
    """
    if attributes is None:
        return parse_attributes(text)
    if not isinstance(attributes, Mapping):
        raise StoreError(f"attributes must be a mapping or null, got {show(attributes)}")
    out: dict[str, Any] = {}
    for f in FIELDS:
        value, name = attributes.get(f.key), f"attributes.{f.key}"
        if not f.many:
            out[f.key] = None if value is None else check_string(value, name, MAX_VALUE_CHARS, empty=True)
            continue
        value = [] if value is None else value
        if not isinstance(value, (list, tuple)):
            raise StoreError(f"{name} must be a list of strings, got {show(value)}")
        if len(value) > MAX_ITEMS:
            raise StoreError(f"{name} has {len(value)} values (at most {MAX_ITEMS})")
        out[f.key] = [check_string(v, f"{name}[{i}]", MAX_VALUE_CHARS, empty=True) for i, v in enumerate(value)]
    return out


@functools.lru_cache(maxsize=4096)
def _token(*parts: str) -> str:
    return "".join(re.sub(r"[^a-z0-9]", "", p.lower()) for p in parts)


def attribute_tokens(attributes: Mapping[str, Any]) -> list[str]:
    """Index tokens of parsed attributes: ``uppertypejacket``, ``uppercolorblue``, ``uppertonedark``, ..."""
    out: list[str] = []
    for key in _TOKEN_ATTRS:
        value = attributes.get(key)
        if value:
            out.append(_token(key, "type" if key in COLORED_PARTS else "", str(value)))
    for part in COLORED_PARTS:
        color, shade = attributes.get(f"{part}_color"), attributes.get(f"{part}_shade")
        if color:
            out.append(_token(part, "color", str(color)))
            # "dark" matches a dark-colored garment and a dark blue one alike
            tone = color if color in SHADES else shade
            if tone:
                out.append(_token(part, "tone", str(tone)))
    for item in attributes.get("carrying") or ():
        out.append(_token("carrying", str(item)))
    return out


def camera_token(camera: str) -> str:
    """Index token of a camera id (any string): the camera filter is then an index lookup, not a scan."""
    return "camera" + hashlib.blake2s(camera.encode("utf-8"), digest_size=8).hexdigest()


def query_tokens(attributes: Mapping[str, Any]) -> list[str]:
    """The filter tokens a parsed query asks for (a bare "dark" asks for the tone, not the colour)."""
    tokens = []
    for tok in attribute_tokens(attributes):
        if any(tok == _token(p, "color", s) for p in COLORED_PARTS for s in SHADES):
            continue  # covered by its tone token
        tokens.append(tok)
    return tokens


def validate_record(rec: Record) -> tuple[Record, dict[str, Any]]:
    """Check one record; returns it with complete attributes (parsed from the text when absent)."""
    if not isinstance(rec, Record):
        raise StoreError(f"expected a Record, got {type(rec).__name__}")
    camera = check_string(rec.camera, "camera", MAX_ID_CHARS)
    track = check_string(rec.track, "track", MAX_ID_CHARS)
    text = check_string(rec.text, "text", MAX_TEXT_CHARS, empty=True)
    ts = check_timestamp(rec.timestamp)
    box = None if rec.box is None else check_box(rec.box)
    attrs = check_attributes(rec.attributes, text)
    bundle = None if rec.bundle is None else check_string(rec.bundle, "bundle", MAX_ID_CHARS)
    return Record(camera, track, ts, text, attrs, box, bundle), attrs


def parse_query(text: str) -> Query:
    """Split a natural-language query into attribute filters and ranking words; QueryError when it says nothing."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty query: describe the person, e.g. 'woman in a red jacket with a backpack'")
    check_query_value(text, "query", MAX_QUERY_CHARS)
    attrs = parse_attributes(text)
    filters = tuple(dict.fromkeys(query_tokens(attrs)))
    known = interpreted_words()
    words = tuple(dict.fromkeys(
        w for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS and w not in known and len(w) > 1
    ))
    if not filters and not words:
        raise QueryError(f"query {show(text)} names no attribute or word to search for")
    return Query(text, attrs, filters, words)


def check_query_value(value: Any, name: str, max_chars: int = MAX_ID_CHARS) -> str:
    """:func:`check_string` for a search argument (the query, a camera): QueryError instead of StoreError."""
    try:
        return check_string(value, name, max_chars)
    except StoreError as e:
        raise QueryError(str(e)) from None


def record_rows(records: Iterable[Record]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Validate every record first (one bad record adds nothing); per record the stored columns
    (camera, track, ts, x0, y0, x1, y1, text, attributes JSON, bundle) and its complete attributes."""
    rows = []
    for i, rec in enumerate(records):
        try:
            rec, attrs = validate_record(rec)
        except StoreError as e:
            who = f" ({show(rec.camera)}/{show(rec.track)})" if isinstance(rec, Record) else ""
            raise StoreError(f"record {i}{who}: {e}") from None
        box = rec.box or (None, None, None, None)
        rows.append(((rec.camera, rec.track, rec.timestamp, *box, rec.text,
                      json.dumps(attrs, separators=(",", ":")), rec.bundle), attrs))
    return rows


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _as_attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value, parse_constant=_no_constant)  # NaN would make --json output invalid JSON
        except (ValueError, RecursionError):
            return {}
    return value if isinstance(value, dict) else {}


def hit_from_row(row: Sequence[Any]) -> Hit:
    """A :class:`Hit` from (camera, track, ts, text, attributes_json, x0, y0, x1, y1, bundle, score).

    Never raises on what a column holds: a value of the wrong type (a row from an older writer, or
    written by hand) reads as text, a NaN timestamp, no box or empty attributes, so one bad row cannot
    break a search and its JSON stays valid.
    """
    camera, track, ts, text, attrs, x0, y0, x1, y1, bundle, score = row
    coords = tuple(_as_float(v) for v in (x0, y0, x1, y1))
    box = coords if all(math.isfinite(v) for v in coords) else None
    return Hit(_as_text(camera), _as_text(track), _as_float(ts), _as_text(text), _as_attributes(attrs),
               box, None if bundle is None else _as_text(bundle), _as_float(score or 0.0))  # type: ignore[arg-type]


def collect_tracks(rows: Iterable[Sequence[Any]], limit: int) -> list[Hit]:
    """First row per (camera, track), in the order given, until ``limit`` tracks.

    Rows: (camera, track, ts, text, attributes_json, x0, y0, x1, y1, bundle, score).
    """
    seen: dict[tuple[str, str], Hit] = {}
    for row in rows:
        hit = hit_from_row(row)
        key = (hit.camera, hit.track)
        if key in seen:
            continue
        seen[key] = hit
        if len(seen) >= limit:
            break
    return list(seen.values())


def check_search(camera: str | None, since: float | str | None, limit: int) -> float | None:
    """Check a search's camera and limit; ``since`` as epoch seconds (QueryError/StoreError naming the bad one)."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise QueryError(f"limit must be a positive integer, got {limit!r}")
    if camera is not None:
        check_query_value(camera, "camera")
    return None if since is None else to_timestamp(since)


def open_store(location: str | Path, readonly: bool = False) -> Any:
    """A store for ``location``: ``postgresql://...`` (PostgreSQL) or a SQLite file path (created if absent).

    ``readonly``: only read (search); the location must hold a store already, and nothing is created
    or changed there (a SQLite file is opened read-only).
    """
    loc = str(location)
    if loc.startswith(("postgresql://", "postgres://")):
        from .store_postgres import PostgresStore

        return PostgresStore(loc, readonly=readonly)
    if "://" in loc and not loc.startswith("sqlite://"):
        raise StoreError(f"unknown store URL {show(loc)}: use a SQLite file path or postgresql://...")
    return SQLiteStore(loc.removeprefix("sqlite://"), readonly=readonly)


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
    UNIQUE (camera, track, ts)
);
CREATE INDEX IF NOT EXISTS descriptions_ts ON descriptions (ts);
CREATE VIRTUAL TABLE IF NOT EXISTS descriptions_fts USING fts5 (
    text, attrs, content='', tokenize='unicode61'
);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO store_meta VALUES ('format', '{FORMAT}');
"""
_COLS = "d.camera, d.track, d.ts, d.text, d.attributes, d.x0, d.y0, d.x1, d.y1, d.bundle"
_INSERT = ("INSERT OR IGNORE INTO descriptions (camera, track, ts, x0, y0, x1, y1, text, attributes, bundle, tokens) "
           "VALUES (?,?,?,?,?,?,?,?,?,?,?)")
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


class SQLiteStore:
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

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(target, uri=uri, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None)
        db.text_factory = _decode_text
        return db

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
                db.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
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
        rows = [(*cols, " ".join([*attribute_tokens(attrs), camera_token(cols[0])]))
                for cols, attrs in record_rows(records)]
        if not rows:
            return 0
        with self._lock:
            try:
                return self._insert(rows, progress)
            except sqlite3.Error as e:
                self._abort()
                raise _sqlite_error(self.path, e, "ingest failed, nothing was stored", writing=True) from None
            except BaseException:
                self._abort()
                raise

    def _insert(self, rows: list[tuple[Any, ...]], progress: Progress | None) -> int:
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
        db.execute("COMMIT")
        return added

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

    def search(self, query: str, camera: str | None = None, since: float | str | None = None,
               limit: int = 10) -> list[Hit]:
        """Tracks matching ``query`` (best first), each with its best description; ``since``: epoch seconds.

        Hits that contain the query's other words come first, ranked by the share of those words
        they contain, among the newest :data:`RANK_WINDOW` such candidates; then the other rows
        matching the filters, newest first.
        """
        since = check_search(camera, since, limit)
        q = parse_query(query)
        filters = [*q.filters, *([camera_token(camera)] if camera is not None else [])]
        attrs_expr = " AND ".join(f'"{t}"' for t in filters)
        where, params = [], []
        if camera is not None:
            where.append("d.camera = ?")
            params.append(camera)
        if since is not None:
            where.append("d.ts >= ?")
            params.append(since)
        extra = "".join(f" AND {w}" for w in where)
        with self._lock:
            try:
                hits = self._ranked(q, attrs_expr, extra, params, limit) if q.words else []
                if len(hits) < limit and attrs_expr:
                    # Then rows matching the filters only, newest first (FTS5 streams rowid order without sorting).
                    sql = (f"SELECT {_COLS}, 0.0 FROM descriptions_fts f JOIN descriptions d ON d.id = f.rowid "
                           f"WHERE descriptions_fts MATCH ?{extra} ORDER BY f.rowid DESC")
                    have = {(h.camera, h.track) for h in hits}
                    more = self._tracks(sql, [f"{{attrs}}: ({attrs_expr})", *params], limit + len(hits))
                    hits += [h for h in more if (h.camera, h.track) not in have][: limit - len(hits)]
            except sqlite3.Error as e:
                raise _sqlite_error(self.path, e, "search failed") from None
        return hits

    def _ranked(self, q: Query, attrs_expr: str, extra: str, params: list[Any], limit: int) -> list[Hit]:
        """Rows that also contain a query word: the newest RANK_WINDOW of them, ranked by the share of the
        query's words they contain (newest first among equals)."""
        # SQLite's bm25() would cost a scan of every filter token's posting list per query (its IDF):
        # 10-40 ms at 1M rows.
        text_expr = " OR ".join(f'"{w}"' for w in q.words)
        match = f"{{attrs}}: ({attrs_expr}) AND {{text}}: ({text_expr})" if attrs_expr else f"{{text}}: ({text_expr})"
        sql = (f"SELECT d.id, d.camera, d.track, d.text FROM descriptions_fts f JOIN descriptions d "
               f"ON d.id = f.rowid WHERE descriptions_fts MATCH ?{extra} ORDER BY f.rowid DESC LIMIT {RANK_WINDOW}")
        rows = self._db.execute(sql, [match, *params]).fetchall()
        words = set(q.words)

        def share(text: Any) -> float:
            return len(words.intersection(_WORD_RE.findall(_as_text(text).lower()))) / len(words)

        best: dict[tuple[Any, Any], int] = {}  # track -> id of its best row, best tracks first
        for rid, cam, track, _ in sorted(rows, key=lambda r: -share(r[3])):  # stable: newest first among equals
            if len(best) >= limit:
                break
            best.setdefault((cam, track), rid)
        if not best:
            return []
        ids = list(best.values())
        full = {r[0]: r[1:] for r in self._db.execute(
            f"SELECT d.id, {_COLS} FROM descriptions d WHERE d.id IN ({','.join('?' * len(ids))})", ids)}
        return collect_tracks([(*full[i], share(full[i][3])) for i in ids], limit)

    def _tracks(self, sql: str, params: list[Any], limit: int) -> list[Hit]:
        cur = self._db.execute(sql, params)

        def rows() -> Iterable[tuple]:
            while True:
                page = cur.fetchmany(_PAGE)
                if not page:
                    return
                yield from page

        try:
            return collect_tracks(rows(), limit)
        finally:
            cur.close()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
