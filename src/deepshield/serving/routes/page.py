"""The web page at / and the API docs at /docs, both served offline (Swagger UI is vendored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page: only its own files, images as data:/blob: URLs (face crops, previews, the user's file).
_PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
# Swagger UI's page carries an inline start-up script and inline styles.
_DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'"

router = APIRouter(include_in_schema=False)


class RevalidatedStaticFiles(StaticFiles):
    """The page's files, which a browser must revalidate on each load (a 304 while unchanged): their names
    carry no version, so after an upgrade a module cached by heuristic freshness would run beside new ones."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        # /static/index.html is the page too: it keeps the page's policy (which scripts and styles ignore).
        response.headers["Content-Security-Policy"] = _PAGE_CSP
        return response


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        # Relative, as the page's own: served behind a proxy under a path prefix, /static was another site's.
        openapi_url=request.app.openapi_url.lstrip("/"),
        title="Deepfake Shield API",
        swagger_js_url="static/vendor/swagger-ui-bundle.js",
        swagger_css_url="static/vendor/swagger-ui.css",
        swagger_favicon_url="static/favicon.svg",
    )
    page.headers["Content-Security-Policy"] = _DOCS_CSP
    return page


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "index.html",
        media_type="text/html",
        headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"},
    )
