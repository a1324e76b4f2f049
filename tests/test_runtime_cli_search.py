"""``pvlm-index`` and ``pvlm-search``: describe lines in, tracks out; bad lines and queries exit 2 naming them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from runtime.cli_common import version
from runtime.search.cli import index_main, search_main

REPO = Path(__file__).resolve().parents[1]


def run(cmd, *args, stdin=None):
    return CliRunner().invoke(cmd, [str(a) for a in args], input=stdin)


def _line(image, text, **extra):
    from runtime.attributes import parse_attributes

    return json.dumps({"image": image, "text": text, "tokens": [], "attributes": parse_attributes(text),
                       "timings": {}, "error": None, **extra})


@pytest.fixture
def lines(tmp_path):
    f = tmp_path / "described.jsonl"
    f.write_text("\n".join([
        _line("crops/a.png", "A woman in a red jacket with a backpack, walking.", timestamp=10),
        _line("crops/b.png", "A man in a black coat and grey trousers, standing.", timestamp="2026-12-01T10:00:00Z",
              camera="gate", box=[1, 2, 3, 4]),
        _line("crops/c.png", "A woman in a red jacket and jeans, holding a phone.", timestamp=30, track="t7"),
        json.dumps({"image": "crops/d.png", "text": "", "tokens": [], "attributes": {}, "error": "unreadable"}),
    ]) + "\n")
    return f


def test_index_then_search(tmp_path, lines):
    db = tmp_path / "d.db"
    res = run(index_main, lines, "--db", db, "--camera", "lobby", "--bundle", "b1")
    assert res.exit_code == 0, res.output
    assert "indexed 3 new" in res.stderr and "1 line(s) with describe errors or no text skipped" in res.stderr
    res = run(index_main, lines, "--db", db, "--camera", "lobby")
    assert res.exit_code == 0 and "indexed 0 new description(s) (3 already stored" in res.stderr

    res = run(search_main, "woman in a red jacket", "--db", db, "--json")
    assert res.exit_code == 0, res.output
    hits = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(h["camera"], h["track"]) for h in hits] == [("lobby", "t7"), ("lobby", "a")]
    assert hits[0]["bundle"] == "b1" and hits[1]["timestamp"] == 10.0

    res = run(search_main, "man in a black coat", "--db", db, "--camera", "gate")
    assert res.exit_code == 0
    assert res.stdout.split("\t")[:3] == ["gate", "b", "2026-12-01T10:00:00+00:00"]
    res = run(search_main, "woman", "--db", db, "--since", "20", "--limit", "5")
    assert [x.split("\t")[1] for x in res.stdout.splitlines()] == ["t7"]


def test_search_errors(tmp_path, lines):
    db = tmp_path / "d.db"
    res = run(search_main, "woman", "--db", db)
    assert res.exit_code == 2 and "does not exist" in res.stderr
    run(index_main, lines, "--db", db)
    res = run(search_main, "the of", "--db", db)
    assert res.exit_code == 2 and res.stderr.startswith("error: query 'the of' names no attribute")
    res = run(search_main, "woman", "--db", db, "--since", "last tuesday")
    assert res.exit_code == 2 and "last tuesday" in res.stderr
    res = run(search_main, "man with an umbrella", "--db", db)
    assert res.exit_code == 1 and "no track matches" in res.stderr


def test_bad_lines_index_nothing(tmp_path):
    db = tmp_path / "d.db"
    f = tmp_path / "bad.jsonl"
    f.write_text(_line("x.png", "a man", timestamp=1) + "\n{not json\n" + json.dumps({"image": "y.png"}) + "\n"
                 + _line("/nonexistent/z.png", "a man in a cap") + "\n"
                 + _line("w.png", "a man", timestamp=1, box=[1, 2]) + "\n")
    res = run(index_main, f, "--db", db)
    assert res.exit_code == 2
    err = res.stderr.splitlines()
    assert err[0].startswith(f"error: {f}:2: not JSON")
    assert err[1] == f"error: {f}:3: no 'text' (a string) in the line"
    assert "no 'timestamp' in the line" in err[2] and f"{f}:4" in err[2]
    assert f"{f}:5: 'box'" in err[3]
    assert err[-1] == "error: 4 bad line(s); nothing was indexed"
    assert not db.exists()
    res = run(index_main, f, "--db", db, "--timestamp", "soon")
    assert res.exit_code == 2 and "--timestamp" in res.stderr


def test_stdin_and_mtime(tmp_path):
    img = tmp_path / "p.png"
    img.write_bytes(b"x")
    db = tmp_path / "d.db"
    res = run(index_main, "--db", db, stdin=_line(str(img), "a girl with an umbrella") + "\n")
    assert res.exit_code == 0, res.output
    hit = json.loads(run(search_main, "girl with an umbrella", "--db", db, "--json").stdout)
    assert hit["track"] == "p" and hit["timestamp"] == img.stat().st_mtime


def test_describe_json_pipes_into_index(tiny_bundle, tmp_path):
    pytest.importorskip("onnxruntime")
    from pvlm.synth import render_person, sample_attributes
    from runtime.cli import main as describe_main

    rng = np.random.default_rng(5)
    paths = []
    for i in range(3):
        p = tmp_path / f"crop{i}.png"
        render_person(sample_attributes(rng), rng, size=(64, 32)).save(p)
        paths.append(p)
    out = run(describe_main, tiny_bundle, *paths, "--json", "--backend", "onnxruntime-cpu")
    assert out.exit_code == 0, out.output
    db = tmp_path / "d.db"
    res = run(index_main, "--db", db, "--camera", "c1", stdin=out.stdout)
    assert res.exit_code == 0, res.output
    said = sum(bool(json.loads(x)["text"]) for x in out.stdout.splitlines())  # a random-init model may say nothing
    from runtime.search import open_store

    with open_store(db) as s:
        assert s.count() == said
    if said:  # each stored description says which model wrote it
        import sqlite3

        from runtime.description_schema import bundle_id

        con = sqlite3.connect(db)
        assert con.execute("SELECT DISTINCT bundle FROM descriptions").fetchall() == [(bundle_id(tiny_bundle),)]
        con.close()


def _count(db):
    import sqlite3

    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM descriptions").fetchone()[0]
    finally:
        con.close()


def _good(i):
    return json.dumps({"text": f"a woman in a red jacket, number {i}", "track": f"t{i}", "timestamp": 1000 + i})


def _error_lines(res, f):
    """stderr: one ``error: FILE:LINE: ...`` per bad line, then the summary; no traceback."""
    err = res.stderr.splitlines()
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert err[-1].endswith("nothing was indexed") and all(x.startswith(f"error: {f}:") for x in err[:-1]), err
    return {int(x.split(":")[2]): x.split(": ", 2)[2] for x in err[:-1]}


def test_index_refuses_values_it_could_not_read_back(tmp_path):
    """Epoch milliseconds, huge or non-finite numbers, invalid Unicode, deep nesting: one line each, nothing stored."""
    f = tmp_path / "bad.jsonl"
    lines = [
        _good(0).encode(),
        b'{"text": "a man", "track": "a", "timestamp": 1733450000123}',
        b'{"text": "a man", "track": "a", "timestamp": 1e400}',
        b'{"text": "a man", "track": "a", "timestamp": ' + b"9" * 5000 + b"}",
        b'{"text": "a man \\ud800", "track": "a", "timestamp": 1}',
        b'{"text": "a man \xff\xfe", "track": "a", "timestamp": 1}',
        b'{"text": "a man", "track": "a", "timestamp": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"text": "a man", "track": "a", "timestamp": NaN}',
        b'{"text": "a man", "track": "a\\u0000", "timestamp": 1}',
        b'{"text": "a man", "track": "a", "timestamp": 1, "box": [0, 0, 1e400, 1]}',
        b'{"text": "a man", "track": "a", "timestamp": 1, "box": [true, 0, 1, 1]}',
        b'{"text": "a man", "track": "a", "timestamp": 1, "box": [0, 0, ' + b"1" * 400 + b', 1]}',
        b'{"text": "a man", "track": "a", "timestamp": 1, "camera": ["c"]}',
        b'{"text": "a man", "track": "a", "timestamp": 1, "attributes": {"upper": {"a": 1}}}',
        b'{"text": "' + b"a" * 20_000 + b'", "track": "a", "timestamp": 1}',
        b'{"text": "a man", "track": "' + b"t" * 300 + b'", "timestamp": 1}',
        b'{"text": "a man", "track": "a", "timestamp": "1733450000123"}',
    ]
    f.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "d.db"
    res = run(index_main, f, "--db", db)
    assert res.exit_code == 2
    got = _error_lines(res, f)
    assert sorted(got) == list(range(2, 12)) and res.stderr.splitlines()[-1].startswith("error: 16 bad line(s)")
    assert "milliseconds" in got[2] and "finite" in got[3] and "digits" in got[4]
    assert "track" not in got[5] and "text is not valid Unicode" in got[5] and "not UTF-8" in got[6]
    assert "nested too deeply" in got[7] and "NaN" in got[8] and "NUL" in got[9]
    assert not db.exists()
    f.write_bytes(b"\n".join(lines[12:]) + b"\n")
    got = _error_lines(run(index_main, f, "--db", db), f)
    assert "'camera' must be a string" in got[1] and "attributes.upper" in got[2] and "20000 characters" in got[3]
    assert "track is 300 characters" in got[4] and "milliseconds" in got[5] and not db.exists()


def test_index_is_one_transaction(tmp_path):
    """A line that would fail only when written, after 6,000 good ones: nothing is stored, one line says why."""
    f = tmp_path / "lines.jsonl"
    f.write_text("\n".join([*(_good(i) for i in range(6000)), json.dumps({"text": "a man \ud800", "track": "x",
                                                                           "timestamp": 5})]) + "\n")
    db = tmp_path / "d.db"
    res = run(index_main, f, "--db", db)
    assert res.exit_code == 2 and _error_lines(res, f) == {6001: "text is not valid Unicode (a lone surrogate at "
                                                                 "index 6)"}
    assert _count(db) == 0


def test_index_write_failure_rolls_everything_back(tmp_path):
    """A write that fails after the first 5,000 rows are in (a trigger here) leaves no row behind."""
    import sqlite3

    from runtime.search import open_store

    db = tmp_path / "d.db"
    open_store(db).close()
    con = sqlite3.connect(db)
    con.execute("CREATE TRIGGER boom BEFORE INSERT ON descriptions WHEN NEW.track = 't5500' "
                "BEGIN SELECT RAISE(ABORT, 'boom at t5500'); END")
    con.commit()
    con.close()
    f = tmp_path / "lines.jsonl"
    f.write_text("\n".join(_good(i) for i in range(6000)) + "\n")
    res = run(index_main, f, "--db", db)
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert res.stderr == f"error: store {db}: ingest failed, nothing was stored: boom at t5500\n"
    assert _count(db) == 0


def test_index_disk_full(tmp_path, monkeypatch):
    """SQLite says the disk is full part-way: the real cause in one line, exit 1, no rows, no large log left."""
    import sqlite3

    real = sqlite3.connect

    def small_disk(*args, **kwargs):
        con = real(*args, **kwargs)
        con.execute("PRAGMA max_page_count=700")  # 2.8 MB: 5,000 rows fit, 7,000 do not
        return con

    f = tmp_path / "lines.jsonl"
    f.write_text("\n".join(_good(i) for i in range(7000)) + "\n")
    db = tmp_path / "d.db"
    monkeypatch.setattr(sqlite3, "connect", small_disk)
    res = run(index_main, f, "--db", db, "-q")
    monkeypatch.undo()
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert res.stderr == f"error: store {db}: ingest failed, nothing was stored: database or disk is full\n"
    assert _count(db) == 0
    wal = tmp_path / "d.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def _unshare_works():
    import shutil
    import subprocess

    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def _python_cli(func):
    return f"import sys; from runtime.search.cli import {func}; sys.argv[0] = 'pvlm'; {func}()"


def test_index_real_disk_full(tmp_path):
    """A real full disk (a 1.2 MB tmpfs in a private mount namespace): nothing stored, the log's space given back."""
    import subprocess
    import sys

    if not _unshare_works():
        pytest.skip("needs unshare -rm (user and mount namespaces) to mount a small tmpfs")
    f = tmp_path / "lines.jsonl"
    f.write_text("\n".join(_good(i) for i in range(7000)) + "\n")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"mount -t tmpfs -o size=1200k tmpfs {mnt} && {{ {sys.executable} -c \"{_python_cli('index_main')}\" "
              f"{f} --db {mnt}/d.db -q; echo rc=$?; ls {mnt}; stat -c %s {mnt}/d.db; }}")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.stderr == f"error: store {mnt}/d.db: ingest failed, nothing was stored: database or disk is full\n"
    rc, files, size = out.stdout.split("\n", 2)
    assert rc == "rc=1" and files == "d.db" and int(size) < 100_000, out.stdout


