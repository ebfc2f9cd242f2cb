"""What the routes share, kept on `app.state.runtime`, and the dependencies that hand it to them."""

from __future__ import annotations

import difflib
import hmac
from collections import Counter
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from deepshield.inference.analysis import Detector
from deepshield.media.sniff import IMAGE_FORMATS, VIDEO_FORMATS, MediaKind
from deepshield.media.suffixes import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from deepshield.serving.callbacks import CallbackPolicy, CallbackSender
from deepshield.serving.errors import ApiError
from deepshield.serving.gate import AnalysisGate
from deepshield.serving.job_ledger import JobLedger
from deepshield.serving.jobs import Job, JobStore, JobWork, ProgressFn
from deepshield.serving.metrics import ServerMetrics
from deepshield.serving.schemas import AcceptedMedia, AnalyzeResponse, Limits, VideoResponse
from deepshield.serving.settings import ServerSettings
from deepshield.serving.storage import Storage
from deepshield.serving.uploads import Upload, UploadPolicy, UploadSlots, receive_upload, storage_error
from deepshield.serving.work import analyze_image_file, analyze_video_file

API_KEY_HEADER = "X-API-Key"


class Runtime:
    """The detector, the settings, the gate, the uploads, the jobs and their storage."""

    def __init__(self, detector: Detector, settings: ServerSettings) -> None:
        self.detector = detector
        self.settings = settings
        self.gate = AnalysisGate(settings.max_concurrency, settings.max_queue)
        self.storage = Storage(settings.state_dir, settings.tmp_dir)
        ledger = None if self.storage.ledger_path is None else JobLedger(self.storage.ledger_path)
        self.metrics = ServerMetrics(detector.model_name)
        self.callback_policy = CallbackPolicy.from_settings(
            settings.callback_hosts, settings.callback_secret, settings.callback_retry_s
        )
        self.jobs = JobStore(
            settings.job_workers,
            settings.max_pending_jobs,
            settings.max_jobs,
            settings.job_ttl_s,
            settings.job_timeout_s,
            self.job_work,
            ledger,
            CallbackSender(self.callback_policy) if self.callback_policy.hosts else None,
            self.job_finished,
        )
        self.jobs.recover(self.storage.upload_dir)
        self.upload_policy = UploadPolicy.from_settings(settings)
        self.upload_slots = UploadSlots(self.upload_policy)
        self.metrics.watch(
            "deepshield_analyses_running", "POST /v1/analyze analyses running now", lambda: self.gate.running
        )
        self.metrics.watch(
            "deepshield_analyses_waiting", "POST /v1/analyze analyses waiting for a slot", lambda: self.gate.waiting
        )
        self.metrics.watch("deepshield_jobs_pending", "Jobs queued or running", self.jobs.pending)
        self.metrics.watch("deepshield_jobs_running", "Jobs being analysed now (by the job workers)", self.jobs.running)

    @property
    def upload_dir(self) -> Path:
        return self.storage.upload_dir

    def job_work(self, job: Job) -> JobWork:
        """What a job runs: a video analysis, or an image analysis shaped as from /v1/analyze."""
        detector, path = self.detector, job.upload.path
        if job.kind == MediaKind.VIDEO.value:
            return lambda progress: analyze_video_file(detector, path, job.frames, progress, job.span)

        def work(progress: ProgressFn) -> AnalyzeResponse:
            progress(0.1, "analysing image")
            # With its preview, as the schema says: the page sends a GIF as a job, and shows a still one's.
            return analyze_image_file(detector, path, job.file, self.settings.preview_max_side)

        return work

    def job_finished(self, job: Job) -> None:
        if job.status == "done" and isinstance(job.result, AnalyzeResponse | VideoResponse):
            self.metrics.analysed(job.kind, job.result.verdict.label, job.result.elapsed_ms / 1000)
        elif job.error is not None:
            self.metrics.failed(job.error.error)

    async def receive(self, request: Request) -> Upload:
        try:
            directory = self.upload_dir  # made again if it went (a temp cleaner), which a full disk can refuse
        except OSError as exc:
            raise storage_error(exc) from None
        return await receive_upload(request, directory, self.upload_policy, self.upload_slots)

    def limits(self) -> Limits:
        image, video = self.detector.image_limits, self.detector.video_limits
        return Limits(
            max_upload_bytes=self.settings.max_upload_bytes,
            max_image_pixels=image.max_pixels,
            max_source_pixels=image.max_source_pixels,
            max_image_working_bytes=image.max_working_bytes,
            max_video_duration_s=video.max_duration_s,
            max_video_pixels_per_frame=video.max_pixels_per_frame,
            max_video_source_pixels_per_frame=video.max_source_pixels_per_frame,
            max_video_frames_bytes=video.max_frames_bytes,
            video_frames=self.settings.video_frames,
            max_video_frames=self.settings.max_video_frames,
            min_face_px=self.detector.faces.min_face_size,
        )

    def accepted_media(self) -> AcceptedMedia:
        return AcceptedMedia(
            image_formats=list(IMAGE_FORMATS),
            video_formats=list(VIDEO_FORMATS),
            image_suffixes=sorted(suffix.removeprefix(".") for suffix in IMAGE_SUFFIXES),
            video_suffixes=sorted(suffix.removeprefix(".") for suffix in VIDEO_SUFFIXES),
        )

    def close(self) -> None:
        self.jobs.close()
        self.storage.close()


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="needed only when the server has an API key"
)
API_KEY_SCHEME = _api_key_scheme.scheme_name  # its name in the OpenAPI document's security entries


async def require_api_key(runtime: RuntimeDep, key: Annotated[str | None, Security(_api_key_scheme)]) -> None:
    """The /v1 routes' guard: with an API key set, the X-API-Key header must carry it (compared in constant time)."""
    expected = runtime.settings.api_key
    if not expected:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
        raise ApiError(
            401,
            "unauthorized",
            f"this server needs an API key: send it in the {API_KEY_HEADER} header" if key is None else "wrong API key",
        )


async def refuse_unknown_query(request: Request) -> None:
    """The /v1 routes' other guard: a query option the route does not take, or one given twice, is a 400
    naming it. A misspelt one (?start=10 for start_s) was ignored, and the whole video analysed."""
    route = request.scope.get("route")
    known = _query_names(route.dependant) if isinstance(route, APIRoute) else set()
    for name, count in Counter(name for name, _ in request.query_params.multi_items()).items():
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            takes = (
                f"did you mean {close[0]}?" if close else f"this endpoint takes {', '.join(sorted(known)) or 'none'}"
            )
            raise ApiError(400, "invalid_request", f"query.{name}: unknown option; {takes}")
        if count > 1:
            raise ApiError(400, "invalid_request", f"query.{name}: given {count} times; give it once")


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return names
