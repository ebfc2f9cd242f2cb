"""Every error the API returns is JSON: {"error": <short code>, "detail": <message for people>, "request_id": <id>}."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextvars import ContextVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from deepshield.errors import CorruptMediaError, DeepShieldError, MediaTooLargeError, UnsupportedMediaError

log = logging.getLogger("deepshield.serving")
LOGGED = "_deepshield_logged"  # set on an exception whose traceback is in the log already
# The request being answered (app.RequestId sets it): its error bodies and its access log line carry it.
REQUEST_ID: ContextVar[str | None] = ContextVar("deepshield_request_id", default=None)


class ErrorBody(BaseModel):
    error: str = Field(description="short machine-readable code, e.g. unsupported_media")
    detail: str = Field(description="what went wrong, in words meant to be shown to a person")


class ErrorAnswer(ErrorBody):
    """An error answer's body: the error and the request's id (its X-Request-ID header, in the access log)."""

    request_id: str | None = Field(default=None, description="this request's id, as its X-Request-ID header says")


class ApiError(Exception):
    """An error answer. Raised anywhere in a request; turned into JSON by the handler below."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


# Codes for HTTP errors raised by the framework itself (unknown route, wrong method, static 404).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "upload_timeout",
    413: "too_large",
    415: "unsupported_media",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "busy",
    504: "timeout",
}


# The library's refusals on HTTP, most specific first: what the media is (415), what is wrong with it (422).
_LIBRARY_ERRORS: tuple[tuple[type[DeepShieldError], int, str], ...] = (
    (UnsupportedMediaError, 415, "unsupported_media"),
    (MediaTooLargeError, 422, "media_too_large"),
    (CorruptMediaError, 422, "corrupt_media"),
    (DeepShieldError, 422, "unprocessable"),
)

# A failed job is answered 200 with its error inside: the status a request failing the same way gets,
# served (GET /healthz) so that clients such as the web page can show both alike.
JOB_ERROR_STATUSES: dict[str, int] = {code: status for _, status, code in _LIBRARY_ERRORS} | {
    "internal_error": 500,
    "server_restarted": 503,
    "result_unreadable": 410,  # saved by another version of the server
    "timeout": 504,
}


def from_library_error(exc: DeepShieldError) -> ApiError:
    """The API's answer to one of the library's refusals."""
    status, code = next((status, code) for kind, status, code in _LIBRARY_ERRORS if isinstance(exc, kind))
    return ApiError(status, code, str(exc))


def internal_error(exc: BaseException, analysis: bool = False) -> ApiError:
    """A crash as a 500. Only an analysis has a file to report (a GET of a job answered "please report this
    file")."""
    # Its request's id, as the answer and the access line give it: a traceback among others' was tied to none.
    log.error(
        "%s failed (request %s)",
        "analysis" if analysis else "request",
        REQUEST_ID.get() or "-",
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    with contextlib.suppress(AttributeError):  # an exception that takes no attribute is logged twice, no worse
        setattr(exc, LOGGED, True)  # uvicorn, which Starlette re-raises it to, logs its traceback again
    what, report = ("the analysis", "this file") if analysis else ("the request", "it")
    return ApiError(
        500,
        "internal_error",
        f"{what} failed unexpectedly ({type(exc).__name__}); the server is still running, please report {report}",
    )


def error_response(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = REQUEST_ID.get()
    body = ErrorAnswer(error=code, detail=detail, request_id=request_id)
    # Its header here too: a crash's 500 is sent outside the middleware that adds it (app.RequestId).
    named = {} if request_id is None else {"X-Request-ID": request_id}
    return JSONResponse(status_code=status, content=body.model_dump(), headers=(headers or {}) | named)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI, counted: Callable[[str], None] = lambda code: None) -> None:
    """Every error answered as JSON; `counted` hears each error code (the server's metrics)."""

    def respond(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        counted(code)
        return error_response(status, code, detail, headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(DeepShieldError)
    async def _library_error(request: Request, exc: DeepShieldError) -> JSONResponse:
        api = from_library_error(exc)
        return respond(api.status, api.code, api.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return respond(400, "invalid_request", _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 404:
            detail = f"no such resource: {request.url.path}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        else:
            detail = str(exc.detail)
        return respond(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Last resort (Starlette's ServerErrorMiddleware calls this, then re-raises for the log).
        api = internal_error(exc)
        return respond(api.status, api.code, api.detail)


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses=` entries documenting the JSON error body for these statuses."""
    descriptions = {
        400: "Bad request: a parameter or query option it does not take, an upload that is not multipart, has no "
        "`file` field or is empty; `unknown_host`: a Host this server does not answer to",
        401: "Missing or wrong X-API-Key (only when the server has an API key)",
        403: "Sent by a web page of another origin (`cross_origin`): use this server's own page",
        404: "No such job (unknown or expired)",
        408: "The upload took too long",
        413: "Upload above the byte limit",
        415: "Not an image or video type we read (judged by content, not name); `video_needs_job` for a video sent "
        "to /v1/analyze: submit it to /v1/jobs",
        422: "Media we cannot analyse: corrupt, too many pixels, too long",
        429: "Too many uploads at once from this client; retry after the time in Retry-After",
        500: "Unexpected failure in the analysis (the server keeps serving)",
        503: "Server busy (too many requests or jobs waiting) or shutting down; retry after the time in Retry-After",
        504: "The analysis took longer than the request timeout",
        507: "The server could not store the upload (its disk is full); retry later",
    }
    # Declared, not only described: a client generated from the schema never saw the header it is told to wait by.
    retry_after = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
    return {
        status: {
            "model": ErrorAnswer,
            "description": descriptions.get(status, "Error"),
            **({"headers": retry_after} if status in (429, 503) else {}),
        }
        for status in statuses
    }
