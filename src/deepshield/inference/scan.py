"""Scan many files: one row per file, a failure recorded in its row and never fatal to the rest."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from deepshield.engines import FileJob
from deepshield.errors import DeepShieldError
from deepshield.inference.analysis import Detector
from deepshield.inference.results import ImageResult, VideoResult
from deepshield.inference.runtime import DEFAULT_BUNDLE, bundle_dir
from deepshield.inference.verdict import shown_probability
from deepshield.media.files import NAME_MAX_BYTES, file_sha256, files_under, name_within
from deepshield.media.provenance import TrustAnchors
from deepshield.media.suffixes import MEDIA_SUFFIXES
from deepshield.media.video import DEFAULT_VIDEO_FRAMES, WHOLE_VIDEO, VideoSpan


class ScanRow(BaseModel):
    path: str
    status: str  # "ok" or "error"
    kind: str | None = None  # "image" / "video"
    verdict: str | None = None  # "likely_manipulated" / "inconclusive" / "no_signs_found" / "no_face"
    probability: float | None = None  # the manipulation score
    synthetic_probability: float | None = None  # the synthetic-face score (a two-output model)
    verdict_driver: str | None = None  # "manipulation" / "synthetic": the score that set the verdict
    # Faces (image) or counted people (video): the tracks that take part in the verdict, as the page and --html
    # count them (a person and two stray one-frame tracks were 3 here beside "1 counted (3 seen)" there).
    faces: int | None = None
    cautions: str | None = None  # its faces' (counted people's) cautions, "; "-joined: what the table and CSV lacked
    reason: str | None = None  # its verdict's reason (a no_face one: where none was found, why faces go unfound)
    part: str | None = None  # "12:30 to 14:00" when only that part of a video was analysed
    declared_source: str | None = None  # the IPTC digital source type the file declares (metadata, not scored)
    declared_in: str | None = None  # where: content_credentials / ingredient (a file it was made from) / xmp (unsigned)
    credentials: str | None = None  # its Content Credentials' state: trusted / valid / invalid / unreadable
    sha256: str | None = None  # of the bytes scanned: names the file in a record, whatever its path becomes
    elapsed_ms: float | None = None
    error: str | None = None
    result: ImageResult | VideoResult | None = None

    def shown_score(self, probability: float, synthetic: bool = False) -> str:
        """One of the row's scores as tables and reports show it: to the places that keep it on its side of
        its band (its result's terms, ScoringTerms.shown_score), or as it is for an earlier row read back from
        an output file, which carries no result."""
        return (
            shown_probability(probability) if self.result is None else self.result.shown_score(probability, synthetic)
        )


def heatmap_name(stem: str, what: Literal["face", "track"], number: int, copy: int = 1) -> str:
    """The name of a scan's heatmap PNG (`scan --heatmaps`): `<file stem>_face<index>.png` or `_track<id>.png`,
    `-<copy>` before `.png` for the second and later files of one stem. Read from the end, no two files'
    names meet: `<stem>-2` as a stem's second copy was another file's own stem (a-2.jpg), whose heatmaps
    then went by a third name while a-2_face0.png showed another a.jpg's face. A stem too long for a file name
    beside that ending (255 bytes) is cut, and a digest of it whole added: the write failed and ended the scan."""
    ending = f"_{what}{number}{'' if copy == 1 else f'-{copy}'}.png"
    return name_within(stem, NAME_MAX_BYTES - len(ending)) + ending


_HEATMAP_NAME = re.compile(r".+_(?:face|track)\d+(?:-\d+)?\.png")


def _own_heatmap(path: Path, folder_key: str, heatmaps_key: str | None) -> bool:
    """Whether `path`, found in the scanned folder `folder_key`, is the scan's: anything in a heatmap folder
    inside the scanned one, or, where the heatmap folder is the scanned one or above it, a file in it named
    as heatmaps are (leaving out all it held, such a scan scanned nothing)."""
    if heatmaps_key is None:
        return False
    if heatmaps_key.startswith(folder_key + os.sep):
        return file_key(path).startswith(heatmaps_key + os.sep)
    return file_key(path.parent) == heatmaps_key and _HEATMAP_NAME.fullmatch(path.name) is not None


def collect_files(
    paths: Iterable[Path], recursive: bool, output: Path | None = None, named: Collection[str] = ()
) -> list[Path]:
    """Explicit paths are kept whatever their name (type is sniffed later); folders contribute their
    entries with a media suffix, sorted, so that a folder's notes or metadata are not errors. Entries
    that are not regular files (FIFOs, broken links, link loops) are kept too: each gets an error row
    saying what it is, rather than vanishing from the results. A folder's heatmaps the scan writes
    (`output`: _own_heatmap) are left out: a watched folder holding them would scan its heatmaps, their
    heatmaps' heatmaps, and on. A file found under several names is kept under the first, or under one among
    `named` (file_keys: the names a watch has rows of), so that a link made to a file scanned hides none of
    its changes from the watch."""
    heatmaps_key = None if output is None else file_key(output)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # A folder that cannot be listed is kept as an entry: its row says its files were left out (they
            # were, without a word; or the scan ended in a traceback).
            unreadable: list[Path] = []
            try:
                # Recursively through linked folders too (files_under): Path.glob("**/*") follows none.
                entries = list(
                    files_under(path, unreadable.append) if recursive else (p for p in path.iterdir() if not p.is_dir())
                )
            except OSError:
                entries, unreadable = [], [path]
            files.extend(unreadable)
            files.extend(
                sorted(
                    p
                    for p in entries
                    if p.suffix.lower() in MEDIA_SUFFIXES
                    and not p.name.startswith(".")
                    and not _own_heatmap(p, file_key(path), heatmaps_key)
                )
            )
        else:
            files.append(path)
    # A file named twice (in/a.jpg, ./in/a.jpg, /home/me/in/a.jpg; or in a folder also named; or through a
    # link to it, or a hard link) is scanned once, its row under the first name given.
    # Each file stat'ed once: a watch lists its folders at every look.
    same = [_same_file(path) for path in files]
    firsts = dict(zip(reversed(same), reversed(files)))
    for one, path in zip(same, files) if named else ():
        if file_key(path) in named:
            firsts[one] = path
    return [path for one, path in zip(same, files) if firsts[one] is path]


def not_done(files: list[Path], done: Collection[str]) -> list[Path]:
    """`files` but those that have rows (`done`: their file_keys, as --resume reads them or a watch took them):
    by name, or as another name (a link, a hard link) of the file a row's name is now, as one scan takes each
    file once (collect_files). What a row's name is now, not an inode kept from another run: an inode is used
    again once its file is deleted, and a device's number may change (a disk mounted again)."""
    if not files:
        return []
    now = {_same_file(Path(key)) for key in done}
    return [path for path in files if file_key(path) not in done and _same_file(path) not in now]


def _same_file(path: Path) -> str | tuple[int, int]:
    """What one regular file is however it is reached: its device and inode (a link to it, a hard link, or
    its own name were scanned once each: the same file, two rows). Anything else (a broken link, a FIFO, a
    folder that cannot be listed) by its file_key: two broken links to one missing file are two errors."""
    try:
        info = os.stat(path)
    except OSError:
        return file_key(path)
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) else file_key(path)


