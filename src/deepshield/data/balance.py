"""Balance real and fake faces after `prepare`: add real faces from another folder, down-sample the
majority label, or top fakes up by self-blending real faces.

No step moves an existing row to another split. New rows join the split of their group when the
group is known (synthesised fakes), otherwise the split the group-aware splitter picks with the
existing rows fixed. Down-sampled rows go to removed.csv (their crops stay on disk), not away.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepshield.data.extract import ExtractSettings, run_extraction, sweep_temp_files
from deepshield.data.layout import (
    ERRORS_NAME,
    MANIFEST_NAME,
    REMOVED_NAME,
    SYNTH_DIR,
    DatasetLayout,
    atomic_write_bytes,
    dataset_lock,
)
from deepshield.data.manifest import (
    ALREADY_HELD,
    SPLITS,
    CropRecord,
    DatasetSource,
    ManifestError,
    commit_step,
    errors_text,
    finish_step,
    load_crop,
    manifest_text,
    read_errors,
    read_info,
    read_manifest,
    read_manifest_file,
    write_errors,
)
from deepshield.data.prepare import distinct_entries, outcomes_to_rows, problem_rows, same_bytes
from deepshield.data.sources import (
    FAKE,
    REAL,
    SourceItem,
    SourceProblem,
    labelled_fake,
    read_as_label,
    root_keys,
)
from deepshield.data.split import assign_groups, group_label_counts, unbalanced
from deepshield.errors import DeepShieldError
from deepshield.faces.crop import seen_validity
from deepshield.media.files import real_path
from deepshield.media.images import encode_png
from deepshield.plural import numbered


@dataclass
class BalanceSummary:
    action: str
    added: int = 0
    removed: int = 0
    errors: int = 0
    already_held: int = 0  # add-real's files the dataset holds already: they have crops, so are no errors
    before: dict = field(default_factory=dict)  # label -> crops
    after: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> str:
        """The step's one line: what it added and removed, and the labels' crops before and after."""

        def fmt(counts: dict) -> str:
            return ", ".join(f"{label} {counts.get(label, 0)}" for label in (REAL, FAKE))

        held = f", {numbered(self.already_held, 'file')} already in the dataset" if self.already_held else ""
        return (
            f"{self.action}: {numbered(self.added, 'crop')} added, {self.removed} removed, {numbered(self.errors, 'error')}"
            f"{held}; before {fmt(self.before)}; after {fmt(self.after)}"
        )

    def describe(self) -> str:
        return "\n".join([self.counts(), *self.notes])


def _label_counts(records: Sequence[CropRecord]) -> dict[str, int]:
    counts = Counter(r.label for r in records)
    return {REAL: counts[REAL], FAKE: counts[FAKE]}


# ------------------------------------------------------------------------------------------ add-real


def _add_real(dataset_dir: Path | str, folder: Path | str, workers: int = 1, progress: bool = True) -> BalanceSummary:
    layout = DatasetLayout(dataset_dir)
    info = read_info(layout.root)
    records = read_manifest(layout.root)
    errors = read_errors(layout.root)
    folder = Path(folder).resolve()
    if not folder.exists():
        raise DeepShieldError(f"{folder}: no such file or folder")
    previous = next((s for s in info.sources if Path(s.path) == folder and s.format == "add-real"), None)
    key = previous.root_key if previous else root_keys([folder], [s.root_key for s in info.sources])[0]
    prefix = f"crops/{key}/"
    # This folder's rows of an earlier add-real are made again; their groups keep their splits.
    before = _label_counts(records)
    earlier = [r for r in records if r.crop_path.startswith(prefix)]
    earlier_splits = {r.group: r.split for r in earlier}
    records = [r for r in records if not r.crop_path.startswith(prefix)]
    errors = [e for e in errors if not Path(e.source_file).is_relative_to(folder)] if previous else errors

    # Every file is taken as real: a DFDC part's or a real/ and fake/ folder's fakes came in as real faces.
    if (fake := labelled_fake(folder, writing=layout.root)) is not None:
        raise DeepShieldError(
            f"{folder} labels files fake (e.g. {fake.path}: a fake/ folder, a DFDC metadata.json or FaceForensics++'s "
            "manipulated_sequences): add-real would add them as real faces. Add a folder of real faces only"
        )
    # Not the dataset's own crops (fakes among them, when the dataset lies inside the folder), each file once.
    entries = list(distinct_entries(read_as_label(folder, key, REAL, writing=layout.root), layout.own_media))
    # A file the dataset already holds would come in again as another group (the same photo in train and
    # test), and one of its fakes would come in as real. Held: by path, and by content (a copy of a photo
    # elsewhere came in again, 7 of 24 in two splits), down-sampled files too (they came back in new
    # splits); the fakes synthesised from a real keep its source file, so they do not make it a fake.
    removed = read_manifest_file(layout.removed) if layout.removed.exists() else []
    held = {real_path(r.source_file): r.label for r in [*removed, *records] if not r.crop_path.startswith(SYNTH_DIR)}
    new_files = [real_path(e.path) for e in entries if isinstance(e, SourceItem)]
    copies = same_bytes(new_files, list(held))
    held_as = {path: held.get(path) or held.get(copies.get(path, path)) for path in new_files}
    fakes = [path for path, label in held_as.items() if label == FAKE]
    if fakes:
        raise DeepShieldError(
            f"{folder} holds {len(fakes)} of this dataset's fake files (e.g. {fakes[0]}): add-real would add them "
            "as real faces. Add a folder of real photos only"
        )
    items: list[SourceItem] = []
    already: list[SourceProblem] = []
    for entry, path in zip((e for e in entries if isinstance(e, SourceItem)), new_files):
        if held_as[path] is not None:
            already.append(SourceProblem(entry.path, ALREADY_HELD, entry.source, REAL, entry.group))
        else:
            items.append(entry)
    # A photo twice in the folder under other names (a hard link, a copy) is one of distinct_entries' problems.
    problems = [e for e in entries if isinstance(e, SourceProblem)] + already
    settings = ExtractSettings(
        frames=info.frames, faces=info.faces, policy=info.crop_policy, min_face_size=info.min_face_size
    )
    notes = []
    if info.extractor and settings.fingerprint() != info.extractor:
        notes.append(
            "note: the code that reads pixels or frames, finds or crops faces changed since this dataset was "
            "prepared; the added faces are "
            "cropped by the new code (re-run prepare to recrop everything alike)"
        )
    outcomes = run_extraction(items, layout, settings, workers, progress)
    new_records, new_errors = outcomes_to_rows(items, outcomes)
    new_errors = problem_rows(problems) + new_errors

    fixed = earlier_splits | {r.group: r.split for r in records}
    splits = assign_groups(group_label_counts([*records, *new_records]), info.split, info.seed, fixed)
    new_records = [r.with_split(splits[r.group]) for r in new_records]
    # A step that added nothing leaves the folder untaken, and its rows were written again at each run.
    written = {(e.source_file, e.reason) for e in errors}
    all_errors = [*errors, *(e for e in new_errors if (e.source_file, e.reason) not in written)]
    if previous is not None or new_records:  # a step that added nothing need not stop a later prepare
        if previous is None:
            info.sources.append(DatasetSource(path=str(folder), format="add-real", root_key=key))
        texts = {MANIFEST_NAME: manifest_text([*records, *new_records]), ERRORS_NAME: errors_text(all_errors)}
        commit_step(layout.root, info, f"add-real {folder}", texts)
    else:
        write_errors(layout.errors, all_errors)
    sweep_temp_files(layout)
    after = _label_counts([*records, *new_records])
    # Counted against the rows the folder had: its files added again are neither added nor removed (a second
    # run said "24 crops added; before real 9" of a dataset that held those 24 before and after).
    made, had = {r.crop_path for r in new_records}, {r.crop_path for r in earlier}
    return BalanceSummary(
        "add-real",
        added=len(made - had),
        removed=len(had - made),
        errors=len(new_errors) - len(already),
        already_held=len(already),
        before=before,
        after=after,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------- downsample


def _removal_order(files: dict[str, list[str]], rng: random.Random) -> list[str]:
    """Source files in the order to remove them: always from the group with the most files left
    (ties in a seeded order), so that every group keeps some of its files for as long as possible."""
    groups = sorted(files)
    rng.shuffle(groups)
    rank = {group: i for i, group in enumerate(groups)}
    remaining = {group: rng.sample(sorted(files[group]), len(files[group])) for group in groups}
    # A heap by (minus the files left, rank), the same order: every group was looked at for each file, so that
    # 6,000 photos (each its own group) took 6 s, 100,000 half an hour.
    heap = [(-len(remaining[group]), rank[group], group) for group in groups if remaining[group]]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        left, place, group = heapq.heappop(heap)
        order.append(remaining[group].pop())
        if remaining[group]:
            heapq.heappush(heap, (left + 1, place, group))
    return order


def _downsample(dataset_dir: Path | str, seed: int | None = None) -> BalanceSummary:
    layout = DatasetLayout(dataset_dir)
    info = read_info(layout.root)
    records = read_manifest(layout.root)
    seed = info.seed if seed is None else seed
    before = _label_counts(records)
    removed_files: set[tuple[str, str, str]] = set()  # (split, label, source file)
    notes = []
    for split in SPLITS:
        rows = [r for r in records if r.split == split]
        counts = _label_counts(rows)
        if counts[REAL] == counts[FAKE]:
            continue
        major, minor = (REAL, FAKE) if counts[REAL] > counts[FAKE] else (FAKE, REAL)
        if counts[minor] == 0:
            notes.append(f"split {split}: no {minor} faces, left as it is (down-sampling would empty it)")
            continue
        crops_per_file = Counter(r.source_file for r in rows if r.label == major)
        files: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            if r.label == major and r.source_file not in files[r.group]:
                files[r.group].append(r.source_file)
        excess = counts[major] - counts[minor]
        for source_file in _removal_order(files, random.Random(f"{seed}:{split}")):
            n = crops_per_file[source_file]
            if excess <= 0:
                break
            # Removed only when that shrinks the imbalance (a file of twice the excess would flip it, and a
            # split's last files of the label could go), and never the label's last file in the split.
            if n - excess >= excess or n >= counts[minor] + excess:  # counts[minor] + excess: the label left
                continue
            removed_files.add((split, major, source_file))
            excess -= n
        if excess > 0:  # it said "0 removed" of 1 real face against 50 of one video, and no word why
            left = counts[minor] + excess
            # Advice only where it applies: 6 real against 7 fake faces were told to add reals as well.
            advice = f"; add {minor} faces instead" if unbalanced(counts[minor], left) else ""
            notes.append(
                f"split {split}: {counts[minor]} {minor} against {left} {major} faces left: "
                f"whole source files are removed, and each {major} file left would leave the split more "
                f"unbalanced, or with no {major} face{advice}"
            )
    keep = [r for r in records if (r.split, r.label, r.source_file) not in removed_files]
    dropped = [r for r in records if (r.split, r.label, r.source_file) in removed_files]
    if dropped:
        previous = read_manifest_file(layout.removed) if layout.removed.exists() else []
        texts = {REMOVED_NAME: manifest_text([*previous, *dropped]), MANIFEST_NAME: manifest_text(keep)}
        commit_step(layout.root, info, f"downsample seed={seed}: {numbered(len(dropped), 'crop')} removed", texts)
    return BalanceSummary("downsample", removed=len(dropped), before=before, after=_label_counts(keep), notes=notes)


# -------------------------------------------------------------------------------------- synth-fakes


def _synthesis():
    try:
        from deepshield.synthesis import FaceSample, self_blend
    except ImportError as exc:
        raise DeepShieldError(
            "--synth-fakes is not available yet: deepshield.synthesis (self-blending) is missing"
        ) from exc
    return FaceSample, self_blend


def _pick_reals(reals: Sequence[CropRecord], n: int, rng: random.Random) -> list[CropRecord]:
    """n real crops spread over as many groups as possible (round-robin over groups, seeded)."""
    by_group: dict[str, list[CropRecord]] = defaultdict(list)
    for record in reals:
        by_group[record.group].append(record)
    groups = sorted(by_group)
    rng.shuffle(groups)
    queues = {g: rng.sample(by_group[g], len(by_group[g])) for g in groups}
    picks: list[CropRecord] = []
    while len(picks) < n:
        for group in groups:
            if len(picks) == n:
                break
            queue = queues[group]
            picks.append(queue[(len(picks) // len(groups)) % len(queue)])
    return picks


def _synth_fakes(dataset_dir: Path | str, n: int, seed: int | None = None, progress: bool = True) -> BalanceSummary:
    FaceSample, self_blend = _synthesis()
    if n <= 0:
        raise DeepShieldError("--synth-fakes needs a positive number")
    layout = DatasetLayout(dataset_dir)
    info = read_info(layout.root)
    records = read_manifest(layout.root)
    seed = info.seed if seed is None else seed
    # Train split only: a self-blend in val or test grades the model on the very fakes it trains on (test
    # went from 1 fake to 3, of our own recipe, without a word).
    reals = [r for r in records if r.label == REAL and r.split == "train" and not r.crop_path.startswith(SYNTH_DIR)]
    if not reals:
        raise ManifestError(
            "--synth-fakes blends the train split's real faces, and this dataset's train split has none"
        )
    # Crops of an interrupted run, written before its manifest: never listed, never used, swept now (the
    # crops of rows a downsample moved to removed.csv stay, as it promises).
    removed = read_manifest_file(layout.removed) if layout.removed.exists() else []
    listed = {r.crop_path for r in [*records, *removed]}
    synth_dir = layout.root / SYNTH_DIR
    for orphan in synth_dir.rglob("*.png") if synth_dir.is_dir() else []:
        if orphan.is_file() and orphan.relative_to(layout.root).as_posix() not in listed:  # a photo's folder ends .png
            orphan.unlink()
    # Each run draws afresh: a second run with the seed of the first blended the same reals again.
    runs = sum(entry.startswith("synth-fakes") for entry in info.history)
    from tqdm import tqdm

    from deepshield.faces.landmarks import FaceMesher

    mesher = FaceMesher()
    taken = {r.crop_path for r in records}
    added: list[CropRecord] = []
    picks = _pick_reals(reals, n, random.Random(f"{seed}:synth" + (f":{runs}" if runs else "")))
    for i, real in enumerate(tqdm(picks, unit="face", disable=None if progress else True, desc="synthesise")):
        image = load_crop(real, layout.root)
        sample = FaceSample(image, real.landmarks_array, mesher.landmarks(image), seen_validity(image))
        result = self_blend(sample, np.random.default_rng([seed, len(taken), i]))
        stem = real.crop_path.removeprefix("crops/").removesuffix(".png")
        k = 0
        while (path := f"{SYNTH_DIR}/{stem}_sbi{k}.png") in taken:
            k += 1
        taken.add(path)
        atomic_write_bytes(layout.root / path, encode_png(result.image))
        added.append(replace(real, crop_path=path, label=FAKE, method=result.method))
    commit_step(layout.root, info, f"synth-fakes {n} seed={seed}", {MANIFEST_NAME: manifest_text([*records, *added])})
    return BalanceSummary(
        "synth-fakes",
        added=len(added),
        before=_label_counts(records),
        after=_label_counts([*records, *added]),
        notes=["all added to the train split (val and test are left as they were)"],
    )


def add_real(dataset_dir: Path | str, folder: Path | str, workers: int = 1, progress: bool = True) -> BalanceSummary:
    """Extract real faces from every image/video under `folder` with the dataset's own settings
    (crop policy, frames, faces). Adding the same folder again replaces what it added before."""
    with dataset_lock(_existing(dataset_dir)):
        return _with_finished_step(dataset_dir, lambda: _add_real(dataset_dir, folder, workers, progress))


def downsample(dataset_dir: Path | str, seed: int | None = None) -> BalanceSummary:
    """Within each split, remove whole source files of the majority label until the labels are
    (about) even. Removed rows are appended to removed.csv; their crops stay on disk."""
    with dataset_lock(_existing(dataset_dir)):
        return _with_finished_step(dataset_dir, lambda: _downsample(dataset_dir, seed))


def synth_fakes(dataset_dir: Path | str, n: int, seed: int | None = None, progress: bool = True) -> BalanceSummary:
    """Add n fakes made by self-blending real crops (SBI, deepshield.synthesis.self_blend). Each fake
    keeps its real's group and split (it shows the same person), so no identity crosses a split."""
    with dataset_lock(_existing(dataset_dir)):
        return _with_finished_step(dataset_dir, lambda: _synth_fakes(dataset_dir, n, seed, progress))


def _with_finished_step(dataset_dir: Path | str, step: Callable[[], BalanceSummary]) -> BalanceSummary:
    """Run `step` once an interrupted one is finished or undone (finish_step), saying so."""
    finished = finish_step(dataset_dir)
    summary = step()
    if finished is not None:
        summary.notes.insert(0, f"note: {finished}")
    return summary


def _existing(dataset_dir: Path | str) -> Path:
    root = Path(dataset_dir)
    read_info(root)  # raises a clear error when there is no prepared dataset here
    return root
