"""Score a labelled set once: every face of every sampled frame, under the clean media and each perturbation.

Two kinds of input:

* raw media, listed by the dataset readers of `deepshield.data.sources` (DFDC, FaceForensics++,
  real/ and fake/ folders, CSV): frames are decoded (images: 1, videos: N sampled uniformly), each
  perturbation is applied to the full frame, faces are detected, cut with the bundle's crop policy
  and scored, and the faces of a video are linked into tracks, exactly as `Detector` does;
* a prepared dataset folder (``manifest.csv``): its crops are scored as they are (they were cut
  when the dataset was prepared, with the crop policy recorded in dataset.json).

The result, a `ScoredSet`, keeps one row per scored face (file, condition, frame, face, track,
logit) so that any video rule, temperature or threshold can be applied afterwards without
scoring again.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import os
import shutil
import sys
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deepshield.data.extract import code_fingerprint
from deepshield.data.layout import atomic_write_npz
from deepshield.data.prepare import collect_items
from deepshield.data.sources import FAKE, MISSING_FILE, REAL, SourceItem, SourceProblem, ffpp_levels_of_one_video
from deepshield.data.split import one_label_split_remedy
from deepshield.engines import Engine, FileJob
from deepshield.engines.local import LocalEngine
from deepshield.errors import DeepShieldError, say
from deepshield.evaluation.perturb import Perturbation
from deepshield.faces.crop import CropPolicy, SyntheticCrops
from deepshield.faces.detector import Box, FaceDetector
from deepshield.inference.frame_faces import FrameFaces, find_faces
from deepshield.inference.heatmap import cam_to_heatmap
from deepshield.inference.runtime import FaceScores, OnnxClassifier
from deepshield.inference.tracking import associate, face_look
from deepshield.inference.video_rule import VideoRule
from deepshield.media.files import check_media_file, file_signature
from deepshield.media.frames import read_frames
from deepshield.media.suffixes import VIDEO_SUFFIXES
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.models.card import Calibration
from deepshield.plural import numbered, plural

log = logging.getLogger(__name__)

CLEAN = "clean"
Warn = Callable[[str], None]


def _warn_stderr(message: str) -> None:
    say(f"deepshield: warning: {message}")


@dataclass
class FileRecord:
    file_id: int
    path: str
    label: int  # 1 = fake
    source: str
    method: str
    group: str
    kind: str = ""  # "image", "video" or "crops"
    frames: int = 0  # frames sampled (images: 1); min(rule's min track frames, this) decides which tracks count
    error: str = ""  # why it could not be scored at all (missing, unreadable, corrupt, unlabelled)

    @property
    def label_name(self) -> str:
        return "fake" if self.label else "real"

    @property
    def is_video(self) -> bool:
        """A video's (or animation's) faces: raw media, or a prepared dataset's file of several frames."""
        return self.kind == "video" or (self.kind == "crops" and self.frames > 1)


@dataclass
class TrackExample:
    """One face track of a gallery file: who it is (its most suspicious crop and heatmap) and when it was seen."""

    track_id: int
    score: float  # by the scorer's video rule
    frames_seen: int
    first_frame: int
    last_frame: int
    first_s: float | None  # timestamps: None for a prepared dataset's crops
    last_s: float | None
    peak_frame: int
    not_counted_reason: str | None  # None: counts towards the file's score
    crop: np.ndarray
    heatmap: np.ndarray


@dataclass
class Example:
    """The most suspicious face of a file (clean condition), for the report's worst-case gallery."""

    file_id: int
    score: float  # the file's score under the rule given to the scorer
    probability: float
    frame_index: int
    face_index: int
    crop: np.ndarray
    heatmap: np.ndarray
    tracks: list[TrackExample] = field(default_factory=list)


