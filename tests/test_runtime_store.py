"""runtime.search / runtime.search.postgres: ingest, idempotence, attribute filters, ranked text, errors.

Every store test runs on SQLite and on a real PostgreSQL server (``PVLM_TEST_PG_URL``, started by
``.ci/postgres.sh``); the PostgreSQL runs skip only when no server can be reached.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from runtime.search import QueryError, Record, StoreError, SQLiteStore, open_store, parse_query

REPO = Path(__file__).resolve().parents[1]

ROWS = [
    # camera, track, timestamp, text
    ("cam1", "t1", 100.0, "A young woman in a red jacket and black jeans, carrying a backpack, walking."),
    ("cam1", "t1", 101.0, "A young woman with glasses in a red jacket and black jeans, carrying a backpack."),
    ("cam1", "t2", 102.0, "A woman in a red coat and blue jeans, holding an umbrella, standing."),
    ("cam2", "t3", 200.0, "An adult man in a dark blue shirt and dark-colored trousers, with glasses, standing."),
    ("cam2", "t4", 300.0, "A man wearing a blue t-shirt and grey shorts, a cap, walking, seen from behind."),
    ("cam2", "t5", 400.0, "A woman wearing a red jacket, white trousers and a backpack, seen from the front."),
]


def _records(rows=ROWS):
    return [Record(c, t, ts, text, box=(1, 2, 30, 60), bundle="b1") for c, t, ts, text in rows]




@pytest.fixture
def store(store_location):
    loc = store_location
    s = open_store(loc)
    yield s
    s.close()


def _tracks(hits):
    return [(h.camera, h.track) for h in hits]


def test_ingest_is_idempotent(store):
    assert store.add(_records()) == len(ROWS)
    assert store.add(_records()) == 0
    assert store.add(_records(ROWS[:1]) + [Record("cam9", "t1", 100.0, "a man in a cap")]) == 1
    assert store.count() == len(ROWS) + 1


def test_attribute_filters_and_best_description(store):
    store.add(_records())
    hits = store.search("woman in a red jacket with a backpack")
    assert sorted(_tracks(hits)) == [("cam1", "t1"), ("cam2", "t5")]
    assert all(h.attributes["upper_color"] == "red" and h.attributes["carrying"] == ["backpack"] for h in hits)
    assert hits[0].box == (1.0, 2.0, 30.0, 60.0) and hits[0].bundle == "b1"
    # a query word outside the attributes ranks the description that has it first
    hits = store.search("woman with glasses and a backpack")
    assert _tracks(hits)[0] == ("cam1", "t1") and "glasses" in hits[0].text and hits[0].score > 0
    assert len(hits) == 2  # tracks without the word still match the filters


def test_colour_shades_rank_rather_than_filter(store):
    store.add(_records() + [Record("cam3", "t6", 50.0, "A man in a light blue shirt and black jeans, walking.")])
    blue = store.search("blue shirt")  # "dark blue" is blue; a blue t-shirt is near a shirt, and ranks below
    assert sorted(_tracks(blue[:2])) == [("cam2", "t3"), ("cam3", "t6")] and _tracks(blue[2:]) == [("cam2", "t4")]
    assert blue[2].matched == ("t-shirt (near shirt)", "blue upper") and blue[2].score < blue[1].score
    assert sorted(_tracks(store.search("blue shirt", drop=["~upper:shirt"]))) == [("cam2", "t3"), ("cam3", "t6")]
    dark = store.search("dark blue shirt")
    assert _tracks(dark)[:2] == [("cam2", "t3"), ("cam3", "t6")] and "dark upper" in dark[0].matched
    assert dark[0].score > dark[1].score and "dark upper" not in dark[1].matched
    assert _tracks(store.search("light blue shirt"))[:2] == [("cam3", "t6"), ("cam2", "t3")]
    # "dark-colored" is dark; black jeans are near dark trousers, below them
    assert _tracks(store.search("man in dark trousers")) == [("cam2", "t3"), ("cam3", "t6")]
    assert _tracks(store.search("a person seen from behind with a cap")) == [("cam2", "t4")]


def test_camera_since_and_limit(store):
    store.add(_records())
    assert sorted(_tracks(store.search("woman", camera="cam1"))) == [("cam1", "t1"), ("cam1", "t2")]
    assert _tracks(store.search("woman", since=300)) == [("cam2", "t5")]
    assert _tracks(store.search("woman", since="1970-01-01T00:05:00Z")) == [("cam2", "t5")]
    assert len(store.search("woman", limit=1)) == 1
    # newest first when nothing ranks them
    assert _tracks(store.search("woman"))[0] == ("cam2", "t5")


def test_bad_queries(store):
    store.add(_records())
    for bad in ("", "   ", "the a of"):
        with pytest.raises(QueryError):
            store.search(bad)
    with pytest.raises(QueryError, match="limit"):
        store.search("woman", limit=0)
    with pytest.raises(StoreError, match="timestamp"):
        store.search("woman", since="yesterday")
    assert store.search("zebra") == []  # a word nobody's description has: no match, not an error


def test_bad_record_adds_nothing(store):
    good = _records(ROWS[:2])
    for bad in (Record("", "t", 1.0, "x"), Record("c", "t", float("nan"), "x"), Record("c", "t", 1.0, "x", box=(1, 2))):
        with pytest.raises(StoreError):
            store.add([*good, bad])
    assert store.count() == 0


def test_describer_output_ingests():
    from runtime import Description
    from runtime.attributes import parse_attributes

    text = "A man in a green hoodie and jeans, walking."
    d = Description(text, [5, 6], parse_attributes(text))
    s = SQLiteStore(":memory:")
    assert s.add([Record.from_description(d, "gate", 7, "2026-12-01T10:00:00", box=[0, 0, 10, 20])]) == 1
    hit = s.search("green hoodie")[0]
    want = datetime(2026, 12, 1, 10, tzinfo=timezone.utc).timestamp()
    assert (hit.camera, hit.track, hit.timestamp) == ("gate", "7", want)
    with pytest.raises(StoreError, match="error"):
        Record.from_description(Description("", [], {}, error="unreadable"), "gate", 8, 0)


def test_query_parse():
    q = parse_query("woman in a dark blue jacket with glasses")
    assert set(q.filters) == {"genderfemale", "uppertypejacket", "uppertypecoat", "uppercolorblue"}  # coat: near
    assert [t.label for t in q.ranking] == ["dark upper", "glasses"] and q.words == ("glasses",)
    assert [t.id for t in parse_query("man in a dark jacket").ranking] == ["upper_shade:dark"]


def test_open_store_errors(tmp_path):
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://x")
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing" / "d.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="not a description store"):
        open_store(junk)


def test_store_is_torch_free():
    code = (
        "import sys; import runtime.search, runtime.search.postgres, runtime.search.cli; "
        "heavy = {'pvlm', 'torch', 'numpy', 'onnxruntime'}; "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.stdout.strip() == ""


def _rejects(store, rec, match):
    with pytest.raises(StoreError, match=match) as e:
        store.add([*_records(ROWS[:1]), rec])
    assert "\n" not in str(e.value)


def test_values_that_could_not_be_read_back_are_refused(store):
    """Everything a store accepts, it can read back and print: the rest is refused, naming the value."""
    bad = {
        r"timestamp 1733450000123 is outside 1970-01-01\.\.2100-01-01; milliseconds": 1733450000123,
        "outside": -1.0,
        "too large": 10**400,
        "timestamp <int> is too large": 10**5000,
        "finite": float("inf"),
        r"'9999-12-31T23:59:59Z' is outside 1970-01-01\.\.2100-01-01$": "9999-12-31T23:59:59Z",
    }
    for match, ts in bad.items():
        _rejects(store, Record("c", "t", ts, "a man"), match)
    for box, match in [((True, 0, 1, 1), "4 numbers"), ((0, 0, 10**400, 1), "finite"), ((0, 10**5000, 1, 1), "finite"), ((0, 0, 2e6, 1), "within"),
                       ((0, 0, math.nan, 1), "finite"), ((5, 0, 1, 1), "x0 <= x1"), ((0, 0, 1), "4 numbers")]:
        _rejects(store, Record("c", "t", 1.0, "a man", box=box), match)
    for field, value, match in [("camera", "a\x00b", "camera contains a NUL"),
                                ("track", "t\ud800", "track is not valid Unicode"),
                                ("text", "x" * 10_001, "text is 10001 characters long"),
                                ("bundle", 5, "bundle must be a string"),
                                ("attributes", {"upper": ["jacket"]}, "attributes.upper must be a string"),
                                ("attributes", {"carrying": "bag"}, "attributes.carrying must be a list"),
                                ("attributes", {"gender": "\udcff"}, "attributes.gender is not valid Unicode")]:
        kwargs = {"camera": "c", "track": "t", "timestamp": 1.0, "text": "a man", field: value}
        _rejects(store, Record(**kwargs), match)
    assert store.count() == 0
    # the edges of what is accepted read back
    edge = Record("c" * 256, "t\t\n", 4_102_444_799.0, "a man \u2028 with a cap", box=(-1e6, 0, 1e6, 0), bundle="b")
    assert store.add([edge]) == 1
    hit = store.search("man with a cap")[0]
    assert (hit.camera, hit.track, hit.box) == (edge.camera, edge.track, edge.box)
    assert hit.to_json()["time"] == "2099-12-31T23:59:59+00:00"


def _raw_insert(store, rows):
    """Rows (camera, track, ts, text, attributes) written past the store's checks, as an older writer could."""
    if isinstance(store, SQLiteStore):
        import sqlite3

        db = sqlite3.connect(store.path, isolation_level=None)
        for i, (camera, track, ts, text, attrs) in enumerate(rows, 1000):
            db.execute("INSERT INTO descriptions (id, camera, track, ts, x0, y0, x1, y1, text, attributes, tokens) "
                       "VALUES (?, ?, ?, ?, 'x', 1, 2, 3, ?, ?, 'gendermale')", (i, camera, track, ts, text, attrs))
            db.execute("INSERT INTO descriptions_fts (rowid, text, attrs) VALUES (?, 'zebra man', 'gendermale')", (i,))
        db.close()
        return
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as db:
        for camera, track, ts, text, attrs in rows:
            db.execute("INSERT INTO pvlm_descriptions (camera, track, ts, text, attributes, attrs) "
                       "VALUES (%s, %s, %s, %s || ' zebra', %s::jsonb, ARRAY['gendermale'])",
                       (camera, track, ts, text, attrs if _is_json(attrs) else json.dumps(attrs)))


