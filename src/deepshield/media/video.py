"""Decode videos with PyAV: probe, then sample N frames uniformly over the whole video or a span of it
(seeking where samples are far apart or the span starts late), tolerating broken packets."""

from __future__ import annotations

import itertools
import math
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from deepshield.errors import CorruptMediaError, MediaTooLargeError, UnsupportedMediaError, VideoSpanError
from deepshield.forks import kept_if_inherited
from deepshield.media.files import check_media_file
from deepshield.media.images import on_white
from deepshield.media.scaling import REDUCED_SCALES, first_scale, reduced_size
from deepshield.media.units import format_bytes, megapixels, video_length
from deepshield.plural import numbered

if TYPE_CHECKING:
    from av.video.reformatter import Colorspace

# Samples at least this many frames apart are reached by seeking (a keyframe, then the frames up to
# the sample) rather than by decoding every frame of the video.
SEEK_MIN_SPACING = 64
_RGB_BYTES = 3  # a decoded frame's bytes per pixel
_converters = threading.local()  # rgb_pixels' converter of each thread (a _Converter)
_UNTAGGED_MATRIX = 2  # FFmpeg's AVCOL_SPC_UNSPECIFIED: the stream does not say which YUV matrix it uses
# Frames sampled per video when the caller does not say: scan, the API, evaluate, prepare and the
# training benchmarks all default to it, so a video is scored on the same frames everywhere.
DEFAULT_VIDEO_FRAMES = 32


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 500_000_000  # decimal, as the README and every message say
    max_duration_s: float = 15 * 60.0
    max_pixels_per_frame: int = 4096 * 2160  # of the pixels read: DCI 4K (and 3840x2160 UHD) whole
    # A frame's own size: above max_pixels_per_frame it is converted at 1/2, 1/4 or 1/8 of its width and
    # height (area-averaged as it leaves the decoder), so that 8K phone and camera video is read.
    max_source_pixels_per_frame: int = 8192 * 4320  # DCI 8K
    # The sampled frames' RGB pixels together: many frames of a large video are read at a reduced scale
    # instead (32 frames of DCI 4K take 849 MB and are read whole; 128 are read at 1/2), so that no
    # request can hold gigabytes (128 frames of 4K took 3.7 GB).
    max_frames_bytes: int = 1_000_000_000
    max_fps: float = 240.0  # slow-motion phone video; beyond, decoding cost grows with no use to us
    max_frames: int = 108_000  # 15 minutes at 120 fps
    # An animation's frames are each composited at its full canvas size to learn when they show (Pillow
    # reads them in order): its canvas pixels times its frames are bounded (about 15 s of reading here; a
    # 2.5 MB GIF of 1x1 frames on a large canvas held a scan for hours).
    max_animation_pixels: int = 4_000_000_000


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    # Exact when the container says so or its packets are counted (Matroska, WebM, MPEG-TS), else estimated
    # from duration x fps (a file that cannot be read to its end, or holds more than max_frames): then
    # frame_count_estimated, and texts say "about".
    frame_count: int
    # Until the picture's last frame ends, on the file's clock (from picture_start_s on: the picture's own
    # length is duration_s - picture_start_s); 0 where unknown.
    duration_s: float
    rotation: int  # degrees clockwise the display must apply (display matrix, else the legacy 'rotate' tag)
    codec: str
    # The display matrix mirrors the stored picture left to right before turning it by `rotation` (a front
    # camera's mirrored recording; a vertical flip is a mirror and a half turn).
    mirrored: bool = False
    has_audio: bool = False  # the file carries sound (which is not analysed)
    # A stored pixel's width over its height (anamorphic video: DV, HDV, some broadcast and camera files):
    # frames are stretched to square pixels as they are read, as a player shows them.
    pixel_aspect: float = 1.0
    # Set by sample_frames: packets failed to decode, or the stream ended before the frames it says it has
    # (a file cut short). Fewer frames than asked then come back for that, not for a varying frame rate.
    damaged: bool = False
    # When the picture's first frame shows, in seconds from the file's start: after 0 where the sound starts
    # first. Players count from the file's start, and so do timestamps and spans here; frame i shows at
    # picture_start_s + i / fps.
    picture_start_s: float = 0.0
    frame_count_estimated: bool = False

    def frames_said(self, count: int | None = None) -> str:
        """`count` of this video's frames (its frame_count unless given) in words: "300 frames", or "about 1486
        frames (estimated)" where the count is estimated (from a rate that may be a guess: a varying rate's 300
        frames were refused as "1486 frames")."""
        said = numbered(self.frame_count if count is None else count, "frame")
        return f"about {said} (estimated)" if self.frame_count_estimated else said

    @property
    def square_size(self) -> tuple[int, int]:
        """(width, height) of a stored frame stretched to square pixels (never shrunk)."""
        return square_pixels(self.width, self.height, self.pixel_aspect)


