"""One file's frames to its faces: detected, cut with the bundle's crop policy, linked into tracks.

The single detect -> crop -> track step: `Detector` (API, CLI, page), `evaluate`/`calibrate` and the
training benchmarks (through `evaluation.scoring.MediaCropper`) all call `find_faces`, and then score
the crops with `OnnxClassifier.score` (the synthetic-face score a padded face's inside crop).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from deepshield.faces.crop import CropPolicy, FaceCrop, SyntheticCrops, crop_face, synthetic_crop
from deepshield.faces.detector import Face, FaceDetector
from deepshield.inference.tracking import Track, associate, face_look

# Faces analysed per image or video frame at most: each costs a crop, a classifier pass and, in an answer,
# a crop and a heatmap image. A crowd's largest faces are kept (the ones the classifier judges best); the
# rest are counted, and the result says how many were left out.
MAX_FACES_PER_FRAME = 32


@dataclass(frozen=True)
class FrameFaces:
    """The faces of a sequence of frames (an image is one frame)."""

    faces: list[list[Face]]  # per frame, in detection order
    crops: list[FaceCrop]  # every face, frame by frame in that order
    tracks: list[Track]  # members: (frame position, face position in it)
    left_out: list[int]  # per frame, faces found beyond find_faces' max_faces, so not cropped
    # Per face, in `crops` order: what the synthetic-face score reads in its crop's place (synthetic_crop:
    # the face cut within its picture where its crop runs into padding), else None.
    inside: list[FaceCrop | None] = field(default_factory=list)

    @property
    def pixels(self) -> NDArray[np.uint8]:
        """The crops as one N x S x S x 3 uint8 batch (needs at least one face)."""
        return np.stack([crop.pixels for crop in self.crops])

    @property
    def synthetic_crops(self) -> SyntheticCrops | None:
        """What the synthetic-face score reads in place of the padded faces' crops (`OnnxClassifier.score`'s
        synthetic_crops); None when no crop has padding."""
        return SyntheticCrops.of([(row, inside.pixels) for row, inside in enumerate(self.inside) if inside is not None])

    def split(self, values: Sequence[Any]) -> list[list[Any]]:
        """Per-face `values` (in `crops` order) regrouped per frame."""
        out, start = [], 0
        for faces in self.faces:
            out.append(list(values[start : start + len(faces)]))
            start += len(faces)
        return out


def find_faces(
    images: Sequence[NDArray[Any]],
    detector: FaceDetector,
    policy: CropPolicy,
    on_frame: Callable[[int], None] | None = None,
    turns: bool = True,
    max_faces: int = MAX_FACES_PER_FRAME,
) -> FrameFaces:
    """Detect the faces of every frame (with `turns`, the file read at a quarter turn or upside down when
    it was turned without saying so: `FaceDetector.detect_frames`), keep a frame's `max_faces` largest,
    crop each upright with `policy` and link them into tracks (`associate`). `on_frame(position)` is
    called before each frame's detection."""
    found = detector.detect_frames(images, turns, on_frame)
    faces_per_frame = [_largest(faces, max_faces) for faces in found]
    linked = len(images) > 1  # a photo's faces are never linked into tracks: no look to compare
    crops, inside, looks = [], [], []
    for image, faces in zip(images, faces_per_frame):
        frame_looks = []
        for face in faces:
            crops.append(crop_face(image, face.box, face.keypoints, policy, face.turns))
            inside.append(synthetic_crop(image, crops[-1], face.box, face.keypoints, policy, face.turns))
            if linked:
                frame_looks.append(face_look(crops[-1].pixels))
        looks.append(frame_looks)
    tracks = associate([[face.box for face in faces] for faces in faces_per_frame], looks if linked else None)
    left_out = [len(all_faces) - len(kept) for all_faces, kept in zip(found, faces_per_frame)]
    return FrameFaces(faces_per_frame, crops, tracks, left_out, inside)


def _largest(faces: list[Face], count: int) -> list[Face]:
    """The `count` largest faces (by box area), in their order."""
    if len(faces) <= count:
        return faces
    kept = set(sorted(range(len(faces)), key=lambda i: faces[i].box.area, reverse=True)[:count])
    return [face for i, face in enumerate(faces) if i in kept]
