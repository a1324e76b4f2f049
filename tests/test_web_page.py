"""pvlm-web's page in a real browser (Playwright driving Debian's chromium) against a real server and store.

Type a query and see the right tracks best first, remove a chip, page, open a track's history, upload
a photo and read its description; markup stored in a camera name or a description stays text.
Set PVLM_WEB_SCREENSHOT=PATH to also save the results page as a PNG there (docs/web-results.png).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install '.[web]')")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install '.[web]')")

from runtime.search.web_api import WebConfig  # noqa: E402
from web_fixture import HOSTILE_CAMERA, HOSTILE_TEXT, fill, people, serve, write_thumbs  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium: install Debian's package (apt-get install -y chromium); .ci/run does as root")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def site(tmp_path, tiny_bundle):
    db = str(tmp_path / "d.db")
    fill(db)
    thumbs = tmp_path / "thumbs"
    write_thumbs(thumbs, [(r.camera, r.track) for r in people()[::2]])
    with serve(WebConfig(db, thumbs=thumbs, bundle=tiny_bundle)) as url:
        yield url


def _wait(page, js, arg=None, timeout=20.0):
    """Poll ``js`` (a function of ``arg``) until it is true: wait_for_function evaluates strings, which the
    page's Content-Security-Policy forbids."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {js}")
        time.sleep(0.05)


def _cards(page):
    return page.eval_on_selector_all("#results .card", "cs => cs.map(c => c.dataset.track)")


def _search(page, text):
    page.fill("#q", text)
    page.press("#q", "Enter")
    _wait(page, "q => new URLSearchParams(location.search).get('q') === q && "
                "!document.querySelector('#status').textContent.startsWith('searching')", text)


def test_search_chips_paging_detail_and_upload(browser, site, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
    page.goto(site + "/?q=" + "woman in a red jacket with a backpack")
    _wait(page, "() => window.pvlmRendered !== undefined")
    first_render_ms = page.evaluate("window.pvlmRendered")
    assert first_render_ms < 5000, first_render_ms
    tracks = _cards(page)
    assert tracks[:3] == ["<b>x</b>", "w29", "w28"] and len(tracks) == 21 and "w27" not in tracks
    chips = page.eval_on_selector_all("#chips .chip .label", "cs => cs.map(c => c.textContent)")
    assert chips == ["female", "jacket", "or coat", "red upper", "backpack"]  # a coat is near a jacket
    assert page.locator("#chips .chip.near[data-term='~upper:jacket']").count() == 1
    assert page.text_content("#status").startswith("21 tracks")
    if os.environ.get("PVLM_WEB_SCREENSHOT"):
        page.screenshot(path=os.environ["PVLM_WEB_SCREENSHOT"], full_page=False)

    # markup stored in a camera name and a description is shown as text, never run
    card = page.locator("#results .card").first
    assert card.locator(".camera").text_content() == HOSTILE_CAMERA
    assert card.locator(".text").text_content() == HOSTILE_TEXT
    assert page.evaluate("window.__xss") is None and page.locator("#results script, #results img[src='x']").count() == 0

    # remove the "red upper" chip: black jackets come in, the chip stays as a struck-out one to put back
    page.click("#chips .chip[data-term='upper_color:red'] button")
    _wait(page, "() => document.querySelector('#status').textContent.startsWith('31 ')")
    assert len(_cards(page)) == 24 and "w27" in _cards(page)
    assert page.locator("#chips .chip.dropped").text_content().startswith("red upper")

    # page 2 holds the rest
    page.click("#next")
    page.wait_for_selector("#pageinfo:text('page 2')")
    assert len(_cards(page)) == 7 and page.is_disabled("#next")

    # a track's history: every description of it, oldest first
    _search(page, "man in a grey coat")
    page.click("#results .card[data-track='m0']")
    page.wait_for_selector("#detail[open] ol.descriptions li")
    assert page.locator("#detail ol.descriptions li").count() == 3
    assert "track m0" in page.text_content("#detail-title")
    page.click("#detail .close")

    # upload a photo: the bundle describes it in the page
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 128), (30, 60, 200)).save(buf, format="PNG")
    assert page.is_visible("#upload")
    page.set_input_files("#file", files=[{"name": "me.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    page.wait_for_selector("#described .text")
    assert page.locator("#described .error").count() == 0 and page.locator("#described dl.attrs").count() == 1
    assert errors == []
    page.close()


def test_token_page_asks_for_it_then_works(browser, tmp_path):
    db = str(tmp_path / "d.db")
    fill(db)
    with serve(WebConfig(db, token="t0ken-for-test")) as url:
        page = browser.new_page()
        page.goto(url + "/?q=man")
        assert page.locator("form[action='/login']").count() == 1 and page.locator("#results").count() == 0
        page.fill("input[name=token]", "t0ken-for-test")
        page.click("button[type=submit]")
        page.wait_for_selector("#q")
        _search(page, "man in a grey coat")
        assert _cards(page) == ["m0", "m2", "m1"]  # m0 was seen last
        page.close()