@dataclass(frozen=True)
class VideoSpan:
    """The part of a video to analyse, in seconds of the video's own time: from start_s up to (not
    including) end_s; end_s None means to the video's end. The default is the whole video."""

    start_s: float = 0.0
    end_s: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("start", self.start_s), ("end", self.end_s)):
            if value is not None and not math.isfinite(value):
                raise VideoSpanError(f"a video span's {name} is a number of seconds, not {value:g}")
        if self.start_s < 0:
            raise VideoSpanError(f"a video span starts at 0 s or later, not at {self.start_s:g} s")
        if self.end_s is not None and self.end_s <= self.start_s:
            raise VideoSpanError(
                f"a video span must end after it starts: {self.end_s:g} s is not after {self.start_s:g} s"
            )

    @property
    def whole(self) -> bool:
        return self.start_s == 0 and self.end_s is None

    def covers(self, info: VideoInfo) -> bool:
        """The span takes in the whole of this video: it starts at 0 and ends at or after its known end
        (a range typed as 0 to 10:00 for a 3 s clip analyses the whole clip, and says so)."""
        return self.start_s == 0 and (self.end_s is None or 0 < info.duration_s <= self.end_s)

    def seconds_in(self, info: VideoInfo) -> tuple[float, float]:
        """[from, to) of the span within the video, in seconds (to is inf for an open span of a video of
        unknown duration); refused when the video ends before the span starts."""
        if info.duration_s <= 0:
            return self.start_s, self.end_s if self.end_s is not None else math.inf
        if self.start_s >= info.duration_s:
            raise VideoSpanError(
                f"the video is {video_length(info.duration_s)} long: nothing to analyse from {self.start_s:g} s on"
            )
        return self.start_s, info.duration_s if self.end_s is None else min(self.end_s, info.duration_s)

    def frames_in(self, info: VideoInfo) -> tuple[int, int]:
        """[first, stop) frame indices of the span (frame i shows at i / fps), for a video whose frame count is known."""
        if self.covers(info):
            return 0, info.frame_count

        def frame_at(seconds: float) -> int:  # clamped before rounding: 1e308 s times the fps is no integer
            picture_s = max(0.0, seconds - info.picture_start_s)
            return math.ceil(min(picture_s * info.fps, info.frame_count) - _FRAME_TIME_SLACK)

        first = frame_at(self.start_s)
        stop = info.frame_count if self.end_s is None else frame_at(self.end_s)
        if first >= stop:
            raise VideoSpanError(
                f"no frame of the video ({info.frames_said()} at {info.fps:.4g} fps) lies in the span "
                f"from {self.start_s:g} s to {'the end' if self.end_s is None else f'{self.end_s:g} s'}"
            )
        return first, stop


WHOLE_VIDEO = VideoSpan()
# A stream whose last frame shows this long before the end it states has been cut short.
_CUT_SHORT_S = 0.5
# Frame times are i / fps in floating point: a span boundary this close to a frame's time takes that frame.
_FRAME_TIME_SLACK = 1e-6


@dataclass(frozen=True)
class VideoFrame:
    index: int  # position in decode order
    timestamp_s: float
    image: NDArray[Any]  # H x W x 3 uint8 RGB, upright
    # 1: read whole; 2, 4 or 8: read at 1/scale of its width and height (above the pixel limit, or one of
    # too many frames of its size for the frames' memory limit)
    scale: int = 1


def square_pixels(width: int, height: int, pixel_aspect: float) -> tuple[int, int]:
    """(width, height) of a width x height frame of pixels `pixel_aspect` wide stretched to square pixels:
    its width widened, or its height heightened, so that no pixel is lost."""
    if pixel_aspect > 1:
        return round(width * pixel_aspect), height
    if pixel_aspect < 1:
        return width, round(height / pixel_aspect)
    return width, height


def _pixel_aspect(stream: av.video.stream.VideoStream) -> float:
    """The stream's sample aspect ratio; 1 where it gives none (0/1) or an implausible one."""
    ratio = stream.sample_aspect_ratio
    value = float(ratio) if ratio else 0.0
    return value if 0.25 <= value <= 4 else 1.0


def _open(path: Path, limits: VideoLimits) -> av.container.InputContainer:
    size = check_media_file(path)
    if size > limits.max_bytes:
        raise MediaTooLargeError(
            f"video file is {format_bytes(size)}, above the {format_bytes(limits.max_bytes)} limit"
        )
    if size == 0:
        raise UnsupportedMediaError("empty file: expected a video")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        # FFmpeg's message ends with the file name: keep only the reason (server paths stay private).
        reason = exc.strerror or type(exc).__name__
        raise CorruptMediaError(f"cannot open video ({reason}): the file is truncated, corrupt or not a video") from exc