@dataclass
class ScoredSet:
    files: list[FileRecord]
    conditions: list[str]  # "clean" first, then each perturbation's name
    faces: dict[str, np.ndarray]  # FACE_COLUMNS -> equal-length columns
    temperature: float
    mode: str  # "media" or "crops"
    examples: dict[int, Example] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unlabelled entries
    notes: list[str] = field(default_factory=list)
    synthetic_temperature: float | None = None  # a two-output bundle: faces has a "synthetic_logit" column too
    offset: float = 0.0  # probability = sigmoid((logit - offset) / temperature) (the card's Calibration)
    synthetic_offset: float = 0.0

    def synthetic_view(self) -> ScoredSet | None:
        """The same faces scored by the synthetic-face score (its logits and calibration in place of
        the manipulation score's), for every metric evaluate computes; None without that score."""
        if self.synthetic_temperature is None or "synthetic_logit" not in self.faces:
            return None
        faces = self.faces | {"logit": self.faces["synthetic_logit"]}
        return replace(
            self,
            faces=faces,
            temperature=self.synthetic_temperature,
            offset=self.synthetic_offset,
            examples={},
            synthetic_temperature=None,
            synthetic_offset=0.0,
        )

    @property
    def face_count(self) -> int:
        return int(self.faces["logit"].size)

    def probabilities(self, temperature: float | None = None) -> np.ndarray:
        """Every face's probability at the set's calibration (or at another temperature, the offset kept)."""
        t = self.temperature if temperature is None else temperature
        return Calibration(temperature=t, offset=self.offset).probability(self.faces["logit"])

    def condition_mask(self, condition: str) -> np.ndarray:
        return self.faces["condition"] == self.conditions.index(condition)

    def labels_of_faces(self) -> np.ndarray:
        labels = np.array([f.label for f in self.files], dtype=np.int64)
        return labels[self.faces["file_id"]] if self.face_count else np.zeros(0, np.int64)

    def file_scores(
        self, condition: str = CLEAN, rule: VideoRule = VideoRule(), temperature: float | None = None
    ) -> np.ndarray:
        """One score per file (NaN: no face, or not scored), by `rule` as `Detector` applies it:
        the highest score among the tracks seen in at least min(rule.min_track_frames, frames
        sampled) frames, or among all tracks when none is that long. An image's faces are tracks of one frame."""
        scores = np.full(len(self.files), np.nan)
        mask = self.condition_mask(condition)
        if not mask.any():
            return scores
        file_ids = self.faces["file_id"][mask]
        tracks = self.faces["track_id"][mask]
        probabilities = self.probabilities(temperature)[mask]
        order = np.lexsort((tracks, file_ids))
        file_ids, tracks, probabilities = file_ids[order], tracks[order], probabilities[order]
        bounds = np.flatnonzero(np.r_[True, file_ids[1:] != file_ids[:-1], True])
        for start, stop in itertools.pairwise(bounds):
            file_id = int(file_ids[start])
            scores[file_id] = aggregate_tracks(
                tracks[start:stop], probabilities[start:stop], self.files[file_id].frames, rule
            )
        return scores


def aggregate_tracks(track_ids: np.ndarray, probabilities: np.ndarray, frames: int, rule: VideoRule) -> float:
    """A file's score from its faces' track ids and probabilities, by `rule.aggregate` (the video rule)."""
    per_track: dict[int, list[float]] = defaultdict(list)
    for track, probability in zip(track_ids.tolist(), probabilities.tolist()):
        per_track[track].append(probability)
    score = rule.aggregate(list(per_track.values()), frames).score
    if score is None:
        raise ValueError("aggregate_tracks needs at least one face")
    return score


class FaceRow(NamedTuple):
    """Where one scored face sits: its file, condition, frame, track and box (FACE_COLUMNS but the logit)."""

    condition: int
    file_id: int
    frame_pos: int
    frame_index: int
    face_index: int
    track_id: int
    detection_score: float
    x0: float
    y0: float
    x1: float
    y1: float


FACE_COLUMNS = (*FaceRow._fields, "logit")
FLOAT_COLUMNS = ("logit", "synthetic_logit", "detection_score", "x0", "y0", "x1", "y1")


def face_columns(
    rows: Sequence[FaceRow],
    logits: Sequence[float] | np.ndarray | None = None,
    synthetic_logits: Sequence[float] | None = None,
) -> dict[str, np.ndarray]:
    """Rows (and their logits, and synthetic-face logits for a two-output bundle) as equal-length typed columns."""
    columns = {name: [getattr(row, name) for row in rows] for name in FaceRow._fields}
    if logits is not None:
        columns["logit"] = list(logits)
    if synthetic_logits is not None:
        columns["synthetic_logit"] = list(synthetic_logits)
    return {
        name: np.asarray(values, dtype=np.float32 if name in FLOAT_COLUMNS else np.int64)
        for name, values in columns.items()
    }


@dataclass
class CroppedFile:
    """One file's faces under one condition: found, cut with the crop policy and linked into tracks,
    not yet scored. What evaluation scores at once and training benchmarks cache."""

    record: FileRecord
    condition: int
    rows: list[FaceRow]
    crops: np.ndarray  # len(rows) x S x S x 3 uint8
    timestamp_of: dict[int, float] | None = None  # frame index -> seconds (None: a prepared dataset's crops)
    # What the synthetic-face score reads in place of padded faces' crops (FrameFaces.synthetic_crops): None
    # when no crop has padding, or for a prepared dataset's crops, whose pictures are not at hand.
    synthetic_crops: SyntheticCrops | None = None


