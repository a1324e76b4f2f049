"""What the description store holds and how it is checked: records, hits, queries, limits, tokens.

A record may also carry what a bundle with attribute heads writes inside ``attributes`` (:data:`HEAD_KEYS`:
the calibrated ``probabilities``, ``abstained`` fields, ...) and its n-best ``alternatives``; both are checked
like the rest, an abstained field is never indexed, and the probability of each stated value is stored on its
own for ranking (:func:`stated_probabilities`).

Every value is checked at the door (:func:`validate_record`): what the store accepts, it can read
back and print. Reading is defensive too (:func:`hit_from_row`), so a row written by an older version
cannot break a search. Both engines (:mod:`runtime.search.sqlite`, :mod:`runtime.search.postgres`)
build on this module.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import reprlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from ..attribute_schema import COLORED_PARTS, FIELD, FIELDS, SHADES
from ..attributes import parse_attributes

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
MAX_ALTERNATIVES = 16  # n-best sequences of one description
MAX_HEAD_VALUES = 64  # values of one field's distribution in ``probabilities``
MAX_QUERY_CHARS = 2_000
MAX_OFFSET = 10_000  # tracks a search may page past
FORMAT = "pvlm-store/1"

WORD_RE = re.compile(r"[a-z0-9]+")
# one-valued fields indexed as they are: upper, lower, headwear, posture, view, gender, age
_TOKEN_ATTRS = tuple(f.key for f in FIELDS if f.kind == "item" and not f.many)
# What a bundle with attribute heads adds to ``attributes`` (runtime.attribute_confidence.combine), kept as checked.
HEAD_KEYS = ("probabilities", "heads", "text", "confidence", "disagreements", "abstained")
UNKNOWN = "unknown"  # a value an abstaining writer may state instead of null: never indexed


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
    # n-best sequences, best first: {"text", "score", "attributes"} each (pvlm-describe's ``alternatives``); the
    # shown text is left out when indexed, the others are searchable alternatives
    alternatives: Sequence[Mapping[str, Any]] | None = None

    @classmethod
    def from_description(cls, description: Any, camera: str, track: str, timestamp: float | str | datetime,
                         box: Sequence[float] | None = None, bundle: str | None = None) -> Record:
        """A record from a :class:`runtime.Description` (its text, attributes with any probabilities, and n-best)."""
        if getattr(description, "error", None):
            raise StoreError(f"description of track {show(track)} has an error: {description.error}")
        alts = [{"text": a.text, "score": a.score, "attributes": a.attributes}
                for a in getattr(description, "alternatives", None) or ()]
        return cls(camera, str(track), to_timestamp(timestamp), description.text, description.attributes,
                   None if box is None else check_box(box), bundle, alts or None)


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
    score: float  # higher is better: attribute points plus text relevance (see runtime.search.rank)
    matched: tuple[str, ...] = ()  # labels of the query terms this description matched
    # label of a matched attribute term -> the stored probability it was weighed by (terms with one only)
    match_confidence: Mapping[str, float] = field(default_factory=dict)
    # set when only an n-best alternative matched: {"rank": position in the n-best list (0: best), "text": ...}
    alternative: Mapping[str, Any] | None = None

    @property
    def time(self) -> str | None:
        """The timestamp as ISO 8601 UTC, or None when it is outside what a date can show."""
        return iso_time(self.timestamp)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamp also as ISO 8601; both null when the stored time is unreadable)."""
        ts = self.timestamp if math.isfinite(self.timestamp) else None
        return {"camera": self.camera, "track": self.track, "timestamp": ts, "time": self.time, "text": self.text,
                "attributes": self.attributes, "box": self.box, "bundle": self.bundle, "score": self.score,
                "matched": list(self.matched), "match_confidence": dict(self.match_confidence),
                "alternative": None if self.alternative is None else dict(self.alternative)}


class Store(Protocol):
    """What both engines provide."""

    def add(self, records: Iterable[Record], progress: Progress | None = None) -> int: ...
    def search(self, query: str, camera: str | None = None, since: float | str | None = None,
               limit: int = 10, until: float | str | None = None, offset: int = 0,
               drop: Iterable[str] = ()) -> list[Hit]: ...
    def page(self, query: str, camera: str | None = None, since: float | str | None = None,
             until: float | str | None = None, offset: int = 0, limit: int = 10, drop: Iterable[str] = (),
             count_rows: int = 0) -> Page: ...
    def track(self, camera: str, track: str, limit: int = 1000) -> list[Hit]: ...
    def spans(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[float, float, int]]: ...
    def cameras(self, limit: int = 1000) -> list[str]: ...
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


