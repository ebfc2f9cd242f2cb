"""The FastAPI application: web page at /, REST API under /v1, OpenAPI docs at /docs (served offline)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from deepshield import __version__
from deepshield.errors import DeepShieldError
from deepshield.inference.analysis import Detector
from deepshield.media.sniff import MediaKind, sniff_media_kind
from deepshield.models.card import ModelCard
from deepshield.serving.errors import ApiError, error_responses, from_library_error, install_error_handlers, internal_error
from deepshield.serving.gate import AnalysisGate
from deepshield.serving.job_ledger import JobLedger
from deepshield.serving.jobs import Job, JobStore, JobWork, ProgressFn
from deepshield.serving.schemas import AnalyzeResponse, FileInfo, Health, JobView, Limits
from deepshield.serving.settings import ServerSettings
from deepshield.serving.storage import Storage
from deepshield.serving.uploads import FIELD_NAME, Upload, UploadPolicy, UploadSlots, receive_upload
from deepshield.serving.work import analyze_image_file, analyze_video_file

log = logging.getLogger("deepshield.serving")

STATIC_DIR = Path(__file__).resolve().parent / "static"
API_KEY_HEADER = "X-API-Key"
PURGE_INTERVAL_S = 30.0

DESCRIPTION = f"""
Find face-swap deepfakes in photos and videos.

* **Images**: `POST /v1/analyze` with a multipart field `{FIELD_NAME}` answers at once: every face with its
  calibrated probability of manipulation, its crop and a heatmap (PNG data URLs), and a verdict.
* **Videos** (or images, the same way): `POST /v1/jobs` answers `202` with a job id; poll
  `GET /v1/jobs/{{id}}` for status, progress and, when done, the result with a per-face timeline.
* **Errors** are always JSON: `{{"error": "<short code>", "detail": "<message for people>"}}`.
* **API key**: when the server runs with `DEEPSHIELD_API_KEY` set, every `/v1` call needs the header
  `{API_KEY_HEADER}` (use *Authorize* above).

Scores are statistical estimates from a model, not proof: read them with the model card (`GET /v1/model`).
"""

_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD_NAME],
                    "properties": {FIELD_NAME: {"type": "string", "format": "binary", "description": "the image or video (type judged by content)"}},
                }
            }
        },
    }
}

# The page: only its own files, images as data:/blob: URLs (face crops, previews, the user's file).
_PAGE_CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
# Swagger UI's page carries an inline start-up script and inline styles.
_DOCS_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'"


class SecurityHeaders:
    """Pure ASGI middleware adding protective headers to every response."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                for name, value in ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")):
                    if name not in names:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Runtime:
    """What the routes share: the detector, the settings, the gate, the uploads, the jobs and their storage."""

    def __init__(self, detector: Detector, settings: ServerSettings) -> None:
        self.detector = detector
        self.settings = settings
        self.gate = AnalysisGate(settings.max_concurrency, settings.max_queue)
        self.storage = Storage(settings.state_dir, settings.tmp_dir)
        ledger = None if self.storage.ledger_path is None else JobLedger(self.storage.ledger_path)
        self.jobs = JobStore(
            settings.job_workers, settings.max_pending_jobs, settings.max_jobs, settings.job_ttl_s, settings.job_timeout_s, self.job_work, ledger
        )
        self.jobs.recover(self.storage.upload_dir)
        self.upload_policy = UploadPolicy.from_settings(settings)
        self.upload_slots = UploadSlots(self.upload_policy)

    @property
    def upload_dir(self) -> Path:
        return self.storage.upload_dir

    def job_work(self, job: Job) -> JobWork:
        """What a job runs: a video analysis, or an image analysis shaped as from /v1/analyze."""
        detector, path = self.detector, job.upload.path
        if job.kind == MediaKind.VIDEO.value:
            return lambda progress: analyze_video_file(detector, path, job.frames, progress)

        def work(progress: ProgressFn) -> AnalyzeResponse:
            progress(0.1, "analysing image")
            return analyze_image_file(detector, path, job.file, self.settings.preview_max_side)

        return work

    async def receive(self, request: Request) -> Upload:
        return await receive_upload(request, self.upload_dir, self.upload_policy, self.upload_slots)

    def limits(self) -> Limits:
        image, video = self.detector.image_limits, self.detector.video_limits
        return Limits(
            max_upload_bytes=self.settings.max_upload_bytes,
            max_image_pixels=image.max_pixels,
            max_image_working_bytes=image.max_working_bytes,
            max_video_duration_s=video.max_duration_s,
            max_video_pixels_per_frame=video.max_pixels_per_frame,
            video_frames=self.settings.video_frames,
            max_video_frames=self.settings.max_video_frames,
        )

    def close(self) -> None:
        self.jobs.close()
        self.storage.close()


def _sniff(upload: Upload) -> MediaKind:
    try:
        return sniff_media_kind(upload.head)
    except DeepShieldError as exc:
        raise from_library_error(exc) from None


