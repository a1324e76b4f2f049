"""Search that ranks: scores best first, shades rank, negation excludes, bare colours, typos, paging, tracks.

Every store test runs on SQLite and on a real PostgreSQL server (``PVLM_TEST_PG_URL``, started by
``.ci/postgres.sh``); the PostgreSQL runs skip only when no server can be reached.
"""

from __future__ import annotations

import json
import math

import pytest

from runtime.search import QueryError, Record, SQLiteStore, open_store, parse_query
from runtime.search.rank import Candidate, bm25, confidence, rank, score

ROWS = [
    # camera, track, timestamp, text
    ("cam1", "a", 10.0, "A man in a black jacket and grey jeans, wearing a hat, walking."),
    ("cam1", "b", 20.0, "A man in a blue hoodie and black trousers, wearing a helmet."),
    ("cam1", "c", 30.0, "A man in a dark blue hoodie and black trousers, with glasses and short hair."),
    ("cam2", "d", 40.0, "A woman in a red jacket and blue jeans, carrying a backpack."),
    ("cam2", "e", 50.0, "A woman with glasses in a red jacket, carrying a backpack, glasses on her head."),
    ("cam2", "f", 60.0, "A man in a grey coat, wearing a cap."),
    ("cam3", "g", 70.0, "A woman in a white shirt and a light blue skirt, holding a phone."),
    ("cam3", "g", 75.0, "A woman in a white shirt and a blue skirt, holding a phone, walking."),
]




@pytest.fixture
def store(store_location):
    loc = store_location
    s = open_store(loc)
    s.add([Record(c, t, ts, text, box=(0, 0, 10, 20), bundle="b") for c, t, ts, text in ROWS])
    yield s
    s.close()


def _tracks(hits):
    return [h.track for h in hits]


def test_hits_are_scored_best_first_and_say_what_they_matched(store):
    hits = store.search("woman with glasses")
    assert _tracks(hits)[0] == "e" and hits[0].score > hits[1].score > 0
    assert hits[0].matched == ("female", "glasses") and hits[1].matched == ("female",)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert _tracks(hits[1:]) == ["g", "d"]  # equal scores: newest first
    assert json.loads(json.dumps(hits[0].to_json()))["matched"] == ["female", "glasses"]


def test_a_shade_ranks_instead_of_filtering(store):
    hits = store.search("dark blue hoodie")
    assert _tracks(hits) == ["c", "b"] and "dark upper" in hits[0].matched and hits[0].score > hits[1].score
    assert _tracks(store.search("navy hoodie")) == ["c", "b"]  # navy: blue, dark


def test_without_and_no_leave_things_out(store):
    assert _tracks(store.search("man without a hat")) == ["c"]  # no hat, cap or helmet
    assert _tracks(store.search("man not wearing a helmet")) == ["f", "c", "a"]  # a hat or a cap is fine
    assert _tracks(store.search("woman without glasses")) == ["g", "d"]
    assert _tracks(store.search("woman with a backpack but no glasses")) == ["d"]
    with pytest.raises(QueryError, match="only says what to leave out"):
        store.search("no hat")


def test_a_colour_or_shade_alone_searches_every_garment(store):
    hits = store.search("blue")
    assert sorted(_tracks(hits)) == ["b", "c", "d", "g"] and hits[0].matched == ("blue (any garment)",)
    dark = store.search("person in dark clothes")  # a dark top and black trousers count twice
    assert _tracks(dark) == ["c", "b", "a"] and dark[0].score == 2 and dark[1].score == 1
    assert _tracks(store.search("light clothes")) == ["g"]


def test_typos_of_attribute_words_are_corrected(store):
    page = store.page("womn in red jaket")
    assert page.query.corrections == {"womn": "woman", "jaket": "jacket"}
    assert sorted(_tracks(page.hits)) == ["d", "e"]
    # a word the descriptions use is left alone, even one edit from a schema word ("boat" / "boot")
    assert parse_query("man by a boat").corrections == {"boat": "boot"}
    store.add([Record("cam4", "h", 80.0, "A man in a green jacket standing next to a boat.")])
    page = store.page("man by a boat")
    assert page.query.corrections == {} and _tracks(page.hits)[0] == "h" and "boat" in page.hits[0].matched