def picture_stream(container: av.container.InputContainer) -> av.VideoStream:
    """The file's first moving-picture stream: cover art (an `attached_pic` stream, as music and podcasts
    carry) is a still, not the video (an M4A with a cover was read as a 90,000 fps one-frame video)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise CorruptMediaError("file has no video stream")


def _info(container: av.container.InputContainer, limits: VideoLimits) -> VideoInfo:
    stream = picture_stream(container)
    if stream.codec_context is None:  # a damaged header (a renamed box) leaves the stream without a codec
        raise CorruptMediaError("its video stream names no codec that can be decoded (the file is damaged)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    # A stated rate above any limit gives way to FFmpeg's guess from the timestamps where that is lower: a
    # Matroska default duration of 1 ms read 1,000 fps for frames 100 ms apart, and the file was refused.
    guessed = stream.guessed_rate
    if rate and guessed and float(rate) > VideoLimits.max_fps and float(guessed) < float(rate):
        rate = guessed
    fps = float(rate) if rate else 0.0
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif (end_s := _measured_end_s(container.name)) is not None:
        # Matroska and WebM give no stream duration, and the container's counts from 0 where timestamps
        # start later (a clip from 5 s to 7 s was "7 s" long) or is missing (a live recording, which got
        # past the duration limit): the last packet's end says.
        start_s = (
            float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        )
        duration = max(0.0, end_s - start_s)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    frames = int(stream.frames or 0)
    # (A stream with no duration either, raw H.264, is thinned as it is read: _sample_sequentially.) Not one
    # longer than the limit, refused (or read in a span) as before: a 3-hour recording had a third of its
    # gigabytes read to count 108,000 frames, before its refusal for its length.
    countable = 0 < duration <= limits.max_duration_s
    if frames <= 0 and countable and (counted := _counted_frames(container.name, limits.max_frames)) is not None:
        # Matroska, WebM and MPEG-TS say no frame count, and their rate is a guess from the first timestamps
        # or a declared default: a varying rate's (6 fps on average) read 2 fps, its 3,600 frames 1,200, and
        # the page said so. Counted, the frames are known, and where the rate does not fit them over the
        # picture's duration, their average rate is the rate (a constant rate's stays as stated).
        frames = counted
        if abs(fps * duration - frames) > max(1.0, 0.01 * frames):
            fps = frames / duration
    estimated = frames <= 0 and fps > 0
    if estimated:
        frames = round(duration * fps)
    if fps <= 0 and frames > 0 and duration > 0:
        fps = frames / duration
    picture_start_s = _picture_start_s(container, stream)
    # FFmpeg 7 no longer exports the 'rotate' tag (the display matrix replaced it, and PyAV reads
    # that only from decoded frames): sample_frames and probe_video fill rotation from the first frame.
    rotation = 0
    # Matched as FFmpeg matches tags, whatever their case: Matroska writes its tags in capitals (ROTATE).
    rotate_tag = next((value for key, value in stream.metadata.items() if key.lower() == "rotate"), None)
    if rotate_tag is not None:
        try:
            rotation = int(float(rotate_tag)) % 360
        except ValueError:
            rotation = 0
    return VideoInfo(
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        fps=fps,
        frame_count=frames,
        duration_s=picture_start_s + duration if duration > 0 else 0.0,
        rotation=rotation,
        codec=stream.codec_context.name,
        has_audio=bool(container.streams.audio),
        pixel_aspect=_pixel_aspect(stream),
        picture_start_s=picture_start_s,
        frame_count_estimated=estimated,
    )


def _picture_start_s(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    """How long after the file's start the picture's first frame shows: players count from the first sound
    or picture, so where the sound starts first (a camera whose picture starts later, a clip whose picture was
    trimmed) the picture starts after 0 (counted from its own first frame, a face at 3.5 s was said at 2.0 s)."""

    def start_s(of: av.stream.Stream) -> float | None:
        if of.start_time is None or of.time_base is None:
            return None
        return float(of.start_time * of.time_base)

    picture = start_s(stream)
    sound = [start for audio in container.streams.audio if (start := start_s(audio)) is not None]
    if picture is None or not sound:
        return 0.0
    return max(0.0, picture - min(sound))


def _counted_frames(path: str, most: int) -> int | None:
    """The first video stream's frames, counted from its packets (the demuxer alone: nothing is decoded; about
    10 us a packet). None where the file cannot be read to its end or holds more than `most` (refused later as
    it is read, not counted here)."""
    try:
        with av.open(path, metadata_errors="ignore") as container:
            counted = 0
            for packet in container.demux(picture_stream(container)):
                counted += packet.size > 0  # each stream ends with an empty packet, not a frame
                if counted > most:
                    return None
            return counted or None
    except av.error.FFmpegError:
        return None


def _measured_end_s(path: str) -> float | None:
    """When the first video stream's last packet ends, in seconds of the stream's own clock, read from its
    last keyframe on (the demuxer alone: nothing is decoded). None where the file cannot seek or says none."""
    try:
        with av.open(path, metadata_errors="ignore") as container:
            stream = picture_stream(container)
            if stream.time_base is None:
                return None
            container.seek(2**62, stream=stream, backward=True)  # past the end: the last keyframe
            ends = [
                float((packet.pts + (packet.duration or 0)) * stream.time_base)
                for packet in container.demux(stream)
                if packet.pts is not None
            ]
            return max(ends, default=None)
    except av.error.FFmpegError:
        return None


def probe_video(path: Path | str, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Container facts, plus the rotation read from the first decodable frame (a few ms)."""
    with _open(Path(path), limits) as container:
        info = _info(container, limits)
        try:
            for frame in container.decode(picture_stream(container)):
                return _with_frame_rotation(info, frame)
        except av.error.FFmpegError:
            pass
        return info


def _display_orientation(frame: av.VideoFrame) -> tuple[int, bool] | None:
    """(clockwise degrees, mirrored) the frame's display matrix shows it at, None without one: the picture
    is mirrored left to right first, then turned. (PyAV's `rotation` alone read a mirror as a half turn, so a
    mirrored recording was analysed upside down.) The legacy 'rotate' tag, like VideoInfo.rotation, is clockwise."""
    try:
        matrix = bytes(frame.side_data["DISPLAYMATRIX"])  # type: ignore[typeddict-item]  # a SideDataContainer at run time
    except KeyError:
        return None
    if len(matrix) != 36:
        return None
    # (x', y') = (a x + c y + tx, b x + d y + ty) in 16.16 fixed point, y pointing down as in the picture.
    a, b, _, c, d = struct.unpack("<5i", matrix[:20])
    mirrored = a * d - b * c < 0
    if mirrored:  # the matrix is the mirror (x -> -x) followed by a turn: take the mirror out of it
        a, b = -a, -b
    if a == b == 0:
        return None
    return round(math.degrees(math.atan2(b, a))) % 360, mirrored


def _with_frame_rotation(info: VideoInfo, frame: av.VideoFrame) -> VideoInfo:
    """`info` with the orientation of the file's first decoded frame (one frame per file is left in a
    reference cycle by reading its side data, until the next garbage collection)."""
    orientation = _display_orientation(frame)
    return info if orientation is None else replace(info, rotation=orientation[0], mirrored=orientation[1])


def _frame_size_error(width: int, height: int, limit: int) -> MediaTooLargeError:
    return MediaTooLargeError(
        f"video frames are {width}x{height} = {megapixels(width * height)} megapixels, "
        f"above the {megapixels(limit)} megapixel limit"
    )


def check_frame_size(width: int, height: int, limits: VideoLimits, reducible: bool = True) -> None:
    """A frame's size within the limit (check_limits' `reducible`)."""
    frame_limit = limits.max_source_pixels_per_frame if reducible else limits.max_pixels_per_frame
    if width * height > frame_limit:
        raise _frame_size_error(width, height, frame_limit)


