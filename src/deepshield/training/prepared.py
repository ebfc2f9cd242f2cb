"""Prepared datasets (`deepshield prepare`) as training data: their real crops join the face bank
(and can be self-blended too), their fake crops are a pool of real-world fakes."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepshield.data.manifest import CropRecord, load_crop, read_info, read_manifest
from deepshield.errors import DeepShieldError
from deepshield.faces.crop import CropPolicy, seen_validity
from deepshield.training.facebank import FaceBank


@dataclass(frozen=True)
class PreparedSplit:
    reals: FaceBank
    fakes: np.ndarray  # N x S x S x 3 uint8


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    """A crop, or its validity map (bool), at `size`."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    if image.dtype == bool:
        return cv2.resize(image.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR)


def _resized_points(points: np.ndarray, ratio: float) -> np.ndarray:
    """Crop pixel coordinates moved as _resized moves the pixels under them: cv2.resize maps pixel centres
    (a pixel's centre i + 0.5 to (i + 0.5) * ratio), so `points * ratio` put them (ratio - 1) / 2 px off
    their pixels, 1.25 px from a 64 px dataset to a 224 px model."""
    return (points + 0.5) * ratio - 0.5


def load_prepared(dataset_dirs: list[Path], policy: CropPolicy, split: str) -> PreparedSplit:
    """The crops of one split of every dataset, checked against the model's crop policy."""
    real_banks: list[FaceBank] = []
    fakes: list[np.ndarray] = []
    for directory in dataset_dirs:
        info = read_info(directory)
        if abs(info.crop_policy.scale - policy.scale) > 1e-6 or info.crop_policy.align != policy.align:
            raise DeepShieldError(
                f"{directory} was cropped with scale {info.crop_policy.scale} (align={info.crop_policy.align}); the model uses "
                f"scale {policy.scale} (align={policy.align}): re-run `deepshield prepare` with --crop-scale {policy.scale}"
            )
        ratio = policy.size / info.crop_policy.size
        records: list[CropRecord] = [r for r in read_manifest(directory) if r.split == split]
        reals = [r for r in records if not r.is_fake]
        if reals:
            crops = [load_crop(r, directory) for r in reals]
            real_banks.append(
                FaceBank(
                    images=np.stack([_resized(crop, policy.size) for crop in crops]),
                    keypoints=np.stack([_resized_points(r.landmarks_array, ratio) for r in reals]).astype(np.float32),
                    landmarks=np.full((len(reals), 468, 2), np.nan, np.float32),  # no mesh: ellipse masks
                    valid=np.stack([_resized(seen_validity(crop), policy.size) for crop in crops]),
                    groups=np.array([f"{directory.name}/{r.group}" for r in reals]),
                    paths=np.array([str(directory / r.crop_path) for r in reals]),
                )
            )
        fakes.extend(_resized(load_crop(r, directory), policy.size) for r in records if r.is_fake)
    empty = np.zeros((0, policy.size, policy.size, 3), np.uint8)
    return PreparedSplit(
        reals=FaceBank.concat(real_banks) if real_banks else FaceBank.empty(policy.size),
        fakes=np.stack(fakes) if fakes else empty,
    )


def prepared_source_files(dataset_dirs: list[Path], splits: Collection[str] | None = None) -> list[Path]:
    """The media the datasets' crops were cut from, in `splits` (default every split: what a benchmark must not
    contain)."""
    return sorted(
        {
            Path(record.source_file)
            for directory in dataset_dirs
            for record in read_manifest(directory)
            if splits is None or record.split in splits
        }
    )
