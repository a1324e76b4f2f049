"""Bounded fuzzing (Hypothesis) of the description store end to end: hostile ``pvlm-index`` lines, then
``pvlm-search`` over whatever was stored, and rows written past the store's checks.

Whatever ``pvlm-index`` accepts, ``pvlm-search`` reads back and prints (plain and JSON) without a
traceback; whatever it refuses is one ``error: FILE:LINE: ...`` line per bad line and nothing stored.
Derandomised, so CI runs the same cases; PostgreSQL runs fewer and skips without a server.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="fuzzing needs hypothesis (pip install -e '.[dev]')")
from click.testing import CliRunner  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from runtime.attribute_schema import ATTRIBUTE_KEYS  # noqa: E402
from runtime.search.cli import index_main, plain, search_main  # noqa: E402
from runtime.search import SQLiteStore, open_store  # noqa: E402

EXAMPLES = 150
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
COUNTS: dict[str, Counter] = {}
WORD = "zebra"  # in every generated text, so one query finds every stored row

# JSON tokens json.dumps cannot write: put in place of their placeholder strings after dumping.
RAW = {"@1e400@": "1e400", "@-1e400@": "-1e400", "@digits@": "9" * 5000, "@nan@": "NaN", "@inf@": "Infinity",
       "@deep@": "[" * 5000 + "]" * 5000, "@surrogate@": '"\\udc80"', "@nul@": '"a\\u0000"'}

nasty_text = st.text(max_size=12) | st.sampled_from(
    ["\ud800", "a\x00b", "\t", "\n", "\r\n", "\u2028", "\\", "\x1b[31m", "x" * 300, "", " ", "é", "\U0001d11e"])
numbers = (st.integers(-2**70, 2**70) | st.floats() | st.sampled_from(
    [0, 1, 1733450000.5, 1733450000123, 4102444799.9, 4102444800, -1e-9, 1e6, -1e6, 1e6 + 1, True]))
leaves = st.none() | st.booleans() | numbers | nasty_text | st.sampled_from(sorted(RAW))
json_values = st.recursive(leaves, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                           max_size=3), max_leaves=6)
times = numbers | st.sampled_from(["2026-12-01T10:00:00Z", "2026-12-01 10:00", "0001-01-01", "9999-12-31T23:59:59",
                                   "1733450000123", "1e400", "nan", "", "yesterday", "2026-02-30"]) | json_values
ids = st.text(min_size=1, max_size=8) | st.integers(-5, 10**40) | nasty_text | json_values
attribute_values = st.sampled_from(["red", "jacket", "female", "dark", "\ud800", "x" * 70, ""]) | json_values
attributes = st.none() | json_values | st.dictionaries(
    st.sampled_from([*ATTRIBUTE_KEYS, "other"]), attribute_values | st.lists(attribute_values, max_size=3),
    max_size=4)
boxes = st.none() | st.lists(numbers | leaves, min_size=3, max_size=5) | json_values | st.builds(
    lambda x, y, w, h: [x, y, x + w, y + h], st.floats(-10, 100), st.floats(-10, 100), st.floats(0, 50),
    st.floats(0, 50))
texts = st.builds(lambda a, b: f"a woman {a} {WORD} {b}", nasty_text, nasty_text) | json_values
good = {"text": st.builds(lambda a: f"a woman in a red jacket {WORD} {a}", st.text(max_size=8)),
        "track": st.text(min_size=1, max_size=6), "timestamp": st.floats(0, 4e9)}
hostile = {"text": texts, "track": ids, "camera": ids, "timestamp": times, "box": boxes, "attributes": attributes,
           "bundle_id": ids, "bundle": ids, "image": ids, "error": st.none() | st.just("unreadable")}


@st.composite
def lines(draw) -> bytes:
    """One line: a mostly valid describe object with a few hostile keys, or arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=60)).replace(b"\n", b" ")
    obj = {k: draw(v) for k, v in good.items()}
    for key in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=3, unique=True)):
        obj[key] = draw(hostile[key])
    if draw(st.booleans()):
        obj.pop(draw(st.sampled_from(sorted(obj))))
    text = json.dumps(obj)
    for placeholder, token in RAW.items():
        text = text.replace(json.dumps(placeholder), token)
    return text.encode("utf-8", "surrogatepass")


def _index(path, db, camera="lobby"):
    res = CliRunner().invoke(index_main, [str(path), "--db", db, "--camera", camera, "--timestamp", "5", "-q"])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def _check_refused(res, path, n_lines):
    err = res.stderr.splitlines()
    assert res.exit_code == 2 and err[-1].startswith("error: ") and err[-1].endswith("nothing was indexed"), err
    for line in err[:-1]:
        where, _, why = line.removeprefix("error: ").partition(": ")
        name, _, number = where.rpartition(":")
        assert name == str(path) and 1 <= int(number) <= n_lines and why, line


def _strict(name):
    raise AssertionError(f"search printed {name}, which is not JSON")


