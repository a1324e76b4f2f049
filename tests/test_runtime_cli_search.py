"""``pvlm-index`` and ``pvlm-search``: describe lines in, tracks out; bad lines and queries exit 2 naming them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from runtime.cli_search import index_main, search_main


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
    from runtime.store import open_store

    with open_store(db) as s:
        assert s.count() == said
