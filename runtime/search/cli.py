"""``pvlm-index`` (store ``pvlm-describe --json`` lines) and ``pvlm-search`` (find tracks by description)."""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from ..cli_common import CONTEXT_SETTINGS, Command, CommandError, CommandFailure, common_options, echo_error, \
    first_line

log = logging.getLogger(__name__)

DEFAULT_DB = "descriptions.db"
_DB_HELP = "SQLite file or postgresql:// URL (default: $PVLM_STORE or descriptions.db)."
_BAR_FROM = 5000  # records: smaller ingests take no time worth a progress bar
_MAX_REPORTED = 10
MAX_LINE_BYTES = 1 << 20
_MAX_INT_DIGITS = 30  # longer integers are refused while parsing (no field needs them)
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _db_location(db: str | None) -> str:
    return db or os.environ.get("PVLM_STORE") or DEFAULT_DB


def _shown(location: str) -> str:
    from .postgres import redact

    return redact(location)


def _open(db: str | None, readonly: bool) -> Any:
    from . import open_store
    from .records import StoreError, StoreUnavailable

    loc = _db_location(db)
    if readonly and "://" not in loc and not Path(loc).exists():
        raise CommandError(f"store {loc} does not exist (create it with pvlm-index)")
    try:
        return open_store(loc, readonly=readonly)
    except StoreUnavailable as e:
        raise CommandFailure(first_line(e)) from None
    except (StoreError, ImportError) as e:
        raise CommandError(first_line(e)) from None
    except Exception as e:  # anything else the driver raises while connecting
        raise CommandFailure(f"cannot open store {_shown(loc)}: {first_line(e)}") from None


def plain(text: str) -> str:
    """``text`` as one tab-separated field: backslash, tab, line breaks and other control characters escaped."""
    return _UNPRINTABLE.sub(lambda m: _ESCAPES.get(m[0]) or f"\\u{ord(m[0]):04x}", text)


def _id(obj: dict[str, Any], key: str, default: Any) -> Any:
    """A camera or track id from the line: null is absent; an integer becomes its digits."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        from .records import StoreError, show

        raise StoreError(f"'{key}' must be a string or an integer, got {show(value)}")
    return value


def _bundle(obj: dict[str, Any], default: str | None) -> Any:
    """``bundle_id`` (what ``pvlm-describe --json`` writes) or ``bundle``; both must agree when both are given."""
    from .records import StoreError, show

    given = [(k, obj[k]) for k in ("bundle_id", "bundle") if obj.get(k) is not None]
    for key, value in given:
        if not isinstance(value, str):
            raise StoreError(f"'{key}' must be a string, got {show(value)}")
    if len(given) == 2 and given[0][1] != given[1][1]:
        raise StoreError("'bundle_id' and 'bundle' disagree")
    return given[0][1] if given else default


def _image_time(image: Any) -> float | None:
    if not isinstance(image, str) or not image:
        return None
    try:
        return Path(image).stat().st_mtime if Path(image).is_file() else None
    except (OSError, ValueError):  # ValueError: a NUL or lone surrogate in the path
        return None


def record_from_line(obj: Any, camera: str, bundle: str | None, timestamp: str | None) -> Any:
    """A :class:`runtime.search.Record` from one ``pvlm-describe --json`` object (plus camera/track/time keys).

    Missing (or null) ``camera``/``bundle_id``/``timestamp`` come from the arguments (``bundle`` is
    read too); a missing ``track`` is the image file's stem; a missing timestamp falls back to the
    image file's modification time. ``alternatives`` (n-best) are kept as searchable alternatives.
    """
    from .records import Record, StoreError, show

    if not isinstance(obj, dict):
        raise StoreError(f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise StoreError("no 'text' (a string) in the line")
    image = obj.get("image")
    track = _id(obj, "track", Path(image).stem if isinstance(image, str) and image else None)
    if track is None:
        raise StoreError("no 'track' in the line and no 'image' to name one after")
    ts = obj.get("timestamp")
    ts = timestamp if ts is None else ts
    ts = _image_time(image) if ts is None else ts
    if ts is None:
        raise StoreError("no 'timestamp' in the line, no --timestamp, and no image file to date it by")
    attrs = obj.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        raise StoreError("'attributes' must be an object")
    box = obj.get("box")
    if box is not None and (not isinstance(box, list) or len(box) != 4):
        raise StoreError(f"'box' must be [x0, y0, x1, y1], got {show(box)}")
    alternatives = obj.get("alternatives")
    if alternatives is not None and not isinstance(alternatives, list):
        raise StoreError(f"'alternatives' must be a list, got {show(alternatives)}")
    return Record(_id(obj, "camera", camera), track, ts, text, attrs, None if box is None else tuple(box),
                  _bundle(obj, bundle), alternatives)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _int(digits: str) -> int:
    if len(digits.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(digits.lstrip('-'))} digits (at most {_MAX_INT_DIGITS})")
    return int(digits)


def parse_line(line: str) -> Any:
    """One JSON value; StoreError (one line) for bad JSON, NaN/Infinity, huge integers or deep nesting."""
    from .records import StoreError

    try:
        return json.loads(line, parse_constant=_no_constant, parse_int=_int)
    except json.JSONDecodeError as e:
        raise StoreError(f"not JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise StoreError("not JSON this store reads (nested too deeply)") from None
    except ValueError as e:
        raise StoreError(f"not JSON this store reads ({first_line(e)})") from None


@dataclass
class _Errors:
    """Bad lines: how many, and the first few messages."""

    count: int = 0
    shown: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.shown) < _MAX_REPORTED:
            self.shown.append(message)


def _lines(fh: IO[bytes], name: str, errors: _Errors) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line that is UTF-8 and at most MAX_LINE_BYTES long; the others are errors."""
    n = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        n += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            errors.add(f"{name}:{n}: line longer than {MAX_LINE_BYTES} bytes")
            while raw and not raw.endswith(b"\n"):  # skip the rest of it
                raw = fh.readline(MAX_LINE_BYTES)
            continue
        try:
            text = (raw.removeprefix(codecs.BOM_UTF8) if n == 1 else raw).decode("utf-8")
        except UnicodeDecodeError as e:
            errors.add(f"{name}:{n}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})")
            continue
        yield n, text


