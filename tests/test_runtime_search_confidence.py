"""runtime.search with what the runtime writes beside the text: attribute probabilities (ranking, abstention) and
n-best alternatives; a store of the previous version opened and extended; hostile values in the new fields refused.

Every test runs on SQLite and on PostgreSQL (``PVLM_TEST_PG_URL``; the PostgreSQL runs skip without a server).
"""

from __future__ import annotations

import json
import math

import pytest

from runtime.attributes import parse_attributes
from runtime.search import Record, StoreError, open_store
from runtime.search.records import MAX_ALTERNATIVES, attribute_tokens


@pytest.fixture
def store(store_location):
    s = open_store(store_location)
    yield s
    s.close()


def _heads(text, **probabilities):
    """What pvlm-describe writes with a heads bundle: the parsed values plus each field's distribution."""
    attrs = parse_attributes(text)
    dists = {k: dict(v) for k, v in probabilities.items()}
    return {**attrs, "probabilities": dists, "heads": {k: max(v, key=v.get) for k, v in dists.items()},
            "text": dict(attrs), "confidence": {k: v.get(attrs[k] if not isinstance(attrs[k], list) else
                                                          (attrs[k] or [None])[0]) for k, v in dists.items()},
            "disagreements": [], "abstained": []}


def _alts(*texts):
    return [{"text": t, "score": -0.1 * i, "attributes": parse_attributes(t)} for i, t in enumerate(texts)]


def test_probabilities_are_stored_and_returned(store):
    attrs = _heads("A woman with a backpack.", gender={"female": 0.875, "male": 0.125},
                   carrying={"backpack": 0.75, "none": 0.25})
    store.add([Record("c", "t1", 1.0, "A woman with a backpack.", attrs)])
    [hit] = store.search("woman with a backpack")
    assert hit.attributes["probabilities"] == attrs["probabilities"]
    assert hit.attributes["confidence"] == {"gender": 0.875, "carrying": 0.75}
    assert hit.match_confidence == {"female": 0.875, "backpack": 0.75}
    assert hit.score == pytest.approx(0.875 + 0.75)
    doc = json.loads(json.dumps(hit.to_json()))
    assert doc["match_confidence"] == {"female": 0.875, "backpack": 0.75} and doc["alternative"] is None
    assert doc["attributes"]["heads"] == {"gender": "female", "carrying": "backpack"}
    [again] = store.track("c", "t1")
    assert again.attributes["probabilities"] == attrs["probabilities"]


def test_a_more_probable_match_ranks_first(store):
    text = "A woman in a red jacket."
    sure = _heads(text, gender={"female": 0.9, "male": 0.1}, upper_color={"red": 0.95, "blue": 0.05})
    unsure = _heads(text, gender={"female": 0.6, "male": 0.4}, upper_color={"red": 0.5, "blue": 0.5})
    # the unsure one is newer: without probabilities it would rank first
    store.add([Record("c", "sure", 1.0, text, sure), Record("c", "unsure", 2.0, text, unsure),
               Record("c", "plain", 3.0, "A man in a red jacket.")])
    hits = store.search("woman in a red jacket")
    assert [h.track for h in hits] == ["sure", "unsure"]
    assert hits[0].score > hits[1].score
    assert hits[1].match_confidence == {"female": 0.6, "red upper": 0.5}
    # a value the heads give no probability for weighs 1 (the jacket)
    assert hits[0].score == pytest.approx(0.9 + 1.0 + 0.95)


def test_abstained_values_match_no_filter(store):
    hat = _heads("A woman in a hat.", gender={"female": 0.9, "male": 0.1},
                 headwear={"hat": 0.4, "none": 0.35, "cap": 0.25})
    hat["abstained"] = ["headwear"]  # the writer kept the text's value but abstained on it
    unknown = {**parse_attributes("A woman with a backpack."), "carrying": ["unknown"], "gender": "unknown"}
    store.add([Record("c", "abstained", 1.0, "A woman in a hat.", hat),
               Record("c", "unknown", 2.0, "A woman with a backpack.", unknown),
               Record("c", "stated", 3.0, "A man in a hat.")])
    assert [h.track for h in store.search("hat")] == ["stated"]
    assert [h.track for h in store.search("woman")] == ["abstained"]
    assert store.search("backpack") == []
    assert attribute_tokens(hat) == ["genderfemale"]


