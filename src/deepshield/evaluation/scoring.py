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

import heapq
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepshield.data.sources import MISSING_FILE, VIDEO_SUFFIXES, SourceItem, SourceProblem, read_source, root_keys
from deepshield.errors import DeepShieldError
from deepshield.evaluation.perturb import Perturbation
from deepshield.faces.crop import crop_face
from deepshield.faces.detector import Box, FaceDetector
from deepshield.inference.analysis import VideoRule
from deepshield.inference.heatmap import cam_to_heatmap
from deepshield.inference.runtime import OnnxClassifier
from deepshield.inference.tracking import associate

log = logging.getLogger(__name__)

CLEAN = "clean"
FACE_COLUMNS = ("condition", "file_id", "frame_pos", "frame_index", "face_index", "track_id", "detection_score", "x0", "y0", "x1", "y1", "logit")
Warn = Callable[[str], None]


def _warn_stderr(message: str) -> None:
    print(f"deepshield: warning: {message}", file=sys.stderr)


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

    @property
    def face_count(self) -> int:
        return int(self.faces["logit"].size)

    def probabilities(self, temperature: float | None = None) -> np.ndarray:
        t = self.temperature if temperature is None else temperature
        return 1.0 / (1.0 + np.exp(-self.faces["logit"].astype(np.float64) / t))

    def condition_mask(self, condition: str) -> np.ndarray:
        return self.faces["condition"] == self.conditions.index(condition)

    def labels_of_faces(self) -> np.ndarray:
        labels = np.array([f.label for f in self.files], dtype=np.int64)
        return labels[self.faces["file_id"]] if self.face_count else np.zeros(0, np.int64)

    def file_scores(self, condition: str = CLEAN, rule: VideoRule = VideoRule(), temperature: float | None = None) -> np.ndarray:
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
        for start, stop in zip(bounds[:-1], bounds[1:]):
            file_id = int(file_ids[start])
            scores[file_id] = aggregate_tracks(tracks[start:stop], probabilities[start:stop], self.files[file_id].frames, rule)
        return scores


def aggregate_tracks(track_ids: np.ndarray, probabilities: np.ndarray, frames: int, rule: VideoRule) -> float:
    """A file's score from its faces' track ids and probabilities (see ScoredSet.file_scores)."""
    per_track: dict[int, list[float]] = defaultdict(list)
    for track, probability in zip(track_ids.tolist(), probabilities.tolist()):
        per_track[track].append(probability)
    longest = max(len(values) for values in per_track.values())
    return max(rule.track_score(values) for values in per_track.values() if rule.not_counted_reason(len(values), frames, longest) is None)


class _Rows:
    def __init__(self) -> None:
        self.columns: dict[str, list] = {name: [] for name in FACE_COLUMNS}

    def add(self, **values) -> None:
        for name in FACE_COLUMNS:
            self.columns[name].append(values[name])

    def arrays(self) -> dict[str, np.ndarray]:
        dtypes = {"logit": np.float32, "detection_score": np.float32, "x0": np.float32, "y0": np.float32, "x1": np.float32, "y1": np.float32}
        return {name: np.asarray(values, dtype=dtypes.get(name, np.int64)) for name, values in self.columns.items()}


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


def _frames_of(path: Path, frames: int) -> tuple[str, list[tuple[int, np.ndarray]], list[float]]:
    """The file's kind, its (frame index, pixels) and the frames' timestamps in seconds."""
    from deepshield.media.images import load_image
    from deepshield.media.sniff import MediaKind, sniff_path
    from deepshield.media.video import sample_frames

    if sniff_path(path) is MediaKind.VIDEO:
        _, sampled = sample_frames(path, frames)
        return "video", [(frame.index, frame.image) for frame in sampled], [frame.timestamp_s for frame in sampled]
    return "image", [(0, load_image(path))], [0.0]


