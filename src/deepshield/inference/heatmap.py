"""Turn a CAM into a heatmap over the face crop, and render it for people."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from deepshield.media.images import encode_png
from deepshield.models.card import Calibration


def cam_to_heatmap(cam: NDArray[Any], size: int, calibration: Calibration) -> NDArray[Any]:
    """Per-location logits (h x w) to a size x size map of per-region fake probability in [0, 1], calibrated
    as the face's logit (the CAM's mean) is."""
    upsampled = cv2.resize(cam.astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.asarray(calibration.probability(upsampled), dtype=np.float32)


def overlay(crop: NDArray[Any], heatmap: NDArray[Any], opacity: float = 0.45) -> NDArray[Any]:
    """Crop with the heatmap blended on top (blue = looks real, red = looks manipulated)."""
    colours = cv2.applyColorMap(np.clip(heatmap * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(colours, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(crop, 1 - opacity, colours, opacity, 0)


def data_url(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def crop_urls(crop: NDArray[Any], heatmap: NDArray[Any]) -> tuple[str, str]:
    """A face crop and its heatmap overlay as PNG data URLs (the API's and the page's)."""
    return data_url("image/png", encode_png(crop)), data_url("image/png", encode_png(overlay(crop, heatmap)))


def jpeg_url(image: NDArray[Any], quality: int = 85, side: int | None = None) -> str:
    """An RGB image as a JPEG data URL, resized to `side` x `side` first when given (thumbnails)."""
    if side is not None:
        image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data_url("image/jpeg", buffer.tobytes())
