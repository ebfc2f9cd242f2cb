"""Face extraction: one source file in, lossless face crops and a done record out; an engine
(a local process pool, or Ray) over files.

Each file's crops are written under temporary names and renamed into place, then its done record
is written; a killed run therefore leaves, per file, either a complete result or one that the next
run redoes (after wiping that file's crop folder). Outcomes depend only on the file and the
settings, so the dataset is the same whatever the worker count.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepshield.data.layout import TEMP_SUFFIX, DatasetLayout, atomic_write_bytes
from deepshield.data.records import FaceEntry, FileOutcome, FileStamp, done_otherwise, load_valid_record, write_record
from deepshield.data.sources import MISSING_FILE, SourceItem
from deepshield.engines import Engine, FileJob
from deepshield.engines.local import LocalEngine
from deepshield.errors import DeepShieldError, storage_failed
from deepshield.faces.crop import CropPolicy, crop_face
from deepshield.faces.detector import Face, FaceDetector
from deepshield.media.files import check_media_file
from deepshield.media.frames import read_frames
from deepshield.media.images import encode_png
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.plural import numbered, plural

log = logging.getLogger(__name__)
NO_FACE = "no face found"
FACE_MODES = ("all", "largest")


@dataclass(frozen=True)
class ExtractSettings:
    frames: int = DEFAULT_VIDEO_FRAMES  # frames sampled uniformly per video
    faces: str = "all"  # "all" faces per frame, or only the "largest"
    policy: CropPolicy = field(default_factory=CropPolicy)
    min_face_size: int = 20

    def __post_init__(self) -> None:
        if self.faces not in FACE_MODES:
            raise ValueError(f"faces must be one of {FACE_MODES}, got {self.faces!r}")
        if self.frames < 1:
            raise ValueError("frames must be at least 1")

    def fingerprint(self) -> str:
        """Changes whenever something that shapes the crops changes: a setting, or the code of the
        detector or of the crop function. Done records with another fingerprint are redone."""
        text = json.dumps(
            {
                "frames": self.frames,
                "faces": self.faces,
                "policy": self.policy.model_dump(),
                "min_face_size": self.min_face_size,
                "code": code_fingerprint(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """Hash of the modules that decide what a crop looks like (face detection, the crop policy, which
    frames of a video or an animation are read, and how an image's pixels are: its colour profile, its
    orientation, its transparency): a dataset is never resumed with crops made by another version of them."""
    import deepshield.faces.crop as crop_module
    import deepshield.faces.detector as detector_module
    import deepshield.media.animation as animation_module
    import deepshield.media.images as images_module
    import deepshield.media.video as video_module

    digest = hashlib.sha256()
    for module in (crop_module, detector_module, video_module, animation_module, images_module):
        digest.update(Path(inspect.getfile(module)).read_bytes())
    return digest.hexdigest()[:16]


def _select(faces: list[Face], mode: str) -> list[Face]:
    if mode == "largest" and faces:
        return [max(faces, key=lambda f: f.box.area)]
    return faces


def extract_item(
    item: SourceItem, layout: DatasetLayout, settings: ExtractSettings, detector: FaceDetector
) -> FileOutcome:
    """Extract one file's faces and write its crops and done record. Never raises for a bad file."""
    source_file = str(item.path)
    try:
        check_media_file(item.path)  # what is there instead of a file, named: a broken link, a loop, a FIFO
        stamp = FileStamp.of(item.path)
    except DeepShieldError as exc:  # no record: retried next run
        reason = MISSING_FILE if not os.path.lexists(item.path) else str(exc)
        return FileOutcome(item.key, source_file, ok=False, reason=reason)
    except OSError as exc:
        return FileOutcome(item.key, source_file, ok=False, reason=f"cannot read file: {exc.strerror or exc}")
    crop_dir = layout.crop_dir(item.key)
    shutil.rmtree(crop_dir, ignore_errors=True)  # leftovers of an interrupted or outdated run
    try:
        kind, frames, _ = read_frames(item.path, settings.frames)
    except DeepShieldError as exc:  # unsupported, corrupt, too large: final for this file as it is
        outcome = FileOutcome(item.key, source_file, ok=False, reason=str(exc))
        write_record(layout, outcome, stamp, settings.fingerprint())
        return outcome
    except Exception as exc:  # noqa: BLE001 - unexpected (I/O, memory): reported, retried next run
        return FileOutcome(item.key, source_file, ok=False, reason=f"{type(exc).__name__}: {exc}")
    entries: list[FaceEntry] = []
    try:
        found = detector.detect_frames([image for _, image in frames], turns=True)
        for (frame_index, image), faces in zip(frames, found):
            for face_index, face in enumerate(_select(faces, settings.faces)):
                crop = crop_face(image, face.box, face.keypoints, settings.policy, face.turns)
                points = face.keypoints @ crop.matrix[:, :2].T + crop.matrix[:, 2]
                relative = layout.crop_relpath(item.key, frame_index, face_index)
                atomic_write_bytes(layout.root / relative, encode_png(crop.pixels))
                entries.append(
                    FaceEntry(
                        crop_path=relative,
                        frame_index=frame_index,
                        face_index=face_index,
                        detection_score=round(face.score, 4),
                        box=tuple(round(float(v), 2) for v in (face.box.x0, face.box.y0, face.box.x1, face.box.y1)),  # type: ignore[arg-type]
                        landmarks=tuple((round(float(x), 2), round(float(y), 2)) for x, y in points),
                    )
                )
    except Exception as exc:
        if storage_failed(exc):  # no room for its crops: not this file's failure (call_job stops the run)
            raise
        return FileOutcome(item.key, source_file, ok=False, reason=f"{type(exc).__name__}: {exc}")
    outcome = FileOutcome(
        item.key,
        source_file,
        ok=bool(entries),
        reason="" if entries else NO_FACE,
        kind=kind,
        frames_sampled=len(frames),
        frame_indices=tuple(index for index, _ in frames),
        faces=tuple(entries),
    )
    write_record(layout, outcome, stamp, settings.fingerprint())
    return outcome