class _Gallery:
    """The `keep` highest-scoring reals and lowest-scoring fakes seen so far (candidate false positives
    and false negatives), each with its most suspicious face's crop and heatmap."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.heaps: dict[int, list] = {0: [], 1: []}

    def offer(self, label: int, score: float, make: Callable[[], Example]) -> None:
        if self.keep <= 0:
            return
        key = score if label == 0 else -score  # keep the largest keys
        heap = self.heaps[label]
        if len(heap) < self.keep:
            example = make()
            heapq.heappush(heap, (key, example.file_id, example))
        elif key > heap[0][0]:
            example = make()
            heapq.heapreplace(heap, (key, example.file_id, example))

    def examples(self) -> dict[int, Example]:
        return {file_id: example for heap in self.heaps.values() for _, file_id, example in heap}


def _track_rows(record: FileRecord, condition: int, indices: list[int], found: FrameFaces) -> list[FaceRow]:
    """Rows for the faces of a file's frames, with the tracks `find_faces` linked them into."""
    track_of = {member: track.track_id for track in found.tracks for member in track.members}
    return [
        FaceRow(condition, record.file_id, position, indices[position], face_position, track_of[(position, face_position)],
                float(face.score), face.box.x0, face.box.y0, face.box.x1, face.box.y1)
        for position, faces in enumerate(found.faces)
        for face_position, face in enumerate(faces)
    ]  # fmt: skip


class MediaCropper:
    """Raw images and videos to `CroppedFile`s: frames decoded, each perturbation applied to the full
    frame, faces detected and cut with the crop policy, linked into tracks (one per worker: `CropJob`)."""

    def __init__(
        self,
        policy: CropPolicy,
        face_detector: FaceDetector,
        frames: int = DEFAULT_VIDEO_FRAMES,
        perturbations: Sequence[Perturbation] = (),
        seed: int = 0,
    ) -> None:
        self.policy = policy
        self.detector = face_detector
        self.frames = frames
        self.perturbations = list(perturbations)
        self.seed = seed

    def crop_file(self, record: FileRecord, path: Path) -> Iterator[CroppedFile]:
        """The file's faces under each condition; `record` gets its kind, frame count and any error."""
        try:
            if not os.path.lexists(path):
                raise DeepShieldError(MISSING_FILE)
            check_media_file(path)  # a broken link or a FIFO is said as what it is, not as missing
            record.kind, frames, timestamps = read_frames(path, self.frames)
        except DeepShieldError as exc:
            record.error = str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - one bad file must not end an evaluation
            record.error = f"{type(exc).__name__}: {exc}"
            return
        record.frames = len(frames)
        conditions: list[Perturbation | None] = [None, *self.perturbations]
        for condition, perturbation in enumerate(conditions):
            try:
                # Seeded by what the file, frame and perturbation are, not by where they stand: noise:20's
                # figures moved by up to 0.06 a file with another --perturb beside it or the listing reversed.
                images = [
                    image
                    if perturbation is None
                    else perturbation.apply(
                        image,
                        np.random.default_rng([self.seed, _stable(record.path), index, _stable(perturbation.name)]),
                    )
                    for index, image in frames
                ]
                found = find_faces(images, self.detector, self.policy)
            except Exception as exc:  # noqa: BLE001
                if perturbation is None:
                    record.error = f"{type(exc).__name__}: {exc}"
                    return
                log.warning("%s under %s: %s", path, perturbation.name, exc)
                continue
            if found.crops:
                indices = [index for index, _ in frames]
                rows = _track_rows(record, condition, indices, found)
                yield CroppedFile(
                    record, condition, rows, found.pixels, dict(zip(indices, timestamps)), found.synthetic_crops
                )


@dataclass(frozen=True)
class CropJob(FileJob[MediaCropper, tuple[FileRecord, Path], tuple[FileRecord, list[CroppedFile]]]):
    """MediaCropper.crop_file as an engine job, so that `evaluate` and `calibrate` can spread a large set
    over worker processes or a Ray cluster: a face detector per worker, one file's record (its kind,
    frame count and error filled in) and faces per item. Holds settings only (it travels to workers).

    `base_dir` (the caller's working directory, for engines whose workers may run elsewhere): relative
    paths are opened from there."""

    policy: CropPolicy
    min_face_size: int = 20
    frames: int = DEFAULT_VIDEO_FRAMES
    perturbations: tuple[Perturbation, ...] = ()
    seed: int = 0
    base_dir: str | None = None

    @property
    def conditions(self) -> list[str]:
        return [CLEAN, *(p.name for p in self.perturbations)]

    def journal_key(self, records: list[FileRecord]) -> str:
        """What a FacesJournal's files hold for: these settings and these files, numbered as listed, as they
        are now (size and time: a file replaced between a run and its --resume kept its old faces)."""
        # "looks-4": journals written before the synthetic-face score's inside crops (by rows) or before
        # tracks needed faces to look alike start again.
        # The code that reads, finds and crops the faces too, as a prepared dataset's crops are keyed: resumed
        # across a change of it (colour profiles applied, December 2026), the files done kept faces read the old way.
        settings = [repr(self.policy), self.min_face_size, self.frames, self.conditions, self.seed, "looks-4"]
        settings.append(code_fingerprint())
        listing = [
            [r.file_id, r.path, r.label, *(file_signature(self._located(Path(r.path))) or (None, None))]
            for r in records
        ]
        return hashlib.sha256(json.dumps([settings, listing]).encode()).hexdigest()

    def _located(self, path: Path) -> Path:
        return path if self.base_dir is None or path.is_absolute() else Path(self.base_dir) / path

    def setup(self) -> MediaCropper:
        detector = FaceDetector(min_face_size=self.min_face_size)
        return MediaCropper(self.policy, detector, self.frames, self.perturbations, self.seed)

    def run(self, cropper: MediaCropper, item: tuple[FileRecord, Path]) -> tuple[FileRecord, list[CroppedFile]]:
        record, path = item
        return record, list(cropper.crop_file(record, self._located(path)))

    def fail(self, item: tuple[FileRecord, Path], reason: str) -> tuple[FileRecord, list[CroppedFile]]:
        return replace(item[0], error=reason), []