def test_best_description_of_a_track_and_its_history(store):
    hits = store.search("woman walking in a blue skirt")
    assert _tracks(hits) == ["g"] and hits[0].timestamp == 75.0  # the description that says "walking"
    history = store.track("cam3", "g")
    assert [h.timestamp for h in history] == [70.0, 75.0] and history[0].text.startswith("A woman in a white shirt")
    assert store.track("cam3", "nope") == []
    assert store.spans([("cam3", "g"), ("cam1", "a"), ("x", "y")]) == {("cam3", "g"): (70.0, 75.0, 2),
                                                                          ("cam1", "a"): (10.0, 10.0, 1)}
    assert store.cameras() == ["cam1", "cam2", "cam3"] and store.cameras(limit=2) == ["cam1", "cam2"]


def test_pages_time_range_camera_and_dropped_terms(store):
    first = store.page("man", limit=2, count_rows=100)
    second = store.page("man", limit=2, offset=2, count_rows=100)
    assert _tracks(first.hits) == ["f", "c"] and first.more and first.total == 4 and not first.capped
    assert _tracks(second.hits) == ["b", "a"] and not second.more
    assert _tracks(store.search("man", since=20, until=30)) == ["c", "b"]
    assert _tracks(store.search("man", camera="cam2")) == ["f"]
    page = store.page("man in a grey coat", drop=["upper:coat"])
    assert [t.id for t in page.query.dropped] == ["upper:coat"] and "grey upper" in page.hits[0].matched
    with pytest.raises(QueryError, match="removed"):
        store.page("coat", drop=["upper:coat"])
    with pytest.raises(QueryError, match="offset"):
        store.page("man", offset=10**9)


def test_probabilities_weight_attribute_points():
    attrs = {"probabilities": {"gender": 0.6, "carrying": {"backpack": 0.9}, "upper": "high", "age": 3}}
    assert confidence(attrs, "gender", "female") == 0.6 and confidence(attrs, "carrying", "backpack") == 0.9
    assert confidence(attrs, "upper", "coat") == confidence(attrs, "age", "young") == 1.0  # not a probability
    assert confidence({}, "gender", "male") == 1.0
    q = parse_query("woman with a backpack")
    sure = Candidate(1, "c", "a", "genderfemale carryingbackpack")
    unsure = Candidate(2, "c", "b", "genderfemale carryingbackpack", attributes=attrs)
    assert score(q, sure) == (2.0, ("female", "backpack")) and score(q, unsure)[0] == pytest.approx(1.5)
    ranked = rank(q, [unsure, sure], [], need=2)
    assert [r.id for r in ranked.tracks] == [1, 2]  # the older but surer description first


def test_sqlite_text_relevance_is_fts5_bm25(tmp_path):
    """The relevance of free words is exactly FTS5's bm25() (computed from its own statistics, cheaply)."""
    with SQLiteStore(tmp_path / "b.db") as s:
        s.add([Record(c, t, ts, text) for c, t, ts, text in ROWS])
        words = ("glasses", "hair")
        want = {r: -v for r, v in s._db.execute(
            "SELECT rowid, bm25(descriptions_fts, 1.0, 0.0) FROM descriptions_fts WHERE descriptions_fts MATCH ?",
            ('{text}: ("glasses" OR "hair")',))}
        stats = s._reader._stats()
        got = {rid: s._reader._relevance(Candidate(rid, "c", "t", "", text), size, stats, words)
               for rid, text, size in s._db.execute(
            "SELECT d.id, d.text, z.sz FROM descriptions d JOIN descriptions_fts_docsize z ON z.id = d.id")}
    assert set(want) == {r for r, v in got.items() if v > 0} and len(want) == 2
    for rid, v in want.items():
        assert math.isclose(got[rid], v, rel_tol=1e-12)
    assert bm25({"x": 1}, 5, 0, 0, {"x": 1}) == 0.0


def test_search_and_track_reads_leave_the_file_alone(tmp_path):
    db = tmp_path / "d.db"
    with SQLiteStore(db) as s:
        s.add([Record(c, t, ts, text) for c, t, ts, text in ROWS])
    before = db.read_bytes()
    with open_store(db, readonly=True) as r:
        r.page("womn in dark clothes without a hat", count_rows=100)
        r.track("cam1", "a")
        r.cameras()
        r.spans([("cam1", "a")])
    assert db.read_bytes() == before