class MediaScorer:
    """Scores raw images and videos through detection, the crop policy and the classifier."""

    def __init__(
        self,
        classifier: OnnxClassifier,
        face_detector: FaceDetector,
        frames: int = 32,
        perturbations: Sequence[Perturbation] = (),
        rule: VideoRule = VideoRule(),
        examples: int = 8,
        seed: int = 0,
    ) -> None:
        self.classifier = classifier
        self.detector = face_detector
        self.frames = frames
        self.perturbations = list(perturbations)
        self.rule = rule
        self.examples = examples
        self.seed = seed

    @property
    def conditions(self) -> list[str]:
        return [CLEAN, *(p.name for p in self.perturbations)]

    def score(self, items: Sequence[SourceItem], problems: Sequence[SourceProblem] = (), progress: bool = True) -> ScoredSet:
        from tqdm import tqdm

        files: list[FileRecord] = []
        rows = _Rows()
        gallery = _Gallery(self.examples)
        for item in tqdm(items, unit="file", file=sys.stderr, disable=None if progress else True, desc="scoring"):
            record = FileRecord(len(files), str(item.path), int(item.label == "fake"), item.source, item.method, item.group)
            files.append(record)
            self._score_file(record, item.path, rows, gallery)
        return ScoredSet(
            files=files,
            conditions=self.conditions,
            faces=rows.arrays(),
            temperature=self.classifier.card.calibration.temperature,
            mode="media",
            examples=gallery.examples(),
            problems=[(str(p.path), p.reason) for p in problems],
        )

    def _score_file(self, record: FileRecord, path: Path, rows: _Rows, gallery: _Gallery) -> None:
        try:
            if not path.is_file():
                raise DeepShieldError(MISSING_FILE)
            record.kind, frames, timestamps = _frames_of(path, self.frames)
        except DeepShieldError as exc:
            record.error = str(exc)
            return
        except Exception as exc:  # noqa: BLE001 - one bad file must not end an evaluation
            record.error = f"{type(exc).__name__}: {exc}"
            return
        record.frames = len(frames)
        conditions: list[Perturbation | None] = [None, *self.perturbations]
        for condition, perturbation in enumerate(conditions):
            images = [
                image if perturbation is None else perturbation.apply(image, np.random.default_rng([self.seed, record.file_id, position, condition]))
                for position, (_, image) in enumerate(frames)
            ]
            try:
                self._score_frames(record, condition, [index for index, _ in frames], images, rows, gallery if perturbation is None else None, timestamps)
            except Exception as exc:  # noqa: BLE001
                if perturbation is None:
                    record.error = f"{type(exc).__name__}: {exc}"
                    return
                log.warning("%s under %s: %s", path, perturbation.name, exc)

    def _score_frames(
        self, record: FileRecord, condition: int, indices: list[int], images: list[np.ndarray], rows: _Rows, gallery: _Gallery | None, timestamps: list[float]
    ) -> None:
        policy = self.classifier.card.crop_policy
        faces_per_frame = [self.detector.detect(image) for image in images]
        crops = [crop_face(image, face.box, face.keypoints, policy).pixels for image, faces in zip(images, faces_per_frame) for face in faces]
        if not crops:
            return
        scores = self.classifier.score(np.stack(crops))
        tracks = associate([[face.box for face in faces] for faces in faces_per_frame])
        track_of = {member: track.track_id for track in tracks for member in track.members}
        flat = 0
        start = len(rows.columns["logit"])
        for position, faces in enumerate(faces_per_frame):
            for face_position, face in enumerate(faces):
                rows.add(
                    condition=condition,
                    file_id=record.file_id,
                    frame_pos=position,
                    frame_index=indices[position],
                    face_index=face_position,
                    track_id=track_of[(position, face_position)],
                    detection_score=face.score,
                    x0=face.box.x0,
                    y0=face.box.y0,
                    x1=face.box.x1,
                    y1=face.box.y1,
                    logit=float(scores.logits[flat]),
                )
                flat += 1
        if gallery is not None:
            timestamp_of = dict(zip(indices, timestamps))
            _offer(gallery, record, rows, start, scores.logits, scores.probabilities, scores.cams, crops, self.rule, self.classifier, timestamp_of)


