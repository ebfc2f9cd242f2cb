"""`prepare` end to end: sources -> face extraction -> manifest, errors and split.

The manifest is rebuilt from the done records every run, so it always reflects the sources given
(a `dataset balance` step applied afterwards has to be applied again after a re-prepare).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepshield.data.extract import NO_FACE, ExtractSettings, FileDoneHook, run_extraction, sweep_temp_files
from deepshield.data.layout import DatasetLayout, dataset_lock
from deepshield.data.manifest import (
    LISTED_TWICE,
    SPLITS,
    CropRecord,
    DatasetInfo,
    DatasetSource,
    ErrorRecord,
    ManifestError,
    finish_step,
    mark_preparing,
    read_info,
    read_manifest_file,
    write_errors,
    write_info,
    write_manifest,
)
from deepshield.data.records import FileOutcome
from deepshield.data.sources import (
    MISSING_FILE,
    SourceEntry,
    SourceFormatError,
    SourceItem,
    SourceProblem,
    detect_format,
    read_ffpp_roots,
    read_source,
    root_keys,
)
from deepshield.data.split import apply_split, empty_split_warning, split_counts
from deepshield.engines import Engine
from deepshield.errors import DeepShieldError
from deepshield.media.files import file_sha256, real_path
from deepshield.plural import numbered, plural


@dataclass
class PrepareSummary:
    dataset_dir: Path
    files: int  # media files found in the sources
    skipped: int  # files already done by an earlier run
    crops: int
    errors: int
    split_counts: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # files a listing names that are not on disk
    unreadable: list[ErrorRecord] = field(default_factory=list)  # files that exist but could not be read
    empty_splits: list[str] = field(default_factory=list)  # splits given a share that got no crop
    interrupted_step: str | None = None  # a balancing step found interrupted, undone (finish_step's words)

    def describe(self) -> str:
        parts = ", ".join(f"{name} {sum(c.values())}" for name, c in self.split_counts.items())
        return (
            f"{numbered(self.files, 'file')} ({self.skipped} already done), {numbered(self.crops, 'face crop')} ({parts}), "
            f"{numbered(self.errors, 'error')}, of which {len(self.missing)} missing and {len(self.unreadable)} unreadable (see {self.dataset_dir / 'errors.csv'})"
        )

    def warnings(self, shown: int = 10) -> list[str]:
        """For people: the missing files apart from the unreadable ones, and the empty splits."""

        def listing(entries: list[str]) -> str:
            return "; ".join(entries[:shown]) + (
                f"; and {len(entries) - shown} more (see errors.csv)" if len(entries) > shown else ""
            )

        out = [self.interrupted_step] if self.interrupted_step else []
        if self.missing:
            verb = plural(len(self.missing), "is", "are")
            out.append(
                f"{numbered(len(self.missing), 'file')} named by the sources' listings {verb} missing: "
                f"{listing(self.missing)}"
            )
        if self.unreadable:
            out.append(
                f"{numbered(len(self.unreadable), 'file')} could not be read: {listing([f'{e.source_file} ({e.reason})' for e in self.unreadable])}"
            )
        for split in self.empty_splits:
            out.append(empty_split_warning(split))
        return out


def collect_items(
    sources: Sequence[Path],
    fmt: str = "auto",
    ffpp_compressions: Sequence[str] | None = None,
    known_keys: Mapping[str, str] | None = None,
    writing: Path | None = None,
) -> tuple[list[SourceItem], list[SourceProblem], list[DatasetSource]]:
    """Read every SOURCE (formats checked for all before any is read). Duplicates become problems.
    Files of `writing`, the dataset being written (DatasetLayout.own_media, where it lies in a source or a
    source in it), are not read.
    `known_keys`: the keys of the sources the dataset already holds (resolved path -> key), kept."""
    given = dict(zip(paths := [Path(p).resolve() for p in sources], map(Path, sources)))
    with _named_as_given(given):
        formats = [detect_format(p) if fmt == "auto" else fmt for p in paths]
    keys = root_keys(paths, known=known_keys)
    items: list[SourceItem] = []
    problems: list[SourceProblem] = []
    ffpp = [(path, key) for path, form, key in zip(paths, formats, keys) if form == "ffpp"]
    if ffpp_compressions and not ffpp:  # taken and ignored, unsaid: every file was read, at whatever level
        read_as = ", ".join(f"{given[path]} ({form})" for path, form in zip(paths, formats))
        raise SourceFormatError(f"--ffpp-compression applies to FaceForensics++ sources; none is one: {read_as}")
    for path, _ in ffpp:  # as read_source checks a source it reads
        if not path.is_dir():
            with _named_as_given(given):
                raise SourceFormatError(
                    f"{path}: {'--format ffpp needs a folder' if path.exists() else 'no such file or folder'}"
                )

    def entries(path: Path, form: str, key: str) -> Iterator[SourceEntry]:
        with _named_as_given(given):
            if form != "ffpp":
                yield from read_source(path, form, key, ffpp_compressions, writing)
            elif (path, key) == ffpp[0]:
                # Every FaceForensics++ folder at once, where the first is listed: a fake's identities are
                # grouped whichever folder holds them.
                yield from read_ffpp_roots(ffpp, compressions=ffpp_compressions)

    every = (entry for path, form, key in zip(paths, formats, keys) for entry in entries(path, form, key))
    exclude = DatasetLayout(writing).own_media if writing is not None else ()
    for entry in distinct_entries(every, exclude):
        if isinstance(entry, SourceProblem):
            problems.append(entry)
        else:
            items.append(entry)
    described = [DatasetSource(path=str(p), format=f, root_key=k) for p, f, k in zip(paths, formats, keys)]
    return items, problems, described


@contextlib.contextmanager
def _named_as_given(given: Mapping[Path, Path]) -> Iterator[None]:
    """A SOURCE's error named as the user gave it, not as the path it resolves to (`given`: resolved -> given),
    and a link's target said beside it: `prepare null.csv`, a link to /dev/null, said '/dev/null: ...'."""
    try:
        yield
    except SourceFormatError as exc:
        text = str(exc)
        for resolved, name in given.items():
            if text.startswith(f"{resolved}:") and name != resolved:
                shown = f"{name} (a link to {resolved})" if os.path.islink(name) else str(name)
                raise SourceFormatError(shown + text[len(str(resolved)) :]) from None
        raise