def test_search_leaves_a_foreign_database_untouched(tmp_path):
    import sqlite3

    foreign = tmp_path / "app.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    res = run(search_main, "woman", "--db", foreign)
    assert res.exit_code == 2 and res.stderr == f"error: store {foreign}: not a description store (it holds other " \
                                                "tables: 'users')\n"
    assert foreign.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["app.db"]
    res = run(index_main, "--db", foreign, "--timestamp", "1", stdin=_line("a.png", "a woman") + "\n")
    assert res.exit_code == 2 and "not a description store" in res.stderr and foreign.read_bytes() == before


def test_search_reads_past_a_writer(tmp_path, lines):
    """A writer holding the store's lock (longer than SQLite's default 5 s wait) does not stop a search."""
    import sqlite3
    import threading
    import time

    db = tmp_path / "d.db"
    run(index_main, lines, "--db", db)
    held, done = threading.Event(), threading.Event()

    def writer():
        con = sqlite3.connect(db, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO store_meta VALUES ('writer', 'busy')")
        held.set()
        done.wait(8)
        con.execute("ROLLBACK")
        con.close()

    t = threading.Thread(target=writer)
    t.start()
    held.wait()
    t0 = time.monotonic()
    try:
        res = run(search_main, "woman in a red jacket", "--db", db)
    finally:
        done.set()
        t.join()
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 2 and time.monotonic() - t0 < 4


def test_search_on_a_read_only_store(tmp_path, lines):
    """A store on a read-only mount (root) or in a read-only directory (other users) is searchable, and
    indexing into it says it is read-only."""
    import subprocess
    import sys

    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "d.db"
    run(index_main, lines, "--db", db)
    assert sorted(p.name for p in ro.iterdir()) == ["d.db"]  # the log is gone once the writer closes
    py = f"{sys.executable} -c"
    both = (f"{py} \"{_python_cli('search_main')}\" 'woman in a red jacket' --db {db}; echo rc=$?; "
            f"echo '{_good(1)}' | {py} \"{_python_cli('index_main')}\" --db {db} 2>&1; echo rc=$?")
    if os.geteuid() == 0:
        if not _unshare_works():
            pytest.skip("as root a read-only store needs a read-only mount (unshare -rm)")
        mount = f"mount --bind {ro} {ro} && mount -o remount,ro,bind {ro}"
        cmd = ["unshare", "-rm", "sh", "-c", f"{mount} && {{ {both}; }}"]
    else:
        db.chmod(0o444)
        ro.chmod(0o555)
        cmd = ["sh", "-c", both]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        ro.chmod(0o755)
    assert out.stderr == "", out.stderr
    found = out.stdout.splitlines()
    assert [x.split("\t")[1] for x in found[:2]] == ["t7", "a"] and found[2] == "rc=0"
    assert found[3] == f"error: store {db}: read-only ({ro} cannot be written)" and found[4] == "rc=1"


def test_bundle_id_is_kept(tmp_path):
    """pvlm-describe --json writes bundle_id; bundle (older lines) and --bundle still work; a conflict is refused."""
    db = tmp_path / "d.db"
    f = tmp_path / "l.jsonl"
    f.write_text("\n".join([_line("a.png", "a woman in a cap", timestamp=1, bundle_id="0123456789abcdef"),
                            _line("b.png", "a woman in a cap", timestamp=2, bundle="old"),
                            _line("c.png", "a woman in a cap", timestamp=3, bundle_id=None)]) + "\n")
    assert run(index_main, f, "--db", db, "--bundle", "cli").exit_code == 0
    hits = [json.loads(x) for x in run(search_main, "woman in a cap", "--db", db, "--json").stdout.splitlines()]
    assert {h["track"]: h["bundle"] for h in hits} == {"a": "0123456789abcdef", "b": "old", "c": "cli"}
    f.write_text(_line("d.png", "a man", timestamp=1, bundle_id="0123456789abcdef", bundle="other") + "\n")
    res = run(index_main, f, "--db", db)
    assert res.exit_code == 2 and f"{f}:1: 'bundle_id' and 'bundle' disagree" in res.stderr


def test_null_keys_are_absent_and_plain_output_cannot_forge_lines(tmp_path):
    db = tmp_path / "d.db"
    f = tmp_path / "l.jsonl"
    f.write_text("\n".join([_line("a.png", "a woman in a cap", timestamp=1, camera=None, track=None),
                            _line("b.png", "a woman in a cap\nx\ty", timestamp=2, camera="gate\t9", track="t\n1"),
                            _line("c.png", "a woman in a cap \\t \x1b[31m \u2028", timestamp=3, camera="c")]) + "\n")
    assert run(index_main, f, "--db", db, "--camera", "lobby").exit_code == 0
    out = run(search_main, "woman in a cap", "--db", db).stdout.splitlines()
    assert [x.split("\t") for x in out] == [
        ["c", "c", "1970-01-01T00:00:03+00:00", "a woman in a cap \\\\t \\u001b[31m \\u2028", "female, cap"],
        ["gate\\t9", "t\\n1", "1970-01-01T00:00:02+00:00", "a woman in a cap\\nx\\ty", "female, cap"],
        ["lobby", "a", "1970-01-01T00:00:01+00:00", "a woman in a cap", "female, cap"],
    ]
    hits = [json.loads(x) for x in run(search_main, "woman in a cap", "--db", db, "--json").stdout.splitlines()]
    assert hits[1]["camera"] == "gate\t9" and hits[1]["text"] == "a woman in a cap\nx\ty"  # JSON keeps them as they are


def test_common_options(tmp_path, lines, caplog):
    """-h, --version, -q and -v, like every other pvlm command."""
    db = tmp_path / "d.db"
    for cmd in (index_main, search_main):
        res = run(cmd, "-h")
        assert res.exit_code == 0 and "--quiet" in res.stdout and "--verbose" in res.stdout
        res = run(cmd, "--version")
        assert res.exit_code == 0 and res.stdout.split() == ["index-main" if cmd is index_main else "search-main",
                                                             version()]
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(_good(i) for i in range(6000)) + "\n")
    res = run(index_main, big, "--db", db, "-q")
    assert res.exit_code == 0 and res.stderr.splitlines() == [f"indexed 6000 new description(s) (0 already stored) "
                                                              f"into {db}"]
    said = f"{lines}: 3 description(s) so far"
    res = run(index_main, lines, "--db", db)
    assert res.exit_code == 0 and said not in caplog.messages
    res = run(index_main, lines, "--db", db, "-v")
    assert res.exit_code == 0 and said in caplog.messages
    res = run(search_main, "woman", "--db", db, "-q", "--limit", "2")
    assert res.exit_code == 0 and len(res.stdout.splitlines()) == 2
    res = run(search_main, "woman", "--db", db, "--nope")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: No such option '--nope'")


