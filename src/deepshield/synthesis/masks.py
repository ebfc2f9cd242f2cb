"""Blend masks: a face-region polygon from landmarks, then deformed so that its boundary never
has one learnable shape (Face X-ray, Li et al. 2020; SBI, Shiohara & Yamasaki 2022)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

# MediaPipe face-mesh indices of facial parts, for part-only manipulations (eyes, nose, mouth edits).
_LEFT_EYE = [
    263,
    249,
    390,
    373,
    374,
    380,
    381,
    382,
    362,
    398,
    384,
    385,
    386,
    387,
    388,
    466,
    300,
    293,
    334,
    296,
    336,
    285,
    295,
    282,
    283,
    276,
]
_RIGHT_EYE = [
    33,
    7,
    163,
    144,
    145,
    153,
    154,
    155,
    133,
    173,
    157,
    158,
    159,
    160,
    161,
    246,
    70,
    63,
    105,
    66,
    107,
    55,
    65,
    52,
    53,
    46,
]
_NOSE = [
    168,
    6,
    197,
    195,
    5,
    4,
    1,
    19,
    94,
    2,
    98,
    327,
    129,
    358,
    49,
    279,
    48,
    278,
    64,
    294,
    102,
    331,
    114,
    343,
    217,
    437,
]
_MOUTH = [
    61,
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    291,
    409,
    270,
    269,
    267,
    0,
    37,
    39,
    40,
    185,
    57,
    287,
    202,
    422,
    210,
    430,
    211,
    431,
    200,
    18,
]
PART_INDICES = {"eyes": _LEFT_EYE + _RIGHT_EYE, "nose": _NOSE, "mouth": _MOUTH, "nose_mouth": _NOSE + _MOUTH}
# Parts a hand edit pastes from another photo: one eye alone too (the odd eye is a classic edit).
PASTE_PARTS = {
    "left_eye": _LEFT_EYE,
    "right_eye": _RIGHT_EYE,
    "eyes": _LEFT_EYE + _RIGHT_EYE,
    "nose": _NOSE,
    "mouth": _MOUTH,
}


def hull_mask(shape: tuple[int, int], points: NDArray[Any]) -> NDArray[Any]:
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, (1,))
    return mask.astype(np.float32)


def keypoint_ellipse_mask(shape: tuple[int, int], keypoints: NDArray[Any]) -> NDArray[Any]:
    """Fallback when no dense mesh is available: an ellipse spanning eyes to below the mouth."""
    eyes = keypoints[:2].mean(axis=0)
    mouth = keypoints[3]
    centre = (eyes + mouth) / 2 + (mouth - eyes) * 0.1
    half_height = np.linalg.norm(mouth - eyes) * 1.15
    half_width = max(np.linalg.norm(keypoints[0] - keypoints[1]) * 1.0, half_height * 0.7)
    angle = np.degrees(np.arctan2(mouth[1] - eyes[1], mouth[0] - eyes[0])) - 90
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), (int(half_width), int(half_height)), angle, 0, 360, (1,), -1)
    return mask.astype(np.float32)


def region_mask(
    shape: tuple[int, int],
    landmarks: NDArray[Any] | None,
    keypoints: NDArray[Any],
    rng: np.random.Generator,
    part_probability: float,
) -> NDArray[Any]:
    """Binary region to replace: the whole face hull, or (with part_probability) one facial part."""
    if landmarks is None:
        return keypoint_ellipse_mask(shape, keypoints)
    if rng.random() < part_probability:
        part = list(PART_INDICES)[rng.integers(len(PART_INDICES))]
        return hull_mask(shape, landmarks[PART_INDICES[part]])
    return hull_mask(shape, landmarks)


def lasso_mask(shape: tuple[int, int], points: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
    """A hand selection around a part: its hull grown by 5-30% of the part's size, or (one time in three)
    the box around it, with a narrow feather of 1-6% of the part's size."""
    hull = hull_mask(shape, points)
    low, high = points.min(axis=0), points.max(axis=0)
    part_size = float(np.sqrt(np.prod(np.maximum(high - low, 1.0))))  # geometric mean: wide parts grow little
    grow = int(rng.uniform(0.05, 0.3) * part_size)
    mask: NDArray[Any]
    if rng.random() < 1 / 3:
        mask = np.zeros(shape, np.float32)
        x0, y0 = np.maximum(np.floor(low) - grow, 0).astype(int)
        x1, y1 = np.ceil(high + grow).astype(int)
        mask[y0 : y1 + 1, x0 : x1 + 1] = 1.0
    else:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        mask = cv2.dilate(hull, kernel)
    return feather(mask, max(rng.uniform(0.01, 0.06) * part_size, 0.5))


def feather(mask: NDArray[Any], sigma: float) -> NDArray[Any]:
    """A 0/1 mask blurred by a Gaussian of `sigma` (a kernel 3 sigma each side): float32 within [0, 1]. The
    blur's sums overshoot 1 by a rounding error (1.0000002) where the mask is all ones around a pixel."""
    blurred = cv2.GaussianBlur(mask.astype(np.float32), (int(sigma * 3) * 2 + 1,) * 2, sigma)
    return np.minimum(blurred, 1.0, dtype=np.float32)


def deform(mask: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
    """Random dilation/erosion, elastic warp and blur; returns a soft mask in [0, 1]."""
    height, width = mask.shape
    face_size = max(np.sqrt(mask.sum()), 8.0)
    # Grow or shrink the region by up to ~12% of the face size.
    radius = int(rng.uniform(-0.12, 0.12) * face_size)
    if radius != 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(radius) + 1, 2 * abs(radius) + 1))
        resized = cv2.dilate(mask, kernel) if radius > 0 else cv2.erode(mask, kernel)
        if resized.sum() >= 16:  # a small part can erode away entirely: then keep it as it was
            mask = resized
    # Elastic warp from a smooth random displacement field.
    grid = 4
    amplitude = rng.uniform(0.0, 0.06) * face_size
    dx = cv2.resize(
        rng.normal(0, amplitude, (grid, grid)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    dy = cv2.resize(
        rng.normal(0, amplitude, (grid, grid)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC
    )
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    mask = cv2.remap(mask, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0,))
    # Soft boundary of random width.
    mask = feather(mask, rng.uniform(0.01, 0.08) * face_size)
    peak = mask.max()
    return (mask / peak).astype(np.float32) if peak > 0 else mask.astype(np.float32)
