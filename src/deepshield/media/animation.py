"""Animated images (GIF, APNG, animated WebP) read as short videos: their frames are sampled, limited
and timed as a video's are (PyAV reads GIF and APNG but not animated WebP, so Pillow reads all three)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
from numpy.typing import NDArray
from PIL import Image, ImageFile

from deepshield.errors import CorruptMediaError, MediaTooLargeError, VideoSpanError
from deepshield.media.files import check_media_file, read_head
from deepshield.media.images import (
    DECODE_ERRORS,
    exif_orientation,
    first_shown_frame,
    to_rgb_array,
    upright,
    upright_size,
)
from deepshield.media.scaling import reduced_size
from deepshield.media.sniff import HEADER_BYTES, image_format_name
from deepshield.media.units import format_bytes, megapixels
from deepshield.media.video import (
    WHOLE_VIDEO,
    SampleClock,
    VideoFrame,
    VideoInfo,
    VideoLimits,
    VideoSpan,
    check_frame_size,
    check_limits,
    held_pixel_cap,
    read_scale,
)

# The image formats that can hold an animation (as image_format_name names them).
ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WebP"})
_CODECS = {"GIF": "gif", "PNG": "apng", "WebP": "webp"}
# Browsers show a frame whose delay is under 20 ms (a GIF delay of 0 or 1 hundredth) for 100 ms.
_MIN_FRAME_MS, _SHOWN_FRAME_MS = 20, 100
# Progress is reported every this many frames read (and with it, a job's time limit is checked).
_PROGRESS_EVERY = 64


def is_animation(path: Path) -> bool:
    """A GIF, PNG or WebP file showing more than one frame (False for anything unreadable: decoding it as
    a still reports what is wrong)."""
    if image_format_name(read_head(path, HEADER_BYTES)) not in ANIMATED_FORMATS:
        return False
    try:
        with Image.open(path) as image:
            # A second shown frame exists: counting them all (n_frames) walks every frame, and a GIF of
            # millions of 1x1 frames took 13 s to sniff.
            image.seek(first_shown_frame(image) + 1)
            return True
    except Exception:  # noqa: BLE001 - no second frame (EOFError), or a damaged still: load_image's to report
        return False


def _frame_starts(
    image: ImageFile.ImageFile, limits: VideoLimits, size: int, on_frame: Callable[[float], None] | None
) -> tuple[list[float], float]:
    """When each frame starts to show, in seconds, and how long the animation lasts. A damaged frame
    ends the animation there: as a video's broken stretch, it costs frames, not the file. Reading the
    frames is the first half of the work (`on_frame` gets the share of the file's bytes read, halved):
    Pillow reads an animation's frames in order, and a long one takes seconds."""
    starts: list[float] = []
    clock_ms = 0
    first = first_shown_frame(image)
    while True:
        if on_frame is not None and len(starts) % _PROGRESS_EVERY == 0 and image.fp is not None:
            on_frame(0.5 * min(1.0, image.fp.tell() / max(1, size)))
        try:
            image.seek(first + len(starts))
        except DECODE_ERRORS:  # EOFError past the last frame; anything else, a damaged frame
            break
        if len(starts) == limits.max_frames:
            raise MediaTooLargeError(f"animation has more than {limits.max_frames} frames, the limit")
        if (len(starts) + 1) * image.width * image.height > limits.max_animation_pixels:
            raise MediaTooLargeError(
                f"animation has more than {len(starts)} frames of {image.width}x{image.height}: reading them all "
                f"is above the limit of {megapixels(limits.max_animation_pixels)} megapixels of frames"
            )
        if image.format == "WEBP":
            try:  # Pillow's WebP reader sets a frame's duration only once the frame is decoded
                image.load()
            except DECODE_ERRORS:
                break
        shown_ms = int(image.info.get("duration") or 0)
        starts.append(clock_ms / 1000)
        clock_ms += shown_ms if shown_ms >= _MIN_FRAME_MS else _SHOWN_FRAME_MS
    if not starts:
        raise CorruptMediaError("animation has no readable frames")
    return starts, clock_ms / 1000


def sample_animation(
    path: Path | str,
    n: int,
    limits: VideoLimits = VideoLimits(),
    on_frame: Callable[[float], None] | None = None,
    span: VideoSpan = WHOLE_VIDEO,
) -> tuple[VideoInfo, list[VideoFrame]]:
    """Keep n of the animation's frames, spread evenly over it (or over `span` of it), as sample_frames
    does for a video: a frame's timestamp is when it starts to show."""
    path = Path(path)
    size = check_media_file(path)
    if size > limits.max_bytes:
        raise MediaTooLargeError(f"file is {format_bytes(size)}, above the {format_bytes(limits.max_bytes)} limit")
    try:
        with Image.open(path) as image:
            # Refused from the header: the frames' size was checked only once they had all been read.
            check_frame_size(image.width, image.height, limits, reducible=False)
            first = first_shown_frame(image)
            # Shown turned as the still read of its first frame is (an animated WebP's or APNG's EXIF
            # orientation was left out: analyze_image read the frame upright, a scan or the server sideways).
            orientation = exif_orientation(image)
            width, height = upright_size(image.size, orientation)
            starts, duration_s = _frame_starts(image, limits, size, on_frame)
            info = VideoInfo(
                width=width,
                height=height,
                fps=len(starts) / duration_s,
                frame_count=len(starts),
                duration_s=duration_s,
                rotation=0,
                codec=_CODECS.get(str(image.format), str(image.format).lower()),
            )
            check_limits(info, limits, span, reducible=False)
            begin, end = span.seconds_in(info)
            in_span = [index for index, start in enumerate(starts) if begin <= start < end]
            if not in_span:
                raise VideoSpanError(f"no frame of the animation starts from {begin:g} s to {end:g} s")
            # Frames are held as a video's are: at the first scale whose pixels fit their share of memory.
            pixel_cap = held_pixel_cap(info, min(n, len(in_span)), limits)
            scale = read_scale(image.width, image.height, pixel_cap) or 1
            frames = []
            sampled = _sampled(starts, in_span, end, n)
            for number, index in enumerate(sampled):
                try:
                    image.seek(first + index)
                    shown = upright(_read_at(image, scale), orientation)
                    frames.append(VideoFrame(index, starts[index], shown, scale))
                except DECODE_ERRORS:
                    pass  # a frame whose pixels are damaged is skipped, as a video's broken packet
                if on_frame is not None:
                    on_frame(0.5 + 0.5 * (number + 1) / len(sampled))
    except Image.DecompressionBombError as exc:
        raise MediaTooLargeError(f"animation frames are far larger than the limit: {exc}") from exc
    except DECODE_ERRORS as exc:
        raise CorruptMediaError(f"corrupt or truncated animation: {exc}") from exc
    if not frames:
        raise CorruptMediaError("animation has no decodable frames at the sampled positions")
    return info, frames


def _sampled(starts: list[float], in_span: list[int], end_s: float, n: int) -> list[int]:
    """The frames of a span (`in_span`: their indices in `starts`, when each starts to show) that show its n
    samples, chosen by time as a video's are (SampleClock): by count, a GIF holding a face for 8 s, then 2 s of
    frames without it, was sampled from those frames alone, and had "no face". As many samples as frames or
    more: every frame."""
    if n >= len(in_span):
        return in_span
    clock = SampleClock.spread(starts[in_span[0]], end_s, len(in_span), n)
    chosen: list[int] = []
    for before, index in zip([None, *in_span], in_span):
        held, own = clock.meet(starts[index], before is not None and not (chosen and chosen[-1] == before))
        if held and before is not None:
            chosen.append(before)
        if own:
            chosen.append(index)
        if clock.done:
            break
    else:  # the samples left show the span's last frame, on screen to its end
        if not clock.done and not (chosen and chosen[-1] == in_span[-1]):
            chosen.append(in_span[-1])
    return chosen


def _read_at(image: Image.Image, scale: int) -> NDArray[Any]:
    """The shown frame as RGB, at 1/scale of its width and height (area-averaged, as a video's reduced read)."""
    rgb = to_rgb_array(image)
    if scale == 1:
        return rgb
    width, height = reduced_size((image.width, image.height), scale)
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
