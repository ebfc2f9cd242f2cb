"""Lossy round trips through the codecs media meets on its way to us: JPEG for photos, H.264 for video.
Training degrades faces with them, evaluation perturbs whole frames with them."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from deepshield.media.video import rgb_pixels


def jpeg_roundtrip(image: NDArray[Any], quality: int) -> NDArray[Any]:
    """H x W x 3 uint8 RGB encoded as JPEG at `quality` (1-100) and decoded."""
    ok, buffer = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # the image came back untouched and was scored as jpeg:Q
        raise ValueError(f"a {image.shape[1]}x{image.shape[0]} image cannot be encoded as JPEG")
    return np.ascontiguousarray(cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1])


def h264_roundtrip(image: NDArray[Any], crf: int, motion: tuple[int, int]) -> NDArray[Any]:
    """The image as the second frame of a two-frame H.264 clip whose first frame is the image moved by
    `motion` pixels: inter-frame prediction, chroma subsampling and quantisation at `crf` (0-51), as a
    compressed video leaves them. One thread and a fixed preset: the same input gives the same output."""
    height, width = image.shape[:2]
    even = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")  # yuv420p needs even sides
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = even.shape[1], even.shape[0], "yuv420p"
    encoder.colorspace = 6  # BT.601 (SMPTE 170M), the matrix PyAV encodes RGB with, named: read back by it at any size
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"crf": str(int(crf)), "preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
    packets = []
    for pts, frame in enumerate((np.roll(even, motion, axis=(0, 1)), even)):
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = pts
        packets += encoder.encode(video_frame)
    packets += encoder.encode(None)
    decoder = av.CodecContext.create("h264", "r")
    decoded = [frame for packet in [*packets, None] for frame in decoder.decode(packet)]
    return np.ascontiguousarray(rgb_pixels(decoded[-1])[:height, :width])  # as a video file's frames are read