class FacesJournal:
    """Each file's faces as they are found, one .npz per file, so that an interrupted evaluation resumes
    where it stopped. A journal holds for one listing of files and one CropJob's settings (`key`): one
    made for others is emptied when opened. Files are written whole or not at all (renamed into place)."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder
        marker = folder / "key.txt"
        if folder.exists() and not (marker.is_file() and marker.read_text() == key):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)

    def _path(self, record: FileRecord) -> Path:
        return self.folder / f"{record.file_id}.npz"

    def has(self, record: FileRecord) -> bool:
        return self._path(record).is_file()

    def save(self, record: FileRecord, cropped: list[CroppedFile]) -> None:
        meta = {
            "kind": record.kind,
            "frames": record.frames,
            "error": record.error,
            "items": [
                {
                    "condition": item.condition,
                    "rows": [[int(v) for v in row[:6]] + [float(v) for v in row[6:]] for row in item.rows],
                    "timestamps": None if item.timestamp_of is None else [[i, t] for i, t in item.timestamp_of.items()],
                }
                for item in cropped
            ],
        }
        synthetic = {}
        for i, item in enumerate(cropped):
            if item.synthetic_crops is not None:
                synthetic[f"synthetic_rows_{i}"] = item.synthetic_crops.rows
                synthetic[f"synthetic_{i}"] = item.synthetic_crops.pixels
        crops = {f"crops_{i}": item.crops for i, item in enumerate(cropped)}
        atomic_write_npz(self._path(record), {"meta": np.array(json.dumps(meta)), **crops, **synthetic})

    def load(self, record: FileRecord) -> tuple[FileRecord, list[CroppedFile]]:
        try:
            with np.load(self._path(record), allow_pickle=False) as stored:
                meta = json.loads(str(stored["meta"]))
                record = replace(record, kind=meta["kind"], frames=meta["frames"], error=meta["error"])
                cropped = [
                    CroppedFile(
                        record,
                        item["condition"],
                        [FaceRow(*row) for row in item["rows"]],
                        stored[f"crops_{i}"],
                        None if item["timestamps"] is None else {int(i): t for i, t in item["timestamps"]},
                        None
                        if f"synthetic_{i}" not in stored
                        else SyntheticCrops(stored[f"synthetic_rows_{i}"], stored[f"synthetic_{i}"]),
                    )
                    for i, item in enumerate(meta["items"])
                ]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DeepShieldError(
                f"{self._path(record)} (faces of {record.path} from an interrupted run) cannot be read ({exc}): "
                f"delete {self.folder} to start again"
            ) from exc
        return record, cropped


def crop_media(
    items: Sequence[SourceItem],
    files: list[FileRecord],
    job: CropJob,
    engine: Engine,
    progress: bool = True,
    journal_dir: Path | None = None,
) -> Iterator[CroppedFile]:
    """Appends a FileRecord per item to `files` and yields the items' faces in input order, cropped where
    `engine` runs `job`; each record is replaced by the one its worker filled in (kind, frames, error).
    With `journal_dir`, each file's faces are kept there as they come (FacesJournal) and a file already
    there from an interrupted run with the same files and settings is read back, not cropped again."""
    from tqdm import tqdm

    first = len(files)
    records = [
        FileRecord(first + position, str(item.path), int(item.label == "fake"), item.source, item.method, item.group)
        for position, item in enumerate(items)
    ]
    files.extend(records)
    journal = None if journal_dir is None else FacesJournal(journal_dir, job.journal_key(records))
    kept = {record.file_id for record in records if journal is not None and journal.has(record)}
    if kept:
        log.warning("resuming: the faces of %d of %d files are read from %s", len(kept), len(records), journal_dir)
    found = iter(engine.map(job, [(r, item.path) for r, item in zip(records, items) if r.file_id not in kept]))
    for record in tqdm(records, unit="file", file=sys.stderr, disable=None if progress else True, desc="faces"):
        if journal is not None and record.file_id in kept:
            record, cropped = journal.load(record)
        else:
            record, cropped = next(found)
            if journal is not None:
                journal.save(record, cropped)
        files[record.file_id] = record
        yield from cropped


def score_cropped(
    cropped: Iterable[CroppedFile], classifier: OnnxClassifier, rule: VideoRule, examples: int
) -> tuple[dict[str, np.ndarray], dict[int, Example]]:
    """Score each file's crops as they come (memory stays one file's worth); keep the gallery's examples."""
    rows: list[FaceRow] = []
    logits: list[float] = []
    synthetic_logits: list[float] | None = [] if classifier.card.synthetic is not None else None
    gallery = _Gallery(examples)
    for item in cropped:
        scores = classifier.score(item.crops, synthetic_crops=item.synthetic_crops)
        rows.extend(item.rows)
        logits.extend(scores.logits.tolist())
        if synthetic_logits is not None and scores.synthetic_logits is not None:
            synthetic_logits.extend(scores.synthetic_logits.tolist())
        if item.condition == 0:
            _offer(gallery, item, scores, rule, classifier.card.calibration)
    return face_columns(rows, logits, synthetic_logits), gallery.examples()


