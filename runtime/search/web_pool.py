"""``pvlm-web --workers N``: the store's reads run in N worker processes fed from one queue.

Searching is CPU work in Python (ranking) and SQLite, so one process reads at most one core's worth,
and threads in one process take turns on its interpreter lock. uvicorn's own ``--workers`` hands each
keep-alive connection to one process for its life: with 8 clients on 2 processes it often split them
6 to 2, and the busy process's searches shared its one core (a 30 ms search then took 120-240 ms).
Here one process serves HTTP and every read request joins one first-come-first-served queue that N
processes (one store connection each) drain, so no core idles while requests wait, and a request
waits for the ones ahead of it instead of sharing a core with them. Each worker returns the response's
status and JSON bytes; the page, static files, thumbnails and uploads stay in the serving process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from typing import Any

from .web_api import Service, WebConfig, error_response

log = logging.getLogger(__name__)
_SCOPE_KEYS = ("type", "method", "path", "raw_path", "root_path", "query_string", "path_params", "scheme")
_service: Service | None = None  # the worker process's own service (one read-only store)


def _start(config: WebConfig) -> None:
    global _service
    _service = Service(config)


def _ready() -> bool:
    return _service is not None


def _handle(name: str, scope: dict[str, Any]) -> tuple[int, bytes]:
    """Run the API handler ``name`` on a request rebuilt from ``scope``; (status, JSON body)."""
    from starlette.requests import Request

    from . import web_api

    assert _service is not None
    try:
        result = getattr(web_api, name)(_service, Request({**scope, "headers": []}))
    except Exception as e:  # noqa: BLE001 - every failure becomes one JSON line with its status
        response = error_response(e)
        return response.status_code, bytes(response.body)
    return 200, json.dumps(result, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class ReadPool:
    """N worker processes that each hold one read-only store and answer the API's read requests in turn."""

    def __init__(self, config: WebConfig) -> None:
        self._config = replace(config, stores=1, bundle=None, token=None, workers=1)
        self._processes = config.workers
        self._restarting = asyncio.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the serving process may already hold threads and open connections
        pool = ProcessPoolExecutor(self._processes, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start, initargs=(self._config,))
        try:  # open every worker's store now, so that a bad store fails at start and the first searches are warm
            for f in [pool.submit(_ready) for _ in range(self._processes)]:
                f.result(timeout=120)
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise
        return pool

    async def run(self, name: str, scope: dict[str, Any]) -> tuple[int, bytes]:
        """(status, JSON body) of API handler ``name`` for the request ``scope``, from the next free worker."""
        picked = {k: scope[k] for k in _SCOPE_KEYS if k in scope}
        pool = self._pool
        try:
            return await asyncio.wrap_future(pool.submit(_handle, name, picked))
        except BrokenProcessPool:  # a worker died (killed, out of memory): start a new set for the next requests
            async with self._restarting:  # once, however many requests saw the old set fail
                if self._pool is pool:
                    log.error("a search worker stopped; starting %d new ones", self._processes)
                    self._pool = await asyncio.get_running_loop().run_in_executor(None, self._start)
                    pool.shutdown(wait=False, cancel_futures=True)
            return 503, json.dumps({"error": "a search worker stopped; try again"}).encode()

    def close(self) -> None:
        """Stop the workers (each closes its store on exit)."""
        self._pool.shutdown(cancel_futures=True)
