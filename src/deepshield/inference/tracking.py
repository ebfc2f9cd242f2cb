"""Associate faces across sampled video frames into tracks (one per person) by box overlap."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepshield.faces.detector import Box


@dataclass
class Track:
    track_id: int
    members: list[tuple[int, int]] = field(default_factory=list)  # (sample position, face position in it)
    last_box: Box | None = None
    last_seen: int = -1


def associate(frames: list[list[Box]], iou_threshold: float = 0.2, max_gap: int = 3) -> list[Track]:
    """Greedy IoU association, frame by frame.

    A face joins the unmatched live track whose last box overlaps it most (IoU >= iou_threshold);
    a track survives up to `max_gap` samples without a match (detector misses, occlusion).
    Sampled frames are far apart in time, so overlap rather than motion models is the robust cue.
    """
    tracks: list[Track] = []
    for position, boxes in enumerate(frames):
        # Samples missed since the track's last match: up to max_gap keep it alive (this was off by one).
        live = [t for t in tracks if position - t.last_seen - 1 <= max_gap]
        pairs = sorted(
            (
                (t.last_box.iou(box), ti, bi)
                for ti, t in enumerate(live)
                if t.last_box is not None
                for bi, box in enumerate(boxes)
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
            _extend(live[ti], position, bi, boxes[bi])
        for bi, box in enumerate(boxes):
            if bi not in used_boxes:
                track = Track(track_id=len(tracks))
                _extend(track, position, bi, box)
                tracks.append(track)
    return tracks


def _extend(track: Track, position: int, face_position: int, box: Box) -> None:
    track.members.append((position, face_position))
    track.last_box = box
    track.last_seen = position
