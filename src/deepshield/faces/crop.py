"""The single crop policy. Training and inference both call crop_face, so the classifier never
sees a framing it was not trained on; the policy travels in the model card."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from deepshield.faces.detector import Box, eye_line_deg
from deepshield.strict import StrictModel


class CropPolicy(StrictModel):  # strict: a model card's crop_policy with a misspelt key is refused
    size: int = Field(224, ge=16, le=1024, description="output side in pixels")
    scale: float = Field(1.5, ge=1.0, le=4.0, description="crop side as a multiple of the detector box's longer side")
    align: bool = Field(False, description="rotate so that the eyes are level")


@dataclass(frozen=True)
class FaceCrop:
    pixels: NDArray[Any]  # size x size x 3 uint8 RGB
    matrix: NDArray[Any]  # 2 x 3 affine map from image pixel coordinates to crop pixel coordinates
    padding: float = 0.0  # share of the crop past the image's edge (black), as crop_padding measures it

    def to_image(self, points: NDArray[Any]) -> NDArray[Any]:
        """Map N x 2 crop coordinates back to image coordinates."""
        inverse = cv2.invertAffineTransform(self.matrix)
        image_points: NDArray[Any] = points @ inverse[:, :2].T + inverse[:, 2]
        return image_points


def crop_matrix(box: Box, keypoints: NDArray[Any] | None, policy: CropPolicy, turns: int = 0) -> NDArray[Any]:
    """`turns`: quarter turns counter-clockwise that make the face upright (Face.turns)."""
    cx, cy = box.center
    side = policy.scale * max(box.width, box.height)
    zoom = policy.size / side
    if policy.align and keypoints is not None:
        matrix = np.asarray(cv2.getRotationMatrix2D((cx, cy), eye_line_deg(keypoints), zoom), dtype=np.float64)
    else:  # exact quarter turns (cv2.getRotationMatrix2D's, without cos(90 degrees) = 6e-17)
        cos, sin = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[turns % 4]
        alpha, beta = zoom * cos, zoom * sin
        matrix = np.array(
            [[alpha, beta, (1 - alpha) * cx - beta * cy], [-beta, alpha, beta * cx + (1 - alpha) * cy]],
            dtype=np.float64,
        )
        # Boxes are in edge coordinates (a pixel spans [i, i + 1)), the warp in centre ones (pixel i at
        # i): turned, that half pixel turns too. With it the crop is the upright photo's crop exactly.
        half = np.array([0.5, 0.5])
        matrix[:, 2] += matrix[:, :2] @ half - zoom * half
    matrix[:, 2] += (policy.size / 2 - cx, policy.size / 2 - cy)
    return matrix


def crop_face(
    image: NDArray[Any], box: Box, keypoints: NDArray[Any] | None, policy: CropPolicy, turns: int = 0
) -> FaceCrop:
    """Square crop centred on the box, `policy.scale` times its longer side, resized to policy.size,
    turned upright by `turns` quarter turns (or, with `policy.align`, by the eyes' angle).

    Area outside the image is black. Large faces (a downscale beyond 2x) are first shrunk with area
    averaging all the way to the crop's scale, so that the bilinear warp only rotates and shifts:
    bilinear sampling does not low-pass filter, so any downscale left to it folds texture finer than
    the crop's pixels back as moire (a cue a forensic model would learn). Shrinking only to a 2x
    remainder, as this function first did, still aliased such texture at about half its contrast.
    """
    matrix = crop_matrix(box, keypoints, policy, turns)
    return FaceCrop(
        pixels=_warp(image, matrix, policy.size, cv2.BORDER_CONSTANT),
        matrix=matrix,
        padding=crop_padding(image.shape, matrix, policy.size),
    )


def _warp(image: NDArray[Any], matrix: NDArray[Any], size: int, border: int) -> NDArray[Any]:
    """The size x size crop `matrix` maps the image to (see crop_face on shrinking large faces first)."""
    zoom = math.hypot(matrix[0, 0], matrix[0, 1])
    source = image
    if zoom < 0.5:
        shrink = zoom  # pre-shrink so that the warp's own zoom is 1
        small = (max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink)))
        source = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        sx, sy = small[0] / image.shape[1], small[1] / image.shape[0]
        warp = matrix @ np.array([[1 / sx, 0, 0], [0, 1 / sy, 0], [0, 0, 1]])
    else:
        warp = matrix
    pixels: NDArray[Any] = cv2.warpAffine(
        source, warp, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=(0, 0, 0)
    )
    return pixels


def crop_inside(
    image: NDArray[Any], box: Box, keypoints: NDArray[Any] | None, policy: CropPolicy, turns: int = 0
) -> FaceCrop:
    """The face cut as crop_face cuts it, but within the picture where it can be: at the largest scale up to
    `policy.scale` whose square fits the picture's shorter side (down to the box itself), moved inside its
    edges. What the synthetic-face score reads for a face whose crop runs into padding: it took black padding
    for a real photo's (generated photos cut close to the face, crops 35% padding: 21% caught, 81% from
    this crop; `docs/synthetic-faces.md`)."""
    height, width = image.shape[:2]
    matrix = crop_matrix(box, keypoints, policy, turns)
    low, high = _footprint(matrix, policy.size)
    # The largest crop the picture holds (an aligned crop's footprint is its turned square's box), but never
    # tighter than the box itself: its pixel centres sample the picture within [0, width - 1] x [0, height - 1].
    picture = np.array([width - 1, height - 1], np.float64)
    fits = min(1.0, *(picture / np.maximum(high - low, 1e-9)))
    if fits < 1.0:
        scale = max(1.0, policy.scale * fits)
        matrix = crop_matrix(box, keypoints, policy.model_copy(update={"scale": scale}), turns)
        low, high = _footprint(matrix, policy.size)
    # Moved inside the picture's edges, on each axis where it fits (a box wider than the picture stays centred).
    fitting = (high - low) <= picture + 1e-9
    shift = np.where(fitting, np.maximum(0.0, -low) - np.maximum(0.0, high - picture), 0.0)
    matrix = matrix.copy()
    matrix[:, 2] -= matrix[:, :2] @ shift
    # Edge pixels are repeated past the picture, not blackened: a sample half a pixel out darkened a row.
    return FaceCrop(
        pixels=_warp(image, matrix, policy.size, cv2.BORDER_REPLICATE),
        matrix=matrix,
        padding=crop_padding(image.shape, matrix, policy.size),
    )


def synthetic_crop(
    image: NDArray[Any], crop: FaceCrop, box: Box, keypoints: NDArray[Any] | None, policy: CropPolicy, turns: int = 0
) -> FaceCrop | None:
    """What the synthetic-face score reads in place of the face's `crop` (crop_face's): the face cut within its
    picture where that crop runs into padding, else None (the crop itself)."""
    return crop_inside(image, box, keypoints, policy, turns) if crop.padding > 0 else None


def _footprint(matrix: NDArray[Any], size: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """The (low, high) corners of the box in the picture that a size x size crop's pixel centres sample."""
    inverse = cv2.invertAffineTransform(matrix)
    last = size - 1
    square = np.array([[0, 0], [last, 0], [last, last], [0, last]], np.float64)
    corners = square @ inverse[:, :2].T + inverse[:, 2]
    return corners.min(axis=0), corners.max(axis=0)


