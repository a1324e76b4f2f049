"""Description store: descriptions with camera, track, time and box, searched by natural language.

One API over two engines: SQLite with FTS5 (embedded default, standard library) and PostgreSQL
(``runtime.store_postgres``, for fleets with several writer nodes). :func:`open_store` picks by URL.

A query ("woman in a red jacket with a backpack") is parsed by :func:`runtime.attributes.parse_attributes`
into attribute filters, which every hit must match, and the query's other words ("glasses",
"stripes"), which rank hits by full-text relevance. Attributes are indexed as tokens
(``uppercolorred``, ``carryingbackpack``, ...) so a filter is an inverted-index intersection, not a
scan. Search returns tracks, each with its best description.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from .attribute_schema import COLORED_PARTS, FIELDS, SHADES, empty_attributes
from .attributes import interpreted_words, parse_attributes

Box = tuple[float, float, float, float]

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
RANK_WINDOW = 1000  # newest candidates that contain a query word, ranked (see SQLiteStore.search)


class StoreError(ValueError):
    """A record or store location that cannot be used (the message names it)."""


class QueryError(ValueError):
    """A search query that cannot be run (the message says why)."""


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
            raise StoreError(f"description of track {track!r} has an error: {description.error}")
        return cls(camera, str(track), to_timestamp(timestamp), description.text, description.attributes,
                   None if box is None else tuple(box), bundle)


@dataclass(frozen=True)
class Hit:
    """One track found by a search, with its best-matching description."""

    camera: str
    track: str
    timestamp: float
    text: str
    attributes: dict[str, Any]
    box: Box | None
    bundle: str | None
    score: float  # higher is better; 0.0 when the query has no words to rank by

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamp also as ISO 8601)."""
        return {"camera": self.camera, "track": self.track, "timestamp": self.timestamp,
                "time": datetime.fromtimestamp(self.timestamp, timezone.utc).isoformat(), "text": self.text,
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

    def add(self, records: Iterable[Record]) -> int: ...
    def search(self, query: str, camera: str | None = None, since: float | None = None,
               limit: int = 10) -> list[Hit]: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def to_timestamp(value: float | int | str | datetime) -> float:
    """Seconds since the epoch from a number, an ISO 8601 string (naive means UTC) or a datetime."""
    if isinstance(value, bool):
        raise StoreError(f"timestamp must be a number or ISO 8601 time, got {value!r}")
    if isinstance(value, (int, float)):
        ts = float(value)
    elif isinstance(value, datetime):
        ts = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    elif isinstance(value, str):
        try:
            ts = float(value)
        except ValueError:
            try:
                dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise StoreError(f"timestamp {value!r} is neither seconds since the epoch nor ISO 8601") from None
            ts = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    else:
        raise StoreError(f"timestamp must be a number or ISO 8601 time, got {type(value).__name__}")
    if not math.isfinite(ts):
        raise StoreError(f"timestamp must be finite, got {value!r}")
    return ts


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


def parse_query(text: str) -> Query:
    """Split a natural-language query into attribute filters and ranking words; QueryError when it says nothing."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty query: describe the person, e.g. 'woman in a red jacket with a backpack'")
    attrs = parse_attributes(text)
    filters = tuple(dict.fromkeys(query_tokens(attrs)))
    known = interpreted_words()
    words = tuple(dict.fromkeys(
        w for w in _WORD_RE.findall(text.lower()) if w not in _STOPWORDS and w not in known and len(w) > 1
    ))
    if not filters and not words:
        raise QueryError(f"query {text!r} names no attribute or word to search for")
    return Query(text, attrs, filters, words)


def validate_record(rec: Record) -> tuple[Record, dict[str, Any]]:
    """Check one record; returns it with complete attributes (parsed from the text when absent)."""
    if not isinstance(rec, Record):
        raise StoreError(f"expected a Record, got {type(rec).__name__}")
    for name in ("camera", "track"):
        value = getattr(rec, name)
        if not isinstance(value, str) or not value:
            raise StoreError(f"{name} must be a non-empty string, got {value!r}")
    if not isinstance(rec.text, str):
        raise StoreError(f"text of {rec.camera}/{rec.track} must be a string, got {type(rec.text).__name__}")
    ts = to_timestamp(rec.timestamp)
    if rec.box is not None:
        box = rec.box
        if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            raise StoreError(f"box of {rec.camera}/{rec.track} must be 4 finite numbers (x0, y0, x1, y1), got {box!r}")
        box = tuple(float(v) for v in box)
    else:
        box = None
    if rec.attributes is None:
        attrs = parse_attributes(rec.text)
    elif isinstance(rec.attributes, Mapping):
        attrs = {k: rec.attributes.get(k, empty) for k, empty in empty_attributes().items()}
        if not isinstance(attrs["carrying"], list):
            raise StoreError(f"attributes.carrying of {rec.camera}/{rec.track} must be a list")
    else:
        raise StoreError(f"attributes of {rec.camera}/{rec.track} must be a mapping or None")
    if rec.bundle is not None and not isinstance(rec.bundle, str):
        raise StoreError(f"bundle must be a string or None, got {rec.bundle!r}")
    return Record(rec.camera, rec.track, ts, rec.text, attrs, box, rec.bundle), attrs


def record_rows(records: Iterable[Record]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Validate every record first (one bad record adds nothing); per record the stored columns
    (camera, track, ts, x0, y0, x1, y1, text, attributes JSON, bundle) and its complete attributes."""
    rows = []
    for rec in records:
        rec, attrs = validate_record(rec)
        box = rec.box or (None, None, None, None)
        rows.append(((rec.camera, rec.track, rec.timestamp, *box, rec.text,
                      json.dumps(attrs, separators=(",", ":")), rec.bundle), attrs))
    return rows


def collect_tracks(rows: Iterable[tuple], limit: int) -> list[Hit]:
    """First row per (camera, track), in the order given, until ``limit`` tracks.

    Rows: (camera, track, ts, text, attributes_json, x0, y0, x1, y1, bundle, score).
    """
    seen: dict[tuple[str, str], Hit] = {}
    for camera, track, ts, text, attrs, x0, y0, x1, y1, bundle, score in rows:
        key = (camera, track)
        if key in seen:
            continue
        box = None if x0 is None else (x0, y0, x1, y1)
        attrs = json.loads(attrs) if isinstance(attrs, str) else attrs
        seen[key] = Hit(camera, track, ts, text, attrs, box, bundle, float(score or 0.0))
        if len(seen) >= limit:
            break
    return list(seen.values())


def open_store(location: str | Path) -> Any:
    """A store for ``location``: ``postgresql://...`` (PostgreSQL) or a SQLite file path (created if absent)."""
    loc = str(location)
    if loc.startswith(("postgresql://", "postgres://")):
        from .store_postgres import PostgresStore

        return PostgresStore(loc)
    if "://" in loc and not loc.startswith("sqlite://"):
        raise StoreError(f"unknown store URL {loc!r}: use a SQLite file path or postgresql://...")
    return SQLiteStore(loc.removeprefix("sqlite://"))


_SCHEMA = """
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
INSERT OR IGNORE INTO store_meta VALUES ('format', 'pvlm-store/1');
"""


class SQLiteStore:
    """SQLite + FTS5 store in one file (``":memory:"`` for a throwaway one). Thread-safe (one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"store {self.path}: directory {parent} does not exist")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            fmt = self._db.execute("SELECT value FROM store_meta WHERE key='format'").fetchone()
        except sqlite3.DatabaseError as e:
            raise StoreError(f"store {self.path}: not a description store ({e})") from None
        if fmt is None or fmt[0] != "pvlm-store/1":
            raise StoreError(f"store {self.path}: unknown format {fmt!r}")
        self._lock = threading.Lock()

    def add(self, records: Iterable[Record]) -> int:
        """Insert records in one transaction; a (camera, track, timestamp) already stored is skipped.

        Returns how many were new. Every record is validated first: one bad record adds nothing.
        """
        rows = [(*cols, " ".join([*attribute_tokens(attrs), camera_token(cols[0])]))
                for cols, attrs in record_rows(records)]
        if not rows:
            return 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                # New rows get ids above the current maximum (rows are never deleted), so the full-text
                # index is filled from them in one statement instead of a round trip per row.
                last = db.execute("SELECT coalesce(max(id), 0) FROM descriptions").fetchone()[0]
                before = db.total_changes
                db.executemany(
                    "INSERT OR IGNORE INTO descriptions (camera, track, ts, x0, y0, x1, y1, text, attributes, bundle, "
                    "tokens) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                added = db.total_changes - before
                db.execute("INSERT INTO descriptions_fts (rowid, text, attrs) "
                           "SELECT id, text, tokens FROM descriptions WHERE id > ?", (last,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return added

    def count(self) -> int:
        """Number of stored descriptions."""
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM descriptions").fetchone()[0])

    def search(self, query: str, camera: str | None = None, since: float | None = None,
               limit: int = 10) -> list[Hit]:
        """Tracks matching ``query`` (best first), each with its best description; ``since``: epoch seconds.

        Hits that contain the query's other words come first, ranked by the share of those words
        they contain, among the newest :data:`RANK_WINDOW` such candidates; then the other rows
        matching the filters, newest first.
        """
        if not isinstance(limit, int) or limit < 1:
            raise QueryError(f"limit must be a positive integer, got {limit!r}")
        q = parse_query(query)
        filters = [*q.filters, *([camera_token(camera)] if camera is not None else [])]
        attrs_expr = " AND ".join(f'"{t}"' for t in filters)
        text_expr = " OR ".join(f'"{w}"' for w in q.words)
        where, params = [], []
        if camera is not None:
            where.append("d.camera = ?")
            params.append(camera)
        if since is not None:
            where.append("d.ts >= ?")
            params.append(to_timestamp(since))
        extra = "".join(f" AND {w}" for w in where)
        cols = "d.camera, d.track, d.ts, d.text, d.attributes, d.x0, d.y0, d.x1, d.y1, d.bundle"
        hits: list[Hit] = []
        with self._lock:
            if text_expr:
                # Rows that also contain a query word: the newest RANK_WINDOW of them, ranked by the share of
                # the query's words they contain (newest first among equals). SQLite's bm25() would cost a
                # scan of every filter token's posting list per query (its IDF): 10-40 ms at 1M rows.
                match = f"{{attrs}}: ({attrs_expr}) AND {{text}}: ({text_expr})" if attrs_expr else (
                    f"{{text}}: ({text_expr})")
                sql = (f"SELECT d.id, d.camera, d.track, d.text FROM descriptions_fts f JOIN descriptions d "
                       f"ON d.id = f.rowid WHERE descriptions_fts MATCH ?{extra} ORDER BY f.rowid DESC "
                       f"LIMIT {RANK_WINDOW}")
                try:
                    rows = self._db.execute(sql, [match, *params]).fetchall()
                except sqlite3.OperationalError as e:
                    raise QueryError(f"search failed: {e}") from None
                words = set(q.words)
                scored = sorted(rows, key=lambda r: -len(words.intersection(_WORD_RE.findall(r[3].lower()))))
                best: dict[tuple[str, str], int] = {}  # track -> id of its best row, best tracks first
                for rid, cam, track, _ in scored:  # stable sort: newest first among equal scores
                    if len(best) >= limit:
                        break
                    best.setdefault((cam, track), rid)
                if best:
                    ids = list(best.values())
                    full = {r[0]: r[1:] for r in self._db.execute(
                        f"SELECT d.id, {cols} FROM descriptions d WHERE d.id IN ({','.join('?' * len(ids))})", ids)}
                    hits = collect_tracks([(*full[i], len(words.intersection(_WORD_RE.findall(full[i][3].lower())))
                                            / len(words)) for i in ids], limit)
            if len(hits) < limit and attrs_expr:
                # Then rows matching the filters only, newest first (FTS5 streams rowid order without sorting).
                sql = (f"SELECT {cols}, 0.0 FROM descriptions_fts f JOIN descriptions d ON d.id = f.rowid "
                       f"WHERE descriptions_fts MATCH ?{extra} ORDER BY f.rowid DESC")
                have = {(h.camera, h.track) for h in hits}
                more = self._tracks(sql, [f"{{attrs}}: ({attrs_expr})", *params], limit + len(hits))
                hits += [h for h in more if (h.camera, h.track) not in have][: limit - len(hits)]
        return hits

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
        except sqlite3.OperationalError as e:
            raise QueryError(f"search failed: {e}") from None
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
