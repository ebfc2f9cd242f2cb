"""Real-world degradations applied to real and fake faces alike, so the model learns manipulation
traces that survive them rather than compression or resolution differences."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from deepshield.media.codecs import h264_roundtrip, jpeg_roundtrip
from deepshield.synthesis.blend import optional_draw, unsharp
from deepshield.training.config import AugmentConfig


@dataclass(frozen=True)
class Framing:
    """Detector-like framing noise drawn once for a sample: a mirror, then a small shift, scale and
    rotation around the crop centre. Applied alike to the face and to its blend mask, so the mask still
    says where the blend is."""

    flip: bool
    matrix: np.ndarray  # 2 x 3 affine, in crop pixels

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        size = pixels.shape[0]
        out = np.ascontiguousarray(pixels[:, ::-1]) if self.flip else pixels
        return cv2.warpAffine(out, self.matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def draw_framing(size: int, rng: np.random.Generator, config: AugmentConfig) -> Framing:
    flip = bool(rng.random() < config.flip_probability)
    angle = rng.uniform(-config.jitter_rotation_deg, config.jitter_rotation_deg)
    scale = 1 + rng.uniform(-config.jitter_scale, config.jitter_scale)
    matrix = np.asarray(cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale), dtype=np.float64)
    matrix[:, 2] += rng.uniform(-config.jitter_shift, config.jitter_shift, size=2) * size
    return Framing(flip, matrix)


def retouch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A portrait app's retouching of the whole crop: edge-preserving skin smoothing mixed back at a
    random strength, then, each half the time, unsharp sharpening, a tone curve and a saturation change.
    Global edits like these leave no blending boundary, yet smooth skin the way a blend source's
    resampling does: seen on real faces only, they read as fakes (the real dev-eval photos scored
    highest are retouched portraits)."""
    size = image.shape[0]
    pixels = image.astype(np.float32)
    # Smoothed at half size, as apps do: the same look at a fifteenth of the cost of a full-size bilateral
    # filter, which would halve the samples a loader worker makes a second.
    half = cv2.resize(image, (size // 2, size // 2), interpolation=cv2.INTER_AREA)
    half = cv2.bilateralFilter(half, 0, rng.uniform(20, 60), size / 2 * rng.uniform(0.015, 0.04))
    smoothed = cv2.resize(half, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    strength = rng.uniform(0.3, 0.9)
    pixels = pixels * (1 - strength) + smoothed * strength
    if rng.random() < 0.5:
        amount = rng.uniform(0.2, 0.6)
        pixels = unsharp(pixels, rng.uniform(0.8, 2.0), amount)
    if rng.random() < 0.5:
        gamma = rng.uniform(0.8, 1.25)
        pixels = 255 * (np.clip(pixels, 0, 255) / 255) ** gamma
    if rng.random() < 0.5:
        grey = pixels.mean(axis=2, keepdims=True)
        pixels = grey + (pixels - grey) * rng.uniform(0.75, 1.4)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def degrade(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """The face reframed (`draw_framing`), then degraded as a posted photo or video is."""
    return degrade_framed(draw_framing(image.shape[0], rng, config).apply(image), rng, config)


def degrade_framed(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """The degradations after the framing: retouching, colour, rescaling, blur, noise, H.264, JPEG."""
    out = image
    # Retouching comes before the camera-to-viewer degradations, as it does to a posted photo.
    if optional_draw(config.retouch_probability, rng):
        out = retouch(out, rng)
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
    if optional_draw(config.codec_probability, rng):
        out = h264_roundtrip(
            out, rng.integers(config.codec_crf[0], config.codec_crf[1] + 1), tuple(rng.integers(-3, 4, size=2))
        )
    if rng.random() < config.jpeg_probability:
        out = jpeg_roundtrip(out, rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
    return np.ascontiguousarray(out)