def crop_padding(image_shape: tuple[int, ...], matrix: NDArray[Any], size: int) -> float:
    """Share of a size x size crop that lies past the image's edge: the area the image's rectangle, mapped
    into the crop, leaves uncovered. The share crop_validity's map gives, without warping a map of the whole
    image for every face (inference's hot path); exact for an aligned (turned) crop too, where the mapped
    rectangle's bounding box read 0% for a crop 27% padding."""
    height, width = image_shape[:2]
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    mapped = (corners @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
    square = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32)
    inside, _ = cv2.intersectConvexConvex(mapped, square)
    return max(0.0, 1.0 - float(inside) / (size * size))


def crop_validity(image_shape: tuple[int, ...], matrix: NDArray[Any], size: int) -> NDArray[Any]:
    """size x size bool map of the crop pixels that come from inside the image (False: black padding)."""
    ones = np.ones(image_shape[:2], np.uint8)
    inside: NDArray[np.bool_] = (
        cv2.warpAffine(
            ones, matrix, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=(0,)
        )
        > 0
    )
    return inside


def seen_validity(pixels: NDArray[Any]) -> NDArray[Any]:
    """crop_validity read from a crop's pixels alone, where how it was cut is not kept (a prepared dataset's
    crops): False on the pure black (0, 0, 0) regions that reach the crop's edge, as crop_face's padding does.
    A photo's own pure black at the edge reads as padding too, which only keeps a blend off it."""
    black = (pixels == 0).all(axis=2).astype(np.uint8)
    _, labels = cv2.connectedComponents(black, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inside: NDArray[np.bool_] = ~np.isin(labels, edge[edge > 0])  # label 0: the pixels that are not black
    return inside


@dataclass(frozen=True)
class SyntheticCrops:
    """What the synthetic-face score reads in place of some faces' crops (a padded face cut within its
    picture: `faces.crop.crop_inside`): the faces' rows among the crops, and those crops."""

    rows: NDArray[Any]  # k int64, increasing
    pixels: NDArray[Any]  # k x size x size x 3 uint8

    @classmethod
    def of(cls, pairs: Sequence[tuple[int, NDArray[Any]]]) -> SyntheticCrops | None:
        """From (row, crop) pairs in row order; None for none."""
        if not pairs:
            return None
        return cls(np.array([row for row, _ in pairs], np.int64), np.stack([crop for _, crop in pairs]))

    @classmethod
    def joined(cls, parts: Sequence[tuple[int, SyntheticCrops | None]]) -> SyntheticCrops | None:
        """Parts of crops laid end to end: each (its first row among all, its synthetic crops or None)."""
        present = [(offset, part) for offset, part in parts if part is not None]
        if not present:
            return None
        rows = np.concatenate([part.rows + offset for offset, part in present])
        return cls(rows.astype(np.int64), np.concatenate([part.pixels for _, part in present]))

    def taken(self, kept: NDArray[Any]) -> SyntheticCrops | None:
        """For the crops `kept` (row indices, increasing) of the ones these rows count in: renumbered."""
        position = {int(row): new for new, row in enumerate(kept)}
        chosen = [i for i, row in enumerate(self.rows) if int(row) in position]
        if not chosen:
            return None
        return SyntheticCrops(np.array([position[int(self.rows[i])] for i in chosen], np.int64), self.pixels[chosen])