def _offer(gallery: _Gallery, item: CroppedFile, scores: FaceScores, rule: VideoRule, calibration: Calibration) -> None:
    tracks = np.array([row.track_id for row in item.rows])
    probabilities = np.asarray(scores.probabilities, np.float64)
    score = aggregate_tracks(tracks, probabilities, item.record.frames, rule)
    best = int(np.argmax(probabilities))

    def heatmap(position: int) -> np.ndarray:
        return cam_to_heatmap(scores.cams[position], item.crops.shape[1], calibration)

    def track_examples() -> list[TrackExample]:
        frames = np.array([row.frame_index for row in item.rows])
        members = {int(t): np.flatnonzero(tracks == t) for t in np.unique(tracks)}
        vote = rule.aggregate([probabilities[m].tolist() for m in members.values()], item.record.frames)
        seconds = item.timestamp_of
        out = []
        for (track_id, positions), track_score, reason in zip(members.items(), vote.scores, vote.not_counted_reasons):
            peak = int(positions[np.argmax(probabilities[positions])])
            first, last = int(frames[positions].min()), int(frames[positions].max())
            out.append(
                TrackExample(
                    track_id=track_id,
                    score=track_score,
                    frames_seen=len(positions),
                    first_frame=first,
                    last_frame=last,
                    first_s=None if seconds is None else seconds[first],
                    last_s=None if seconds is None else seconds[last],
                    peak_frame=int(frames[peak]),
                    not_counted_reason=reason,
                    crop=item.crops[peak],
                    heatmap=heatmap(peak),
                )
            )
        return out

    def make() -> Example:
        return Example(
            file_id=item.record.file_id,
            score=score,
            probability=float(probabilities[best]),
            frame_index=item.rows[best].frame_index,
            face_index=item.rows[best].face_index,
            crop=item.crops[best],
            heatmap=heatmap(best),
            tracks=track_examples(),
        )

    gallery.offer(item.record.label, score, make)


# ------------------------------------------------------------------------------------ prepared set


def is_prepared_dataset(path: Path) -> bool:
    from deepshield.data.layout import DatasetLayout

    return Path(path).is_dir() and DatasetLayout(path).manifest.is_file()