def test_alternatives_are_found_and_rank_below_shown_text(store):
    store.add([
        Record("c", "shown", 1.0, "A woman in a red jacket.", alternatives=_alts("A woman in a red jacket.")),
        Record("c", "alt", 2.0, "A woman in a blue coat.",
               alternatives=_alts("A woman in a blue coat.", "A woman in a blue coat.", "A woman in a red jacket.")),
        Record("c", "hat", 3.0, "A man in a hat.", alternatives=_alts("A man in a hat.", "A man in a red jacket.")),
    ])
    hits = store.search("red jacket")
    assert [h.track for h in hits] == ["shown", "hat", "alt"]  # the newer alternative matches first among them
    assert hits[0].alternative is None and hits[0].text == "A woman in a red jacket."
    assert hits[2].alternative == {"rank": 2, "text": "A woman in a red jacket."}  # its rank in the n-best list
    assert hits[2].text == "A woman in a blue coat." and hits[2].matched == ("jacket", "red upper")
    assert all(h.score < hits[0].score for h in hits[1:])
    # an alternative does not bring back a description whose shown text the query leaves out
    assert [h.track for h in store.search("red jacket without a hat")] == ["shown", "alt"]
    # a track found in shown text is not listed again through its alternative
    assert [h.track for h in store.search("woman in a blue coat")] == ["alt"]
    page = store.page("red jacket", count_rows=100)
    assert page.total == 3 and not page.more


def test_shown_matches_fill_the_page_before_alternatives(store):
    store.add([Record("c", f"a{i}", 100.0 + i, "A man in a cap.", alternatives=_alts("A man in a cap.",
                                                                                    "A woman in a cap."))
               for i in range(3)] + [Record("c", f"w{i}", float(i), "A woman in a cap.") for i in range(3)])
    assert [h.track for h in store.search("woman", limit=3)] == ["w2", "w1", "w0"]
    assert [h.track for h in store.search("woman", limit=4)] == ["w2", "w1", "w0", "a2"]
    assert [h.track for h in store.page("woman", offset=3, limit=3).hits] == ["a2", "a1", "a0"]


def test_alternatives_ingest_is_idempotent(store):
    rec = Record("c", "t", 1.0, "A man.", alternatives=_alts("A man.", "A woman."))
    assert store.add([rec, rec]) == 1 and store.add([rec]) == 0
    hits = store.search("woman")
    assert len(hits) == 1 and hits[0].alternative == {"rank": 1, "text": "A woman."}


def test_from_description_keeps_probabilities_and_alternatives(store):
    from runtime.describer import Alternative, Description

    attrs = _heads("a man with a backpack", gender={"male": 0.7, "female": 0.3})
    d = Description("a man with a backpack", [], attrs, alternatives=[
        Alternative("a man with a backpack", [], -0.2, attrs),
        Alternative("a woman with a backpack", [], -0.9, parse_attributes("a woman with a backpack"))])
    store.add([Record.from_description(d, "cam", "7", 5.0)])
    assert store.search("man")[0].match_confidence == {"male": 0.7}
    assert store.search("woman")[0].alternative["text"] == "a woman with a backpack"


def _rejects(store, match, **fields):
    rec = {"camera": "c", "track": "t", "timestamp": 1.0, "text": "a man", **fields}
    with pytest.raises(StoreError, match=match) as e:
        store.add([Record("c", "ok", 1.0, "a woman"), Record(**rec)])
    assert "\n" not in str(e.value)


