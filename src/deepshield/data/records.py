"""Per-source-file done records: what makes `prepare` resumable.

A record is written (atomically, after every crop of its file has been renamed into place) to
``records/<key>.json``. A re-run skips a file whose record is present and still valid: same file
(size and modification time), same extraction settings, every crop still on disk. Anything else
(no record, a half-written file, changed settings) is redone from scratch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deepshield.data.layout import DatasetLayout, atomic_write_text

RECORD_VERSION = 1


@dataclass(frozen=True)
class FaceEntry:
    crop_path: str  # relative to the dataset folder
    frame_index: int
    face_index: int
    detection_score: float
    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]  # crop pixels


@dataclass(frozen=True)
class FileOutcome:
    key: str
    source_file: str
    ok: bool
    reason: str = ""  # why no crop came out, when not ok
    kind: str = ""  # "image" or "video"
    frames_sampled: int = 0
    # The indices of the frames sampled, faces or none: evaluate links a prepared video's faces into tracks
    # over them, as on the raw media (empty in records written before them).
    frame_indices: tuple[int, ...] = ()
    faces: tuple[FaceEntry, ...] = field(default_factory=tuple)
    from_record: bool = False  # True when skipped thanks to an earlier run


@dataclass(frozen=True)
class FileStamp:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileStamp:
        stat = path.stat()
        return cls(stat.st_size, stat.st_mtime_ns)


def write_record(layout: DatasetLayout, outcome: FileOutcome, stamp: FileStamp, settings_fingerprint: str) -> None:
    payload = {
        "version": RECORD_VERSION,
        "settings": settings_fingerprint,
        "stamp": asdict(stamp),
        "outcome": asdict(outcome),
    }
    atomic_write_text(layout.record_path(outcome.key), json.dumps(payload, sort_keys=True) + "\n", durable=True)


def _outcome_from_dict(data: dict) -> FileOutcome:
    faces = tuple(
        FaceEntry(
            crop_path=f["crop_path"],
            frame_index=int(f["frame_index"]),
            face_index=int(f["face_index"]),
            detection_score=float(f["detection_score"]),
            box=tuple(float(v) for v in f["box"]),  # type: ignore[arg-type]
            landmarks=tuple((float(x), float(y)) for x, y in f["landmarks"]),
        )
        for f in data["faces"]
    )
    return FileOutcome(
        key=data["key"],
        source_file=data["source_file"],
        ok=bool(data["ok"]),
        reason=data.get("reason", ""),
        kind=data.get("kind", ""),
        frames_sampled=int(data.get("frames_sampled", 0)),
        frame_indices=tuple(int(i) for i in data.get("frame_indices", ())),
        faces=faces,
        from_record=True,
    )


def read_outcome(layout: DatasetLayout, key: str) -> FileOutcome | None:
    """A file's recorded outcome as it is, valid for a resume or not (None when there is none to read):
    what evaluate needs of a prepared file (its kind, the frames sampled)."""
    try:
        return _outcome_from_dict(json.loads(layout.record_path(key).read_text(encoding="utf-8"))["outcome"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def done_otherwise(layout: DatasetLayout, key: str, settings_fingerprint: str) -> bool:
    """The file has a done record, made with other settings or another version of the code that reads,
    finds or crops faces (ExtractSettings.fingerprint): it is cropped again."""
    try:
        payload = json.loads(layout.record_path(key).read_text(encoding="utf-8"))
        return payload.get("version") == RECORD_VERSION and payload.get("settings") != settings_fingerprint
    except (OSError, ValueError, AttributeError):
        return False


def load_valid_record(
    layout: DatasetLayout, key: str, source_file: Path, settings_fingerprint: str
) -> FileOutcome | None:
    """The earlier outcome for this file, or None when it has to be (re)done."""
    path = layout.record_path(key)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("version") != RECORD_VERSION or payload.get("settings") != settings_fingerprint:
            return None
        if FileStamp(**payload["stamp"]) != FileStamp.of(source_file):
            return None
        outcome = _outcome_from_dict(payload["outcome"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if outcome.key != key or outcome.source_file != str(source_file):
        return None
    if not all((layout.root / face.crop_path).is_file() for face in outcome.faces):
        return None
    return outcome