def _read(fh: IO[bytes], name: str, camera: str, bundle: str | None, timestamp: str | None,
          records: list, errors: _Errors) -> int:
    """Append the valid records of ``fh`` to ``records`` and the bad lines to ``errors``; lines skipped."""
    from .records import StoreError, validate_record

    skipped = 0
    for n, line in _lines(fh, name, errors):
        if not line.strip():
            continue
        try:
            obj = parse_line(line)
            if isinstance(obj, dict) and (obj.get("error") or obj.get("text") == ""):
                skipped += 1  # pvlm-describe could not read that image (it said so), or said nothing
                continue
            rec, _ = validate_record(record_from_line(obj, camera, bundle, timestamp))
        except StoreError as e:
            errors.add(f"{name}:{n}: {e}")
            continue
        records.append(rec)
    return skipped


def _read_all(files: tuple[str, ...], camera: str, bundle: str | None, timestamp: str | None) -> tuple[list, int]:
    """Every record of ``files`` ('-': stdin), all checked; CommandError listing the bad lines if any."""
    records: list = []
    errors = _Errors()
    skipped = 0
    for name in files:
        try:
            if name == "-":
                stdin = getattr(sys.stdin, "buffer", None)
                if stdin is None:
                    raise CommandError("cannot read <stdin>: it is closed or not a byte stream")
                skipped += _read(stdin, "<stdin>", camera, bundle, timestamp, records, errors)
                continue
            with open(name, "rb") as fh:
                skipped += _read(fh, name, camera, bundle, timestamp, records, errors)
        except OSError as e:
            raise CommandError(f"cannot read {name}: {e.strerror or e}") from None
        log.info("%s: %d description(s) so far", name, len(records))
    if errors.count:
        for msg in errors.shown:
            echo_error(msg)
        more = f" (first {_MAX_REPORTED} shown)" if errors.count > _MAX_REPORTED else ""
        raise CommandError(f"{errors.count} bad line(s){more}; nothing was indexed")
    return records, skipped


def _check_defaults(camera: str, bundle: str | None, timestamp: str | None) -> None:
    """The options that fill in missing keys, checked once (not as one error per line)."""
    from .records import MAX_ID_CHARS, StoreError, check_string, check_timestamp

    try:
        check_string(camera, "--camera", MAX_ID_CHARS)
        if bundle is not None:
            check_string(bundle, "--bundle", MAX_ID_CHARS)
    except StoreError as e:
        raise CommandError(str(e)) from None
    if timestamp is not None:
        try:
            check_timestamp(timestamp)
        except StoreError as e:
            raise CommandError(f"--timestamp: {e}") from None


