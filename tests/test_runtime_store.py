"""runtime.store / runtime.store_postgres: ingest, idempotence, attribute filters, ranked text, errors.

Every store test runs on SQLite and on a real PostgreSQL server (``PVLM_TEST_PG_URL``, started by
``.ci/postgres.sh``); the PostgreSQL runs skip only when no server can be reached.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from runtime.store import QueryError, Record, StoreError, SQLiteStore, open_store, parse_query

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


def _pg_url() -> str:
    url = os.environ.get("PVLM_TEST_PG_URL")
    if not url:
        pytest.skip("no PostgreSQL server: PVLM_TEST_PG_URL is not set (source .ci/postgres.sh)")
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[search]')")
    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS pvlm_descriptions")
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL at {url} cannot be reached: {e}")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    loc = str(tmp_path / "d.db") if request.param == "sqlite" else _pg_url()
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


def test_colour_shades(store):
    store.add(_records())
    assert _tracks(store.search("blue shirt")) == [("cam2", "t3")]  # "dark blue" is blue
    assert _tracks(store.search("dark blue shirt")) == [("cam2", "t3")]
    assert store.search("light blue shirt") == []
    assert _tracks(store.search("man in dark trousers")) == [("cam2", "t3")]  # "dark-colored" is dark
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
    assert set(q.filters) == {"genderfemale", "uppertypejacket", "uppercolorblue", "uppertonedark"}
    assert q.words == ("glasses",)
    assert parse_query("man in a dark jacket").filters.count("uppertonedark") == 1


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
        "import sys; import runtime.store, runtime.store_postgres, runtime.cli_search; "
        "heavy = {'pvlm', 'torch', 'numpy', 'onnxruntime'}; "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.stdout.strip() == ""