def _offer(
    gallery: _Gallery,
    record: FileRecord,
    rows: _Rows,
    start: int,
    logits,
    probabilities,
    cams,
    crops,
    rule: VideoRule,
    classifier: OnnxClassifier,
    timestamp_of: dict[int, float] | None = None,
) -> None:
    tracks = np.asarray(rows.columns["track_id"][start:])
    score = aggregate_tracks(tracks, np.asarray(probabilities, np.float64), record.frames, rule)
    best = int(np.argmax(probabilities))
    card = classifier.card

    def heatmap(position: int) -> np.ndarray:
        return cam_to_heatmap(cams[position], crops[position].shape[0], card.calibration.temperature)

    def track_examples() -> list[TrackExample]:
        frames = np.asarray(rows.columns["frame_index"][start:])
        members = {int(t): np.flatnonzero(tracks == t) for t in np.unique(tracks)}
        longest = max(len(m) for m in members.values())
        out = []
        for track_id, positions in members.items():
            peak = int(positions[np.argmax(np.asarray(probabilities)[positions])])
            first, last = int(frames[positions].min()), int(frames[positions].max())
            out.append(
                TrackExample(
                    track_id=track_id,
                    score=rule.track_score([float(probabilities[p]) for p in positions]),
                    frames_seen=len(positions),
                    first_frame=first,
                    last_frame=last,
                    first_s=None if timestamp_of is None else timestamp_of[first],
                    last_s=None if timestamp_of is None else timestamp_of[last],
                    peak_frame=int(frames[peak]),
                    not_counted_reason=rule.not_counted_reason(len(positions), record.frames, longest),
                    crop=crops[peak],
                    heatmap=heatmap(peak),
                )
            )
        return out

    def make() -> Example:
        return Example(
            file_id=record.file_id,
            score=score,
            probability=float(probabilities[best]),
            frame_index=int(rows.columns["frame_index"][start + best]),
            face_index=int(rows.columns["face_index"][start + best]),
            crop=crops[best],
            heatmap=heatmap(best),
            tracks=track_examples(),
        )

    gallery.offer(record.label, score, make)


# ------------------------------------------------------------------------------------ prepared set


def is_prepared_dataset(path: Path) -> bool:
    from deepshield.data.layout import DatasetLayout

    return Path(path).is_dir() and DatasetLayout(path).manifest.is_file()