def check_limits(info: VideoInfo, limits: VideoLimits, span: VideoSpan, reducible: bool = True) -> None:
    """The container's claims; every decoded frame is checked again (_check_frame): headers can lie.
    Duration and frame count are those of the part analysed: a long video can be analysed a span at a time.
    `reducible`: frames above max_pixels_per_frame are read at a reduced scale (a video's; an animation's are not)."""
    begin, end = span.seconds_in(info)
    begin = max(begin, info.picture_start_s)  # the picture's part of it: sound before the picture is not read
    what = "video is" if span.covers(info) else "the span to analyse is"
    if end - begin > limits.max_duration_s and math.isfinite(end):  # unknown durations: frames are counted
        raise MediaTooLargeError(
            f"{what} {video_length(end - begin)} long, above the {video_length(limits.max_duration_s)} limit"
            " (a span of the video, with a start and an end, can be analysed)"
        )
    check_frame_size(info.width, info.height, limits, reducible)
    if info.fps > limits.max_fps:
        raise MediaTooLargeError(f"video is {info.fps:.4g} frames per second, above the {limits.max_fps:.4g} fps limit")
    if info.frame_count > 0:
        first, stop = span.frames_in(info)
        if stop - first > limits.max_frames:
            what = "video has" if span.covers(info) else "the span to analyse has"
            raise MediaTooLargeError(
                f"{what} {info.frames_said(stop - first)}, above the {limits.max_frames} frame limit"
            )


def _check_frame(frame: av.VideoFrame, limits: VideoLimits) -> None:
    if frame.width * frame.height > limits.max_source_pixels_per_frame:
        raise _frame_size_error(frame.width, frame.height, limits.max_source_pixels_per_frame)


def _unreadable_frames(width: int, height: int, pixel_cap: int) -> MediaTooLargeError:
    return MediaTooLargeError(
        f"video frames are {width}x{height}: even at 1/{REDUCED_SCALES[-1]} scale they are above the "
        f"{megapixels(pixel_cap)} megapixels a frame may be read at"
    )


