"""Real-world degradations applied to real and fake faces alike, so the model learns manipulation
traces that survive them rather than compression or resolution differences."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np

from deepshield.training.config import AugmentConfig


def geometric_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Detector-like framing noise: small shift, scale and rotation around the crop centre."""
    size = image.shape[0]
    angle = rng.uniform(-config.jitter_rotation_deg, config.jitter_rotation_deg)
    scale = 1 + rng.uniform(-config.jitter_scale, config.jitter_scale)
    matrix = np.asarray(cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale), dtype=np.float64)
    matrix[:, 2] += rng.uniform(-config.jitter_shift, config.jitter_shift, size=2) * size
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0)
    )


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buffer = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buffer, cv2.IMREAD_COLOR)[..., ::-1] if ok else image


def h264(image: np.ndarray, crf: int, motion: tuple[int, int]) -> np.ndarray:
    """The crop as the second frame of a two-frame H.264 clip whose first frame is the crop moved by
    `motion` pixels: inter-frame prediction, chroma subsampling and quantisation, as a compressed video
    leaves them on a real swap. One thread and a fixed preset: the same input gives the same output."""
    height, width = image.shape[:2]
    even = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")  # yuv420p needs even sides
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = even.shape[1], even.shape[0], "yuv420p"
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
    return np.ascontiguousarray(decoded[-1].to_ndarray(format="rgb24")[:height, :width])


def degrade(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    out = image
    if rng.random() < config.flip_probability:
        out = out[:, ::-1]
    out = geometric_jitter(np.ascontiguousarray(out), rng, config)
    if rng.random() < config.colour_probability:
        gain = rng.uniform(0.85, 1.15)
        bias = rng.uniform(-15, 15)
        out = np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    if rng.random() < config.rescale_probability:
        size = out.shape[0]
        small = max(8, int(size * rng.uniform(*config.rescale_range)))
        out = cv2.resize(
            cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (size, size), interpolation=cv2.INTER_LINEAR
        )
    if rng.random() < config.blur_probability:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < config.noise_probability:
        out = np.clip(out.astype(np.float32) + rng.normal(0, rng.uniform(2, 8), out.shape), 0, 255).astype(np.uint8)
    if (
        config.codec_probability and rng.random() < config.codec_probability
    ):  # no draw when off: older recipes keep their samples
        out = h264(out, rng.integers(config.codec_crf[0], config.codec_crf[1] + 1), tuple(rng.integers(-3, 4, size=2)))
    if rng.random() < config.jpeg_probability:
        out = jpeg(out, rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    return np.ascontiguousarray(out)
