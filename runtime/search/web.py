"""``pvlm-web``: search the description store from a browser (Starlette app, served by uvicorn).

The page (``static/``: plain HTML, CSS and JavaScript, no build step) calls the JSON API of
:mod:`runtime.search.web_api`. Safe by default: it binds to loopback; with a token every request needs
``Authorization: Bearer TOKEN`` (or the cookie the login form sets); stored strings are only ever put
into the page as text; thumbnails come only from the thumbnails folder; uploads are size-limited
and decoded with the runtime's limits. See docs/web.md.
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
import ipaddress
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import click

from ..cli_common import (CONTEXT_SETTINGS, Command, CommandError, CommandFailure, MissingPackage, common_options,
                          first_line)

if TYPE_CHECKING:
    from .web_api import Service, WebConfig

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
TOKEN_ENV = "PVLM_WEB_TOKEN"
COOKIE = "pvlm_token"
_LOGIN_BYTES = 4096
READ_HANDLERS = frozenset({"search", "track", "cameras"})  # what --workers processes answer (web_pool)
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",  # "no-referrer" makes a form POST send "Origin: null"
    "x-frame-options": "DENY",
}
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) only listens on this machine."""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: security headers on every response, the token on every request when one is set,
    and same-origin POSTs only."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> Any:
        path = scope.get("path", "")
        if scope.get("method") == "POST" and not _same_origin(headers):
            return _error(403, "cross-origin request refused")
        if self.token is None or path in ("/login", "/static/style.css"):  # the login form and its look
            return None
        if self._authorized(headers):
            return None
        if path.startswith("/api/") or path.startswith("/thumbs/"):
            return _error(401, "this server needs a token: send 'Authorization: Bearer TOKEN'",
                          {"www-authenticate": 'Bearer realm="pvlm-web"'})
        return _login_page(401)

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        given = []
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given.append(value.strip())
        given += [c.split("=", 1)[1] for c in headers.get("cookie", "").replace(" ", "").split(";")
                  if c.startswith(f"{COOKIE}=")]
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given)


def _same_origin(headers: dict[str, str]) -> bool:
    origin = headers.get("origin")
    if origin is None:
        return True  # not sent by a browser page (curl, scripts): the token decides
    host = headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _login_page(status: int, note: str = "") -> Any:
    from starlette.responses import HTMLResponse

    page = (STATIC / "login.html").read_text("utf-8").replace("<!--note-->", note)
    return HTMLResponse(page, status_code=status)


def _endpoint(svc: Service, handler: Callable[..., Any]) -> Callable[..., Any]:
    """A Starlette endpoint for an API handler: sync handlers run in the thread pool, results become JSON,
    failures one JSON error line."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response

    from .web_api import error_response

    is_async = inspect.iscoroutinefunction(handler)
    pooled = handler.__name__ in READ_HANDLERS

    async def endpoint(request: Any) -> Any:
        try:
            if pooled and svc.pool is not None:
                status, body = await svc.pool.run(handler.__name__, request.scope)
                return Response(body, status, media_type="application/json",
                                headers={"cache-control": "no-store"} if status == 200 else None)
            result = await (handler(svc, request) if is_async else run_in_threadpool(handler, svc, request))
        except Exception as e:  # noqa: BLE001 - every failure becomes one JSON line with its status
            return error_response(e)
        if isinstance(result, Response):
            return result
        return JSONResponse(result, headers={"cache-control": "no-store"})

    return endpoint


def _login(token: str | None) -> Callable[..., Any]:
    """``/login``: the token form (GET) and its answer (POST), which sets the token cookie."""
    from starlette.responses import RedirectResponse

    async def login(request: Any) -> Any:
        if token is None:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return _login_page(200)
        body = await request.body()
        given = parse_qs(body[:_LOGIN_BYTES].decode("utf-8", "replace")).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), token.encode()):
            return _login_page(401, "That token is not the one this server was started with.")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    return login


async def _index(request: Any) -> Any:
    from starlette.responses import FileResponse

    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


async def _no_icon(request: Any) -> Any:
    from starlette.responses import Response

    return Response(status_code=204)


def _lifespan(svc: Service) -> Callable[[Any], Any]:
    """The app's lifespan: the service's stores and Describer are closed when the server stops."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            svc.close()

    return lifespan


def _routes(svc: Service, token: str | None) -> list[Any]:
    """The page, the login form, the JSON API (each handler an :func:`_endpoint`), thumbnails and static files."""
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from . import web_api

    def api(path: str, handler: Callable[..., Any], methods: tuple[str, ...] = ("GET",)) -> Any:
        return Route(path, _endpoint(svc, handler), methods=list(methods))

    return [
        Route("/", _index), Route("/login", _login(token), methods=["GET", "POST"]), Route("/favicon.ico", _no_icon),
        api("/api/search", web_api.search), api("/api/cameras", web_api.cameras), api("/api/info", web_api.info),
        api("/api/tracks/{rest:path}", web_api.track), api("/api/describe", web_api.describe, ("POST",)),
        api("/thumbs/{name}", web_api.thumb), Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


def _middleware(config: WebConfig) -> list[Any]:
    """The :class:`Guard` (headers, token, same-origin POSTs), and the Host check when bound to loopback."""
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    middleware = [Middleware(Guard, token=config.token)]
    if config.hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(config.hosts)))
    return middleware


