"""Response models of the REST API (they also make the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from deepshield.inference.results import FaceResult, ImageResult, ScoringTerms, TrackPoint, TrackResult, VideoResult
from deepshield.serving.errors import ErrorBody


class FileInfo(BaseModel):
    name: str = Field(description="the name the client gave the file (not used on the server)")
    size_bytes: int
    sha256: str = Field(description="SHA-256 of the uploaded bytes, for the record")
    kind: Literal["image", "video"]


# Where a face's crop (and so its heatmap) lies on the picture, for a client that draws either on it.
CROP_SQUARE = (
    "the square centred on `box` whose side is the model's crop_policy.scale (GET /v1/model) times the box's "
    "longer side, turned `turned_deg` counter-clockwise to be upright, black past the picture's edge, at "
    "crop_policy.size pixels (a model whose crop_policy.align is true turns it by the eyes' angle instead)"
)
# What the heatmap is: the model's coarse map, not a mask of the edit (README, "What a heatmap shows").
HEATMAP_MEANING = (
    "the face-swap score's evidence per region, on one scale for every face (blue 0%, green about 50%, red 100%: "
    "looks manipulated): a coarse grid of cells (7 x 7 for the shipped model) smoothed to the crop's size, where "
    "the score saw evidence, not a mask of the edit"
)


class FaceView(FaceResult):
    crop_png: str = Field(description=f"the face crop the model saw, as a PNG data URL: {CROP_SQUARE}")
    heatmap_png: str = Field(
        description=f"that crop, pixel for pixel, with the heatmap blended on top, as a PNG data URL: {HEATMAP_MEANING}; "
        f"on the picture it covers {CROP_SQUARE}"
    )


class TrackPointView(TrackPoint):
    thumbnail_jpeg: str = Field(description="the face in this frame, small, as a JPEG data URL")


class TrackView(TrackResult):
    points: list[TrackPointView]  # type: ignore[assignment]  # the view narrows the result's item type (pydantic reads it)
    thumbnail_png: str = Field(
        description="the face crop of the track's most suspicious frame (peak_frame_index), as a PNG data URL: "
        "the square about that frame's box that a photo's crop_png is about its face's"
    )
    heatmap_png: str = Field(
        description=f"that crop, pixel for pixel, with its heatmap blended on top, as a PNG data URL: {HEATMAP_MEANING}"
    )


class VideoResponse(VideoResult):
    tracks: list[TrackView]  # type: ignore[assignment]  # as above


class AnalyzeResponse(ImageResult):
    faces: list[FaceView]  # type: ignore[assignment]  # as above
    file: FileInfo
    preview_jpeg: str | None = Field(
        None,
        description="the analysed image (upright, scaled to fit the server's preview size) as a JPEG data URL; from /v1/analyze with ?preview=true, and always in an image job's result (the page sends GIFs as jobs and shows a still one). Face boxes are in the pixels read (`width` x `height`; see `decoded_scale`): scale by preview width / `width`.",
    )


class JobView(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    kind: Literal["image", "video"]
    progress: float = Field(ge=0, le=1)
    stage: str = Field(description="what the analysis is doing now")
    file: FileInfo
    frames: int | None = Field(None, description="videos: frames sampled; null for an image")
    start_s: float | None = Field(
        None, description="videos: the time the analysed span starts at, in seconds; null for an image"
    )
    end_s: float | None = Field(None, description="videos: the time the analysed span ends at; None: the video's end")
    created_at: float = Field(description="Unix time")
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = Field(None, description="Unix time after which a finished job is forgotten")
    result: AnalyzeResponse | VideoResponse | None = Field(
        None, description="when done: an image result as from /v1/analyze, or a video result"
    )
    error: ErrorBody | None = Field(None, description="when failed")
    callback_url: str | None = Field(None, description="where the finished job is POSTed, as submitted")
    callback_status: str | None = Field(
        None, description="the callback's delivery: pending, delivered, or failed: <why> (None without a callback)"
    )


class Limits(BaseModel):
    max_upload_bytes: int
    max_image_pixels: int = Field(description="pixels an image is decoded at, at most")
    max_source_pixels: int = Field(
        description="a JPEG's or HEIC's own pixels, at most: above max_image_pixels it is read at 1/2, 1/4 or 1/8 scale"
    )
    max_image_working_bytes: int = Field(
        description="memory one image decode may take (decoded pixels + RGB copy); larger JPEGs are decoded at reduced scale"
    )
    max_video_duration_s: float
    max_video_pixels_per_frame: int = Field(description="pixels a video frame is read at, at most")
    max_video_source_pixels_per_frame: int = Field(
        description="a video frame's own pixels, at most: above max_video_pixels_per_frame it is read at 1/2, 1/4 or 1/8 scale"
    )
    max_video_frames_bytes: int = Field(
        description="memory a video's sampled frames may take together; many frames of a large video are read at reduced scale"
    )
    video_frames: int
    max_video_frames: int
    min_face_px: int = Field(description="faces narrower than this (pixels, in the analysed frame) are not detected")


class AcceptedMedia(BaseModel):
    """What the server reads (judged by content; a suffix only guesses, before uploading, whether a file is a video)."""

    image_formats: list[str]
    video_formats: list[str]
    image_suffixes: list[str] = Field(
        description="file-name suffixes (without the dot) of photos, offered in the file dialog beside image/*"
        " (HEIC and AVIF often have no MIME type there)"
    )
    video_suffixes: list[str] = Field(description="file-name suffixes (without the dot) taken for videos")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    scope: str = Field(description="what the model in use judges and what it does not")
    api_key_required: bool
    analyses_running: int = Field(description="POST /v1/analyze analyses running now (at most max_concurrency)")
    analyses_waiting: int = Field(description="POST /v1/analyze analyses waiting for a slot")
    jobs_pending: int = Field(description="jobs queued or running")
    jobs_running: int = Field(
        description="jobs being analysed now, by the job workers (at most job_workers, beside max_concurrency)"
    )
    limits: Limits
    accepted: AcceptedMedia
    terms: ScoringTerms = Field(
        description="the thresholds and inconclusive bands verdicts are called with, as every result carries them"
    )
    job_error_statuses: dict[str, int] = Field(
        description="for a failed job's error code, the HTTP status a request failing the same way answers with"
    )
