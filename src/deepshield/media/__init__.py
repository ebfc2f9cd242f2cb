"""Media decoding: bytes or paths in, RGB uint8 arrays out, with limits and clear errors."""

from deepshield.media.images import ImageLimits, load_image
from deepshield.media.sniff import MediaKind, sniff_media_kind
from deepshield.media.video import VideoFrame, VideoInfo, VideoLimits, VideoSpan, probe_video, sample_frames

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