def distinct_entries(entries: Iterable[SourceEntry], exclude: Sequence[Path] = ()) -> Iterator[SourceEntry]:
    """`entries` but those under `exclude` (the folders a dataset fills itself: DatasetLayout.own_media), each
    file once: a second name of one file (a link; one photo under six names came in as six groups, in train
    and val), a byte-for-byte copy of an earlier one (a copy came in as another group, in test with its
    twin in train) or a second entry with one key becomes a "listed twice" problem, and a DeepShieldError
    where the two give it different labels. A broken link or a loop is its own entry (two links to one
    missing file were "listed twice")."""
    excluded = [real_path(folder) for folder in exclude]
    kept = [entry for entry in entries if not any(real_path(entry.path).is_relative_to(f) for f in excluded)]
    # each item's file, its links followed (a broken link or a loop as it is)
    resolved = [real_path(e.path) if os.path.exists(e.path) else e.path for e in kept if isinstance(e, SourceItem)]
    files = list(dict.fromkeys(resolved))
    order = {path: number for number, path in enumerate(files)}
    copy_of = {path: twin for path, twin in same_bytes(files, files).items() if order[twin] < order[path]}
    seen_files: dict[Path, SourceItem] = {}
    seen_keys: dict[str, SourceItem] = {}
    paths = iter(resolved)
    for entry in kept:
        if isinstance(entry, SourceProblem):
            yield entry
            continue
        path = next(paths)
        first = seen_files.get(path) or seen_keys.get(entry.key)
        twin = seen_files.get(copy_of[path]) if first is None and path in copy_of else None  # same bytes, before
        first, copy = first or twin, twin is not None
        if first is None:
            seen_files[path] = seen_keys[entry.key] = entry
            yield entry
            continue
        if first.label != entry.label:
            # The first label was kept and the other said as "listed twice": the set was measured (or
            # trained) on one of two contradicting labels, chosen by listing order.
            raise DeepShieldError(
                f"{entry.path} ({_as_listed(entry)}) is labelled {entry.label} and holds the same bytes as "
                f"{first.path} ({_as_listed(first)}), labelled {first.label}: their labels contradict each other; "
                "correct the listing"
                if copy
                else f"{entry.path} is labelled {first.label} ({_as_listed(first)}) and {entry.label} "
                f"({_as_listed(entry)}): its labels contradict each other; correct the listing"
            )
        at = f" at {entry.listed_at}" if entry.listed_at else ""
        yield SourceProblem(
            entry.path,
            f"{LISTED_TWICE}{at} ({'a copy of' if copy else 'also as'} {_as_listed(first)})",
            entry.source,
            entry.label,
            entry.group,
            entry.method,
        )


HEAD_BYTES = 1 << 16  # how much of a file same_bytes reads first, to tell files of one size apart