def _write(db: str | None, records: list, quiet: bool) -> int:
    """Add ``records`` to the store in one transaction; CommandFailure (nothing stored) when the write fails."""
    from tqdm import tqdm

    from .records import StoreError, StoreUnavailable

    store = _open(db, readonly=False)
    try:
        no_bar = quiet or len(records) < _BAR_FROM or not sys.stderr.isatty()
        with tqdm(total=len(records), desc="index", unit="desc", disable=no_bar, leave=False) as bar:
            return store.add(records, progress=bar.update)
    except StoreUnavailable as e:
        raise CommandFailure(first_line(e)) from None
    except StoreError as e:
        raise CommandError(first_line(e)) from None
    finally:
        store.close()


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--db", help=_DB_HELP)
@click.option("--camera", default="default", help="Camera id for lines without a 'camera' key.")
@click.option("--bundle", help="Bundle id for lines without a 'bundle_id' (or 'bundle') key.")
@click.option("--timestamp", help="Time (epoch seconds or ISO 8601) for lines without one; default: image mtime.")
@common_options()
def index_main(files: tuple[str, ...], db: str | None, camera: str, bundle: str | None,
               timestamp: str | None, quiet: bool) -> None:
    """Store descriptions from FILES of ``pvlm-describe --json`` lines (stdin when none, or '-').

    Every line is checked before anything is stored, and the store is written in one transaction:
    on any bad line or failed write nothing is stored. Re-indexing the same (camera, track,
    timestamp) is a no-op.

    \b
    Exit status: 0 stored; 2 bad lines or options (each line named as FILE:LINE); 1 the store
    could not be written (locked, disk full, read-only).
    """
    _check_defaults(camera, bundle, timestamp)
    records, skipped = _read_all(files or ("-",), camera, bundle, timestamp)
    added = _write(db, records, quiet)
    note = f", {skipped} line(s) with describe errors or no text skipped" if skipped else ""
    click.echo(f"indexed {added} new description(s) ({len(records) - added} already stored{note}) "
               f"into {_shown(_db_location(db))}", err=True)


def matched_field(hit: Any) -> str:
    """The matched terms of a hit for the plain output: ``female (p=0.93), backpack``, then ``; via alternative N:
    TEXT`` when only an n-best alternative matched."""
    sure = hit.match_confidence
    out = ", ".join(f"{m} (p={sure[m]:.2f})" if m in sure else m for m in hit.matched)
    if hit.alternative is not None:
        out += f"; via alternative {hit.alternative['rank']}: {hit.alternative['text']}"
    return out


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.argument("query")
@click.option("--db", help=_DB_HELP)
@click.option("--camera", help="Only this camera.")
@click.option("--since", help="Only descriptions at or after this time (epoch seconds or ISO 8601).")
@click.option("--until", help="Only descriptions at or before this time (epoch seconds or ISO 8601).")
@click.option("--limit", type=click.IntRange(min=1), default=10, help="Tracks to return.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines with attributes (and their probabilities), box, score, matched terms and how sure.")
@common_options()
def search_main(query: str, db: str | None, camera: str | None, since: str | None, until: str | None, limit: int,
                as_json: bool) -> None:
    """Tracks whose descriptions match QUERY ("woman in a red jacket with a backpack"), best first.

    Attributes in the query filter ("woman", "red jacket", "backpack": every hit has them); shades
    ("dark blue") and its other words ("glasses") rank; "without"/"no" leave things out ("man
    without a hat"); a colour alone ("blue") means any garment; typos of attribute words are
    corrected (said on stderr). Plain output is one line per track: camera, track, time, text and
    the query terms it matched (with the stored probability they were weighed by, and the n-best
    alternative when only that matched), tab-separated (tabs, line breaks and backslashes inside them
    escaped as \\t, \\n, \\\\). The store is only read, never changed.

    \b
    Exit status: 0 tracks found; 1 none match, or the store could not be read; 2 bad query or options.
    """
    from .records import QueryError, StoreError, StoreUnavailable

    store = _open(db, readonly=True)
    try:
        page = store.page(query, camera=camera, since=since, until=until, limit=limit)
    except StoreUnavailable as e:
        raise CommandFailure(first_line(e)) from None
    except (QueryError, StoreError) as e:
        raise CommandError(first_line(e)) from None
    finally:
        store.close()
    if page.query.corrections:
        fixed = ", ".join(f"{plain(a)} -> {b}" for a, b in page.query.corrections.items())
        click.echo(f"corrected: {fixed}", err=True)
    for h in page.hits:
        if as_json:
            click.echo(json.dumps(h.to_json()))
        else:
            when = h.time or str(h.timestamp)
            click.echo("\t".join(plain(v) for v in (h.camera, h.track, when, h.text, matched_field(h))))
    if not page.hits:
        click.echo(f"no track matches {query!r}", err=True)
        sys.exit(1)
