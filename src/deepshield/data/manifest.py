"""The dataset manifest: one typed row per face crop, stored as ``manifest.csv``.

CSV rather than Parquet: a dataset is at most a few million rows, a CSV of that size loads in
seconds, diffs and greps well, and needs nothing but the standard library (pandas and pyarrow read
it too). Columns, in order:

    crop_path        PNG path relative to the dataset folder
    label            real | fake
    split            train | val | test
    group            files sharing a group (a DFDC original and its fakes) are always in one split
    source           dataset the file comes from (dfdc, ffpp, a folder's name...)
    method           manipulation method for fakes (unknown when the source does not say), none for reals
    source_file      the image or video the crop was taken from (absolute path when prepared)
    frame_index      decoded frame number in the video (0 for images)
    face_index       face number in that frame, in reading order (0 with --faces largest)
    detection_score  face detector confidence
    box_x0..box_y1   detector box in source-frame pixels
    <keypoint>_x/_y  the detector's 6 keypoints (right_eye, left_eye, nose_tip, mouth_center,
                     right_ear, left_ear; "right" is the subject's right) in crop pixels

``errors.csv`` has one row per source file that gave no crop (unreadable, corrupt, no face found,
unlabelled), with the reason.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from pydantic import Field, ValidationError

from deepshield.csv_rows import CsvRows
from deepshield.data.layout import DatasetLayout, atomic_write_text
from deepshield.errors import DeepShieldError
from deepshield.faces.crop import CropPolicy
from deepshield.faces.detector import KEYPOINT_NAMES
from deepshield.media.files import NAME_BYTES
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.strict import StrictModel, explain
from deepshield.text_files import read_text

SPLITS = ("train", "val", "test")
# An error row `dataset balance --add-real` writes for a file the dataset holds: a file skipped, not one lost.
ALREADY_HELD = "already in the dataset (not added again)"
# How the reason of an error row for a second listing of one file (another name, a copy) begins.
LISTED_TWICE = "listed twice"


def left_out_as_copy(reason: str) -> bool:
    """An errors.csv reason for a file left out as a copy of one the dataset holds or lists: no file lost."""
    return reason == ALREADY_HELD or reason.startswith(LISTED_TWICE)


KEYPOINT_COLUMNS = tuple(f"{name}_{axis}" for name in KEYPOINT_NAMES for axis in ("x", "y"))
BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
MANIFEST_COLUMNS = (
    "crop_path",
    "label",
    "split",
    "group",
    "source",
    "method",
    "source_file",
    "frame_index",
    "face_index",
    "detection_score",
    *BOX_COLUMNS,
    *KEYPOINT_COLUMNS,
)
ERROR_COLUMNS = ("source_file", "label", "group", "source", "method", "reason")


class ManifestError(DeepShieldError):
    """A dataset folder has no manifest, or a manifest that does not parse."""


@dataclass(frozen=True)
class CropRecord:
    crop_path: str
    label: str
    split: str
    group: str
    source: str
    method: str
    source_file: str
    frame_index: int
    face_index: int
    detection_score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in source-frame pixels
    landmarks: tuple[tuple[float, float], ...]  # 6 keypoints in crop pixels, KEYPOINT_NAMES order

    @property
    def is_fake(self) -> bool:
        return self.label == "fake"

    @property
    def landmarks_array(self) -> np.ndarray:
        return np.asarray(self.landmarks, dtype=np.float32).reshape(len(KEYPOINT_NAMES), 2)

    def with_split(self, split: str) -> CropRecord:
        return replace(self, split=split)

    def to_row(self) -> dict[str, str]:
        row = {name: getattr(self, name) for name in MANIFEST_COLUMNS[:9]}
        row["detection_score"] = f"{self.detection_score:.4f}"
        row.update({name: f"{value:.2f}" for name, value in zip(BOX_COLUMNS, self.box)})
        row.update(
            {
                name: f"{value:.2f}"
                for name, value in zip(KEYPOINT_COLUMNS, (v for point in self.landmarks for v in point))
            }
        )
        return {key: str(value) for key, value in row.items()}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> CropRecord:
        values = [float(row[name]) for name in KEYPOINT_COLUMNS]
        return cls(
            crop_path=row["crop_path"],
            label=row["label"],
            split=row["split"],
            group=row["group"],
            source=row["source"],
            method=row["method"],
            source_file=row["source_file"],
            frame_index=int(row["frame_index"]),
            face_index=int(row["face_index"]),
            detection_score=float(row["detection_score"]),
            box=tuple(float(row[name]) for name in BOX_COLUMNS),  # type: ignore[arg-type]
            landmarks=tuple((values[i], values[i + 1]) for i in range(0, len(values), 2)),
        )


@dataclass(frozen=True)
class ErrorRecord:
    source_file: str
    reason: str
    label: str = ""
    group: str = ""
    source: str = ""
    method: str = ""

    def to_row(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ERROR_COLUMNS}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> ErrorRecord:
        return cls(**{f.name: row.get(f.name, "") for f in fields(cls)})


class DatasetSource(StrictModel):
    path: str
    format: str
    root_key: str


class DatasetInfo(StrictModel):
    """dataset.json: how the dataset was built, so that additions use the same settings. Strict: a key it
    does not know is an error naming it (a misspelt "seed" re-split with seed 0 without a word)."""

    format_version: int = 1
    crop_policy: CropPolicy = Field(default_factory=CropPolicy)
    frames: int = DEFAULT_VIDEO_FRAMES
    faces: str = "all"
    min_face_size: int = 20
    seed: int = 0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    extractor: str = Field(
        "", description="fingerprint of the extraction settings and code (see ExtractSettings.fingerprint)"
    )
    sources: list[DatasetSource] = Field(default_factory=list)
    history: list[str] = Field(default_factory=list, description="balance steps applied after prepare, in order")


def _csv_text(columns: tuple[str, ...], rows: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = CsvRows(buffer)
    writer.writerow(columns)
    writer.writerows([row.get(column, "") for column in columns] for row in rows)
    return buffer.getvalue()


def manifest_text(records: Iterable[CropRecord]) -> str:
    return _csv_text(MANIFEST_COLUMNS, (r.to_row() for r in records))


def errors_text(errors: Iterable[ErrorRecord]) -> str:
    return _csv_text(ERROR_COLUMNS, (e.to_row() for e in errors))


def write_manifest(path: Path, records: Iterable[CropRecord]) -> None:
    atomic_write_text(path, manifest_text(records), durable=True)


def write_errors(path: Path, errors: Iterable[ErrorRecord]) -> None:
    atomic_write_text(path, errors_text(errors), durable=True)


# A balancing step in flight (see commit_step): its files wait beside their places under this suffix.
STEP_NAME = "step.json"
_WAITING = ".step"


def commit_step(dataset_dir: Path | str, info: DatasetInfo, entry: str, texts: dict[str, str]) -> None:
    """Write a balancing step's files (`texts`: file name in the dataset folder -> content) and its history
    entry as one: the files beside their places first, then a note naming the step, then the history (the
    step's commit), then the files in place. A step killed between two writes left the manifest changed and
    the history not: a rerun added its fakes twice, and a later prepare, no longer refused, would have
    dropped them. finish_step completes or undoes such a step."""
    root = Path(dataset_dir)
    for name, text in texts.items():
        atomic_write_text(root / (name + _WAITING), text, durable=True)
    note = {"entry": entry, "position": len(info.history), "files": sorted(texts)}
    atomic_write_text(root / STEP_NAME, json.dumps(note), durable=True)
    info.history.append(entry)
    write_info(root, info)
    finish_step(root)


def finish_step(dataset_dir: Path | str) -> str | None:
    """Complete an interrupted step whose history was written, undo one whose history was not (see
    commit_step); what was done, in words, None when no step was in flight. Call it holding the dataset lock."""
    root = Path(dataset_dir)
    note_path = root / STEP_NAME
    if not note_path.exists():
        for waiting in root.glob(f"*.csv{_WAITING}"):  # written before its note: the step never began
            waiting.unlink()
        return None
    note = json.loads(note_path.read_text(encoding="utf-8"))
    history = read_info(root).history
    done = len(history) > note["position"] and history[note["position"]] == note["entry"]
    for name in note["files"]:
        waiting = root / (name + _WAITING)
        if waiting.exists():
            if done:
                os.replace(waiting, root / name)
            else:
                waiting.unlink()
    note_path.unlink()
    return f"{'finished' if done else 'undid'} an interrupted step: {note['entry']}"


def _unreadable(path: Path, exc: OSError) -> ManifestError:
    """A dataset file that is there but cannot be read (permission denied, a folder): it was a traceback."""
    return ManifestError(f"{path}: cannot be read ({exc.strerror or exc})")


def read_manifest_file(path: Path) -> list[CropRecord]:
    try:
        with open(path, newline="", encoding="utf-8", errors=NAME_BYTES) as handle:
            return [CropRecord.from_row(row) for row in csv.DictReader(handle)]
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no manifest here (run `deepshield prepare` first)") from exc
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ManifestError(f"{path}: malformed manifest ({exc})") from exc


def read_manifest(dataset_dir: Path | str) -> list[CropRecord]:
    """Every crop of a prepared dataset, in manifest order (the loader the training code uses)."""
    return read_manifest_file(DatasetLayout(dataset_dir).manifest)


def read_errors(dataset_dir: Path | str) -> list[ErrorRecord]:
    path = DatasetLayout(dataset_dir).errors
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8", errors=NAME_BYTES) as handle:
            return [ErrorRecord.from_row(row) for row in csv.DictReader(handle)]
    except OSError as exc:
        raise _unreadable(path, exc) from None


def read_info(dataset_dir: Path | str) -> DatasetInfo:
    path = DatasetLayout(dataset_dir).info
    try:
        return DatasetInfo.model_validate_json(read_text(path, "dataset description", ManifestError))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: no dataset.json here (run `deepshield prepare` first)") from exc
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except ValidationError as exc:  # cut short or edited by hand: it gave a traceback
        raise ManifestError(
            f"{path}: not a dataset description this version reads: {explain(exc, DatasetInfo)}"
        ) from None


# What prepare writes to preparing.json before its first crop, removed once dataset.json is written: a prepare
# stopped before its manifest (Ctrl-C, a crash) left crops that the folder readers took for media.
PREPARING = {"deepshield": "prepare under way"}


def mark_preparing(dataset_dir: Path | str) -> None:
    atomic_write_text(DatasetLayout(dataset_dir).preparing, json.dumps(PREPARING) + "\n")


def holds_dataset(folder: Path) -> bool:
    """Whether `folder` holds a prepared dataset, as `prepare --out` into a source's own folder leaves one (the
    source readers pass it over): its crops/ beside a manifest.csv of this tool's columns, a dataset.json it
    reads, or prepare's preparing.json (PREPARING: a prepare stopped before its manifest). A user's own listing
    named manifest.csv beside a crops/ folder of photos is none: a name alone hid them."""
    layout = DatasetLayout(folder)
    if not layout.crops.is_dir():
        return False
    if layout.preparing.is_file():  # a regular file, as the manifest below
        try:
            if json.loads(layout.preparing.read_text(encoding="utf-8")) == PREPARING:
                return True
        except (OSError, ValueError):
            pass
    if layout.manifest.is_file():  # a regular file: a FIFO of that name would block the listing for good
        try:
            with open(layout.manifest, newline="", encoding="utf-8", errors=NAME_BYTES) as handle:
                if set(MANIFEST_COLUMNS) <= set(next(csv.reader(handle), [])):
                    return True
        except OSError:
            pass
    if not layout.info.is_file():
        return False
    try:
        read_info(folder)
    except ManifestError:
        return False
    return True


def write_info(dataset_dir: Path | str, info: DatasetInfo) -> None:
    atomic_write_text(DatasetLayout(dataset_dir).info, info.model_dump_json(indent=2) + "\n", durable=True)


def load_crop(record: CropRecord, dataset_dir: Path | str) -> np.ndarray:
    """The record's face crop as an H x W x 3 uint8 RGB array."""
    import cv2

    path = Path(dataset_dir) / record.crop_path
    # Decoded from its bytes: cv2.imread crashes the process on a folder name that is not UTF-8.
    try:
        pixels = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    except OSError:
        pixels = None
    if pixels is None:
        raise ManifestError(f"{path}: crop missing or unreadable")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