def same_bytes(files: list[Path], held: list[Path]) -> dict[Path, Path]:
    """Each of `files` that is a byte-for-byte copy of one of `held` (not the same path): that held file,
    the first in `held`'s order. Sizes first, then SHA-256 of the few of equal size; a file no longer on
    disk, no regular file (a FIFO read would block) or an empty one (no picture: each its own error row,
    not a copy, nor two labels contradicting each other) is skipped."""

    def size(path: Path) -> int:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or not info.st_size:
            raise OSError(f"{path} is no regular file, or an empty one")
        return info.st_size

    def head(path: Path) -> str:
        with open(path, "rb") as handle:  # a regular file (size): no FIFO to block on
            return hashlib.sha256(handle.read(HEAD_BYTES)).hexdigest()

    wanted, held_order = set(files), {path: number for number, path in enumerate(dict.fromkeys(held))}
    # The files in groups of one size, each split by the digest of its first 64 KiB, then by the whole
    # file's (in chunks: a video can be larger than memory), a group kept only while it holds one of `files`,
    # one of `held` and another file: grouped, not compared one by one (8,000 photos of one size, as BMP
    # frames are, took a minute and more), and a file whose start no other of its size shares is not read
    # whole (videos of one size among thousands: gigabytes read at every prepare). One that cannot be read
    # is no copy.
    groups = [list(dict.fromkeys([*held, *files]))]
    for key in (size, head, file_sha256):
        split: list[list[Path]] = []
        for group in groups:
            by_key: dict[object, list[Path]] = {}
            for path in group:
                with contextlib.suppress(OSError, DeepShieldError):
                    by_key.setdefault(key(path), []).append(path)
            split += [
                same
                for same in by_key.values()
                if len(same) > 1 and wanted.intersection(same) and held_order.keys() & set(same)
            ]
        groups = split
    copies = {}
    for group in groups:
        firsts = sorted((path for path in group if path in held_order), key=held_order.__getitem__)
        for path in group:
            match = next((other for other in firsts if other != path), None)
            if path in wanted and match is not None:
                copies[path] = match
    return copies


def _as_listed(item: SourceItem) -> str:
    """An entry as its source names it: its key, and the CSV line that lists it where there is one."""
    return f"{item.key}, {item.listed_at}" if item.listed_at else item.key


def kept_group_splits(records: Sequence[CropRecord], split_of_file: Mapping[str, str]) -> dict[str, str]:
    """Each group's split as its files had it before: kept by file, not by group name, since a group can
    be named anew (FaceForensics++ fakes added later join identities 000 and 003 into 000_003, and the
    kept splits, keyed by name, were not found: those files re-split). A group whose files had two splits
    (two groups joined) takes the one most of its faces had, the first in train, val, test order on a tie."""
    votes: dict[str, Counter[str]] = {}
    for record in records:
        if (split := split_of_file.get(record.source_file)) is not None:
            votes.setdefault(record.group, Counter())[split] += 1
    return {group: max(SPLITS, key=lambda s: (count[s], -SPLITS.index(s))) for group, count in votes.items()}


def outcomes_to_rows(
    items: Sequence[SourceItem], outcomes: dict[str, FileOutcome]
) -> tuple[list[CropRecord], list[ErrorRecord]]:
    records: list[CropRecord] = []
    errors: list[ErrorRecord] = []
    for item in items:
        outcome = outcomes[item.key]
        if not outcome.ok:
            errors.append(ErrorRecord(str(item.path), outcome.reason, item.label, item.group, item.source, item.method))
            continue
        for face in outcome.faces:
            records.append(
                CropRecord(
                    crop_path=face.crop_path,
                    label=item.label,
                    split="",
                    group=item.group,
                    source=item.source,
                    method=item.method,
                    source_file=str(item.path),
                    frame_index=face.frame_index,
                    face_index=face.face_index,
                    detection_score=face.detection_score,
                    box=face.box,
                    landmarks=face.landmarks,
                )
            )
    return records, errors


def problem_rows(problems: Sequence[SourceProblem]) -> list[ErrorRecord]:
    return [ErrorRecord(str(p.path), p.reason, p.label, p.group, p.source, p.method) for p in problems]


def prepare_dataset(
    sources: Sequence[Path | str],
    out: Path | str,
    fmt: str = "auto",
    settings: ExtractSettings = ExtractSettings(),
    workers: int = 1,
    seed: int = 0,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    progress: bool = True,
    ffpp_compressions: Sequence[str] | None = None,
    on_file_done: FileDoneHook | None = None,
    engine: Engine | None = None,
) -> PrepareSummary:
    """Build (or resume building) the dataset in `out` from the SOURCE paths; see the module doc.
    `engine` runs the extraction (default: the local engine with `workers` processes); with a Ray
    engine the workers write into `out`, which must then be on storage every node shares."""
    layout = DatasetLayout(out)
    with dataset_lock(layout.root):
        return _prepare(
            layout, sources, fmt, settings, workers, seed, ratios, progress, ffpp_compressions, on_file_done, engine
        )


