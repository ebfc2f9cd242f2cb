"""Real-world degradations applied to real and fake faces alike, so the model learns manipulation
traces that survive them rather than compression or resolution differences."""

from __future__ import annotations

import cv2
import numpy as np

from deepshield.media.codecs import h264_roundtrip, jpeg_roundtrip
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
        out = h264_roundtrip(
            out, rng.integers(config.codec_crf[0], config.codec_crf[1] + 1), tuple(rng.integers(-3, 4, size=2))
        )
    if rng.random() < config.jpeg_probability:
        out = jpeg_roundtrip(out, rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    return np.ascontiguousarray(out)
