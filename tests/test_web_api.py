"""pvlm-web's JSON API, through a real uvicorn server on loopback, over real SQLite and PostgreSQL stores.

Hostile input is refused or kept inert: a camera or text holding markup comes back as data, thumbnail
paths cannot leave the thumbnails folder, a 50 MB upload and a 10,000-character query are refused,
and with a token nothing is served without it.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path
from urllib.parse import quote

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install '.[web]')")
pytest.importorskip("starlette", reason="Starlette is not installed (pip install '.[web]')")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install '.[web]')")

from runtime.search.web_api import WebConfig  # noqa: E402
from web_fixture import HOSTILE_CAMERA, HOSTILE_TEXT, fill, serve, write_thumbs  # noqa: E402




@pytest.fixture
def site(store_location, tmp_path):
    loc = store_location
    fill(loc)
    thumbs = tmp_path / "thumbs"
    write_thumbs(thumbs, [("lobby", "w01"), (HOSTILE_CAMERA, "<b>x</b>")])
    (tmp_path / "secret.jpg").write_bytes(b"outside the thumbnails folder")
    (thumbs / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    with serve(WebConfig(loc, thumbs=thumbs, hosts=("127.0.0.1",))) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


def test_search_is_best_first_with_chips_counts_and_thumbnails(site):
    r = site.get("/api/search", params={"q": "woman in a red jacket with a backpack", "size": 5})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    data = r.json()
    assert [t["label"] for t in data["query"]["terms"]] == ["female", "jacket", "or coat", "red upper", "backpack"]
    assert data["query"]["terms"][2] == {"id": "~upper:jacket", "label": "or coat", "kind": "attribute", "role": "near"}
    assert [h["track"] for h in data["hits"]] == ["<b>x</b>", "w29", "w28", "w26", "w25"]
    assert data["total"] == 21 and not data["total_capped"] and data["more"] and data["took_ms"] >= 0
    page4 = site.get("/api/search", params={"q": "woman in a red jacket with a backpack", "size": 5, "page": 5}).json()
    assert [h["track"] for h in page4["hits"]] == ["w01"] and not page4["more"]
    hit = page4["hits"][0]
    assert hit["thumb"] == "/thumbs/lobby_w01.jpg" and hit["matched"] == ["female", "jacket", "red upper", "backpack"]
    assert site.get(hit["thumb"]).content[:2] == b"\xff\xd8"  # a JPEG
    assert hit["first_seen"] == hit["last_seen"] == 1001.0 and hit["descriptions"] == 1
    dropped = site.get("/api/search", params={"q": "woman in a red jacket with a backpack", "size": 50,
                                              "drop": "upper_color:red"}).json()
    assert dropped["total"] == 31 and [t["id"] for t in dropped["query"]["dropped"]] == ["upper_color:red"]


def test_track_detail_and_cameras(site):
    data = site.get("/api/tracks/gate/m0").json()
    assert [d["timestamp"] for d in data["descriptions"]] == [2000.0, 2101.0, 2102.0]
    assert data["first_seen"] == 2000.0 and data["last_seen"] == 2102.0 and data["thumb"] is None
    assert site.get("/api/tracks/gate/nobody").status_code == 404
    assert site.get("/api/tracks/gate").status_code == 404
    cams = site.get("/api/cameras").json()["cameras"]
    assert cams == sorted(["lobby", "gate", HOSTILE_CAMERA])


def test_markup_in_stored_values_comes_back_as_data(site):
    path = f"/api/tracks/{quote(HOSTILE_CAMERA, safe='')}/{quote('<b>x</b>', safe='')}"
    r = site.get(path)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    data = r.json()
    assert data["camera"] == HOSTILE_CAMERA and data["descriptions"][0]["text"] == HOSTILE_TEXT
    assert data["thumb"] == "/thumbs/-img-src-x-onerror-window.__xss-1-gate_-b-x-b-.jpg"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/thumbs/..%2F..%2F..%2Fetc%2Fpasswd", "/thumbs/../secret.jpg",
                                  "/thumbs/%2e%2e%2fsecret.jpg", "/thumbs/link.jpg", "/thumbs/.hidden.jpg",
                                  "/thumbs/lobby_w01.png", "/thumbs/%2e%2e", "/static/%2e%2e/secret.jpg"])
def test_thumbnails_never_leave_their_folder(site, path):
    r = site.get(path)
    assert r.status_code == 404 and b"outside the thumbnails folder" not in r.content


def test_bad_requests_are_one_line_refusals(site):
    long = site.get("/api/search", params={"q": "a" * 10_000})
    assert long.status_code == 400 and long.json() == {"error": "query is 10000 characters long (at most 2000)"}
    for params, match in [({}, "missing q"), ({"q": "the of"}, "names no attribute"),
                          ({"q": "woman", "page": "0"}, "page must be"), ({"q": "woman", "size": "1000"}, "size"),
                          ({"q": "woman", "since": "yesterday"}, "yesterday"), ({"q": "woman\x00"}, "NUL")]:
        r = site.get("/api/search", params=params)
        assert r.status_code == 400 and match in r.json()["error"] and "\n" not in r.json()["error"]
    assert site.post("/api/describe", content=b"x").status_code == 404  # no --bundle
    assert site.get("/api/search", params={"q": "woman"}, headers={"host": "evil.example"}).status_code == 400


def test_token_is_needed_on_every_request(tmp_path):
    db = str(tmp_path / "d.db")
    fill(db)
    with serve(WebConfig(db, token="s3cret-token")) as url, httpx.Client(base_url=url, timeout=30) as c:
        for path in ("/api/search?q=woman", "/api/cameras", "/api/tracks/gate/m0", "/thumbs/x.jpg"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
            assert c.get(path, headers={"authorization": "Bearer wrong"}).status_code == 401
        page = c.get("/")
        assert page.status_code == 401 and 'action="/login"' in page.text and "woman" not in page.text
        assert c.get("/static/app.js").status_code == 401 and c.get("/static/style.css").status_code == 200
        ok = c.get("/api/search?q=woman", headers={"authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and ok.json()["hits"]
        assert c.post("/login", data={"token": "nope"}).status_code == 401
        login = c.post("/login", data={"token": "s3cret-token"})
        assert login.status_code == 303 and "httponly" in login.headers["set-cookie"].lower()
        assert "samesite=strict" in login.headers["set-cookie"].lower()
        assert c.get("/api/cameras").status_code == 200  # the cookie now stands for the token
        cross = c.post("/api/describe", content=b"x", headers={"origin": "http://evil.example"})
        assert cross.status_code == 403


def test_uploads_are_limited_and_described(tmp_path, tiny_bundle):
    from PIL import Image

    db = str(tmp_path / "d.db")
    fill(db)
    with serve(WebConfig(db, bundle=tiny_bundle, max_upload_bytes=1_000_000)) as url, \
            httpx.Client(base_url=url, timeout=120) as c:
        assert c.get("/api/info").json()["describe"] is True
        big = c.post("/api/describe", content=b"\0" * (50 * 1024 * 1024))
        assert big.status_code == 413 and "larger than the 1000000 byte limit" in big.json()["error"]

        def chunks():
            for _ in range(60):
                yield b"\0" * 65536
        assert c.post("/api/describe", content=chunks()).status_code == 413  # no Content-Length: counted
        bad = c.post("/api/describe", content=b"not an image")
        assert bad.status_code == 400 and "cannot read the upload as an image" in bad.json()["error"]
        buf = io.BytesIO()
        Image.new("RGB", (64, 128), (180, 30, 30)).save(buf, format="PNG")
        ok = c.post("/api/describe", content=buf.getvalue(), headers={"content-type": "image/png"})
        assert ok.status_code == 200, ok.text
        assert isinstance(ok.json()["text"], str) and set(ok.json()["attributes"]) >= {"upper", "gender"}


def test_pvlm_web_refuses_bad_options(tmp_path):
    from click.testing import CliRunner

    from runtime.search.web import main

    res = CliRunner().invoke(main, ["--db", str(tmp_path / "none.db")])
    missing = tmp_path / "none.db"
    assert res.exit_code == 2 and res.stderr == f"error: store {missing} does not exist (create it with pvlm-index)\n"
    db = tmp_path / "d.db"
    fill(str(db))
    res = CliRunner().invoke(main, ["--db", str(db), "--token", "has space"])
    assert res.exit_code == 2 and "--token" in res.stderr and "has space" not in res.stderr
    res = CliRunner().invoke(main, ["--db", str(db), "--port", "70000"])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = CliRunner().invoke(main, ["--db", str(db), "--port", str(busy.getsockname()[1])])
    assert res.exit_code == 1 and res.stderr.startswith("error: cannot serve on 127.0.0.1:")
    assert res.stderr.count("\n") == 1
    assert Path(db).exists()


def test_search_returns_probabilities_and_alternatives(store_location):
    from runtime.attributes import parse_attributes
    from runtime.search import Record

    text = "A woman in a red jacket with a backpack."
    attrs = {**parse_attributes(text), "probabilities": {"gender": {"female": 0.8, "male": 0.2},
                                                          "carrying": {"backpack": 0.6, "none": 0.4}}}
    alts = [{"text": t, "score": None, "attributes": parse_attributes(t)}
            for t in ("A man in a grey coat.", "A woman in a red jacket with a backpack.")]
    fill(store_location, [Record("lobby", "w1", 1.0, text, attrs), Record("lobby", "m1", 2.0, alts[0]["text"],
                                                                          alternatives=alts)])
    with serve(WebConfig(store_location, hosts=("127.0.0.1",))) as url, httpx.Client(base_url=url) as client:
        data = client.get("/api/search", params={"q": "woman with a backpack"}).json()
        track = client.get("/api/tracks/lobby/w1").json()
    assert [h["track"] for h in data["hits"]] == ["w1", "m1"] and data["total"] == 2
    first, second = data["hits"]
    assert first["match_confidence"] == {"female": 0.8, "backpack": 0.6} and first["alternative"] is None
    assert first["attributes"]["probabilities"] == attrs["probabilities"]
    assert second["alternative"] == {"rank": 1, "text": text} and second["text"] == "A man in a grey coat."
    [d] = track["descriptions"]
    assert d["attributes"]["probabilities"] == attrs["probabilities"] and "match_confidence" not in d


def _without_took(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "took_ms"}


def test_read_workers_answer_as_one_process_does(store_location, tmp_path):
    import multiprocessing

    fill(store_location)
    thumbs = tmp_path / "thumbs"
    write_thumbs(thumbs, [("lobby", "w01")])
    hostile = f"/api/tracks/{quote(HOSTILE_CAMERA, safe='')}/{quote('<b>x</b>', safe='')}"
    asks = [("/api/search", {"q": "woman in a red jacket with a backpack", "size": 5, "page": 2}),
            ("/api/search", {"q": "man without a hat"}), ("/api/search", {"q": "a" * 10_000}),
            ("/api/search", {"q": "woman", "page": "0"}), ("/api/tracks/gate/m0", {}), (hostile, {}),
            ("/api/tracks/gate/nobody", {}), ("/api/cameras", {})]
    answers = {}
    for workers in (1, 2):
        config = WebConfig(store_location, thumbs=thumbs, hosts=("127.0.0.1",), workers=workers)
        with serve(config) as url, httpx.Client(base_url=url, timeout=30) as client:
            assert len(multiprocessing.active_children()) == (workers if workers > 1 else 0)  # the read workers
            got = [client.get(path, params=params) for path, params in asks]
        answers[workers] = [(r.status_code, r.headers.get("cache-control"), r.headers["content-type"],
                             _without_took(r.json())) for r in got]
    assert answers[2] == answers[1]
    assert [a[0] for a in answers[2]] == [200, 200, 400, 400, 200, 200, 404, 200]
    assert answers[2][5][3]["camera"] == HOSTILE_CAMERA
    assert not multiprocessing.active_children()  # the workers stopped with the server


def test_a_read_worker_that_dies_is_replaced(tmp_path):
    import multiprocessing
    import os
    import signal
    import time

    db = str(tmp_path / "d.db")
    fill(db)
    with serve(WebConfig(db, hosts=("127.0.0.1",), workers=2)) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/api/search", params={"q": "woman"}).status_code == 200
        os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
        time.sleep(0.5)
        lost = client.get("/api/search", params={"q": "woman"})
        assert lost.status_code == 503 and lost.json() == {"error": "a search worker stopped; try again"}
        again = client.get("/api/search", params={"q": "woman"})
        assert again.status_code == 200 and again.json()["total"] == 31


def test_read_workers_restart_once_when_many_requests_see_them_fail(tmp_path):
    import asyncio
    import multiprocessing
    import os
    import signal

    from runtime.search.web_pool import ReadPool

    db = str(tmp_path / "d.db")
    fill(db)
    pool = ReadPool(WebConfig(db, workers=2))
    try:
        first = multiprocessing.active_children()
        for p in first:
            os.kill(p.pid, signal.SIGKILL)
        scope = {"type": "http", "method": "GET", "path": "/api/cameras", "query_string": b""}

        async def many() -> list[tuple[int, bytes]]:
            await asyncio.sleep(0.5)
            return await asyncio.gather(*(pool.run("cameras", scope) for _ in range(6)))

        answers = asyncio.run(many())
        assert {status for status, _ in answers} == {503}
        assert len(multiprocessing.active_children()) == 2  # one new set, not one per failed request
        assert asyncio.run(pool.run("cameras", scope))[0] == 200
    finally:
        pool.close()