def _is_json(text):
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_old_bad_rows_cannot_break_search(store):
    """Rows no longer accepted (epoch milliseconds, unreadable attributes, a box that is text) still read."""
    _raw_insert(store, [("cam", "ms", 1733450000123.0, "a man in a cap", "{not json"),
                        ("cam", "inf", float("inf"), "a man", "[1, 2]"),
                        ("cam", "neg", -1e300, "a man", '{"gender": "male"}')])
    for query in ("zebra", "man"):
        hits = store.search(query, limit=10)
        assert sorted(h.track for h in hits) == ["inf", "ms", "neg"]
        for h in hits:
            doc = json.loads(json.dumps(h.to_json()))
            assert doc["time"] is None and isinstance(doc["attributes"], dict)


def test_failed_write_stores_nothing(store):
    """A write that fails part-way (a full disk, a trigger) rolls the whole add back and says why, in one line."""
    from runtime.search import StoreUnavailable

    records = [Record("c", f"t{i}", 1000.0 + i, "a woman in a red jacket") for i in range(12_000)]
    if isinstance(store, SQLiteStore):
        store._db.execute("PRAGMA max_page_count=900")  # 3.6 MB: the first batch fits, the second does not
        match = "database or disk is full"
    else:
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as db:
            db.execute("CREATE OR REPLACE FUNCTION pvlm_test_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                       "IF NEW.track = 't11000' THEN RAISE EXCEPTION 'could not extend file: No space left'; END IF; "
                       "RETURN NEW; END $$")
            db.execute("CREATE TRIGGER pvlm_test_full BEFORE INSERT ON pvlm_descriptions "
                       "FOR EACH ROW EXECUTE FUNCTION pvlm_test_full()")
        match = "No space left"
    seen = []
    with pytest.raises(StoreUnavailable, match=f"ingest failed, nothing was stored: .*{match}") as e:
        store.add(records, progress=seen.append)
    assert "\n" not in str(e.value) and 5000 <= sum(seen) < len(records)
    assert store.count() == 0
    assert store.add(records[:3]) == 3  # the store still works