def test_hostile_values_in_the_new_fields_are_refused(store):
    base = parse_attributes("a man")
    for probabilities, match in [
        ({"gender": {"male": math.nan}}, r"attributes\.probabilities\.gender\['male'\] must be a probability from"),
        ({"gender": {"male": 1.5}}, "from 0 to 1, got 1.5"),
        ({"gender": {"male": -0.1}}, "from 0 to 1"),
        ({"gender": {"male": True}}, "must be a probability"),
        ({"gender": {"male": "0.9"}}, "must be a probability"),
        ({"gender": {"male": 10**400}}, "from 0 to 1"),
        ({"gender": 0.9}, r"attributes\.probabilities\.gender must be an object"),
        ({"gender": {"ma\x00le": 0.9}}, "contains a NUL"),
        ({"gender": {"\ud800": 0.9}}, "not valid Unicode"),
        ({"gender": {f"v{i}": 0.01 for i in range(65)}}, "has 65 values"),
        ({"gen\x00der": {"male": 0.9}}, "a key of attributes.probabilities contains a NUL"),
        ([0.9], "attributes.probabilities must be an object"),
    ]:
        _rejects(store, match, attributes={**base, "probabilities": probabilities})
    for key, value, match in [("confidence", {"gender": math.inf}, "attributes.confidence.gender"),
                              ("confidence", {"gender": "high"}, "must be a probability"),
                              ("heads", {"gender": 3}, "attributes.heads.gender must be a string"),
                              ("heads", {"gender": "x" * 65}, "65 characters"),
                              ("abstained", "gender", "attributes.abstained must be a list"),
                              ("abstained", [None], r"attributes\.abstained\[0\] must be a string"),
                              ("disagreements", ["\ud800"], "not valid Unicode"),
                              ("text", "a man", "attributes.text must be an object"),
                              ("text", {"upper": ["coat"]}, "attributes.upper must be a string")]:
        _rejects(store, match, attributes={**base, key: value})
    for alternatives, match in [
        ("a woman", "alternatives must be a list"),
        ([{"text": "a woman", "score": 0}] * (MAX_ALTERNATIVES + 1), f"at most {MAX_ALTERNATIVES}"),
        (["a woman"], r"alternatives\[0\] must be an object"),
        ([{"text": None}], r"alternatives\[0\]\.text must be a string"),
        ([{"text": "a wo\x00man"}], r"alternatives\[0\]\.text contains a NUL"),
        ([{"text": "x" * 10_001}], "10001 characters"),
        ([{"text": "a woman", "score": math.nan}], r"alternatives\[0\]\.score must be a finite number"),
        ([{"text": "a woman", "score": True}], "must be a finite number"),
        ([{"text": "a woman", "attributes": {"gender": 1}}], r"alternatives\[0\]\.attributes\.gender must be"),
        ([{"text": "a woman", "attributes": {**base, "probabilities": {"gender": {"female": 2}}}}],
         r"alternatives\[0\]\.attributes\.probabilities"),
    ]:
        _rejects(store, match, alternatives=alternatives)
    assert store.count() == 0
    # unknown keys are dropped, as for the attributes themselves
    store.add([Record("c", "t", 1.0, "a man", {**base, "probabilities": {"colour": {"x": 0.5}}, "extra": {1: 2}})])
    assert store.search("man")[0].attributes.get("probabilities") == {}


# The schema of the previous version of the store, as it created it (no probabilities, no alternatives).
_OLD_SQLITE = """
CREATE TABLE descriptions (id INTEGER PRIMARY KEY, camera TEXT NOT NULL, track TEXT NOT NULL, ts REAL NOT NULL,
    x0 REAL, y0 REAL, x1 REAL, y1 REAL, text TEXT NOT NULL, attributes TEXT NOT NULL, bundle TEXT,
    tokens TEXT NOT NULL, UNIQUE (camera, track, ts));
CREATE INDEX descriptions_ts ON descriptions (ts);
CREATE VIRTUAL TABLE descriptions_fts USING fts5 (text, attrs, content='', tokenize='unicode61');
CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO store_meta VALUES ('format', 'pvlm-store/1');
"""
_OLD_PG = """
CREATE TABLE pvlm_descriptions (id BIGSERIAL PRIMARY KEY, camera TEXT NOT NULL, track TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL, x0 DOUBLE PRECISION, y0 DOUBLE PRECISION, x1 DOUBLE PRECISION,
    y1 DOUBLE PRECISION, text TEXT NOT NULL, attributes JSONB NOT NULL, bundle TEXT, attrs TEXT[] NOT NULL,
    tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED, UNIQUE (camera, track, ts));
CREATE INDEX pvlm_descriptions_attrs ON pvlm_descriptions USING gin (attrs);
CREATE INDEX pvlm_descriptions_tsv ON pvlm_descriptions USING gin (tsv);
CREATE INDEX pvlm_descriptions_ts ON pvlm_descriptions (ts);
"""
_OLD_ROWS = [("old", "w1", 1.0, "A woman in a red jacket with a backpack."), ("old", "m1", 2.0, "A man in a cap.")]