def _check_search(db, stored):
    """Search every stored row back, as plain lines and as JSON, and compare the two."""
    as_json = CliRunner().invoke(search_main, [WORD, "--db", db, "--json", "--limit", "1000"])
    assert as_json.exception is None or isinstance(as_json.exception, SystemExit), repr(as_json.exception)
    hits = [json.loads(x, parse_constant=_strict) for x in as_json.stdout.splitlines()]
    assert (as_json.exit_code, len(hits) > 0) == ((0, True) if stored else (1, False)), as_json.output
    out = CliRunner().invoke(search_main, [WORD, "--db", db, "--limit", "1000"])
    assert out.exit_code == as_json.exit_code, out.output
    rows = [x.split("\t") for x in out.stdout.split("\n")[:-1]]
    assert [r[:2] for r in rows] == [[plain(h["camera"]), plain(h["track"])] for h in hits]
    assert all(len(r) == 5 and r[2] == h["time"] and isinstance(h["timestamp"], float) for r, h in zip(rows, hits))
    assert all(r[4] == ", ".join(plain(m) for m in h["matched"]) for r, h in zip(rows, hits))


def _fuzz_once(tmp_path, db, raw_lines, kind, count):
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"\n".join(raw_lines) + b"\n")
    before = count()
    res = _index(path, db)
    if res.exit_code == 0:
        outcome = "indexed"
        _check_search(db, stored=count() > 0)
    else:
        outcome = "refused"
        _check_refused(res, path, len(raw_lines))
        assert count() == before, "a refused ingest stored something"
    COUNTS.setdefault(kind, Counter())[outcome] += 1


@FUZZ
@given(raw_lines=st.lists(lines(), min_size=1, max_size=3))
def test_fuzz_index_then_search_sqlite(tmp_path, raw_lines):
    db = tmp_path / "d.db"
    if db.exists():
        db.unlink()

    def count():
        if not db.exists():
            return 0
        with open_store(db, readonly=True) as s:
            return s.count()

    _fuzz_once(tmp_path, str(db), raw_lines, "index+search/sqlite", count)


@pytest.fixture
def pg_store_url(pg_url):
    open_store(pg_url).close()
    return pg_url


@settings(FUZZ, max_examples=EXAMPLES // 3)
@given(raw_lines=st.lists(lines(), min_size=1, max_size=3))
def test_fuzz_index_then_search_postgres(tmp_path, pg_store_url, raw_lines):
    pg_url = pg_store_url
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM pvlm_descriptions")

    def count():
        with open_store(pg_url, readonly=True) as s:
            return s.count()

    _fuzz_once(tmp_path, pg_url, raw_lines, "index+search/postgres", count)


sqlite_values = (st.none() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=8)
                 | st.binary(max_size=8) | st.sampled_from([b"\xff\xfe", "{not json", "[1]", 1733450000123.0]))


@FUZZ
@given(row=st.tuples(*[sqlite_values] * 10))
def test_fuzz_rows_written_past_the_checks(tmp_path, row):
    """A row of any SQLite values (as an older or foreign writer could leave) reads back as a printable hit."""
    db = tmp_path / "raw.db"
    if db.exists():
        db.unlink()
    SQLiteStore(db).close()
    con = sqlite3.connect(db, isolation_level=None)
    camera, track, ts, text, attrs, x0, y0, x1, y1, bundle = row
    con.execute("INSERT INTO descriptions (id, camera, track, ts, x0, y0, x1, y1, text, attributes, bundle, tokens) "
                "VALUES (7, coalesce(?, 'c'), coalesce(?, 't'), coalesce(?, 0), ?, ?, ?, ?, coalesce(?, ''), "
                "coalesce(?, '{}'), ?, 'genderfemale')", (camera, track, ts, x0, y0, x1, y1, text, attrs, bundle))
    con.execute(f"INSERT INTO descriptions_fts (rowid, text, attrs) VALUES (7, '{WORD}', 'genderfemale')")
    con.close()
    with SQLiteStore(db, readonly=True) as s:
        for query in (WORD, "woman"):
            [hit] = s.search(query)
            doc = hit.to_json()
            json.dumps(doc, allow_nan=False)  # strict JSON: no NaN or Infinity tokens
            assert doc["time"] is None or (doc["timestamp"] is not None and math.isfinite(doc["timestamp"]))
            assert "\n" not in "\t".join(plain(v) for v in (hit.camera, hit.track, hit.text))
    COUNTS.setdefault("raw rows/sqlite", Counter())["read"] += 1


@FUZZ
@given(text=st.text() | st.sampled_from(["\ud800x", "a\tb\nc\rd\\e\x85f\u2028g\x1c"]))
def test_fuzz_plain_output_is_one_field(text):
    """A plain-output field never splits into more lines or columns, and always encodes."""
    out = plain(text)
    assert "\t" not in out and len(out.splitlines()) <= 1
    out.encode("utf-8")
    COUNTS.setdefault("plain field", Counter())["one field"] += 1


def test_fuzz_report():
    """Prints the outcome counts (run with -s); each fuzz test ran and both outcomes of index happened."""
    for name, c in sorted(COUNTS.items()):
        print(f"fuzz {name}: {sum(c.values())} cases, {dict(c)}, 0 crashes")
    sqlite = COUNTS.get("index+search/sqlite")
    if sqlite:
        assert sqlite["indexed"] >= EXAMPLES // 10 and sqlite["refused"] >= EXAMPLES // 10, sqlite