def test_search_only_reads(tmp_path):
    """Opening read-only creates nothing and changes nothing; another application's database is refused untouched."""
    import sqlite3

    foreign = tmp_path / "app.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('ann')")
    db.commit()
    db.close()
    before = foreign.read_bytes()
    for readonly in (True, False):
        with pytest.raises(StoreError, match="not a description store .*'users'"):
            open_store(foreign, readonly=readonly)
    assert foreign.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()
    s = open_store(tmp_path / "d.db")
    s.add(_records())
    s.close()
    with open_store(tmp_path / "d.db", readonly=True) as r:
        assert len(r.search("woman")) == 3
        with pytest.raises(StoreError, match="read-only"):
            r.add(_records())


def test_postgres_search_creates_nothing(pg_url):
    url = pg_url  # the table dropped
    import psycopg

    with pytest.raises(StoreError, match="holds no description store"):
        open_store(url, readonly=True)
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SELECT to_regclass('pvlm_descriptions')").fetchone()[0] is None
    with open_store(url) as w:
        w.add(_records())
    with open_store(url, readonly=True) as r:
        assert len(r.search("woman")) == 3
        with pytest.raises(StoreError, match="read-only"):
            r.add(_records())


def test_bad_search_arguments_are_one_line(store):
    store.add(_records())
    for kwargs, match in [({"query": "woman \udcff"}, "query is not valid Unicode"),
                          ({"query": "woman", "camera": "c\x00"}, "camera contains a NUL"),
                          ({"query": "woman " * 500}, "query is 3000 characters"),
                          ({"query": "woman", "since": 10**400}, "too large")]:
        with pytest.raises((QueryError, StoreError), match=match):
            store.search(**kwargs)


def test_text_that_is_not_utf8_reads_with_replacement_characters(tmp_path):
    """Text another writer stored as invalid UTF-8 is read leniently (the connection switches decoders)."""
    import sqlite3

    db = tmp_path / "d.db"
    with SQLiteStore(db) as s:
        s.add(_records())
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("UPDATE descriptions SET text = CAST(? AS TEXT), track = CAST(? AS TEXT) WHERE track = 't5'",
                (b"A woman \xff in a red jacket", b"t\xfe5"))
    con.close()
    with open_store(db, readonly=True) as r:
        hits = r.search("woman in a red jacket")
        assert [h.track for h in hits][0] == "t\ufffd5" and "\ufffd" in hits[0].text
        assert [h.text for h in r.track("cam2", "t\ufffd5")] == []  # the stored key is not that text
        assert r.search("man in a cap")[0].track == "t4"