@dataclass
class PreparedCrops:
    """The crops of a prepared dataset (manifest.csv), file by file, as `CroppedFile`s."""

    dataset_dir: Path
    policy: CropPolicy  # what the model expects
    split: str | None = None
    warn: Warn = _warn_stderr
    notes: list[str] = field(default_factory=list)
    needs_both_classes: str | None = None  # as open_labelled_set's

    def _checked_frames(self) -> int:
        """The frames sampled per video when the set was prepared (the default when unknown); warns when its crops were
        cut with another crop policy than the model's."""
        from deepshield.data.manifest import ManifestError, read_info

        try:
            info = read_info(self.dataset_dir)
        except (ManifestError, ValueError) as exc:
            self.warn(f"{self.dataset_dir}: no readable dataset.json ({exc}); its crop policy cannot be checked")
            return DEFAULT_VIDEO_FRAMES
        if info.crop_policy != self.policy:
            message = (
                f"the dataset's crops were cut with crop policy {info.crop_policy.model_dump()} but the model expects "
                f"{self.policy.model_dump()}: scores will not match what the model gives on raw media; prepare "
                f"its sources into another folder with --crop-size {self.policy.size} --crop-scale {self.policy.scale:g}"
                f"{' --align' if self.policy.align else ''}, or give the raw media"
            )
            self.warn(message)
            self.notes.append(message)
        return info.frames

    def crop(self, files: list[FileRecord], progress: bool = True) -> Iterator[CroppedFile]:
        import cv2
        from tqdm import tqdm

        from deepshield.data.extract import NO_FACE
        from deepshield.data.layout import SYNTH_DIR, DatasetLayout
        from deepshield.data.manifest import ManifestError, left_out_as_copy, load_crop, read_errors, read_manifest
        from deepshield.data.records import read_outcome

        dataset_dir = self.dataset_dir
        layout = DatasetLayout(dataset_dir)
        records = read_manifest(dataset_dir)
        if self.split not in (None, "all"):
            records = [r for r in records if r.split == self.split]
            if not records:  # an empty report and exit 0 (calibrate refused the same)
                splits = sorted({r.split for r in read_manifest(dataset_dir)})
                raise DeepShieldError(
                    f"{dataset_dir} has no crops in its {self.split} split (its splits: {', '.join(splits) or 'none'})"
                )
            self.notes.append(
                f"split {self.split} only ({len(records)} crops); files without a face have no split and are not listed"
            )
        frames = self._checked_frames()
        size = self.policy.size
        # A fake that `dataset balance --synth-fakes` made from a real face keeps the real's source file: it is
        # a fake file of its own (grouped with the real, the file was labelled by its first crop: real).
        by_file: dict[tuple[str, bool], list] = {}
        for crop in records:
            by_file.setdefault((crop.source_file, crop.crop_path.startswith(f"{SYNTH_DIR}/")), []).append(crop)
        # A split of one label (a small dataset's test split) scored every crop before the fit stopped on it.
        # `dataset balance` makes fakes in the train split alone: of a val or test split it was no way out.
        refuse_one_class(
            self.needs_both_classes,
            {crop.label for crop in records},
            len(by_file),
            f"{dataset_dir}" + (f" (split {self.split})" if self.split not in (None, "all") else ""),
            "another --split, or " + one_label_split_remedy("{other}")
            if self.split in ("val", "test")
            else "another --split, or {other} files added to the dataset: prepare with them, or dataset balance",
        )
        resized = 0
        for (source_file, synthesised), members in tqdm(
            list(by_file.items()), unit="file", file=sys.stderr, disable=None if progress else True, desc="faces"
        ):
            first = members[0]
            # The file's own record says its kind and the frames sampled (a short video has fewer than the
            # dataset's frames, an animated GIF is a video): the video rule counts a track as scan does.
            outcome = read_outcome(layout, str(Path(first.crop_path).parent.relative_to("crops")))
            is_video = outcome.kind == "video" if outcome else Path(source_file).suffix.lower() in VIDEO_SUFFIXES
            sampled = outcome.frame_indices if outcome else ()
            record = FileRecord(
                len(files),
                f"{source_file} (self-blended by dataset balance)" if synthesised else source_file,
                int(first.is_fake),
                first.source,
                first.method,
                first.group,
                "crops",
                (outcome.frames_sampled if outcome and outcome.frames_sampled else frames) if is_video else 1,
            )
            files.append(record)
            try:
                crops = [load_crop(m, dataset_dir) for m in members]
            except ManifestError as exc:
                record.error = str(exc)
                continue
            if any(c.shape[:2] != (size, size) for c in crops):
                resized += 1
                crops = [
                    c if c.shape[:2] == (size, size) else cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
                    for c in crops
                ]
            yield CroppedFile(record, 0, self._rows(record, members, crops, sampled), np.stack(crops))
        if resized:
            self.warn(f"crops of {resized} files were not {size} px and were resized to the model's input size")
        if self.split in (None, "all"):
            # A file is listed once: errors.csv also names entries left out as copies ("listed twice", "already
            # in the dataset"), whose file has crops or an earlier row, often under another name; read as
            # files, they were counted twice, or as unreadable.
            listed = {source_file for source_file, _ in by_file}
            copies = 0
            for error in read_errors(dataset_dir):
                if left_out_as_copy(error.reason):
                    copies += 1
                    continue
                if error.label not in ("real", "fake") or error.source_file in listed:
                    continue
                listed.add(error.source_file)
                is_video = Path(error.source_file).suffix.lower() in VIDEO_SUFFIXES
                record = FileRecord(
                    len(files),
                    error.source_file,
                    int(error.label == "fake"),
                    error.source,
                    error.method,
                    error.group,
                    "crops",
                    frames if is_video else 1,
                )
                if error.reason != NO_FACE:
                    record.error = error.reason
                files.append(record)
            if copies:
                self.notes.append(
                    f"{copies} copies left out: errors.csv lists them as copies of files the dataset holds"
                )

    @staticmethod
    def _rows(
        record: FileRecord, members: list, crops: list[np.ndarray], sampled: tuple[int, ...] = ()
    ) -> list[FaceRow]:
        """The manifest's faces linked into tracks by box overlap and look, frame by frame, as on raw media: over
        every frame sampled (`sampled`, from the file's record), those without a face too, so that a face
        gone for more samples than the tracker bridges starts another track, as it does on raw media
        (over the frames with faces alone, it stayed one track)."""
        frame_indices = sorted({*sampled, *(m.frame_index for m in members)})
        position_of = {index: pos for pos, index in enumerate(frame_indices)}
        boxes_per_frame: list[list[Box]] = [[] for _ in frame_indices]
        looks_per_frame: list[list[np.ndarray]] = [[] for _ in frame_indices]
        slots: list[tuple[int, int]] = []
        for m, crop in zip(members, crops):
            pos = position_of[m.frame_index]
            slots.append((pos, len(boxes_per_frame[pos])))
            boxes_per_frame[pos].append(Box(*m.box))
            looks_per_frame[pos].append(face_look(crop))
        tracks = associate(boxes_per_frame, looks_per_frame)
        track_of = {member: track.track_id for track in tracks for member in track.members}
        return [
            FaceRow(
                0,
                record.file_id,
                slot[0],
                m.frame_index,
                m.face_index,
                track_of[slot],
                float(m.detection_score),
                *map(float, m.box),
            )
            for m, slot in zip(members, slots)
        ]