def _number(value: Any) -> float | None:
    """``value`` as a float when it is an int or float (not a bool; an int too large for a float is inf), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def check_box(box: Any) -> Box:
    """``(x0, y0, x1, y1)`` as floats: four finite numbers within +-1e6 pixels, x0 <= x1 and y0 <= y1."""
    want = "must be 4 numbers [x0, y0, x1, y1]"
    if isinstance(box, (str, bytes, Mapping)) or not isinstance(box, Sequence) or len(box) != 4:
        raise StoreError(f"box {want}, got {show(box)}")
    out = []
    for v in box:
        f = _number(v)
        if f is None:
            raise StoreError(f"box {want}, got {show(box)}")
        if not abs(f) <= MAX_COORDINATE:  # also NaN
            raise StoreError(f"box coordinates must be finite and within +-{MAX_COORDINATE:g}, got {show(v)}")
        out.append(f)
    x0, y0, x1, y1 = out
    if x0 > x1 or y0 > y1:
        raise StoreError(f"box must have x0 <= x1 and y0 <= y1, got {show(box)}")
    return x0, y0, x1, y1


def check_attributes(attributes: Any, text: str, heads: bool = True) -> dict[str, Any]:
    """Every schema key with a checked value (a short string or None; a list of them for ``carrying``), and the
    checked keys of :data:`HEAD_KEYS` that are present (``heads``: read them; a nested ``text`` has none).

    None: parsed from ``text``. Other keys outside the schema are dropped; a null list means an empty one.
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
    if heads:
        out.update(_check_head_keys(attributes))
    return out


def _probability(value: Any, name: str) -> float:
    p = _number(value)
    if p is None:
        raise StoreError(f"{name} must be a probability (a number from 0 to 1), got {show(value)}")
    if not 0.0 <= p <= 1.0:  # also NaN
        raise StoreError(f"{name} must be a probability from 0 to 1, got {show(value)}")
    return p


def _by_field(value: Any, name: str) -> dict[str, Any]:
    """A mapping keyed by field names, its keys checked as strings; keys outside the schema are dropped."""
    if not isinstance(value, Mapping):
        raise StoreError(f"{name} must be an object, got {show(value)}")
    if len(value) > MAX_HEAD_VALUES:
        raise StoreError(f"{name} has {len(value)} keys (at most {MAX_HEAD_VALUES})")
    for key in value:
        check_string(key, f"a key of {name}", MAX_VALUE_CHARS)
    return {k: v for k, v in value.items() if k in FIELD}


def _distribution(dist: Any, name: str) -> dict[str, float]:
    if not isinstance(dist, Mapping):
        raise StoreError(f"{name} must be an object of value: probability, got {show(dist)}")
    if len(dist) > MAX_HEAD_VALUES:
        raise StoreError(f"{name} has {len(dist)} values (at most {MAX_HEAD_VALUES})")
    return {check_string(v, f"a value of {name}", MAX_VALUE_CHARS): _probability(p, f"{name}[{v!r}]")
            for v, p in dist.items()}


def _field_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, (list, tuple)):
        raise StoreError(f"{name} must be a list of field names, got {show(value)}")
    if len(value) > MAX_HEAD_VALUES:
        raise StoreError(f"{name} has {len(value)} items (at most {MAX_HEAD_VALUES})")
    return [v for i, v in enumerate(value) if check_string(v, f"{name}[{i}]", MAX_VALUE_CHARS) in FIELD]