def _refuse_dropping_sources(root: Path, before: Sequence[DatasetSource], now: Sequence[DatasetSource]) -> None:
    """The manifest is rebuilt from the sources given: a source the dataset was prepared from and not given
    again would lose its rows (its crops left on disk unlisted), which happened without a word."""
    given = {source.path for source in now}
    dropped = [source.path for source in before if source.path not in given]
    if dropped:
        every = " ".join(dict.fromkeys([*(source.path for source in before), *given]))
        raise ManifestError(
            f"{root} was prepared from {', '.join(dropped)} too: preparing it from these sources alone would drop "
            f"those rows. Name every source to add one ({every} --out {root}), or prepare into a new folder"
        )


def _prepare(
    layout: DatasetLayout,
    sources: Sequence[Path | str],
    fmt: str,
    settings: ExtractSettings,
    workers: int,
    seed: int,
    ratios: tuple[float, float, float],
    progress: bool,
    ffpp_compressions: Sequence[str] | None,
    on_file_done: FileDoneHook | None,
    engine: Engine | None = None,
) -> PrepareSummary:
    # A balancing step recorded in the history is finished before it is judged; one not recorded is undone.
    interrupted = finish_step(layout.root) if layout.info.exists() else None
    before = read_info(layout.root) if layout.info.exists() else None  # how the dataset here was built
    if before is not None and before.history:
        raise ManifestError(
            (f"{interrupted}; " if interrupted else "")
            + f"{layout.root} was balanced after it was prepared ({'; '.join(before.history)}): preparing it again "
            "would rebuild its manifest from the sources alone and drop those rows. Prepare into a new folder, then "
            "balance that"
        )
    known = {s.path: s.root_key for s in before.sources} if before is not None else {}
    items, problems, described = collect_items(
        [Path(s) for s in sources], fmt, ffpp_compressions, known_keys=known, writing=layout.root
    )
    kept_by_file: dict[str, str] = {}
    split_again = False  # the dataset here was split with another seed or other ratios
    if before is not None:
        _refuse_dropping_sources(layout.root, before.sources, described)
        split_again = before.seed != seed or tuple(before.split) != tuple(ratios)
        if not split_again and layout.manifest.exists():
            # Groups already split keep their split: shuffled anew with a source added, about one in five moved
            # (train to test among them), and a model trained on the old split was tested on its own faces.
            kept_by_file = {record.source_file: record.split for record in read_manifest_file(layout.manifest)}
    if not items:  # nothing is written: a dataset already here keeps its manifest
        found = "; ".join(f"{p.path}: {p.reason}" for p in problems[:3]) + (" ..." if len(problems) > 3 else "")
        expected = {"dfdc": " (a DFDC folder holds metadata.json files)", "csv": " (a CSV lists path and label)"}
        raise ManifestError(
            f"no file to take faces from in {', '.join(str(s) for s in sources)}, read as {fmt}"
            f"{expected.get(fmt, '')}" + (f"; {len(problems)} not usable: {found}" if problems else "")
        )
    mark_preparing(layout.root)
    try:
        outcomes = run_extraction(items, layout, settings, workers, progress, on_file_done, engine)
    except BaseException:
        if not layout.crops.exists():  # stopped before a crop: nothing to mark (a folder made for it goes)
            layout.preparing.unlink(missing_ok=True)
        raise
    records, extraction_errors = outcomes_to_rows(items, outcomes)
    errors = problem_rows(problems) + extraction_errors
    records = apply_split(records, ratios, seed, fixed=kept_group_splits(records, kept_by_file))
    if split_again:
        # dataset.json says how the manifest was split and is written after it: stopped in between, a run
        # with the old seed took the new split's groups as its own (11 of 20 rows kept another seed's split).
        layout.info.unlink()
    write_manifest(layout.manifest, records)
    write_errors(layout.errors, errors)
    info = DatasetInfo(
        crop_policy=settings.policy,
        frames=settings.frames,
        faces=settings.faces,
        min_face_size=settings.min_face_size,
        seed=seed,
        split=ratios,
        extractor=settings.fingerprint(),
        sources=described,
    )
    write_info(layout.root, info)
    layout.preparing.unlink(missing_ok=True)  # dataset.json now says the folder is a dataset's
    sweep_temp_files(layout)
    counts = split_counts(records)
    return PrepareSummary(
        dataset_dir=layout.root,
        files=len(items),
        skipped=sum(1 for o in outcomes.values() if o.from_record),
        crops=len(records),
        errors=len(errors),
        split_counts=counts,
        missing=[e.source_file for e in extraction_errors if e.reason == MISSING_FILE],
        unreadable=[e for e in extraction_errors if e.reason not in (MISSING_FILE, NO_FACE)],
        empty_splits=[split for split, share in zip(SPLITS, ratios) if share > 0 and records and not counts.get(split)],
        interrupted_step=interrupted,
    )
