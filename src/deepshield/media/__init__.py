"""Media decoding: bytes or paths in, RGB uint8 arrays out, with limits and clear errors."""

import warnings

from deepshield.media.images import ImageLimits, load_image
from deepshield.media.sniff import MediaKind, sniff_media_kind
from deepshield.media.video import VideoFrame, VideoInfo, VideoLimits, VideoSpan, probe_video, sample_frames

# Pillow warns on stderr of EXIF it cannot read, and carries on without it: the file is read all the same,
# and a scan's table or a server's log is no place for it. A filter (not catch_warnings): threads share it.
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)

__all__ = [
    "ImageLimits",
    "MediaKind",
    "VideoFrame",
    "VideoInfo",
    "VideoLimits",
    "VideoSpan",
    "load_image",
    "probe_video",
    "sample_frames",
    "sniff_media_kind",
]
