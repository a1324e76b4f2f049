"""The JSON API behind ``pvlm-web``: search, one track, cameras, thumbnails and describing an upload.

Every handler reads through :class:`Service`, which holds a small pool of read-only stores (searches
run side by side), the camera list (cached), the thumbnails folder and, with a bundle, one
:class:`runtime.Describer`. Nothing here writes to the store.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from .records import MAX_ID_CHARS, MAX_OFFSET, Hit, QueryError, StoreError, StoreUnavailable, iso_time

log = logging.getLogger(__name__)

PAGE_SIZE = 24  # tracks per page by default
MAX_PAGE_SIZE = 100
COUNT_ROWS = 100  # descriptions read to count the matching tracks ("N tracks", or "N+" when more may match);
# the search reads its newest 100 to rank them anyway (reads.RANK_WINDOW), so counting them costs nothing more
CAMERAS_TTL_S = 30.0
MAX_CAMERAS = 1000
MAX_TRACK_DESCRIPTIONS = 1000
_THUMB_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,250}\.jpg")


class ApiError(Exception):
    """A request the API refuses: HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WebConfig:
    """What ``pvlm-web`` serves: the store, thumbnails, an optional bundle, and its limits."""

    db: str
    thumbs: Path | None = None
    bundle: Path | None = None
    token: str | None = None
    stores: int = 4  # read-only connections, so that searches run side by side
    max_upload_bytes: int = 20 * 1024 * 1024  # pvlm-web passes runtime.preprocess.MAX_IMAGE_BYTES
    hosts: tuple[str, ...] = ()  # Host headers accepted (empty: any); loopback names when bound to loopback
    workers: int = 1  # processes that run the read requests (runtime.search.web_pool); 1: threads of this one


class Service:
    """The state behind the API: a pool of read-only stores, the camera cache, thumbnails, a Describer."""

    def __init__(self, config: WebConfig) -> None:
        from . import open_store

        self.config = config
        self._pool: queue.Queue[Any] = queue.Queue()
        try:
            for _ in range(max(1, config.stores)):
                self._pool.put(open_store(config.db, readonly=True))
        except BaseException:
            self.close()
            raise
        self._cameras: tuple[float, list[str]] = (-math.inf, [])
        self._thumbs = config.thumbs.resolve() if config.thumbs else None
        self.describer = self._describer(config.bundle) if config.bundle else None
        self._describing = threading.Semaphore(1)  # one image at a time: searches keep the other cores
        self.pool: Any = None  # a web_pool.ReadPool when config.workers > 1 (create_app starts it)

    @staticmethod
    def _describer(bundle: Path) -> Any:
        from .. import Describer

        return Describer(bundle, on_error="raise")

    @contextlib.contextmanager
    def store(self) -> Iterator[Any]:
        """A store from the pool, for one request."""
        s = self._pool.get()
        try:
            yield s
        finally:
            self._pool.put(s)

    def close(self) -> None:
        """Close every store, the read workers and the Describer."""
        if getattr(self, "pool", None) is not None:
            self.pool.close()
        while not self._pool.empty():
            self._pool.get_nowait().close()
        if getattr(self, "describer", None) is not None:
            self.describer.close()

    def cameras(self) -> list[str]:
        """The stored cameras, refreshed every :data:`CAMERAS_TTL_S` seconds."""
        at, names = self._cameras
        if time.monotonic() - at > CAMERAS_TTL_S:
            with self.store() as s:
                names = s.cameras(MAX_CAMERAS)
            self._cameras = (time.monotonic(), names)
        return names

    def thumb_url(self, camera: str, track: str) -> str | None:
        """``/thumbs/NAME`` of the track's thumbnail (named as ``pvlm-video --thumbs`` names it), or None."""
        if self._thumbs is None:
            return None
        from ..video.output import thumb_name

        name = thumb_name(SimpleNamespace(camera=camera, track=track, part=1))
        return f"/thumbs/{quote(name)}" if (self._thumbs / name).is_file() else None

    def thumb_path(self, name: str) -> Path:
        """The thumbnail file called ``name``, only inside the thumbnails folder; 404 otherwise."""
        if self._thumbs is None or not _THUMB_NAME.fullmatch(name):
            raise ApiError(404, "no such thumbnail")
        try:
            path = (self._thumbs / name).resolve(strict=True)
        except (OSError, RuntimeError):
            raise ApiError(404, "no such thumbnail") from None
        if not path.is_relative_to(self._thumbs) or not path.is_file():
            raise ApiError(404, "no such thumbnail")
        return path

    def hit_json(self, hit: Hit, span: tuple[float, float, int] | None) -> dict[str, Any]:
        """A hit as the API returns it: the stored values, first/last seen, and the thumbnail's URL."""
        out = hit.to_json()
        lo, hi, n = span if span else (hit.timestamp, hit.timestamp, 1)
        out.update(first_seen=_finite(lo), last_seen=_finite(hi), first_seen_time=iso_time(lo),
                   last_seen_time=iso_time(hi), descriptions=n, thumb=self.thumb_url(hit.camera, hit.track))
        return out


def _finite(v: float) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}, got {value}")
    return value