def file_key(path: Path | str) -> str:
    """The same file however its path is spelled from this working folder: absolute, its folder's links
    followed (read as text, "sub/../b.jpg" with sub a link was the b.jpg beside sub, another file), the
    file's own name not (a link keeps its own key; collect_files tells one file's names apart by _same_file)."""
    whole = os.path.join(os.getcwd(), path)
    # normpath: a name "." or ".." or a trailing slash (a folder's key) after the physical folder.
    return os.path.normpath(os.path.join(os.path.realpath(os.path.dirname(whole)), os.path.basename(whole)))


# A file's size, modification and change times (ns); None: it cannot be stat'ed (or is a folder).
WatchSignature = tuple[int, int, int] | None


def watch_signature(path: Path) -> WatchSignature:
    """What tells `scan --watch` a file changed: its size and modification time, and its change time too: a file
    that arrived unreadable and was then made readable (chmod), or one replaced by another of the same size and
    time (cp -p, rsync's rename into place: the new file's change time is its own), kept its first (error) row
    with those two alone. A change of its metadata only (a chmod, a new hard link) scans it once again. Not the
    inode: a share that numbers its files anew at each mount (sshfs without use_ino, SMB with noserverino) had
    every file scanned again once it was mounted again. A folder among the files is one that cannot be listed
    (collect_files): its time changes with each file dropped in, which made a new error row each time, so it
    has none."""
    try:
        info = path.stat()
    except OSError:  # a broken link, say
        return None
    return None if stat.S_ISDIR(info.st_mode) else (info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@dataclass
class ArrivalWatch:
    """Files that appear under the scanned paths after a scan began (`scan --watch`). A file is taken once
    its watch_signature held still between two looks, so one still being copied in waits
    for the next look. A file that changes after it was taken is taken again once it holds still: a copy
    that stalled longer than the interval was scanned half-written (an error row), and gets its row when
    it ends; a file written over in place is a new version."""

    paths: list[Path]
    recursive: bool
    seen: set[str]  # file_key of the files already scanned, or in the output being resumed
    output: Path | None = None  # the scan's heatmap folder, whose files are not taken (collect_files)
    # Each seen file's signature when it was taken: for the first scan's files, as that scan began (one
    # still arriving then was never scanned again whole), for a resumed output's, at the first look.
    taken: dict[str, WatchSignature] = field(default_factory=dict)
    _last_look: dict[str, WatchSignature] = field(default_factory=dict)

    def arrived(self) -> list[Path]:
        ready, look = [], {}
        # The names with rows, a file changed since too: another name of one (a link made to it) is no new file
        known = self.seen | self.taken.keys()
        listing = [(path, file_key(path)) for path in collect_files(self.paths, self.recursive, self.output, known)]
        new = set(not_done([path for path, key in listing if key not in known], known))
        for path, key in listing:
            if key not in known and path not in new:
                continue
            if not os.path.lexists(path):
                # A watched folder gone for a while (a share unmounted, the folder moved aside and back), or a
                # file named that is yet to come: nothing has arrived. Taken as a file, a folder's absence was
                # an error row, 'no such file', that stood for the rest of the watch.
                continue
            signature = watch_signature(path)  # None: scanned (as an error row) once it stays None
            if key in self.seen:
                if self.taken.setdefault(key, signature) == signature:
                    continue
                self.seen.discard(key)  # changed since it was taken: waits to hold still again
            if key in self._last_look and self._last_look[key] == signature:
                ready.append(path)
                self.seen.add(key)
                self.taken[key] = signature
            else:
                look[key] = signature
        self._last_look = look
        return ready


def scan_file(
    detector: Detector, path: Path, frames: int, heatmaps: bool = False, span: VideoSpan = WHOLE_VIDEO
) -> ScanRow:
    sha256 = None
    try:
        sha256 = file_sha256(path)  # names a missing file, a FIFO (never opened), a link loop, a broken link
        result = detector.analyze_path(path, frames=frames, heatmaps=heatmaps, span=span)
    except DeepShieldError as exc:
        return ScanRow(path=str(path), status="error", sha256=sha256, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - a scan must survive any one file
        return ScanRow(path=str(path), status="error", sha256=sha256, error=f"{type(exc).__name__}: {exc}")
    judged = result.faces if isinstance(result, ImageResult) else [t for t in result.tracks if t.counted]
    cautions = "; ".join(dict.fromkeys(caution for face in judged for caution in face.cautions)) or None
    metadata = result.metadata
    declared = None if metadata is None else metadata.declared_source
    credentials = None if metadata is None else metadata.credentials
    return ScanRow(
        path=str(path),
        status="ok",
        kind=result.kind,
        verdict=result.verdict.label,
        probability=result.verdict.probability,
        synthetic_probability=result.verdict.synthetic_probability,
        verdict_driver=result.verdict.verdict_driver,
        faces=len(judged),
        cautions=cautions,
        reason=result.verdict.reason,
        part=None if isinstance(result, ImageResult) else result.analysed.part,
        declared_source=None if declared is None else declared.code,
        declared_in=None if declared is None else declared.row_place(),
        credentials=None if credentials is None else credentials.state,
        sha256=sha256,
        elapsed_ms=round(result.elapsed_ms, 1),
        result=result,
    )


@dataclass(frozen=True)
class ScanJob(FileJob[Detector, Path, ScanRow]):
    """scan_file as an engine job: a Detector per worker process, one ScanRow per path.

    `base_dir` (the caller's working directory, for engines whose workers may run elsewhere): relative
    paths and the bundle are opened from there, while each row keeps the path as it was given."""

    bundle: str | None = None  # None or "default": the shipped model
    min_face_size: int = 20
    threshold: float | None = None
    frames: int = DEFAULT_VIDEO_FRAMES
    span: VideoSpan = WHOLE_VIDEO  # of every video scanned
    trust_anchors: TrustAnchors | None = None  # whose Content Credentials count as trusted
    heatmaps: bool = False
    base_dir: str | None = None

    def _located(self, path: Path) -> Path:
        return path if self.base_dir is None or path.is_absolute() else Path(self.base_dir) / path

    def setup(self) -> Detector:
        bundle = bundle_dir(self.bundle)
        if bundle != DEFAULT_BUNDLE:
            bundle = self._located(bundle)
        return Detector.from_bundle(
            bundle, min_face_size=self.min_face_size, threshold=self.threshold, trust_anchors=self.trust_anchors
        )

    def run(self, detector: Detector, path: Path) -> ScanRow:
        row = scan_file(detector, self._located(path), self.frames, self.heatmaps, self.span)
        row.path = str(path)
        return row

    def fail(self, path: Path, reason: str) -> ScanRow:
        return ScanRow(path=str(path), status="error", error=reason)
