"""The frames of one media file, whatever its kind: what dataset preparation and evaluation read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from numpy.typing import NDArray

from deepshield.media.images import load_image
from deepshield.media.sniff import MediaKind, sniff_path
from deepshield.media.video import sample_frames

FileKind = Literal["image", "video"]


def read_frames(path: Path, frames: int) -> tuple[FileKind, list[tuple[int, NDArray[Any]]], list[float]]:
    """("image", [(0, pixels)], [0.0]) or ("video", [(frame index, pixels), ...], [seconds, ...]) for
    `frames` sampled uniformly."""
    if sniff_path(path) is MediaKind.VIDEO:
        _, sampled = sample_frames(path, frames)
        return "video", [(frame.index, frame.image) for frame in sampled], [frame.timestamp_s for frame in sampled]
    return "image", [(0, load_image(path))], [0.0]
