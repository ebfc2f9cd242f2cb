"""Associate faces across sampled video frames into tracks (one per person) by box overlap, among faces
that look alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from deepshield.faces.detector import Box

# The most a face may differ from its track's last face (Bhattacharyya distance of face_look) and still
# continue it: across a cut, another person in the same place continued the track (the two people's scores
# averaged into one). Measured on the dev-eval videos (4 DFDC, 2 roop; 170 links of one person): at most
# 0.22; the astronaut's crop tinted (red x1.15, blue x0.8) 0.11, 30% brighter 0.39; 2,000 pairs of
# different people's photos: above 0.5 for 23%. Over twice the largest of one person: one person is not
# split by a change of light, and a cut to someone who looks much alike is still joined, as before.
LOOK_DISTANCE_LIMIT = 0.5


@dataclass
class Track:
    track_id: int
    members: list[tuple[int, int]] = field(default_factory=list)  # (sample position, face position in it)
    last_box: Box | None = None
    last_seen: int = -1
    last_look: NDArray[np.float32] | None = None


def face_look(crop: NDArray[Any]) -> NDArray[np.float32]:
    """How a face crop looks, coarsely: the hue and saturation histogram of its central half (the face
    itself, not the background or the padding), summing to 1, with each colour channel first scaled to
    the same mean (grey world): a camera's white balance or the light's colour changing mid-shot moved the
    histogram past the limit (red x0.9, blue x1.1: 0.46 to 0.51), and one person became two."""
    height, width = crop.shape[:2]
    centre = crop[height // 4 : height - height // 4, width // 4 : width - width // 4].astype(np.float32)
    means = centre.reshape(-1, 3).mean(axis=0) + 1e-3
    balanced = np.clip(centre * (means.mean() / means), 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(balanced, cv2.COLOR_RGB2HSV)
    histogram = cv2.calcHist([hsv], [0, 1], None, [16, 4], [0, 180, 0, 256]).ravel()
    look: NDArray[np.float32] = (histogram / max(float(histogram.sum()), 1.0)).astype(np.float32)
    return look


def look_distance(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def associate(
    frames: list[list[Box]],
    looks: Sequence[Sequence[NDArray[np.float32]]] | None = None,
    iou_threshold: float = 0.2,
    max_gap: int = 3,
) -> list[Track]:
    """Greedy IoU association, frame by frame.

    A face joins the unmatched live track whose last box overlaps it most (IoU >= iou_threshold), if it
    looks like the track's last face (`looks`: face_look per face, as `frames`; LOOK_DISTANCE_LIMIT);
    a track survives up to `max_gap` samples without a match (detector misses, occlusion).
    Sampled frames are far apart in time, so overlap rather than motion models is the robust cue.
    """
    tracks: list[Track] = []
    for position, boxes in enumerate(frames):
        # Samples missed since the track's last match: up to max_gap keep it alive (this was off by one).
        live = [t for t in tracks if position - t.last_seen - 1 <= max_gap]
        frame_looks = looks[position] if looks is not None else None
        pairs = sorted(
            (
                (t.last_box.iou(box), ti, bi)
                for ti, t in enumerate(live)
                if t.last_box is not None
                for bi, box in enumerate(boxes)
                if frame_looks is None
                or t.last_look is None
                or look_distance(t.last_look, frame_looks[bi]) <= LOOK_DISTANCE_LIMIT
            ),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < iou_threshold:
                break
            if ti in used_tracks or bi in used_boxes:
                continue
            used_tracks.add(ti)
            used_boxes.add(bi)
            _extend(live[ti], position, bi, boxes[bi], frame_looks)
        for bi, box in enumerate(boxes):
            if bi not in used_boxes:
                track = Track(track_id=len(tracks))
                _extend(track, position, bi, box, frame_looks)
                tracks.append(track)
    return tracks


def _extend(
    track: Track, position: int, face_position: int, box: Box, looks: Sequence[NDArray[np.float32]] | None
) -> None:
    track.members.append((position, face_position))
    track.last_box = box
    track.last_seen = position
    track.last_look = None if looks is None else looks[face_position]
