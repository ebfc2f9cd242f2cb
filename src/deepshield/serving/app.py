"""The FastAPI application: web page at /, REST API under /v1, OpenAPI docs at /docs (served offline).

`create_app` only assembles: the Runtime (what the routes share) on `app.state`, the middleware,
the error handlers and the routers of `serving/routes/`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deepshield import __version__
from deepshield.inference.analysis import Detector
from deepshield.one_line import one_line
from deepshield.serving.errors import REQUEST_ID, error_response, error_responses, install_error_handlers
from deepshield.serving.jobs import shutting_down
from deepshield.serving.routes import analysis, health, jobs, model, page
from deepshield.serving.routes.page import STATIC_DIR, RevalidatedStaticFiles
from deepshield.serving.runtime import API_KEY_HEADER, API_KEY_SCHEME, Runtime, refuse_unknown_query, require_api_key
from deepshield.serving.settings import ServerSettings
from deepshield.serving.uploads import FIELD_NAME

__all__ = ["STATIC_DIR", "create_app"]

log = logging.getLogger("deepshield.serving")

PURGE_INTERVAL_S = 30.0

DESCRIPTION = f"""
Find face-swap deepfakes in photos and videos.

* **Images**: `POST /v1/analyze` with a multipart field `{FIELD_NAME}` answers at once: every face with its
  calibrated probability of manipulation, its crop and a heatmap (PNG data URLs), and a verdict.
* **Videos** (or images, the same way): `POST /v1/jobs` answers `202` with a job id; poll
  `GET /v1/jobs/{{id}}` for status, progress and, when done, the result with a per-face timeline.
* **Errors** are always JSON: `{{"error": "<short code>", "detail": "<message for people>", "request_id": "<id>"}}`;
  every answer's `X-Request-ID` header names its request (yours, where you send a sane one), as the server's log does.
* **API key**: when the server runs with `DEEPSHIELD_API_KEY` set, every `/v1` call needs the header
  `{API_KEY_HEADER}` (use *Authorize* above).

Scores are statistical estimates from a model, not proof: read them with the model card (`GET /v1/model`).
"""


def refused(scope: Scope, code: str) -> None:
    """Count a middleware's refusal in deepshield_errors_total, as the routes' errors are counted: the
    cross_origin and unknown_host refusals, answered before any route, were missing from it."""
    scope["app"].state.runtime.metrics.failed(code)


Headers = list[tuple[bytes, bytes]]


def sending_headers(send: Send, edit: Callable[[Headers], Headers]) -> Send:
    """`send`, with each answer's headers passed through `edit` on their way out: how the middlewares below
    change the headers of every answer, whichever route or refusal made it."""

    async def send_edited(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": edit(list(message.get("headers", [])))}
        await send(message)

    return send_edited


class RequestId:
    """Pure ASGI middleware giving each request an id: the client's X-Request-ID where it is sane (1 to 128
    letters, digits and ._:-), else a new one. The answer's X-Request-ID header, its error body and its access
    log line carry it, so that a client's report and the server's log name the same request."""

    HEADER = b"x-request-id"
    SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", []) if name.lower() == self.HEADER), b"")
        text = given.decode("latin-1")
        request_id = text if self.SANE.fullmatch(text) else uuid.uuid4().hex
        # Not reset after: each request runs in a task of its own, and a crash's 500 is answered outside this
        # middleware (Starlette's ServerErrorMiddleware), its body and its log line still this request's.
        REQUEST_ID.set(request_id)

        def with_id(headers: Headers) -> Headers:
            kept = [(name, value) for name, value in headers if name.lower() != self.HEADER]
            return [*kept, (self.HEADER, request_id.encode("latin-1"))]

        await self.app(scope, receive, sending_headers(send, with_id))


class SecurityHeaders:
    """Pure ASGI middleware adding protective headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        def protected(headers: Headers) -> Headers:
            names = {name.lower() for name, _ in headers}
            # An API answer (faces, heatmaps, a job's changing state) is never stored by a cache: a shared one
            # would hand a keyed answer (X-API-Key is no Authorization header to caches) to anyone.
            private = ((b"cache-control", b"no-store"),) if scope["path"].startswith("/v1/") else ()
            for name, value in (
                (b"x-content-type-options", b"nosniff"),
                (b"referrer-policy", b"no-referrer"),
                (b"x-frame-options", b"DENY"),
                *private,
            ):
                if name not in names:
                    headers.append((name, value))
            return headers

        await self.app(scope, receive, sending_headers(send, protected))