def _old_store(location):
    """A store as the previous version wrote it, with two descriptions."""
    if "://" not in location:
        import sqlite3

        db = sqlite3.connect(location, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_OLD_SQLITE)
        for i, (camera, track, ts, text) in enumerate(_OLD_ROWS, 1):
            attrs = parse_attributes(text)
            tokens = " ".join(attribute_tokens(attrs))
            db.execute("INSERT INTO descriptions VALUES (?, ?, ?, ?, NULL, NULL, NULL, NULL, ?, ?, NULL, ?)",
                       (i, camera, track, ts, text, json.dumps(attrs), tokens))
            db.execute("INSERT INTO descriptions_fts (rowid, text, attrs) VALUES (?, ?, ?)", (i, text, tokens))
        db.close()
        return
    import psycopg

    with psycopg.connect(location, autocommit=True) as db:
        db.execute(_OLD_PG)
        for camera, track, ts, text in _OLD_ROWS:
            attrs = parse_attributes(text)
            db.execute("INSERT INTO pvlm_descriptions (camera, track, ts, text, attributes, attrs) "
                       "VALUES (%s, %s, %s, %s, %s::jsonb, %s)", (camera, track, ts, text, json.dumps(attrs),
                                                                   attribute_tokens(attrs)))


def test_a_store_of_the_previous_version_is_read_then_extended(store_location):
    _old_store(store_location)
    with open_store(store_location, readonly=True) as r:  # read as it is: nothing added
        assert [h.track for h in r.search("woman in a red jacket")] == ["w1"]
        assert r.search("woman in a red jacket")[0].match_confidence == {}
        with open_store(store_location) as w:  # a writer brings it up to date, the old rows stay
            attrs = _heads("A woman in a red jacket.", gender={"female": 0.99, "male": 0.01})
            assert w.add([Record("new", "w2", 3.0, "A woman in a red jacket.", attrs),
                          Record("new", "m2", 4.0, "A man in a blue coat.",
                                 alternatives=_alts("A man in a blue coat.", "A woman in a red jacket."))]) == 2
            assert w.count() == 4
            hits = w.search("woman in a red jacket")
            assert [h.track for h in hits] == ["w1", "w2", "m2"]
            assert hits[1].match_confidence == {"female": 0.99} and hits[2].alternative["rank"] == 1
        # a reader opened before the upgrade sees the new rows, their probabilities and alternatives
        assert [h.track for h in r.search("woman in a red jacket")] == ["w1", "w2", "m2"]
    with open_store(store_location) as again:  # opening an up-to-date store changes nothing
        assert again.count() == 4


def test_the_count_includes_tracks_found_only_through_alternatives(store):
    alts = _alts("A man in a cap.", "A woman in a cap.")
    store.add([Record("c", f"w{i}", float(i), "A woman in a cap.") for i in range(5)]
              + [Record("c", f"a{i}", 10.0 + i, "A man in a cap.", alternatives=alts) for i in range(3)])
    pages = [store.page("woman", offset=o, limit=2, count_rows=100) for o in (0, 2, 4, 6)]
    assert [p.total for p in pages] == [8, 8, 8, 8]
    assert [h.track for p in pages for h in p.hits] == ["w4", "w3", "w2", "w1", "w0", "a2", "a1", "a0"]
    assert [p.more for p in pages] == [True, True, True, False]