def _use_json_errors_in_openapi(app: FastAPI) -> None:
    """FastAPI documents request validation failures as 422 HTTPValidationError; ours are 400 ErrorBody."""

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                default_422 = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                if default_422.get("$ref", "").endswith("/HTTPValidationError"):
                    del responses["422"]
                    responses.setdefault("400", {"description": "Invalid request parameter", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def create_app(detector: Detector, settings: ServerSettings | None = None) -> FastAPI:
    """Build the app around a loaded detector (loaded once, shared by every request)."""
    settings = settings or ServerSettings.from_env()
    runtime = Runtime(detector, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
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
    )
    app.state.runtime = runtime
    app.add_middleware(SecurityHeaders)
    install_error_handlers(app)

    api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="needed only when the server has an API key")

    async def require_api_key(key: str | None = Security(api_key_scheme)) -> None:
        expected = settings.api_key
        if not expected:
            return
        if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
            raise ApiError(401, "unauthorized", f"this server needs an API key: send it in the {API_KEY_HEADER} header" if key is None else "wrong API key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=error_responses(401))

    @v1.post(
        "/analyze",
        response_model=AnalyzeResponse,
        tags=["analysis"],
        summary="Analyse an image now",
        description="Upload an image (multipart field `file`). Answers with every face found, its probability of manipulation, "
        "its crop and heatmap as PNG data URLs, and the verdict. Videos go to `POST /v1/jobs`.",
        openapi_extra=_MULTIPART_BODY,
        responses=error_responses(400, 408, 413, 415, 422, 500, 503, 504),
    )
    async def analyze(request: Request, preview: bool = Query(False, description="also send the analysed image back as a JPEG data URL")) -> AnalyzeResponse:
        runtime.gate.check_capacity()  # refused before a byte is received; the upload itself holds no slot
        upload = await runtime.receive(request)
        try:
            kind = _sniff(upload)
            if kind is MediaKind.VIDEO:
                raise ApiError(415, "video_needs_job", "this is a video: submit it to POST /v1/jobs, which analyses it in the background")
        except BaseException:
            upload.delete()
            raise
        file = FileInfo(name=upload.filename, size_bytes=upload.size, sha256=upload.sha256, kind="image")
        preview_side = settings.preview_max_side if preview else None

        def work() -> AnalyzeResponse:
            return analyze_image_file(detector, upload.path, file, preview_side)

        try:
            # The upload is deleted when the analysis ends (even one abandoned by a timeout) or is refused.
            return await runtime.gate.run(work, settings.request_timeout_s, on_finish=upload.delete)
        except (ApiError, asyncio.CancelledError):
            raise
        except DeepShieldError as exc:
            raise from_library_error(exc) from None
        except Exception as exc:  # noqa: BLE001 - a crash in analysis is a 500, never a dead server
            raise internal_error(exc) from None

    @v1.post(
        "/jobs",
        response_model=JobView,
        tags=["analysis"],
        status_code=202,
        summary="Submit a video (or image) for analysis",
        description="Upload a video or an image (multipart field `file`). Answers `202` with the job at once; "
        "poll `GET /v1/jobs/{id}` (the `Location` header) until its status is `done` or `failed`.",
        openapi_extra=_MULTIPART_BODY,
        responses=error_responses(400, 408, 413, 415, 503),
    )
    async def submit_job(
        request: Request,
        frames: int | None = Query(None, ge=1, le=settings.max_video_frames, description=f"frames sampled from a video (default {settings.video_frames})"),
    ) -> JSONResponse:
        runtime.jobs.check_capacity()
        upload = await runtime.receive(request)
        try:
            kind = _sniff(upload)
        except BaseException:
            upload.delete()
            raise
        count = frames or settings.video_frames
        file = FileInfo(name=upload.filename, size_bytes=upload.size, sha256=upload.sha256, kind=kind.value)
        job = runtime.jobs.submit(kind.value, file, count, upload)
        view = job.view(settings.job_ttl_s)
        return JSONResponse(status_code=202, content=view.model_dump(mode="json"), headers={"Location": f"/v1/jobs/{job.id}"})

    @v1.get("/jobs/{job_id}", response_model=JobView, tags=["analysis"], summary="A job's status, progress and result", responses=error_responses(404))
    async def get_job(job_id: str) -> JobView:
        return runtime.jobs.get(job_id).view(settings.job_ttl_s)

    @v1.get("/model", response_model=ModelCard, summary="The model card of the model in use", tags=["model"])
    async def model_card() -> ModelCard:
        return detector.card

    app.include_router(v1)
    _use_json_errors_in_openapi(app)

    @app.get("/healthz", response_model=Health, summary="Liveness and load", tags=["health"])
    async def healthz() -> Health:
        gate = runtime.gate
        return Health(
            model=detector.model_name,
            api_key_required=bool(settings.api_key),
            analyses_running=gate.running,
            analyses_waiting=gate.waiting,
            jobs_pending=runtime.jobs.pending(),
            limits=runtime.limits(),
        )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="Deepfake Shield API",
            swagger_js_url="/static/vendor/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
        page.headers["Content-Security-Policy"] = _DOCS_CSP
        return page

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers={"Content-Security-Policy": _PAGE_CSP, "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