def frame_pixel_cap(limits: VideoLimits, frames: int) -> int:
    """Pixels each of `frames` frames held at once may be read at: max_pixels_per_frame, and an equal
    share of max_frames_bytes."""
    return min(limits.max_pixels_per_frame, limits.max_frames_bytes // (_RGB_BYTES * max(1, frames)))


def held_pixel_cap(info: VideoInfo, held: int, limits: VideoLimits) -> int:
    """frame_pixel_cap for `held` frames of this video, refused where even its smallest read is above it."""
    pixel_cap = frame_pixel_cap(limits, held)
    if read_scale(*info.square_size, limits.max_pixels_per_frame) is None:
        raise _unreadable_frames(*info.square_size, limits.max_pixels_per_frame)
    if read_scale(*info.square_size, pixel_cap) is None:
        raise MediaTooLargeError(
            f"{held} frames of {info.width}x{info.height}, even at 1/{REDUCED_SCALES[-1]} scale, are above the "
            f"{format_bytes(limits.max_frames_bytes)} memory limit for a video's frames: ask for fewer frames"
        )
    return pixel_cap


def reduced_read_reason(info: VideoInfo, limits: VideoLimits, scale: int) -> str:
    """Why a video's frames were read at 1/`scale`, as the end of a verdict's clause: the frame-size limit,
    or the frames' memory limit where it asked for more than that (8K at 64 frames was read at 1/4, said
    to be for the megapixel limit, which 1/2 meets)."""
    width, height = info.square_size
    least = read_scale(width, height, limits.max_pixels_per_frame) or scale  # what the frame-size limit needs
    if scale <= least:
        return f"being above the {megapixels(limits.max_pixels_per_frame)} megapixel limit"
    # Faces are seen smaller too, and small ones missed: 128 frames of a 4K clip read at 1/2 found a face in
    # 14 of them (its 160 px face in all 128 read whole), and called it inconclusive on stray boxes.
    fit = limits.max_frames_bytes // (_RGB_BYTES * (width // least) * (height // least))
    read = "read whole" if least == 1 else f"read at 1/{least}"
    return (
        f"so that the frames sampled fit the {format_bytes(limits.max_frames_bytes)} memory limit: faces were seen "
        f"smaller, and small ones are missed more often ({numbered(fit, 'frame')} or fewer are {read})"
    )


def read_scale(width: int, height: int, pixel_cap: int) -> int | None:
    """The first scale (1, then 1/2, 1/4, 1/8) at which a width x height frame fits pixel_cap; None at none."""
    return first_scale((width, height), (1, *REDUCED_SCALES), lambda read: read[0] * read[1] <= pixel_cap)


class _Converter:
    """rgb_pixels' converter of one thread, made in this process. Its swscale context starts threads of its
    own, which a forked child (a training data loader's workers) does not have: there the context, used or
    freed, waits for them for good (a child forked after its parent had read a frame hung on its first frame,
    or as it started where another thread of the parent held a converter). A child makes its own converter
    and leaves the one it inherited unfreed (its memory is the parent's, copied)."""

    def __init__(self) -> None:
        from av.video.reformatter import VideoReformatter  # see rgb_pixels

        self.pid = os.getpid()
        self.reformatter = VideoReformatter()

    def __del__(self, kept: Callable[[object, int], bool] = kept_if_inherited) -> None:
        kept(self.reformatter, self.pid)  # (bound now: this also runs as Python exits, its modules torn down)


def _yuv_matrix(frame: av.VideoFrame) -> Colorspace | None:
    """The matrix that turns the frame's YUV into RGB: its own (None) where the stream names one, else as
    players guess it (mpv, VLC, browsers for HD): BT.709 for HD and above (wider than 1279 or higher than
    576 pixels), BT.601 below, which is FFmpeg's default at any size. (Untagged HD was read as BT.601: the
    DFDC videos and most re-encoded 1080p carry no tag, and their reds and greens came out 3 levels dark.)"""
    from av.video.reformatter import Colorspace  # see rgb_pixels

    if frame.colorspace != _UNTAGGED_MATRIX or frame.format.is_rgb:
        return None
    return Colorspace.ITU709 if frame.width >= 1280 or frame.height > 576 else None


def rgb_pixels(
    frame: av.VideoFrame, size: tuple[int, int] | None = None, interpolation: str = "BILINEAR"
) -> NDArray[Any]:
    """A decoded frame as H x W x 3 uint8 RGB, resized to `size` (width, height) by `interpolation` (swscale's
    name of it: BILINEAR, AREA, BICUBIC...), as players
    show it: by the YUV matrix and range its stream names, else as players guess (_yuv_matrix); chroma
    interpolated between its samples and rounded exactly (swscale's quick path, used before, gave each
    4:2:0 chroma sample to 2 pixels side by side and came out about a level dark, 8-bit and 10-bit alike);
    a frame with alpha (ProRes 4444, FFV1, QuickTime animation, PNG in MOV) on white, as a still with alpha
    (converted to RGB alone, its transparent pixels showed whatever colour lay under them); an HDR frame (PQ
    or HLG: iPhones record HLG) tone-mapped to SDR BT.709, as a player on an SDR screen shows it (read as
    SDR, a PQ picture with its white at 203 nits came out dim and grey, red 45 levels low, HLG 30).
    One converter a thread: an HDR conversion takes over a second to set up, then milliseconds a frame.
    (PyAV's reformatter is imported where used: the training path imports this module on a GPU lease that
    has no PyAV, where a stand-in `av` without submodules lets imports work and uses fail by name.)"""
    from av.video.reformatter import ColorPrimaries, ColorTrc, Interpolation

    alpha = any(component.is_alpha for component in frame.format.components)
    width, height = size or (frame.width, frame.height)
    hdr = frame.color_trc in (ColorTrc.SMPTE2084, ColorTrc.ARIB_STD_B67)  # PQ (HDR10, Dolby Vision), HLG
    converter = getattr(_converters, "converter", None)
    if converter is None or converter.pid != os.getpid():
        converter = _converters.converter = _Converter()
    image: NDArray[Any] = converter.reformatter.reformat(
        frame,
        format="rgba" if alpha else "rgb24",
        width=width,
        height=height,
        interpolation=Interpolation[interpolation] | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND,
        src_colorspace=_yuv_matrix(frame),
        dst_color_trc=ColorTrc.BT709 if hdr else None,
        dst_color_primaries=ColorPrimaries.BT709 if hdr else None,
    ).to_ndarray()
    return on_white(Image.fromarray(image, "RGBA")) if alpha else image


def _video_frame(frame: av.VideoFrame, index: int, timestamp_s: float, info: VideoInfo, pixel_cap: int) -> VideoFrame:
    """The decoded frame as upright RGB in square pixels, converted at the first scale whose pixels fit
    pixel_cap (the scaler area-averages, so a reduced frame is not aliased)."""
    size = square_pixels(frame.width, frame.height, info.pixel_aspect)
    scale = read_scale(*size, pixel_cap)
    if scale is None:  # a frame larger than its header said (sample_frames checked the header's size)
        raise _unreadable_frames(*size, pixel_cap)
    if scale == 1 and size == (frame.width, frame.height):  # as before reduced reads: scores stay unchanged
        image = rgb_pixels(frame)
    else:
        # Widening anamorphic pixels interpolates; reducing area-averages.
        interpolation = "AREA" if scale > 1 else "BICUBIC"
        image = rgb_pixels(frame, reduced_size(size, scale), interpolation)
    # The file's first frame set the orientation (players take it from the stream): reading each frame's
    # side data ties the frame and PyAV's side-data container in a reference cycle, which kept every
    # sampled frame's decoded picture until a garbage collection (8K, 32 frames: 3.1 GB peak, from 1.5).
    rotation, mirrored = info.rotation, info.mirrored
    if mirrored:
        image = np.ascontiguousarray(image[:, ::-1])
    quarter_turns = round(rotation / 90) % 4
    if quarter_turns:
        image = np.ascontiguousarray(np.rot90(image, k=-quarter_turns))
    return VideoFrame(index, timestamp_s, image, scale)


def uniform_indices(frame_count: int, n: int) -> list[int]:
    """n indices spread evenly over [0, frame_count), centred in their bins."""
    if frame_count <= 0 or n <= 0:
        return []
    if n >= frame_count:
        return list(range(frame_count))
    step = frame_count / n
    return sorted({min(frame_count - 1, int(step * (i + 0.5))) for i in range(n)})


def _can_seek(info: VideoInfo) -> bool:
    return info.frame_count > 0 and info.fps > 0


def _held_while_counting(n: int) -> int:
    """Frames _sample_sequentially holds at most for n samples of a video with no frame count, while it
    learns the video's length (its stride doubles each time it holds this many)."""
    return max(2 * n, 32)


def _frames_held(info: VideoInfo, n: int, span: VideoSpan) -> int:
    """Frames sample_frames holds at once at most: n, or the span's frames when fewer; without a frame
    count, _held_while_counting(n)."""
    if info.frame_count <= 0:
        return _held_while_counting(n)
    first, stop = span.frames_in(info)
    return min(n, stop - first)


@dataclass
class SampleClock:
    """Which of a span's frames, met in order of time, show its samples: each sample, the first frame starting
    at or after half a spacing before its time, or the frame before, held on screen then, where that one has
    no sample yet (a face held still for 8 s of a 10 s recording, one frame as screen recordings, slideshows and
    GIFs store it, then 2 s of frames without it, was sampled from the frames after it alone: "no face")."""

    wanted_s: list[float]  # when each sample shows, in seconds, ascending
    half_s: float  # half the samples' spacing: a frame starting this early or late still matches
    taken: int = 0  # samples a frame has been found for

    @classmethod
    def spread(cls, grid_s: float, end_s: float, frames: int, n: int) -> SampleClock:
        """n samples of a span from grid_s (its first frame's time) to end_s holding `frames` frames: where
        frame uniform_indices(frames, n)[i] would show at the span's average rate."""
        spacing_s = (end_s - grid_s) / frames
        return cls([grid_s + i * spacing_s for i in uniform_indices(frames, n)], spacing_s / 2)

    @property
    def done(self) -> bool:
        return self.taken == len(self.wanted_s)

    def meet(self, start_s: float, before_free: bool) -> tuple[bool, bool]:
        """For the next frame, starting at start_s (`before_free`: the frame before it is of the span and has no
        sample yet): (whether the frame before is kept, whether this one is)."""
        due = self.taken
        while not self.done and self.wanted_s[self.taken] + self.half_s < start_s:
            self.taken += 1
        held = before_free and self.taken > due
        if held:
            due = self.taken
        while not self.done and start_s + self.half_s >= self.wanted_s[self.taken]:
            self.taken += 1
        return held, self.taken > due

    def reach(self, end_s: float) -> bool:
        """Whether samples are left before end_s, shown by the frame on screen until then (a stream's last,
        held): they are that frame's."""
        due = self.taken
        while not self.done and self.wanted_s[self.taken] < end_s:
            self.taken += 1
        return self.taken > due


def _shown_until(frame: av.VideoFrame, shown_s: float) -> float:
    """When a frame showing from shown_s leaves the screen, by its own duration (shown_s where it has none)."""
    if not frame.duration or frame.time_base is None:
        return shown_s
    return shown_s + float(frame.duration * frame.time_base)


def sample_frames(
    path: Path | str,
    n: int = DEFAULT_VIDEO_FRAMES,
    limits: VideoLimits = VideoLimits(),
    on_frame: Callable[[float], None] | None = None,
    span: VideoSpan = WHOLE_VIDEO,
) -> tuple[VideoInfo, list[VideoFrame]]:
    """Keep n uniformly spaced frames of the video, or of a span of it (an animated image's frames:
    deepshield.media.animation).

    Where samples are far apart (SEEK_MIN_SPACING frames or more) each is reached by seeking to the
    keyframe before it; otherwise the span is decoded once, from the keyframe before its start, or
    from the video's start when seeking does not work for the file. Packets that fail to decode are
    skipped (a damaged stretch costs frames, not the video), so fewer than n frames can come back.
    Frames above max_pixels_per_frame, or too many of a size for max_frames_bytes, are read at 1/2, 1/4
    or 1/8 scale (VideoFrame.scale).
    Raises MediaTooLargeError for a frame above the source pixel limit (whatever the header said),
    CorruptMediaError when no frame decodes and VideoSpanError for a span outside the video.
    `on_frame(fraction)` is called as decoding advances.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):  # "8" failed deep inside, comparing str and int
        raise TypeError(f"frames is a whole number of frames to sample, not {type(n).__name__} {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"frames must be at least 1, got {n}")
    path = Path(path)
    # Imported here: animation builds on this module's types.
    from deepshield.media.animation import is_animation, sample_animation

    if is_animation(path):
        return sample_animation(path, n, limits, on_frame, span)
    with _open(path, limits) as container:
        info = _info(container, limits)
        check_limits(info, limits, span)
        pixel_cap = held_pixel_cap(info, _frames_held(info, n, span), limits)

        def from_start(container: av.container.InputContainer) -> tuple[VideoInfo, list[VideoFrame]]:
            sampled = _sample_sequentially(container, info, n, limits, pixel_cap, on_frame, span, seek=False)
            assert sampled is not None  # only a seek gives up
            return sampled

        can_seek = _can_seek(info)
        first, stop = span.frames_in(info) if can_seek else (0, 0)
        seeks = can_seek and (stop - first) / max(1, n) >= SEEK_MIN_SPACING
        if not seeks and first == 0:  # nothing read past the header yet: decoded from here (opened once)
            return from_start(container)
        if seeks:
            targets = [first + i for i in uniform_indices(stop - first, n)]
            sought = _sample_by_seeking(container, info, targets, limits, pixel_cap, on_frame)
            if sought is not None:
                return sought
        if first > 0:
            from_keyframe = _sample_sequentially(container, info, n, limits, pixel_cap, on_frame, span, seek=True)
            if from_keyframe is not None:
                return from_keyframe
    with _open(path, limits) as container:  # afresh, after a seek that did not work for the file
        return from_start(container)


def _decoded_frames(
    container: av.container.InputContainer, limits: VideoLimits, counter: list[int]
) -> Iterator[av.VideoFrame]:
    """Every frame from the current position, size-checked before anyone converts it. Broken packets
    are skipped and counted in counter[0]; a demuxer error ends the stream."""
    stream = picture_stream(container)
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.error.InvalidDataError, av.error.FFmpegError):
                counter[0] += 1
                continue
            for frame in frames:
                _check_frame(frame, limits)
                yield frame
    except av.error.FFmpegError:
        counter[0] += 1


def _frames_from(
    container: av.container.InputContainer,
    target_s: float,
    stream_start_s: float,
    slack_s: float,
    limits: VideoLimits,
    broken: list[int],
) -> Iterator[av.VideoFrame] | None:
    """The frames decoded from a keyframe at or before `target_s` (a stream time, within `slack_s`), on to
    the end. In MPEG-TS (broadcast captures, AVCHD .mts/.m2ts) FFmpeg's seek lands on the keyframe after
    the target, or nowhere (no frame): it is sought again, further back each time, down to the stream's
    start (without this, a part between two keyframes had no frames at all, and samples gathered on the
    keyframes after them). None when a seek fails, even the stream's start lands past the target or on no
    frame (a TS whose first keyframe the seek skips: the first of 8 samples came from 2.1 s, not 1.4 s, one
    was lost and the file called damaged), or the stream has no time base: the caller decodes from the start."""
    stream = picture_stream(container)
    if stream.time_base is None:
        return None
    back_s = 0.0
    while True:
        seek_s = max(stream_start_s, target_s - back_s)
        try:
            container.seek(int(seek_s / stream.time_base), stream=stream, backward=True)
        except av.error.FFmpegError:
            return None
        frames = _decoded_frames(container, limits, broken)
        first = next(frames, None)
        if first is not None and (first.time is None or first.time <= target_s + slack_s):
            return itertools.chain([first], frames)
        if seek_s <= stream_start_s:
            return None
        back_s = max(1.0, 2 * back_s)


def _sample_by_seeking(
    container: av.container.InputContainer,
    info: VideoInfo,
    targets: list[int],
    limits: VideoLimits,
    pixel_cap: int,
    on_frame: Callable[[float], None] | None,
) -> tuple[VideoInfo, list[VideoFrame]] | None:
    """Seek to the keyframe before each target and decode up to it. None when the file resists
    (a seek fails, frames lack timestamps, or keyframes are further apart than the samples, where
    decoding everything once is cheaper): the caller then decodes from the start."""
    stream = picture_stream(container)
    stream.thread_type = "AUTO"
    if stream.time_base is None:
        return None
    start_s = float((stream.start_time or 0) * stream.time_base)
    spacing = info.frame_count / len(targets)
    half_frame_s = 0.5 / info.fps
    kept: dict[int, VideoFrame] = {}
    broken = [0]

    def index_of(time_s: float | None) -> int:
        return max(0, round((float(time_s or 0.0) - start_s) * info.fps))

    for number, target in enumerate(targets):
        target_s = start_s + target / info.fps
        frames = _frames_from(container, target_s, start_s, half_frame_s, limits, broken)
        if frames is None:
            return None
        shown_s = start_s  # when the last frame decoded for this target shows
        clock = SampleClock([target_s], half_frame_s)  # the frame showing the target, as read in order
        before: av.VideoFrame | None = None  # the frame decoded before, from this target's keyframe on
        for decoded, frame in enumerate(frames):
            if frame.time is None or decoded > spacing:
                return None
            shown_s = frame.time
            held, own = clock.meet(frame.time, before is not None and index_of(before.time) not in kept)
            if held or own:
                if held and before is not None:
                    frame = before
                if not kept:
                    info = _with_frame_rotation(info, frame)
                # A seek can land past the target: the index is the frame's own, from its timestamp.
                index = index_of(frame.time)
                kept.setdefault(
                    index,
                    _video_frame(frame, index, _timestamp(frame, index, info, start_s), info, pixel_cap),
                )
                break
            before = frame
        else:  # the stream ended before the target: its last frame on screen then, or cut short (beyond a slack)
            if before is not None and target_s < _shown_until(before, shown_s):
                index = index_of(before.time)
                if index not in kept:
                    kept[index] = _video_frame(before, index, _timestamp(before, index, info, start_s), info, pixel_cap)
            elif target_s - shown_s > _CUT_SHORT_S:
                broken[0] += 1
        if on_frame is not None:
            on_frame((number + 1) / len(targets))
    if not kept:
        return None
    return replace(info, damaged=broken[0] > 0), sorted(kept.values(), key=lambda f: f.index)


def _sample_sequentially(
    container: av.container.InputContainer,
    info: VideoInfo,
    n: int,
    limits: VideoLimits,
    pixel_cap: int,
    on_frame: Callable[[float], None] | None,
    span: VideoSpan,
    seek: bool,
) -> tuple[VideoInfo, list[VideoFrame]] | None:
    """Decode the span once and keep n uniformly spaced frames of it: from the video's start, or
    (`seek`) from the keyframe before the span, each frame's index then read from its timestamp. None
    when that seek does not work for the file (the caller decodes from the start)."""
    stream = picture_stream(container)
    stream.thread_type = "AUTO"
    stream_start_s = float((stream.start_time or 0) * stream.time_base) if stream.time_base is not None else 0.0
    broken = [0]
    half_frame_s = 0.5 / info.fps if info.fps > 0 else 0.0
    frames: Iterator[av.VideoFrame] | None = None
    if seek:
        picture_s = max(0.0, span.start_s - info.picture_start_s)  # where the span starts in the picture
        frames = _frames_from(container, stream_start_s + picture_s, stream_start_s, half_frame_s, limits, broken)
        if frames is None:
            return None
    # With a frame count, the samples are chosen by time, as _sample_by_seeking chooses them: for each
    # sample, the first frame showing at or after when frame uniform_indices(...)[i] of the span would at
    # the span's average rate, or the frame before, held on screen then, where it has no sample yet. (Chosen
    # by count, a varying frame rate's part ended at a frame count: the part from 0 to 15 s of a clip at 30
    # then 5 fps ended at 8.4 s, and a part read from a keyframe, its indices from timestamps, found 2 of 8
    # samples.) Without any frame count (rare: no duration either)
    # the span is told by timestamps and every `stride`-th frame in it is kept, the stride doubling
    # whenever _held_while_counting(n) frames are held, then the n nearest to uniform are kept.
    clock: SampleClock | None = None  # when each sample shows, seconds from the video's start
    first, stop = 0, 0
    begin_s, end_s = 0.0, math.inf  # where the span begins and ends, in seconds
    if info.frame_count > 0:
        first, stop = span.frames_in(info)
        begin_s, end_s = span.seconds_in(info)
        # Spread over the span's own time, at its average rate: a stated frame rate above the file's count
        # over its duration would leave its end unsampled. (Of unknown length, at the stated rate.)
        if not (math.isfinite(end_s) and end_s > begin_s):
            end_s = begin_s + (stop - first) / info.fps
        # From the span's first frame: from its start, between two frames, that frame matched two samples
        # and the span's last frame none (1.02 to 1.32 s at 10 fps gave 1.1 and 1.2, not 1.3 too).
        grid_s = min(max(begin_s, info.picture_start_s + first / info.fps), end_s) if info.fps > 0 else begin_s
        clock = SampleClock.spread(grid_s, end_s, stop - first, n)
    shown: tuple[av.VideoFrame, int, float] | None = None  # the span's frame decoded last: (frame, index, time)
    kept: list[VideoFrame] = []

    def keep(frame: av.VideoFrame, index: int, timestamp: float) -> None:
        # A slow part's frame stands for each sample it reaches, once; indices read from timestamps
        # repeat where the rate runs above its average: one frame each.
        if not (kept and kept[-1].index == index):
            kept.append(_video_frame(frame, index, timestamp, info, pixel_cap))

    finished = False  # every sample found, or the span's end reached: the stream was not cut short
    stride = 1
    index = decoded = -1
    timestamp = 0.0  # when the frame decoded (after the loop: the last) shows
    for frame in _decoded_frames(container, limits, broken) if frames is None else frames:
        decoded += 1
        if seek and frame.time is None:
            return None
        if seek:
            index = max(0, round((frame.time - stream_start_s) * info.fps))
        elif broken[0] and frame.time is not None and info.fps > 0:
            # Frames lost to broken packets are not counted: counting on, every later frame's index lagged its
            # time by the frames lost (the frame shown at 18/30 s of a 30 fps clip said frame 9). The decoder
            # reports a broken packet frames before the frames it loses: from the first on, time tells.
            index = max(index + 1, round((frame.time - stream_start_s) * info.fps))
        else:
            index += 1
        timestamp = _timestamp(frame, index, info, stream_start_s)
        if decoded >= limits.max_frames:
            raise MediaTooLargeError(f"video has more than {limits.max_frames} frames, the limit")
        if decoded == 0:
            info = _with_frame_rotation(info, frame)
        if clock is not None:
            if on_frame is not None and decoded % 16 == 0:
                since_s = timestamp - clock.wanted_s[0]
                on_frame(min(1.0, max(0.0, since_s / max(end_s - clock.wanted_s[0], 1e-9))))
            # A frame of the span shows from its start and before its end: half a spacing early, as a sample
            # matches it, a span of 1.05 to 1.15 s took the frame at 1.0 s, and one of 1.05 to 1.2 s none.
            if timestamp >= end_s - _FRAME_TIME_SLACK:  # the span's end: samples left show the frame before
                if not clock.done and shown is not None:
                    keep(*shown)  # (once)
                finished = True
                break
            if timestamp < begin_s - _FRAME_TIME_SLACK:
                continue
            held, own = clock.meet(timestamp, shown is not None and not (kept and kept[-1].index == shown[1]))
            if held and shown is not None:
                keep(*shown)
            if own:
                keep(frame, index, timestamp)
            finished = clock.done
            if finished:
                break
            shown = (frame, index, timestamp)
            continue
        if timestamp < span.start_s:
            continue
        if span.end_s is not None and timestamp >= span.end_s:
            break
        if index % stride:
            continue
        if len(kept) >= _held_while_counting(n):
            stride *= 2
            kept = [f for f in kept if f.index % stride == 0]
            if index % stride:
                continue
        kept.append(_video_frame(frame, index, timestamp, info, pixel_cap))
    # The span's last frame stays on screen for its own duration: a recording whose last picture holds to its
    # end (8 s of a 10 s screen recording) has its samples there, and is not cut short ("damaged").
    last_s = timestamp
    if clock is not None and not finished and shown is not None:
        last_s = _shown_until(shown[0], shown[2])
        if clock.reach(last_s):
            keep(*shown)
        finished = clock.done
    if decoded < 0:
        if seek:
            return None
        raise CorruptMediaError("video has no decodable frames")
    if clock is None and len(kept) > n:
        kept = _nearest(kept, [kept[0].index + i for i in uniform_indices(index + 1 - kept[0].index, n)])
    if not kept:
        if seek:  # read from where a seek landed: decoding from the start may still find the span
            return None
        # Decoded past the span's end, none in it, none broken: a gap of a varying frame rate (a file cut
        # short before the span is corrupt, as before).
        if not span.covers(info) and finished and broken[0] == 0:
            raise VideoSpanError(
                f"no frame of the video shows from {span.start_s:g} s to "
                f"{'the end' if span.end_s is None else f'{span.end_s:g} s'}"
            )
        raise CorruptMediaError("video has no decodable frames at the sampled positions")
    # A stream that ends before its samples and its stated end has been cut short (told by time).
    ended_early = clock is not None and not finished and last_s < min(end_s, info.duration_s) - _CUT_SHORT_S
    return replace(info, damaged=broken[0] > 0 or ended_early), kept


def _nearest(frames: list[VideoFrame], targets: list[int]) -> list[VideoFrame]:
    """For each target index the closest frame not already chosen (frames sorted by index)."""
    chosen: dict[int, VideoFrame] = {}
    for target in targets:
        best = min((f for f in frames if f.index not in chosen), key=lambda f: abs(f.index - target), default=None)
        if best is not None:
            chosen[best.index] = best
    return sorted(chosen.values(), key=lambda f: f.index)


def _timestamp(frame: av.VideoFrame, index: int, info: VideoInfo, stream_start_s: float) -> float:
    """When the frame shows, in seconds from the file's start: a stream's timestamps may start anywhere
    (an MPEG-TS from a broadcast or a camera, a clip cut without re-encoding), players count from the file's
    first (the picture's, or the sound's where that starts first: info.picture_start_s)."""
    if frame.time is not None and math.isfinite(frame.time):
        return info.picture_start_s + max(0.0, float(frame.time) - stream_start_s)
    return info.picture_start_s + (index / info.fps if info.fps > 0 else 0.0)
