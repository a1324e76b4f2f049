"""``pvlm-index`` (store ``pvlm-describe --json`` lines) and ``pvlm-search`` (find tracks by description)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Any

import click

from .cli_common import CommandError, echo_error

DEFAULT_DB = "descriptions.db"
_DB_HELP = "SQLite file or postgresql:// URL (default: $PVLM_STORE or descriptions.db)."
_BATCH = 5000
_MAX_REPORTED = 10


def _db_location(db: str | None) -> str:
    return db or os.environ.get("PVLM_STORE") or DEFAULT_DB


def _open(db: str | None, must_exist: bool) -> Any:
    from .store import StoreError, open_store

    loc = _db_location(db)
    if must_exist and "://" not in loc and not Path(loc).exists():
        raise CommandError(f"store {loc} does not exist (create it with pvlm-index)")
    try:
        return open_store(loc)
    except (StoreError, ImportError) as e:
        raise CommandError(str(e)) from None
    except Exception as e:  # a server that refuses the connection, bad credentials
        raise CommandError(f"cannot open store {loc}: {e}") from None


def record_from_line(obj: Any, camera: str, bundle: str | None, timestamp: str | None) -> Any:
    """A :class:`runtime.store.Record` from one ``pvlm-describe --json`` object (plus camera/track/time keys).

    Missing ``camera``/``bundle``/``timestamp`` come from the arguments; a missing ``track`` is the
    image file's stem; a missing timestamp falls back to the image file's modification time.
    """
    from .store import Record, StoreError

    if not isinstance(obj, dict):
        raise StoreError(f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise StoreError("no 'text' (a string) in the line")
    image = obj.get("image")
    track = obj.get("track", Path(image).stem if isinstance(image, str) and image else None)
    if track is None or isinstance(track, bool) or not isinstance(track, (str, int)):
        raise StoreError("no 'track' in the line and no 'image' to name one after")
    ts = obj.get("timestamp", timestamp)
    if ts is None:
        if isinstance(image, str) and Path(image).is_file():
            ts = Path(image).stat().st_mtime
        else:
            raise StoreError("no 'timestamp' in the line, no --timestamp, and no image file to date it by")
    attrs = obj.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        raise StoreError("'attributes' must be an object")
    box = obj.get("box")
    if box is not None and (not isinstance(box, list) or len(box) != 4):
        raise StoreError(f"'box' must be [x0, y0, x1, y1], got {box!r}")
    return Record(str(obj.get("camera", camera)), str(track), ts, text, attrs,
                  None if box is None else tuple(box), obj.get("bundle", bundle))


def _read(fh: IO[str], name: str, camera: str, bundle: str | None, timestamp: str | None,
          records: list, errors: list[str]) -> int:
    from .store import StoreError, validate_record

    skipped = 0
    for n, line in enumerate(fh, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{name}:{n}: not JSON ({e.msg})")
            continue
        if isinstance(obj, dict) and (obj.get("error") or obj.get("text") == ""):
            skipped += 1  # pvlm-describe could not read that image (it said so), or said nothing
            continue
        try:
            rec = record_from_line(obj, camera, bundle, timestamp)
            validate_record(rec)
        except StoreError as e:
            errors.append(f"{name}:{n}: {e}")
            continue
        records.append(rec)
    return skipped


@click.command(context_settings={"show_default": True})
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--db", help=_DB_HELP)
@click.option("--camera", default="default", help="Camera id for lines without a 'camera' key.")
@click.option("--bundle", help="Bundle id for lines without a 'bundle' key.")
@click.option("--timestamp", help="Time (epoch seconds or ISO 8601) for lines without one; default: image mtime.")
def index_main(files: tuple[str, ...], db: str | None, camera: str, bundle: str | None,
               timestamp: str | None) -> None:
    """Store descriptions from FILES of ``pvlm-describe --json`` lines (stdin when none, or '-').

    Every line is checked before anything is stored; re-indexing the same (camera, track, timestamp) is a no-op.
    """
    from tqdm import tqdm

    from .store import StoreError, to_timestamp

    if timestamp is not None:
        try:
            to_timestamp(timestamp)
        except StoreError as e:
            raise CommandError(f"--timestamp: {e}") from None
    records: list = []
    errors: list[str] = []
    skipped = 0
    for name in files or ("-",):
        if name == "-":
            skipped += _read(sys.stdin, "<stdin>", camera, bundle, timestamp, records, errors)
            continue
        try:
            with open(name, encoding="utf-8") as fh:
                skipped += _read(fh, name, camera, bundle, timestamp, records, errors)
        except (OSError, UnicodeDecodeError) as e:
            raise CommandError(f"cannot read {name}: {e}") from None
    if errors:
        for msg in errors[:_MAX_REPORTED]:
            echo_error(msg)
        more = f" (first {_MAX_REPORTED} shown)" if len(errors) > _MAX_REPORTED else ""
        raise CommandError(f"{len(errors)} bad line(s){more}; nothing was indexed")
    store = _open(db, must_exist=False)
    added = 0
    try:
        with tqdm(total=len(records), desc="index", unit="desc", disable=len(records) < _BATCH) as bar:
            for i in range(0, len(records), _BATCH):
                added += store.add(records[i : i + _BATCH])
                bar.update(min(_BATCH, len(records) - i))
    except StoreError as e:
        raise CommandError(str(e)) from None
    finally:
        store.close()
    note = f", {skipped} line(s) with describe errors or no text skipped" if skipped else ""
    click.echo(f"indexed {added} new description(s) ({len(records) - added} already stored{note}) "
               f"into {_db_location(db)}", err=True)


@click.command(context_settings={"show_default": True})
@click.argument("query")
@click.option("--db", help=_DB_HELP)
@click.option("--camera", help="Only this camera.")
@click.option("--since", help="Only descriptions at or after this time (epoch seconds or ISO 8601).")
@click.option("--limit", type=click.IntRange(min=1), default=10, help="Tracks to return.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines with attributes, box and score.")
def search_main(query: str, db: str | None, camera: str | None, since: str | None, limit: int,
                as_json: bool) -> None:
    """Tracks whose descriptions match QUERY ("woman in a red jacket with a backpack"), best first.

    Attributes in the query are filters every hit matches; its other words rank hits. Exit 1 when none match.
    """
    from .store import QueryError, StoreError

    store = _open(db, must_exist=True)
    try:
        hits = store.search(query, camera=camera, since=since, limit=limit)
    except (QueryError, StoreError) as e:
        raise CommandError(str(e)) from None
    finally:
        store.close()
    for h in hits:
        if as_json:
            click.echo(json.dumps(h.to_json()))
        else:
            click.echo(f"{h.camera}\t{h.track}\t{h.to_json()['time']}\t{h.text}")
    if not hits:
        click.echo(f"no track matches {query!r}", err=True)
        sys.exit(1)
