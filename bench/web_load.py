"""pvlm-web under a bounded load: search requests from N concurrent clients, and the page's first render.

A ``pvlm-web`` server is started on loopback over an existing store (``pvlm-bench-search scale --db``
fills one). Each of ``clients`` threads sends ``GET /api/search`` back to back (a closed loop: at most
``clients`` requests in flight), or at most ``rate`` times a second, with the page's default filters
(no camera, any time, page 1 of 24, tracks counted as the page counts them). Queries are generated
from synthetic captions (a quarter with a word left to text relevance) plus the operator queries of
:mod:`bench.retrieval`. Reported: client
latency p50/p90/p99/max, requests per second, the server's own ``took_ms``, and the server's CPU time
per request (on a shared machine the gap between latency and CPU is time spent waiting for a core).
With Playwright and chromium, the page's first render is timed too: navigation start to the results
drawn (``window.pvlmRendered``), for a few queries.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WARMUP = 20
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@contextlib.contextmanager
def server(db: str, stores: int, workers: int) -> Iterator[tuple[str, list[int]]]:
    """A ``pvlm-web`` subprocess on a free loopback port; yields (base URL, pids of it and its workers)."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-c", "from runtime.search.web import main; main()", "--db", db, "--port", str(port),
           "--stores", str(stores), "--workers", str(workers), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pvlm-web exited: {proc.stderr.read().strip()}")
            try:
                if httpx.get(url + "/api/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("pvlm-web did not answer within 120 s")
            time.sleep(0.2)
        yield url, [proc.pid, *_children(proc.pid)]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def queries(n: int, seed: int) -> list[str]:
    """``n`` generated queries (a quarter with a free word) and the operator queries, shuffled."""
    import numpy as np

    from pvlm.synth import sample_attributes

    from .retrieval import OPERATOR_QUERIES, _scale_queries

    rng = np.random.default_rng(seed)
    truth = [sample_attributes(rng) for _ in range(1000)]
    out = _scale_queries(truth, n, seed) + [q for q, _ in OPERATOR_QUERIES]
    random.Random(seed).shuffle(out)
    return out


def _pct(values: list[float], p: float) -> float:
    import numpy as np

    return float(np.percentile(values, p)) if values else float("nan")


class _Client:
    """One keep-alive HTTP/1.1 connection from the standard library: about a fifth of httpx's CPU per request,
    which matters here because the load generator shares the server's cores."""

    def __init__(self, url: str) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def search(self, q: str) -> tuple[int, bytes]:
        """(status, body) of ``GET /api/search?q=...``."""
        from urllib.parse import urlencode

        self._conn.request("GET", "/api/search?" + urlencode({"q": q}))
        r = self._conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def load(url: str, pids: list[int], texts: list[str], clients: int, requests: int, rate: float = 0.0) -> dict[str, Any]:
    """``requests`` searches from ``clients`` threads, each sending its next request when the last one answered
    (``rate`` > 0: and no sooner than 1/``rate`` s after the last one started); latency, throughput, server CPU."""
    import json

    warm = _Client(url)
    for q in texts[:WARMUP]:
        warm.search(q)
    warm.close()
    order = [texts[i % len(texts)] for i in range(requests)]
    lock = threading.Lock()
    lat: list[tuple[float, str]] = []
    took: list[float] = []
    errors: list[str] = []
    nxt = iter(order)

    def client(k: int) -> None:
        gap = 1.0 / rate if rate > 0 else 0.0
        due = time.perf_counter() + gap * k / clients  # paced clients start spread over one interval
        c = _Client(url)
        try:
            while True:
                with lock:
                    q = next(nxt, None)
                if q is None:
                    return
                if gap:
                    time.sleep(max(0.0, due - time.perf_counter()))
                    due += gap
                t = time.perf_counter()
                status, body = c.search(q)
                ms = (time.perf_counter() - t) * 1e3
                with lock:
                    lat.append((ms, q))
                    if status == 200:
                        took.append(json.loads(body)["took_ms"])
                    else:
                        errors.append(f"{status} {q}")
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    cpu0, own0, t0 = sum(map(_cpu_seconds, pids)), time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, sum(map(_cpu_seconds, pids)) - cpu0
    own = time.process_time() - own0
    ms = [x for x, _ in lat]
    return {"clients": clients, "rate_per_client": rate or "back to back", "requests": len(ms),
            "errors": len(errors), "error_examples": errors[:3],
            "latency_ms": {"p50": _pct(ms, 50), "p90": _pct(ms, 90), "p99": _pct(ms, 99), "max": max(ms)},
            "server_took_ms": {"p50": _pct(took, 50), "p99": _pct(took, 99)},
            "requests_per_s": len(ms) / wall, "server_cpu_ms_per_request": cpu * 1e3 / max(1, len(ms)),
            "client_cpu_ms_per_request": own * 1e3 / max(1, len(ms)),
            "slowest": sorted(lat, reverse=True)[:3]}


def first_render(url: str, texts: list[str]) -> dict[str, Any] | None:
    """Milliseconds from navigation start to the results drawn, per query (None without Playwright/chromium)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path(chromium).exists():
        return None
    from urllib.parse import quote

    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/?q={quote(texts[0])}")  # warm: browser caches, server statements
        for q in texts:
            page.goto(f"{url}/?q={quote(q)}")
            deadline = time.monotonic() + 30
            while page.evaluate("() => window.pvlmRendered") is None and time.monotonic() < deadline:
                time.sleep(0.01)
            times.append(page.evaluate("() => window.pvlmRendered"))
        browser.close()
    done = [t for t in times if t is not None]
    return {"queries": len(texts), "ms": done, "median_ms": statistics.median(done) if done else None,
            "max_ms": max(done) if done else None}


def run_web(db: str, clients: int, requests: int, seed: int, browser: bool = True,
            workers: int = 1, rate: float = 0.0) -> dict[str, Any]:
    """Start pvlm-web over ``db``, put it under load, time the page's first render; the measurements."""
    texts = queries(max(50, requests // 2), seed)
    with server(db, stores=clients, workers=workers) as (url, pids):
        result: dict[str, Any] = {"db": db, "workers": workers, **load(url, pids, texts, clients, requests, rate)}
        if browser:
            result["first_render"] = first_render(url, texts[:8])
    result["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result["cpus"] = os.cpu_count()
    return result
