"""pvlm-web test helpers: a real uvicorn server on loopback in a thread, and stores with hostile values."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from runtime.search import Record, open_store

HOSTILE_CAMERA = "<img src=x onerror=window.__xss=1>/gate"
HOSTILE_TEXT = "A woman in a red jacket <script>window.__xss=2</script> with a backpack."


def people(n_women: int = 30) -> list[Record]:
    """``n_women`` women in red jackets with backpacks (every third in a black one), a few men, one track
    seen three times, and a camera and a text that hold markup."""
    recs = [Record("lobby", f"w{i:02d}", 1000.0 + i,
                   f"A woman in a {'black' if i % 3 == 0 else 'red'} jacket with a backpack, walking.")
            for i in range(n_women)]
    recs += [Record("gate", f"m{i}", 2000.0 + i, "A man in a grey coat and a cap, standing.") for i in range(3)]
    recs += [Record("gate", "m0", 2100.0 + i, f"A man in a grey coat, standing, seen {i} time(s) later.")
             for i in (1, 2)]
    recs.append(Record(HOSTILE_CAMERA, "<b>x</b>", 3000.0, HOSTILE_TEXT))
    return recs


def fill(location: str, records: list[Record] | None = None) -> None:
    """Add :func:`people` (or ``records``) to the store at ``location``."""
    with open_store(location) as s:
        s.add(records if records is not None else people())


def write_thumbs(folder: Path, tracks: list[tuple[str, str]]) -> None:
    """A small JPEG per (camera, track), named as ``pvlm-video --thumbs`` names them."""
    from types import SimpleNamespace

    from PIL import Image

    from runtime.video.output import thumb_name

    folder.mkdir(parents=True, exist_ok=True)
    for i, (camera, track) in enumerate(tracks):
        img = Image.new("RGB", (32, 64), (200 - 5 * i % 200, 40, 40))
        img.save(folder / thumb_name(SimpleNamespace(camera=camera, track=track, part=1)), format="JPEG")


@contextlib.contextmanager
def serve(config) -> Iterator[str]:
    """Serve ``create_app(config)`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    from runtime.search.web import create_app

    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("pvlm-web test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