def test_unreachable_server_is_one_line_without_the_password():
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[search]')")
    url = "postgresql://pvlm:s3cret@127.0.0.1:1/nowhere"
    for cmd, args in ((search_main, ["woman"]), (index_main, ["--timestamp", "1"])):
        res = run(cmd, *args, "--db", url, stdin=_line("a.png", "a woman") + "\n")
        assert res.exit_code == 1 and res.stderr.count("\n") == 1, res.output
        assert res.stderr.startswith("error: store postgresql://pvlm:***@127.0.0.1:1/nowhere: cannot connect")
        assert "s3cret" not in res.output


def test_search_ranks_says_what_matched_and_corrects_typos(tmp_path, lines):
    db = tmp_path / "d.db"
    assert run(index_main, lines, "--db", db, "--camera", "lobby").exit_code == 0
    res = run(search_main, "womn in a red jaket with a phone", "--db", db)
    assert res.exit_code == 0, res.output
    assert res.stderr == "corrected: womn -> woman, jaket -> jacket\n"
    rows = [x.split("\t") for x in res.stdout.splitlines()]
    assert [r[1] for r in rows] == ["t7"] and rows[0][4] == "female, jacket, red upper, phone"
    hits = [json.loads(x) for x in run(search_main, "man without a hat", "--db", db, "--json").stdout.splitlines()]
    assert [h["track"] for h in hits] == ["b"] and hits[0]["matched"] == ["male"] and hits[0]["score"] == 1.0
    res = run(search_main, "woman", "--db", db, "--until", "20")
    assert [x.split("\t")[1] for x in res.stdout.splitlines()] == ["a"]
    res = run(search_main, "blue", "--db", db)
    assert res.exit_code == 1 and "no track matches" in res.stderr