def _check_head_keys(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of :data:`HEAD_KEYS` that ``attributes`` holds (null ones are left out), each checked."""
    out: dict[str, Any] = {}
    for key in HEAD_KEYS:
        value, name = attributes.get(key), f"attributes.{key}"
        if value is None:
            continue
        if key == "probabilities":
            out[key] = {k: _distribution(d, f"{name}.{k}") for k, d in _by_field(value, name).items()}
        elif key == "heads":
            out[key] = {k: check_string(v, f"{name}.{k}", MAX_VALUE_CHARS) for k, v in _by_field(value, name).items()}
        elif key == "confidence":
            out[key] = {k: None if p is None else _probability(p, f"{name}.{k}")
                        for k, p in _by_field(value, name).items()}
        elif key == "text":
            if not isinstance(value, Mapping):
                raise StoreError(f"{name} must be an object, got {show(value)}")
            out[key] = check_attributes(value, "", heads=False)
        else:
            out[key] = _field_list(value, name)
    return out


def _score(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreError(f"{name} must be a finite number or null, got {show(value)}")
    return float(value)


def check_alternatives(value: Any, text: str) -> list[dict[str, Any]]:
    """The n-best sequences, best first, checked: ``{"text", "score", "attributes"}`` each (attributes complete,
    parsed from the text when absent). Checking the result again gives it back unchanged."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise StoreError(f"alternatives must be a list of objects, got {show(value)}")
    if len(value) > MAX_ALTERNATIVES:
        raise StoreError(f"alternatives has {len(value)} sequences (at most {MAX_ALTERNATIVES})")
    out = []
    for i, alt in enumerate(value):
        name = f"alternatives[{i}]"
        if not isinstance(alt, Mapping):
            raise StoreError(f"{name} must be an object with text, score and attributes, got {show(alt)}")
        alt_text = check_string(alt.get("text"), f"{name}.text", MAX_TEXT_CHARS, empty=True)
        score = _score(alt.get("score"), f"{name}.score")
        try:
            attrs = check_attributes(alt.get("attributes"), alt_text)
        except StoreError as e:
            raise StoreError(f"{name}.{e}") from None
        out.append({"text": alt_text, "score": score, "attributes": attrs})
    return out


def searchable_alternatives(alternatives: Sequence[Mapping[str, Any]], text: str) -> list[dict[str, Any]]:
    """The checked n-best list's sequences to index as alternatives, each with its ``rank`` (position in the list,
    0: best): the shown ``text``, empty texts and repeats are left out."""
    out, seen = [], {text, ""}
    for i, alt in enumerate(alternatives):
        if alt["text"] not in seen:
            seen.add(alt["text"])
            out.append({"rank": i, **alt})
    return out


def stated_probabilities(attributes: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """``{field: {stated value: probability}}`` of the stated values the heads give a probability for (what
    ranking reads, stored beside the attributes); None when there is none."""
    probs = attributes.get("probabilities")
    if not isinstance(probs, Mapping):
        return None
    skip = set(attributes.get("abstained") or ())
    out = {}
    for key, dist in probs.items():
        stated = attributes.get(key)
        values = stated if isinstance(stated, list) else [stated] if stated else []
        got = {v: dist[v] for v in values if v in dist} if key not in skip else {}
        if got:
            out[key] = got
    return out or None


@functools.lru_cache(maxsize=4096)
def _token(*parts: str) -> str:
    return "".join(re.sub(r"[^a-z0-9]", "", p.lower()) for p in parts)


def _stated(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    """``attributes`` without what the writer abstained on: a field listed under ``abstained`` (and the shade of an
    abstained colour) or stated as :data:`UNKNOWN` reads as unknown."""
    abstained = attributes.get("abstained") or ()
    if not abstained and UNKNOWN not in attributes.values():
        return attributes
    out = {k: (None if v == UNKNOWN else v) for k, v in attributes.items()}
    for key in abstained:
        out[key] = [] if key in FIELD and FIELD[key].many else None
    for part in COLORED_PARTS:
        if out.get(f"{part}_color") is None and f"{part}_color" in abstained:
            out[f"{part}_shade"] = None
    return out


def attribute_tokens(attributes: Mapping[str, Any]) -> list[str]:
    """Index tokens of parsed attributes: ``uppertypejacket``, ``uppercolorblue``, ``uppertonedark``, ...; nothing
    for a field the writer abstained on (it matches no filter)."""
    attributes = _stated(attributes)
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
        if item != UNKNOWN:
            out.append(_token("carrying", str(item)))
    return out


def attribute_token(key: str, value: str) -> str:
    """The index token of one attribute value, as :func:`attribute_tokens` writes it (``upper_shade`` -> tone)."""
    part, _, kind = key.partition("_")
    if kind == "color":
        return _token(part, "color", value)
    if kind == "shade":
        return _token(part, "tone", value)
    return _token(key, "type" if key in COLORED_PARTS else "", value)


def camera_token(camera: str) -> str:
    """Index token of a camera id (any string): the camera filter is then an index lookup, not a scan."""
    return "camera" + hashlib.blake2s(camera.encode("utf-8"), digest_size=8).hexdigest()


def validate_record(rec: Record) -> tuple[Record, dict[str, Any]]:
    """Check one record; returns it with complete attributes (parsed from the text when absent) and its checked
    alternatives (:func:`check_alternatives`)."""
    if not isinstance(rec, Record):
        raise StoreError(f"expected a Record, got {type(rec).__name__}")
    camera = check_string(rec.camera, "camera", MAX_ID_CHARS)
    track = check_string(rec.track, "track", MAX_ID_CHARS)
    text = check_string(rec.text, "text", MAX_TEXT_CHARS, empty=True)
    ts = check_timestamp(rec.timestamp)
    box = None if rec.box is None else check_box(rec.box)
    attrs = check_attributes(rec.attributes, text)
    bundle = None if rec.bundle is None else check_string(rec.bundle, "bundle", MAX_ID_CHARS)
    alts = check_alternatives(rec.alternatives, text)
    return Record(camera, track, ts, text, attrs, box, bundle, alts or None), attrs


def check_query_value(value: Any, name: str, max_chars: int = MAX_ID_CHARS) -> str:
    """:func:`check_string` for a search argument (the query, a camera): QueryError instead of StoreError."""
    try:
        return check_string(value, name, max_chars)
    except StoreError as e:
        raise QueryError(str(e)) from None


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def record_rows(records: Iterable[Record]) -> list[tuple[tuple[Any, ...], dict[str, Any], list[dict[str, Any]]]]:
    """Validate every record first (one bad record adds nothing); per record the stored columns
    (camera, track, ts, x0, y0, x1, y1, text, attributes JSON, bundle, stated probabilities JSON or None), its
    complete attributes and its checked alternatives."""
    rows = []
    for i, rec in enumerate(records):
        try:
            rec, attrs = validate_record(rec)
        except StoreError as e:
            who = f" ({show(rec.camera)}/{show(rec.track)})" if isinstance(rec, Record) else ""
            raise StoreError(f"record {i}{who}: {e}") from None
        box = rec.box or (None, None, None, None)
        rows.append(((rec.camera, rec.track, rec.timestamp, *box, rec.text, _json(attrs), rec.bundle,
                      _json(stated_probabilities(attrs))), attrs,
                     searchable_alternatives(rec.alternatives or (), rec.text)))
    return rows


def alternative_rows(description: int, cols: Sequence[Any], alternatives: Sequence[Mapping[str, Any]]
                     ) -> list[tuple[Any, ...]]:
    """Stored columns of a description's alternatives: (description id, rank, camera, track, ts, text, attributes
    JSON, score, stated probabilities JSON); ``cols`` are the description's own (:func:`record_rows`)."""
    return [(description, a["rank"], cols[0], cols[1], cols[2], a["text"], _json(a["attributes"]), a["score"],
             _json(stated_probabilities(a["attributes"]))) for a in alternatives]


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def as_text(value: Any) -> str:
    """A stored value as text: bytes decoded (invalid UTF-8 replaced), None as "", anything else str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def as_attributes(value: Any) -> dict[str, Any]:
    """Stored attributes as a dict: JSON text parsed (NaN refused), anything unreadable as {}."""
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
    return Hit(as_text(camera), as_text(track), _as_float(ts), as_text(text), as_attributes(attrs),
               box, None if bundle is None else as_text(bundle), _as_float(score or 0.0))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Scope:
    """Where a search looks and which page it returns: a camera, a time range (epoch seconds, both ends
    included), and ``offset``/``limit`` in tracks."""

    camera: str | None = None
    since: float | None = None
    until: float | None = None
    offset: int = 0
    limit: int = 10

    @property
    def need(self) -> int:
        """Tracks to collect: the page and every one before it."""
        return self.offset + self.limit


@dataclass(frozen=True)
class Page:
    """One page of a search: the parsed query, its hits, and how many tracks match (``total``: counted
    among the descriptions read, a lower bound when ``capped``); ``more``: a next page exists."""

    query: Any  # runtime.search.query.Query
    hits: list[Hit]
    total: int
    capped: bool
    more: bool


def _count_arg(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise QueryError(f"{name} must be an integer from {low} to {high}, got {show(value)}")
    return value


def check_search(camera: str | None, since: float | str | None, limit: int, until: float | str | None = None,
                 offset: int = 0) -> Scope:
    """A search's checked scope (QueryError/StoreError naming the bad argument); times as epoch seconds."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise QueryError(f"limit must be a positive integer, got {limit!r}")
    _count_arg(offset, "offset", 0, MAX_OFFSET)
    if camera is not None:
        check_query_value(camera, "camera")
    lo = None if since is None else to_timestamp(since)
    hi = None if until is None else to_timestamp(until)
    return Scope(camera, lo, hi, offset, limit)