def search(service: Service, request: Request) -> dict[str, Any]:
    """``GET /api/search``: one page of tracks for ``q`` (see docs/web.md)."""
    p = request.query_params
    q = p.get("q")
    if q is None:
        raise ApiError(400, "missing q: the query, e.g. q=woman in a red jacket")
    size = _int_param(request, "size", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    page = _int_param(request, "page", 1, 1, MAX_OFFSET // size + 1)
    t0 = time.perf_counter()
    with service.store() as s:
        result = s.page(q, camera=p.get("camera") or None, since=p.get("since") or None,
                        until=p.get("until") or None, offset=(page - 1) * size, limit=size,
                        drop=p.getlist("drop"), count_rows=COUNT_ROWS)
        spans = s.spans((h.camera, h.track) for h in result.hits)
    hits = [service.hit_json(h, spans.get((h.camera, h.track))) for h in result.hits]
    return {"query": result.query.to_json(), "hits": hits, "page": page, "size": size, "total": result.total,
            "total_capped": result.capped, "more": result.more, "took_ms": round((time.perf_counter() - t0) * 1e3, 1)}


def _track_key(request: Request) -> tuple[str, str]:
    """(camera, track) from the raw path ``/api/tracks/CAMERA/TRACK`` (each part percent-encoded, so either
    may hold a slash)."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    rest = raw.decode("latin-1").split("?", 1)[0].removeprefix("/api/tracks/")
    parts = rest.split("/")
    if len(parts) != 2 or not all(parts):
        raise ApiError(404, "use /api/tracks/CAMERA/TRACK, each part percent-encoded")
    camera, track = (unquote(x, errors="strict") for x in parts)
    return camera, track


def track(service: Service, request: Request) -> dict[str, Any]:
    """``GET /api/tracks/{camera}/{track}``: every stored description of one track, oldest first."""
    try:
        camera, track_id = _track_key(request)
    except UnicodeDecodeError:
        raise ApiError(400, "camera and track must be UTF-8") from None
    with service.store() as s:
        hits = s.track(camera, track_id, MAX_TRACK_DESCRIPTIONS)
    if not hits:
        raise ApiError(404, "no such track")
    descriptions = [h.to_json() for h in hits]
    for d in descriptions:
        for key in ("score", "matched", "match_confidence", "alternative"):
            d.pop(key, None)
    return {"camera": camera, "track": track_id, "thumb": service.thumb_url(camera, track_id),
            "first_seen": _finite(hits[0].timestamp), "last_seen": _finite(hits[-1].timestamp),
            "descriptions": descriptions, "truncated": len(hits) >= MAX_TRACK_DESCRIPTIONS}


def cameras(service: Service, request: Request) -> dict[str, Any]:
    """``GET /api/cameras``: the stored cameras."""
    return {"cameras": service.cameras()}


def info(service: Service, request: Request) -> dict[str, Any]:
    """``GET /api/info``: what this server offers (the page shows the upload box only with a bundle)."""
    return {"describe": service.describer is not None, "thumbs": service.config.thumbs is not None,
            "page_size": PAGE_SIZE, "max_upload_bytes": service.config.max_upload_bytes,
            "max_id_chars": MAX_ID_CHARS}


async def read_upload(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes before more is read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad Content-Length")
        if int(declared) > limit:
            raise ApiError(413, f"upload of {int(declared)} bytes is larger than the {limit} byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"upload is larger than the {limit} byte limit")
    if not body:
        raise ApiError(400, "empty upload: send the image's bytes as the request body")
    return bytes(body)


async def describe(service: Service, request: Request) -> dict[str, Any]:
    """``POST /api/describe`` (body: one encoded image): the bundle's description of it."""
    if service.describer is None:
        raise ApiError(404, "describing needs pvlm-web --bundle")
    limit = service.config.max_upload_bytes
    data = await read_upload(request, limit)
    return await run_in_threadpool(_describe_bytes, service, data, limit)


def _describe_bytes(service: Service, data: bytes, limit: int) -> dict[str, Any]:
    from ..preprocess import InputError, image_from_bytes

    t0 = time.perf_counter()
    try:
        image = image_from_bytes(data, 0, max_bytes=limit, max_pixels=service.describer.max_pixels)
    except InputError as e:
        raise ApiError(400, f"cannot read the upload as an image: {str(e).removeprefix('input 0')}".strip()) from None
    with service._describing:
        try:
            [d] = service.describer.describe([image])
        except InputError as e:
            raise ApiError(400, str(e)) from None
    return {"text": d.text, "attributes": d.attributes, "took_ms": round((time.perf_counter() - t0) * 1e3, 1)}


def thumb(service: Service, request: Request) -> Response:
    """``GET /thumbs/{name}``: a JPEG from the thumbnails folder, nothing outside it."""
    path = service.thumb_path(request.path_params["name"])
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


def error_response(e: Exception) -> JSONResponse:
    """The JSON error of a refused or failed request: ``{"error": "one line"}`` with its status."""
    if isinstance(e, ApiError):
        status, message = e.status, str(e)
    elif isinstance(e, StoreUnavailable):
        status, message = 503, str(e)
    elif isinstance(e, (QueryError, StoreError)):
        status, message = 400, str(e)
    else:
        log.exception("request failed")
        status, message = 500, "internal error (see the server's log)"
    return JSONResponse({"error": message.splitlines()[0] if message else "error"}, status_code=status)
