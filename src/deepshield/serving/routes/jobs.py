"""POST /v1/jobs, GET and DELETE /v1/jobs/{id}: videos (or images) analysed in the background."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from deepshield.errors import VideoSpanError
from deepshield.media.video import VideoSpan
from deepshield.serving.errors import ApiError, error_responses
from deepshield.serving.routes.uploads import MULTIPART_BODY, sniff_upload
from deepshield.serving.runtime import RuntimeDep
from deepshield.serving.schemas import FileInfo, JobView

router = APIRouter(tags=["analysis"])
log = logging.getLogger("deepshield.serving")


@router.post(
    "/jobs",
    response_model=JobView,
    status_code=202,
    summary="Submit a video (or image) for analysis",
    description="Upload a video or an image (multipart field `file`). Answers `202` with the job at once; "
    "poll `GET /v1/jobs/{id}` (the `Location` header) until its status is `done` or `failed`.",
    openapi_extra=MULTIPART_BODY,
    responses={
        202: {
            "description": "The job, queued",
            "headers": {"Location": {"description": "the job's address: poll it", "schema": {"type": "string"}}},
        },
        **error_responses(400, 403, 408, 413, 415, 422, 429, 503, 507),
    },
)
async def submit_job(
    request: Request,
    runtime: RuntimeDep,
    frames: Annotated[
        int | None,
        Query(
            ge=1,
            description="frames sampled from a video: at most the server's max_video_frames, default its video_frames (GET /healthz limits)",
        ),
    ] = None,
    start_s: Annotated[
        float,
        Query(
            ge=0, allow_inf_nan=False, description="videos: analyse from this time on, in seconds (default: the start)"
        ),
    ] = 0.0,
    end_s: Annotated[
        float | None,
        Query(
            gt=0,
            allow_inf_nan=False,
            description="videos: analyse up to this time, in seconds (default: the end). The server's duration limit "
            "applies to the span, so a long video can be analysed a part at a time",
        ),
    ] = None,
    callback_url: Annotated[
        str | None,
        Query(
            max_length=2000,
            description="POST the finished job (as GET /v1/jobs/{id} gives it) to this URL; its host must be one "
            "the server allows (DEEPSHIELD_CALLBACK_HOSTS). Signed when the server has a callback secret",
        ),
    ] = None,
) -> JSONResponse:
    settings = runtime.settings
    if callback_url is not None:
        runtime.callback_policy.check(callback_url)
    # The bound is a server setting, so it is checked here rather than in the (app-independent) route signature.
    if frames is not None and frames > settings.max_video_frames:
        raise ApiError(
            400, "invalid_request", f"query.frames: Input should be less than or equal to {settings.max_video_frames}"
        )
    try:
        span = VideoSpan(start_s, end_s)
    except VideoSpanError as exc:
        raise ApiError(400, "invalid_request", f"query: {exc}") from None
    runtime.jobs.check_capacity()
    upload = await runtime.receive(request)
    try:
        kind = await run_in_threadpool(sniff_upload, upload)  # reads the file: off the event loop
    except BaseException:
        upload.delete()
        raise
    file = FileInfo(name=upload.filename, size_bytes=upload.size, sha256=upload.sha256, kind=kind.value)
    # Off the event loop: the ledger's write can wait on a locked file, and every request waited with it.
    job = await run_in_threadpool(
        runtime.jobs.submit, kind.value, file, frames or settings.video_frames, upload, span, callback_url
    )
    if await request.is_disconnected():
        # Gone while its file was checked and its job made (a page's Cancel once the upload had ended): the
        # job would run for nobody, its id heard by no one. Reading resumed when the upload ended, so the
        # close is seen here with no wait.
        await run_in_threadpool(runtime.jobs.cancel, job.id)
        log.info("client disconnected before its job %s was answered: the job is cancelled", job.id)
        raise ApiError(400, "client_disconnected", "the client disconnected before its job could be answered")
    view = job.view(settings.job_ttl_s)
    return JSONResponse(
        status_code=202, content=view.model_dump(mode="json"), headers={"Location": f"/v1/jobs/{job.id}"}
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobView,
    summary="A job's status, progress and result",
    responses=error_responses(404),
)
async def get_job(job_id: str, runtime: RuntimeDep) -> JobView:
    # Off the event loop, as every call that can write the ledger (here: forgetting expired jobs).
    job = await run_in_threadpool(runtime.jobs.get, job_id)
    return job.view(runtime.settings.job_ttl_s)


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Cancel a job, or forget a finished one",
    description="A queued job never runs; a running one stops at its next progress report; a finished one's "
    "result is forgotten. The uploaded file is deleted either way. Then `GET /v1/jobs/{id}` answers 404.",
    responses=error_responses(403, 404),
)
async def cancel_job(job_id: str, runtime: RuntimeDep) -> Response:
    await run_in_threadpool(runtime.jobs.cancel, job_id)  # writes the ledger: off the event loop
    return Response(status_code=204)
