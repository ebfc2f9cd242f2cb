"""The frames of one media file, whatever its kind: what analysis, dataset preparation and evaluation
read. An animated image (GIF, APNG, animated WebP) is a video here: its frames are sampled and timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from numpy.typing import NDArray

from deepshield.media.animation import is_animation
from deepshield.media.images import load_image
from deepshield.media.sniff import MediaKind, sniff_path
from deepshield.media.video import sample_frames

FileKind = Literal["image", "video"]


def media_kind(path: Path) -> MediaKind:
    """VIDEO for a video or an animated image, IMAGE for a still (judged by content)."""
    kind = sniff_path(path)
    return MediaKind.VIDEO if kind is MediaKind.VIDEO or is_animation(path) else kind


def read_frames(path: Path, frames: int) -> tuple[FileKind, list[tuple[int, NDArray[Any]]], list[float]]:
    """("image", [(0, pixels)], [0.0]) or ("video", [(frame index, pixels), ...], [seconds, ...]) for
    `frames` sampled uniformly."""
    if media_kind(path) is MediaKind.VIDEO:
        _, sampled = sample_frames(path, frames)
        return "video", [(frame.index, frame.image) for frame in sampled], [frame.timestamp_s for frame in sampled]
    return "image", [(0, load_image(path))], [0.0]
