"""What the worker threads do: analyse an uploaded file and shape the answer for the API."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import cv2
import numpy as np

from deepshield.inference.analysis import Detector, ProgressCallback
from deepshield.inference.heatmap import encode_png, overlay
from deepshield.inference.results import VideoResult
from deepshield.media.images import load_image
from deepshield.serving.schemas import AnalyzeResponse, FaceView, FileInfo


def data_url(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def preview_jpeg(image: np.ndarray, max_side: int) -> str:
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data_url("image/jpeg", buffer.tobytes())


def analyze_image_file(detector: Detector, path: Path, file: FileInfo, preview_side: int | None) -> AnalyzeResponse:
    started = time.perf_counter()
    image = load_image(path, detector.image_limits)
    result = detector.analyze_image(image, heatmaps=True)
    faces = [
        FaceView(
            **face.model_dump(),
            crop_png=data_url("image/png", encode_png(face.crop)),
            heatmap_png=data_url("image/png", encode_png(overlay(face.crop, face.heatmap))),
        )
        for face in result.faces
    ]
    fields = result.model_dump(exclude={"faces", "elapsed_ms"})
    return AnalyzeResponse(
        **fields,
        faces=faces,
        file=file,
        preview_jpeg=preview_jpeg(image, preview_side) if preview_side else None,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


def analyze_video_file(detector: Detector, path: Path, frames: int, progress: ProgressCallback) -> VideoResult:
    return detector.analyze_video(path, frames=frames, progress=progress)