def create_app(config: WebConfig, service: Service | None = None) -> Any:
    """The Starlette application for ``config`` (``service``: one already opened, for tests)."""
    from starlette.applications import Starlette

    from .web_api import Service

    # with read workers this process only checks the store and serves the page: one connection is enough
    svc = service or Service(replace(config, stores=1) if config.workers > 1 else config)
    if config.workers > 1 and svc.pool is None:
        from .web_pool import ReadPool

        try:
            svc.pool = ReadPool(config)
        except BaseException:
            svc.close()
            raise
    app = Starlette(routes=_routes(svc, config.token), middleware=_middleware(config), lifespan=_lifespan(svc))
    app.state.service = svc
    return app


def _check_token(token: str | None) -> str | None:
    if token is None:
        return None
    if not token or not token.isprintable() or any(c.isspace() for c in token) or not token.isascii():
        raise CommandError(f"--token (or ${TOKEN_ENV}) must be printable ASCII without spaces")
    return token


@click.command(cls=Command, context_settings=CONTEXT_SETTINGS)
@click.option("--db", help="SQLite file or postgresql:// URL (default: $PVLM_STORE or descriptions.db).")
@click.option("--thumbs", type=click.Path(file_okay=False, exists=True),
              help="Folder of track thumbnails (pvlm-video --thumbs); a placeholder without.")
@click.option("--bundle", type=click.Path(file_okay=False, exists=True),
              help="Exported bundle: adds an upload box that describes one photo.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--token", envvar=TOKEN_ENV, show_envvar=True,
              help="Require 'Authorization: Bearer TOKEN' (or the login form's cookie) on every request.")
@click.option("--stores", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Read-only store connections with --workers 1 (searches run side by side in threads).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes that run searches, fed first come first served (one per core serves the most).")
@common_options(default_level=logging.INFO)
def main(db: str | None, thumbs: str | None, bundle: str | None, host: str, port: int, token: str | None,
         stores: int, workers: int, quiet: bool) -> None:
    """Serve a search page and its JSON API over the description store (only reads it).

    \b
    Exit status: 0 stopped; 1 the store could not be read or the port not bound; 2 bad options, no
    such store, or a missing package (pip install 'personvlm-toolkit[web]').
    """
    try:
        import uvicorn

        from . import web_api
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("starlette", "uvicorn", "anyio"):
            raise MissingPackage("this command needs Starlette and uvicorn: "
                                 "pip install 'personvlm-toolkit[web]'") from None
        raise
    from ..preprocess import MAX_IMAGE_BYTES
    from .cli import _db_location, _open

    token = _check_token(token)
    _open(db, readonly=True).close()  # one clear line (and exit status) for a missing or unreadable store
    _check_port(host, port)
    # Starlette's host check cannot parse a bracketed IPv6 Host header: it guards IPv4 and named loopback only.
    hosts = tuple(_LOOPBACK_NAMES) if is_loopback(host) and ":" not in host else ()
    config = web_api.WebConfig(_db_location(db), Path(thumbs) if thumbs else None, Path(bundle) if bundle else None,
                               token, stores, MAX_IMAGE_BYTES, hosts, workers)
    if not hosts and token is None:
        click.echo(f"warning: serving on {host} without --token: anyone who can reach port {port} can search",
                   err=True)
    options = {"host": host, "port": port, "log_level": "warning" if quiet else "info", "server_header": False}
    try:
        uvicorn.run(_app_or_exit(config), **options)
    except OSError as e:
        raise CommandFailure(f"cannot serve on {host}:{port}: {e.strerror or first_line(e)}") from None


def _check_port(host: str, port: int) -> None:
    """CommandFailure (one line, exit 1) when ``host:port`` cannot be bound, before uvicorn tries (it would
    log its own lines and exit 3)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise CommandError(f"--host {host}: {e.strerror or first_line(e)}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise CommandFailure(f"cannot serve on {host}:{port}: {e.strerror or first_line(e)}") from None


def _app_or_exit(config: WebConfig) -> Any:
    from concurrent.futures.process import BrokenProcessPool

    from ..bundle import BundleError
    from .records import StoreError, StoreUnavailable

    try:
        return create_app(config)
    except BrokenProcessPool:
        raise CommandFailure(f"the {config.workers} read workers could not start (see the lines above)") from None
    except StoreUnavailable as e:
        raise CommandFailure(first_line(e)) from None
    except (StoreError, BundleError, ValueError) as e:
        raise CommandError(first_line(e)) from None