class SameOrigin:
    """Pure ASGI middleware refusing a /v1 request that changes something (POST, DELETE) sent by a web page
    of another origin: a multipart POST needs no CORS preflight, so any site a visitor opened could submit
    jobs to a server on their machine (202 with Origin: https://evil.example). Clients that are not
    browsers send no Origin and are not concerned."""

    CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in self.CHANGING and scope["path"].startswith("/v1/"):
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])
            }
            origin = headers.get("origin")
            hosts = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").lower()} - {""}
            if origin is not None and _netloc(origin) not in hosts:
                refused(scope, "cross_origin")
                response = error_response(
                    403,
                    "cross_origin",
                    f"requests from the web page at {origin[:100]!r} are refused: use this server's own page",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class KnownHost:
    """Pure ASGI middleware refusing (400 `unknown_host`) a request whose Host header names a host this server
    does not answer to. A server listening on a loopback address answers to loopback names only, unless
    `allowed_hosts` names more: a page of another site whose name its owner makes resolve to 127.0.0.1
    (DNS rebinding) is of the same origin as the server, so SameOrigin lets it submit files and read results.
    A request with no Host (HTTP/1.0 programs) is not concerned; browsers always send one."""

    def __init__(self, app: ASGIApp, allowed: str | None, listen_host: str | None) -> None:
        self.app = app
        named = [] if allowed is None else [_host_name(name) for name in allowed.split(",") if name.strip()]
        loopback_listener = listen_host is not None and _is_loopback(_host_name(listen_host))
        if "*" in named or (allowed is None and not loopback_listener):
            self.names: frozenset[str] | None = None  # any host
        else:
            self.names = frozenset([*named, *([_host_name(listen_host)] if listen_host else [])])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.names is not None:
            host = next((value for name, value in scope.get("headers", []) if name.lower() == b"host"), None)
            name = None if host is None else _host_name(host.decode("latin-1"), with_port=True)
            if name is not None and name not in self.names and not _is_loopback(name):
                refused(scope, "unknown_host")
                response = error_response(
                    400,
                    "unknown_host",
                    f"this server does not answer to the host {name[:100]!r}: open it by a loopback address "
                    "(127.0.0.1 or localhost), or name the host in DEEPSHIELD_ALLOWED_HOSTS",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _netloc(origin: str) -> str:
    """An Origin header's host and port, lower case; "" for one that is no URL (an unclosed "[" of an IPv6
    address, which urlsplit raised on: a 500 and a logged traceback for any client that sent one)."""
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:
        return ""


def _host_name(host: str, *, with_port: bool = False) -> str:
    """A host's name as compared: lower case, no trailing dot, IPv6 without brackets, no port where
    `with_port` says one may follow."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif with_port and host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):  # browsers resolve *.localhost to loopback themselves
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HeadAsGet:
    """Pure ASGI middleware answering HEAD on the page, /healthz and /metrics (uptime probes ask with it) as
    GET, without the body. Not HEAD routes: those would each be a second operation in the API's schema."""

    PATHS = frozenset({"/", "/healthz", "/metrics"})

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


class CutOffAtShutdown:
    """Pure ASGI middleware answering a request still in flight when the shutdown's grace time ends (uvicorn
    then cancels it: a slow upload, an analysis) with 503 `shutting_down` and its Retry-After, and one log
    line. It was a plain-text 500 'Internal Server Error' and, for each, a traceback of some 60 lines in the
    log ('Exception in ASGI application' at ERROR), for what the README says a restart does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not scope["app"].state.runtime.jobs.refusing_new:  # not the shutdown's: not ours to answer
                raise
            log.warning(
                "request %s (%s %s) cut off: still in flight when the shutdown's grace time ended",
                REQUEST_ID.get(),
                scope["method"],
                one_line(scope["path"]),
            )
            if not started:  # else its answer is half sent: uvicorn closes the connection
                refused(scope, "shutting_down")
                error = shutting_down()
                await error_response(error.status, error.code, error.detail, error.headers)(scope, receive, send)


def _use_json_errors_in_openapi(app: FastAPI) -> None:
    """FastAPI documents request validation failures as 422 HTTPValidationError; ours are 400 ErrorBody."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        # The key is needed only when the server has one: `security` of the key alone said every call needs it.
        key_optional = app.state.runtime.settings.api_key is None
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                if key_optional and operation.get("security") == [{API_KEY_SCHEME: []}]:
                    operation["security"] = [{}, {API_KEY_SCHEME: []}]
                responses = operation.get("responses", {})
                default_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                if default_422.get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
                    responses.setdefault(
                        "400",
                        {
                            "description": "Invalid request parameter",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                        },
                    )
        _declare_frames_bound(schema, app.state.runtime.settings.max_video_frames)
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to change the schema


def _declare_frames_bound(schema: dict[str, Any], max_frames: int) -> None:
    """POST /v1/jobs refuses (400) `frames` above the server's max_video_frames, a setting the route's signature
    cannot know: the schema said only `minimum: 1`, so a client generated from it sent 500 and got a 400."""
    operation = schema.get("paths", {}).get("/v1/jobs", {}).get("post", {})
    for parameter in operation.get("parameters", []):
        if parameter.get("name") == "frames" and parameter.get("in") == "query":
            for option in parameter.get("schema", {}).get("anyOf", [parameter.get("schema", {})]):
                if option.get("type") == "integer":
                    option["maximum"] = max_frames


def create_app(detector: Detector, settings: ServerSettings | None = None, listen_host: str | None = None) -> FastAPI:
    """Build the app around a loaded detector (loaded once, shared by every request). `listen_host`: the
    address the server listens on (a loopback one answers to loopback names only: KnownHost); None: not
    known, so only `allowed_hosts` limits the Host header."""
    runtime = Runtime(detector, settings or ServerSettings.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def purge_forever() -> None:
            while True:
                await asyncio.sleep(PURGE_INTERVAL_S)
                runtime.jobs.purge()
                runtime.storage.sweep()

        purger = asyncio.create_task(purge_forever())
        try:
            yield
        finally:
            purger.cancel()
            runtime.close()

    app = FastAPI(
        title="Deepfake Shield API",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        # /v1/jobs/ is a 404 like any unknown path, not a 307 to an address built from the Host header.
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    app.add_middleware(SameOrigin)
    app.add_middleware(HeadAsGet)
    app.add_middleware(KnownHost, allowed=runtime.settings.allowed_hosts, listen_host=listen_host)
    app.add_middleware(CutOffAtShutdown)  # inside RequestId and SecurityHeaders: its 503 carries their headers
    # Outermost: the refusals of the middlewares inside it carry its headers too (a /v1 unknown_host had no no-store).
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestId)  # outermost of all: every answer, each refusal too, has its id
    install_error_handlers(app, runtime.metrics.failed)

    v1 = APIRouter(
        prefix="/v1",
        dependencies=[Depends(require_api_key), Depends(refuse_unknown_query)],
        responses=error_responses(400, 401),  # 400: every route refuses a query parameter it does not know
    )
    for routes in (analysis, jobs, model):
        v1.include_router(routes.router)
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(page.router)
    _use_json_errors_in_openapi(app)
    app.mount("/static", RevalidatedStaticFiles(directory=STATIC_DIR), name="static")
    return app