# ------------------------------------------------------------------------------------ engines


@dataclass(frozen=True)
class ExtractJob(FileJob):
    """extract_item as an engine job: a FaceDetector per worker process, crops and done records
    written by the workers into the dataset folder (`root`, absolute: on a cluster it must be on
    storage every node shares)."""

    root: str
    settings: ExtractSettings

    def worker_init(self) -> None:
        super().worker_init()  # its logging too: a worker's records were written bare, at WARNING whatever -v
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from the processes; threads inside each would only contend

    def setup(self) -> FaceDetector:
        return FaceDetector(min_face_size=self.settings.min_face_size)

    def run(self, detector: FaceDetector, item: SourceItem) -> FileOutcome:
        return extract_item(item, DatasetLayout(self.root), self.settings, detector)

    def fail(self, item: SourceItem, reason: str) -> FileOutcome:
        # no done record: the file is retried on the next run
        return FileOutcome(item.key, str(item.path), ok=False, reason=reason)


FileDoneHook = Callable[[FileOutcome], None]


def run_extraction(
    items: Sequence[SourceItem],
    layout: DatasetLayout,
    settings: ExtractSettings,
    workers: int = 1,
    progress: bool = True,
    on_file_done: FileDoneHook | None = None,
    engine: Engine | None = None,
) -> dict[str, FileOutcome]:
    """Outcomes of every item, by key. Files with a valid done record are not touched again.
    `engine`: where the files are extracted (default: the local engine with `workers` processes)."""
    fingerprint = settings.fingerprint()
    outcomes: dict[str, FileOutcome] = {}
    todo: list[SourceItem] = []
    for item in items:
        earlier = load_valid_record(layout, item.key, item.path, fingerprint) if item.path.exists() else None
        if earlier is not None:
            outcomes[item.key] = earlier
        else:
            todo.append(item)
    if redone := sum(done_otherwise(layout, item.key, fingerprint) for item in todo):
        # Said before the work: a dataset resumed after an upgrade (its image reading changed, say) was cropped
        # again whole, hours for a large one, as if new.
        log.warning(
            "%s done before %s cropped again: the settings, or the code that reads pixels or frames, finds "
            "or crops faces, changed since",
            numbered(redone, "file"),
            plural(redone, "is", "are"),
        )

    from tqdm import tqdm

    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        unit="file",
        file=sys.stderr,
        disable=None if progress else True,
        desc="prepare",
    )
    crops = sum(len(o.faces) for o in outcomes.values())

    def finished(outcome: FileOutcome) -> None:
        nonlocal crops
        outcomes[outcome.key] = outcome
        crops += len(outcome.faces)
        bar.update(1)
        bar.set_postfix(crops=crops, refresh=False)
        if on_file_done is not None:
            on_file_done(outcome)

    try:
        if not todo:
            return outcomes
        engine = engine or LocalEngine(workers)
        # As they finish (the progress bar moves): the dataset's order comes from `items`, not from here.
        for outcome in engine.map(ExtractJob(os.path.abspath(layout.root), settings), todo, ordered=False):
            finished(outcome)
    finally:
        bar.close()
    return outcomes


def sweep_temp_files(layout: DatasetLayout) -> int:
    """Delete temporary files left by killed runs (only call while no extraction is running)."""
    removed = 0
    for folder in (layout.crops, layout.records):
        if folder.is_dir():
            for path in folder.rglob(f"*{TEMP_SUFFIX}"):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
