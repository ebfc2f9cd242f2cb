"""What the worker threads do: analyse an uploaded file and shape the answer for the API."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from deepshield.inference.analysis import Detector, ProgressCallback, with_declaration
from deepshield.inference.heatmap import crop_urls, jpeg_url
from deepshield.inference.results import TrackPoint
from deepshield.media.images import decode_image
from deepshield.media.metadata import image_metadata
from deepshield.media.video import WHOLE_VIDEO, VideoSpan
from deepshield.serving.schemas import AnalyzeResponse, FaceView, FileInfo, TrackPointView, TrackView, VideoResponse


def _thumbnail(point: TrackPoint) -> np.ndarray:
    if point.thumbnail is None:
        raise ValueError("a video result's track points carry their thumbnails (analyze_video)")
    return point.thumbnail


def preview_jpeg(image: np.ndarray, max_side: int) -> str:
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        image = cv2.resize(
            image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
        )
    return jpeg_url(image)


def analyze_image_file(detector: Detector, path: Path, file: FileInfo, preview_side: int | None) -> AnalyzeResponse:
    started = time.perf_counter()
    decoded = decode_image(path, detector.image_limits)  # decoded here, once, for the preview too
    result = detector.analyze_image(decoded, heatmaps=True)
    metadata = image_metadata(path, detector.trust_anchors)
    # The file's metadata joins the result here, and with it what the verdict says of a declared AI origin.
    result = result.model_copy(update={"metadata": metadata, "verdict": with_declaration(result.verdict, metadata)})
    faces = []
    for face in result.faces:
        assert face.crop is not None and face.heatmap is not None, "analyze_image keeps pixels and heatmaps=True"
        crop_png, heatmap_png = crop_urls(face.crop, face.heatmap)
        faces.append(FaceView(**face.model_dump(), crop_png=crop_png, heatmap_png=heatmap_png))
    fields = result.model_dump(exclude={"faces", "elapsed_ms"})
    return AnalyzeResponse(
        **fields,
        faces=faces,
        file=file,
        preview_jpeg=preview_jpeg(decoded.pixels, preview_side) if preview_side else None,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def analyze_video_file(
    detector: Detector, path: Path, frames: int, progress: ProgressCallback, span: VideoSpan = WHOLE_VIDEO
) -> VideoResponse:
    result = detector.analyze_video(path, frames=frames, progress=progress, span=span)
    tracks = []
    for track in result.tracks:
        assert track.crop is not None and track.heatmap is not None, (
            "analyze_video keeps each track's peak crop and heatmap"
        )
        thumbnail_png, heatmap_png = crop_urls(track.crop, track.heatmap)
        points = [
            TrackPointView(**point.model_dump(), thumbnail_jpeg=jpeg_url(_thumbnail(point), quality=80))
            for point in track.points
        ]
        tracks.append(
            TrackView(
                **track.model_dump(exclude={"points"}),
                points=points,
                thumbnail_png=thumbnail_png,
                heatmap_png=heatmap_png,
            )
        )
    return VideoResponse(**result.model_dump(exclude={"tracks"}), tracks=tracks)