# ----------------------------------------------------------------------------------------- both


def list_items(
    datasets: Sequence[Path], fmt: str = "auto", ffpp_compressions: Sequence[str] | None = None
) -> tuple[list[SourceItem], list[SourceProblem]]:
    """The labelled files of the sets, as prepare reads them: a file reached twice (two sets naming it,
    a set given twice) is scored once, the other a problem (it was scored twice, and the bootstrap took
    the copies for independent files)."""
    items, problems, _ = collect_items(datasets, fmt, ffpp_compressions)
    return items, problems


@dataclass
class LabelledSet:
    """A labelled set opened for scoring: its files (their kind, frame count and errors are known once
    `cropped` is consumed) and the stream of their faces. Raw media and prepared datasets alike, under one
    crop policy."""

    files: list[FileRecord]
    cropped: Iterator[CroppedFile]
    conditions: list[str]
    mode: str  # "media" or "crops"
    problems: list[tuple[str, str]]
    notes: list[str]


SPLIT_NEEDS_PREPARED = "--split applies to prepared datasets (manifest.csv) only; raw sources have no split"


def refuse_one_class(needs: str | None, labels: set[str], files: int, where: str, remedy: str) -> None:
    """What `needs` both classes (e.g. "calibrate") refused on files of one label, before any is read, saying
    how to add the other (`remedy`, with {label} and {other} filled in)."""
    if needs and len(labels) == 1:
        (label,) = labels
        other = FAKE if label == REAL else REAL
        raise DeepShieldError(
            f"{needs} needs real and fake files: all {files} found in {where} are {label}: give it {other} ones "
            f"too ({remedy.format(label=label, other=other)})"
        )