def _heads_line(image, text, alternatives, **probabilities):
    """A ``pvlm-describe --json`` line of a bundle with attribute heads, with n-best alternatives."""
    from runtime.attributes import parse_attributes

    attrs = parse_attributes(text)
    attrs.update(probabilities=probabilities, heads={k: max(v, key=v.get) for k, v in probabilities.items()},
                 text=parse_attributes(text), confidence={k: v.get(attrs[k]) for k, v in probabilities.items()},
                 disagreements=[], abstained=[])
    alts = [{"text": t, "score": -0.25 * i, "attributes": parse_attributes(t)}
            for i, t in enumerate([text, *alternatives])]
    return {"schema_version": 1, "bundle_id": "0123456789abcdef", "backend": "onnxruntime-cpu", "image": image,
            "text": text, "attributes": attrs, "timings": {}, "error": None, "alternatives": alts}


def test_probabilities_and_alternatives_through_index_and_search(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from runtime.description_schema import description_schema

    objs = [_heads_line("a.png", "A woman in a red jacket.", ["A woman in a red coat."],
                        gender={"female": 0.9, "male": 0.1}, upper_color={"red": 0.75, "blue": 0.25}),
            _heads_line("b.png", "A man in a blue coat.", ["A woman in a blue jacket."],
                        gender={"male": 0.8, "female": 0.2})]
    for obj in objs:  # the lines are what pvlm-describe writes
        jsonschema.validate(obj, description_schema())
    f = tmp_path / "described.jsonl"
    f.write_text("".join(json.dumps({**o, "timestamp": 10 + i}) + "\n" for i, o in enumerate(objs)))
    db = tmp_path / "d.db"
    assert run(index_main, f, "--db", db).exit_code == 0
    res = run(search_main, "woman in a jacket", "--db", db, "--json")
    hits = [json.loads(x) for x in res.stdout.splitlines()]
    assert [h["track"] for h in hits] == ["a", "b"]
    assert hits[0]["attributes"]["probabilities"]["upper_color"] == {"red": 0.75, "blue": 0.25}
    assert hits[0]["match_confidence"] == {"female": 0.9} and hits[0]["alternative"] is None
    assert hits[1]["alternative"] == {"rank": 1, "text": "A woman in a blue jacket."}
    plain = run(search_main, "woman in a jacket", "--db", db).stdout.splitlines()
    assert plain[0].split("\t")[4] == "female (p=0.90), jacket"
    assert plain[1].split("\t")[3:] == ["A man in a blue coat.",
                                        "female, jacket; via alternative 1: A woman in a blue jacket."]


def test_index_refuses_hostile_probabilities_and_alternatives(tmp_path):
    good = _heads_line("a.png", "A woman.", [], gender={"female": 0.9, "male": 0.1})
    bad_p = _heads_line("b.png", "A woman.", [], gender={"female": 1.5, "male": 0.1})
    bad_alt = {**good, "image": "c.png", "alternatives": [{"text": "a man", "score": "high", "attributes": None}]}
    bad_list = {**good, "image": "d.png", "alternatives": {"text": "a man"}}
    f = tmp_path / "bad.jsonl"
    f.write_text("".join(json.dumps({**o, "timestamp": 1}) + "\n" for o in (good, bad_p, bad_alt, bad_list)))
    db = tmp_path / "d.db"
    res = run(index_main, f, "--db", db)
    assert res.exit_code == 2
    errors = _error_lines(res, f)
    assert set(errors) == {2, 3, 4}
    assert "attributes.probabilities.gender['female'] must be a probability from 0 to 1, got 1.5" in errors[2]
    assert "alternatives[0].score must be a finite number or null" in errors[3]
    assert "'alternatives' must be a list" in errors[4]
    assert not db.exists()