def score_prepared(
    dataset_dir: Path,
    classifier: OnnxClassifier,
    split: str | None = None,
    rule: VideoRule = VideoRule(),
    examples: int = 8,
    progress: bool = True,
    warn: Warn = _warn_stderr,
) -> ScoredSet:
    """Score the crops of a prepared dataset (manifest.csv) with the classifier, file by file."""
    import cv2
    from tqdm import tqdm

    from deepshield.data.extract import NO_FACE
    from deepshield.data.manifest import ManifestError, load_crop, read_errors, read_info, read_manifest

    records = read_manifest(dataset_dir)
    notes = []
    if split not in (None, "all"):
        records = [r for r in records if r.split == split]
        notes.append(f"split {split} only ({len(records)} crops); files without a face have no split and are not listed")
    try:
        info = read_info(dataset_dir)
        policy, frames = info.crop_policy, info.frames
    except (ManifestError, ValueError) as exc:
        warn(f"{dataset_dir}: no readable dataset.json ({exc}); its crop policy cannot be checked")
        policy, frames = None, 32
    card = classifier.card
    if policy is not None and policy != card.crop_policy:
        message = (
            f"the dataset's crops were cut with crop policy {policy.model_dump()} but the model expects "
            f"{card.crop_policy.model_dump()}: scores will not match what the model gives on raw media"
        )
        warn(message)
        notes.append(message)
    size = card.input_size
    by_file: dict[str, list] = {}
    for record in records:
        by_file.setdefault(record.source_file, []).append(record)
    files: list[FileRecord] = []
    rows = _Rows()
    gallery = _Gallery(examples)
    resized = 0
    for source_file, members in tqdm(list(by_file.items()), unit="file", file=sys.stderr, disable=None if progress else True, desc="scoring"):
        first = members[0]
        is_video = Path(source_file).suffix.lower() in VIDEO_SUFFIXES
        record = FileRecord(len(files), source_file, int(first.is_fake), first.source, first.method, first.group, "crops", frames if is_video else 1)
        files.append(record)
        try:
            crops = [load_crop(m, dataset_dir) for m in members]
        except ManifestError as exc:
            record.error = str(exc)
            continue
        if any(c.shape[:2] != (size, size) for c in crops):
            resized += 1
            crops = [c if c.shape[:2] == (size, size) else cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops]
        scores = classifier.score(np.stack(crops))
        frame_indices = sorted({m.frame_index for m in members})
        position_of = {index: pos for pos, index in enumerate(frame_indices)}
        boxes_per_frame: list[list[Box]] = [[] for _ in frame_indices]
        slot: list[tuple[int, int]] = []
        for m in members:
            pos = position_of[m.frame_index]
            slot.append((pos, len(boxes_per_frame[pos])))
            boxes_per_frame[pos].append(Box(*m.box))
        track_of = {member: track.track_id for track in associate(boxes_per_frame) for member in track.members}
        start = len(rows.columns["logit"])
        for flat, m in enumerate(members):
            rows.add(
                condition=0,
                file_id=record.file_id,
                frame_pos=slot[flat][0],
                frame_index=m.frame_index,
                face_index=m.face_index,
                track_id=track_of[slot[flat]],
                detection_score=m.detection_score,
                x0=m.box[0],
                y0=m.box[1],
                x1=m.box[2],
                y1=m.box[3],
                logit=float(scores.logits[flat]),
            )
        _offer(gallery, record, rows, start, scores.logits, scores.probabilities, scores.cams, crops, rule, classifier)
    if resized:
        warn(f"crops of {resized} files were not {size} px and were resized to the model's input size")
    if split in (None, "all"):
        for error in read_errors(dataset_dir):
            if error.label not in ("real", "fake"):
                continue
            is_video = Path(error.source_file).suffix.lower() in VIDEO_SUFFIXES
            record = FileRecord(len(files), error.source_file, int(error.label == "fake"), error.source, error.method, error.group, "crops", frames if is_video else 1)
            if error.reason != NO_FACE:
                record.error = error.reason
            files.append(record)
    return ScoredSet(
        files=files,
        conditions=[CLEAN],
        faces=rows.arrays(),
        temperature=card.calibration.temperature,
        mode="crops",
        examples=gallery.examples(),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------- both


def list_items(datasets: Sequence[Path], fmt: str = "auto", ffpp_compressions: Sequence[str] | None = None) -> tuple[list[SourceItem], list[SourceProblem]]:
    items: list[SourceItem] = []
    problems: list[SourceProblem] = []
    for path, key in zip(datasets, root_keys(list(datasets))):
        for entry in read_source(path, fmt, key, ffpp_compressions):
            (items if isinstance(entry, SourceItem) else problems).append(entry)
    return items, problems


def score_datasets(
    datasets: Sequence[Path],
    classifier: OnnxClassifier,
    *,
    fmt: str = "auto",
    frames: int = 32,
    perturbations: Sequence[Perturbation] = (),
    rule: VideoRule = VideoRule(),
    min_face_size: int = 20,
    split: str | None = None,
    examples: int = 8,
    seed: int = 0,
    ffpp_compressions: Sequence[str] | None = None,
    progress: bool = True,
    warn: Warn = _warn_stderr,
) -> ScoredSet:
    """Raw sources (any number) or one prepared dataset folder, scored. DeepShieldError on bad input."""
    datasets = [Path(d) for d in datasets]
    if not datasets:
        raise DeepShieldError("no dataset given")
    prepared = [d for d in datasets if is_prepared_dataset(d)]
    if prepared:
        if len(datasets) > 1:
            raise DeepShieldError("a prepared dataset folder (with manifest.csv) must be evaluated on its own, not with other datasets")
        if perturbations:
            raise DeepShieldError(
                f"{prepared[0]} is a prepared dataset: its crops were cut from the original frames, so perturbations of the "
                "full frame cannot be applied; evaluate the raw dataset it was prepared from to get the perturbation table"
            )
        return score_prepared(prepared[0], classifier, split=split, rule=rule, examples=examples, progress=progress, warn=warn)
    if split not in (None, "all"):
        raise DeepShieldError("--split applies to prepared datasets (manifest.csv) only; raw sources have no split")
    items, problems = list_items(datasets, fmt, ffpp_compressions)
    for problem in problems:
        log.info("not evaluated: %s: %s", problem.path, problem.reason)
    if problems:
        warn(f"{len(problems)} entries have no usable label and are left out (listed in the report)")
    if not items:
        raise DeepShieldError(f"no labelled media found in {', '.join(map(str, datasets))}")
    scorer = MediaScorer(classifier, FaceDetector(min_face_size=min_face_size), frames, perturbations, rule, examples, seed)
    return scorer.score(items, problems, progress=progress)


def describe_counts(scored: ScoredSet) -> str:
    scored_ids = set(scored.faces["file_id"][scored.condition_mask(CLEAN)].tolist()) if scored.face_count else set()
    missing = sum(1 for f in scored.files if f.error == MISSING_FILE)
    unreadable = sum(1 for f in scored.files if f.error and f.error != MISSING_FILE)
    no_face = sum(1 for f in scored.files if not f.error and f.file_id not in scored_ids)
    return f"{len(scored.files)} files: {len(scored_ids)} with faces, {no_face} without a face, {missing} missing (listed but not on disk), {unreadable} not readable"