def open_labelled_set(
    datasets: Sequence[Path],
    policy: CropPolicy,
    *,
    fmt: str = "auto",
    frames: int = DEFAULT_VIDEO_FRAMES,
    perturbations: Sequence[Perturbation] = (),
    min_face_size: int = 20,
    split: str | None = None,
    seed: int = 0,
    ffpp_compressions: Sequence[str] | None = None,
    progress: bool = True,
    warn: Warn = _warn_stderr,
    engine: Engine | None = None,
    base_dir: str | None = None,
    journal_dir: Path | None = None,
    needs_both_classes: str | None = None,
) -> LabelledSet:
    """Raw sources (any number) or one prepared dataset folder. DeepShieldError on bad input. Raw media
    are cropped where `engine` runs (default: in this process; `base_dir`: see CropJob), their faces kept
    in `journal_dir` as they come when given (see crop_media); a prepared dataset's crops are read here.
    `needs_both_classes` (what needs them, e.g. "calibrate"): media (or a prepared split) of one label only are
    refused before any is cropped or read, where the fit that needs both would fail only after them all."""
    datasets = [Path(d) for d in datasets]
    if not datasets:
        raise DeepShieldError("no dataset given")
    files: list[FileRecord] = []
    prepared = [d for d in datasets if is_prepared_dataset(d)]
    if prepared:
        if len(datasets) > 1:
            raise DeepShieldError(
                "a prepared dataset folder (with manifest.csv) must be evaluated on its own, not with other datasets"
            )
        if perturbations:
            raise DeepShieldError(
                f"{prepared[0]} is a prepared dataset: its crops were cut from the original frames, so perturbations of the "
                "full frame cannot be applied; evaluate the raw dataset it was prepared from to get the perturbation table"
            )
        source = PreparedCrops(prepared[0], policy, split, warn, needs_both_classes=needs_both_classes)
        return LabelledSet(files, source.crop(files, progress), [CLEAN], "crops", [], source.notes)
    if split not in (None, "all"):
        raise DeepShieldError(SPLIT_NEEDS_PREPARED)
    items, problems, sources = collect_items(datasets, fmt, ffpp_compressions)
    notes: list[str] = []
    ffpp_roots = [Path(source.path) for source in sources if source.format == "ffpp"]
    if repeated := ffpp_levels_of_one_video(ffpp_roots, ffpp_compressions):
        # Read by default at every level, the c23 and c40 copies of one video counted as two files, and the
        # bootstrap, which resamples files, took them for independent ones: counts inflated, intervals too narrow.
        levels = sorted({level for video_levels in repeated.values() for level in video_levels})
        notes.append(
            f"{numbered(len(repeated), 'FaceForensics++ video')} {plural(len(repeated), 'was', 'were')} read at several "
            f"compression levels ({', '.join(levels)}): "
            "each copy counts as a file of its own, so the counts are inflated and the intervals, which take the "
            f"copies for independent files, too narrow; read one level with --ffpp-compression {levels[0]}"
        )
        warn(notes[-1])
    for problem in problems:
        log.info("not evaluated: %s: %s", problem.path, problem.reason)
    if problems:
        shown = "; ".join(f"{problem.path}: {problem.reason}" for problem in problems[:3])
        more = f"; {len(problems) - 3} more" if len(problems) > 3 else ""
        # Said with their reasons: a CSV that could not be read at all was "no usable label", its reason hidden.
        # Not "(listed in the report)": calibrate, compare and training write none, nor does a run stopped below.
        counted = numbered(len(problems), "entry", "entries")
        warn(f"{counted} could not be used and {plural(len(problems), 'is', 'are')} left out: {shown}{more}")
    if not items:
        raise DeepShieldError(f"no labelled media found in {', '.join(map(str, datasets))}")
    refuse_one_class(
        needs_both_classes,
        {item.label for item in items},
        len(items),
        ", ".join(map(str, datasets)),
        "a {other}/ folder beside {label}/, or CSV rows labelled {other}",
    )
    job = CropJob(policy, min_face_size, frames, tuple(perturbations), seed, base_dir)
    return LabelledSet(
        files,
        crop_media(items, files, job, engine or LocalEngine(), progress, journal_dir),
        job.conditions,
        "media",
        [(str(p.path), p.reason) for p in problems],
        notes,
    )


# A prepared dataset keeps one crop a face, cut as crop_face cuts it: its pictures are not at hand.
PREPARED_SYNTHETIC_CAUTION = (
    "a prepared dataset's faces are read as they were cropped: the synthetic-face score reads a padded face "
    "padded there, where scan and the API read it cut within its picture, so its synthetic figures on such "
    "faces are not the product's (score the raw media for those)"
)


def score_datasets(
    datasets: Sequence[Path],
    classifier: OnnxClassifier,
    *,
    rule: VideoRule = VideoRule(),
    examples: int = 8,
    **options,
) -> ScoredSet:
    """Every face of a labelled set scored once (options: those of `open_labelled_set`)."""
    labelled = open_labelled_set(datasets, classifier.card.crop_policy, **options)
    faces, gallery = score_cropped(labelled.cropped, classifier, rule, examples)
    synthetic = classifier.card.synthetic
    notes = labelled.notes
    if synthetic is not None and labelled.mode == "crops":
        options.get("warn", _warn_stderr)(PREPARED_SYNTHETIC_CAUTION)
        notes = [*notes, PREPARED_SYNTHETIC_CAUTION]
    return ScoredSet(
        labelled.files,
        labelled.conditions,
        faces,
        classifier.card.calibration.temperature,
        labelled.mode,
        gallery,
        labelled.problems,
        notes,
        synthetic_temperature=None if synthetic is None else synthetic.calibration.temperature,
        offset=classifier.card.calibration.offset,
        synthetic_offset=0.0 if synthetic is None else synthetic.calibration.offset,
    )


def _stable(text: str) -> int:
    """A number for a name, the same in every run and process (str hashes are salted per process)."""
    return zlib.crc32(text.encode("utf-8", "surrogateescape"))


def describe_counts(scored: ScoredSet) -> str:
    scored_ids = set(scored.faces["file_id"][scored.condition_mask(CLEAN)].tolist()) if scored.face_count else set()
    missing = sum(1 for f in scored.files if f.error == MISSING_FILE)
    unreadable = sum(1 for f in scored.files if f.error and f.error != MISSING_FILE)
    no_face = sum(1 for f in scored.files if not f.error and f.file_id not in scored_ids)
    return f"{len(scored.files)} files: {len(scored_ids)} with faces, {no_face} without a face, {missing} missing (listed but not on disk), {unreadable} not readable"