def test_past_the_ranked_window(store):
    """Hundreds of candidates: a free word still finds an old description, deep pages are scored in full,
    and tracks are counted only as far as asked."""
    many = [Record("hall", f"r{i:03d}", 1000.0 + i, "A woman in a red jacket, walking.") for i in range(300)]
    many[5] = Record("hall", "r005", 1005.0, "A woman in a red jacket with glasses, walking.")
    store.add(many)
    hits = store.search("woman in a red jacket with glasses", limit=3)
    assert {h.track for h in hits[:2]} == {"e", "r005"} and hits[1].matched[-1] == "glasses"
    assert hits[1].score > hits[2].score  # both with glasses above the 300 without, though r005 is old
    deep = store.page("woman in a red jacket with glasses", offset=280, limit=30, count_rows=1000)
    assert [h.track for h in deep.hits][-3:] == ["r001", "r000", "d"]
    assert deep.total == 302 and not deep.capped and not deep.more
    assert all(h.matched[:3] == ("female", "jacket", "red upper") for h in deep.hits)
    few = store.page("woman in a red jacket", limit=10, count_rows=150)
    assert few.capped and 10 < few.total < 302 and few.more
    tracks = [h.track for h in store.page("woman in a red jacket", limit=300).hits]
    assert len(tracks) == len(set(tracks)) == 300


def test_operator_queries_find_the_right_people():
    """The twelve operator queries of bench/retrieval.py (shades, negation, a colour alone, typos) over 300
    synthetic captions: searched exactly, every hit is relevant and the top ten hold every relevant crop there
    is room for; with near-synonyms the same crops come first and the near ones only after them."""
    import numpy as np

    from bench.retrieval import score_operator
    from pvlm.synth import caption, sample_attributes

    rng = np.random.default_rng(11)
    truth = [sample_attributes(rng) for _ in range(300)]
    s = SQLiteStore(":memory:")
    s.add(Record("synth", str(i), float(i), caption(a, rng)) for i, a in enumerate(truth))
    op = score_operator(s, truth, exact=True)
    assert op["refused"] == 0 and op["queries_with_no_hit"] == 0, op["per_query"]
    assert op["precision@10"] == 1.0 and op["recall@10"] == 1.0, op["per_query"]
    near = score_operator(s, truth)
    assert near["recall@1"] == near["recall@10"] == 1.0, near["per_query"]
    hits = s.search("man in a red jacket", limit=50)
    labels = [h.matched[1] for h in hits]
    assert "coat (near jacket)" in labels and labels == sorted(labels, key=lambda x: x != "jacket")
    assert all(truth[int(h.track)]["upper"] == ("jacket" if m == "jacket" else "coat") for h, m in zip(hits, labels))


def test_near_synonyms_widen_a_garment_and_rank_below_it(store):
    store.add([Record("cam4", "k", 5.0, "A woman in a red coat, carrying a backpack.")])  # the oldest of all
    hits = store.search("woman in a red jacket")
    assert _tracks(hits) == ["e", "d", "k"] and hits[0].score == hits[1].score > hits[2].score > 0
    assert hits[2].matched == ("female", "coat (near jacket)", "red upper")
    page = store.page("woman in a red jacket", drop=["~upper:jacket"])
    assert _tracks(page.hits) == ["e", "d"] and page.query.to_json()["dropped"] == [
        {"id": "~upper:jacket", "label": "or coat", "kind": "attribute", "role": "near"}]
    assert _tracks(store.search("man in a coat")) == ["f", "a"]  # a grey coat, then a black jacket
    assert _tracks(store.search("man without a coat")) == ["c", "b", "a"]  # a negation is never widened
    q = parse_query("woman in a hoodie and jeans with a cap")
    assert {t.id: t.near_label for t in q.terms if t.near} == {
        "upper:hoodie": "sweater", "lower:jeans": "trousers", "headwear:cap": "hat"}


def test_one_walk_ranks_pages_and_counts():
    """The base pass is read once: ranking takes the head, paging reads on, counting goes on from there."""
    from runtime.search.reads import Walk

    rows = [Candidate(100 - i, "c", f"t{i // 2}", "genderfemale") for i in range(40)]  # two rows a track
    closed = []

    def stream():
        try:
            yield from rows
        finally:
            closed.append(True)

    walk = Walk(stream(), count_rows=30)
    head = walk.take(10)
    ranked = rank(parse_query("woman"), head, walk, need=8)
    assert [r.id for r in ranked.tracks] == [100 - 2 * i for i in range(8)] and walk.read == 16
    assert walk.count() == (15, True) and walk.read == 31  # tracks among the first 30 rows; a 31st exists
    walk.close()
    assert closed == [True]
    short = Walk(iter(rows[:6]), count_rows=30)
    assert short.take(10) == rows[:6] and short.count() == (3, False)
