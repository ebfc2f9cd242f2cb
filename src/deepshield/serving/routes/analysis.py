"""POST /v1/analyze: an image analysed now, within the request."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from deepshield.errors import DeepShieldError
from deepshield.media.sniff import MediaKind
from deepshield.serving.errors import ApiError, error_responses, from_library_error, internal_error
from deepshield.serving.routes.uploads import MULTIPART_BODY, sniff_upload
from deepshield.serving.runtime import RuntimeDep
from deepshield.serving.schemas import AnalyzeResponse, FileInfo
from deepshield.serving.work import analyze_image_file

router = APIRouter(tags=["analysis"])


@router.post(
    "/analyze",
    response_model=AnalyzeResponse,
    summary="Analyse an image now",
    description="Upload an image (multipart field `file`). Answers with every face found, its probability of manipulation, "
    "its crop and heatmap as PNG data URLs, and the verdict. Videos and animated images (GIF, APNG, WebP) go to `POST /v1/jobs`.",
    openapi_extra=MULTIPART_BODY,
    responses=error_responses(400, 403, 408, 413, 415, 422, 429, 500, 503, 504, 507),
)
async def analyze(
    request: Request,
    runtime: RuntimeDep,
    preview: Annotated[bool, Query(description="also send the analysed image back as a JPEG data URL")] = False,
) -> AnalyzeResponse:
    runtime.gate.check_capacity()  # refused before a byte is received; the upload itself holds no slot
    upload = await runtime.receive(request)
    try:
        if await run_in_threadpool(sniff_upload, upload) is MediaKind.VIDEO:  # reads the file: off the event loop
            raise ApiError(
                415,
                "video_needs_job",
                "this is a video (or an animated image, analysed as one): submit it to POST /v1/jobs, which analyses "
                "it in the background",
            )
    except BaseException:
        upload.delete()
        raise
    file = FileInfo(name=upload.filename, size_bytes=upload.size, sha256=upload.sha256, kind="image")
    preview_side = runtime.settings.preview_max_side if preview else None
    detector = runtime.detector

    def work() -> AnalyzeResponse:
        return analyze_image_file(detector, upload.path, file, preview_side)

    try:
        # The upload is deleted when the analysis ends (even one abandoned by a timeout) or is refused.
        result = await runtime.gate.run(work, runtime.settings.request_timeout_s, on_finish=upload.delete)
    except (ApiError, asyncio.CancelledError):
        raise
    except DeepShieldError as exc:
        raise from_library_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - a crash in analysis is a 500, never a dead server
        raise internal_error(exc, analysis=True) from None
    runtime.metrics.analysed("image", result.verdict.label, result.elapsed_ms / 1000)
    return result
