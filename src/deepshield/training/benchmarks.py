"""Benchmarks during training: labelled real media (e.g. dev-eval) scored every epoch with the product's
own pipeline, so that epochs, trials and recipes are chosen on real deepfakes rather than on our own
synthesised fakes.

A benchmark's faces are found and cut once per crop policy (detection, crop policy, tracking: the
code `deepshield evaluate` runs) and cached; each epoch only runs the network over the cached crops
and applies the video rule. A benchmark is for choosing, never for training: one that shares a file
(by path or content) with the training data is refused.

Metric names (what `export.select` and `tune --select` take):
- per benchmark `<set>` (its folder name, lower case, non-alphanumerics as _):
  bench_<set>_face_auc (each face labelled with its file's label), bench_<set>_file_auc (one score per
  file by the video rule), both with _lo/_hi (95% bootstrap interval over files), bench_<set>_ap (face
  level), bench_<set>_fpr (share of real files at or above the epoch's threshold), bench_<set>_tpr
  (share of fake files there: the fakes caught), bench_<set>_face_fpr (share of real faces, e.g.
  frames of real videos) and bench_<set>_tpr_at_2pct_fpr (the fake files caught at the lowest threshold
  flagging at most 2% of the set's real files: 0 of 22, 10 of 534; independent of the calibration),
  bench_<set>_real_files and bench_<set>_fake_files (the files scored, those with a face: what the
  intervals resample, so a card can say when they are too few to trust);
- pooled over benchmarks: bench_face_auc, bench_file_auc (with _lo/_hi), bench_fpr, bench_auc, the
  mean of the per-benchmark face AUCs (every set weighs the same, however many files it has), and
  bench_tpr_at_2pct_fpr, the mean of the sets' catch rates at 2% of their real files.

Why the low-false-alarm figure: on the dev-eval sets a GPU-trained model ranked the modern swaps and face
edits better than the shipped one (bench_auc +0.040) and caught fewer of them where few real files are
flagged (face edits at 1% of their reals: 11 against 23; docs/model-study.md, "The lease runs").
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepshield.data.layout import atomic_write_npz
from deepshield.data.prepare import same_bytes
from deepshield.errors import DeepShieldError
from deepshield.evaluation.calibration import caught_at_fpr, caught_with_reals_flagged
from deepshield.evaluation.metrics import (
    MetricsError,
    PairedDifference,
    bootstrap_intervals,
    detection_metrics,
    files_per_class,
    metric_key,
    paired_auc_resamples,
)
from deepshield.evaluation.scoring import (
    CLEAN,
    FLOAT_COLUMNS,
    FaceRow,
    FileRecord,
    ScoredSet,
    face_columns,
    is_prepared_dataset,
    open_labelled_set,
)
from deepshield.faces.crop import CropPolicy, SyntheticCrops
from deepshield.inference.video_rule import VideoRule
from deepshield.locks import logged_wait, waited_lock
from deepshield.media.files import keyed_among, real_path
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.plural import numbered

log = logging.getLogger(__name__)
BENCH_FORMAT = "15"  # part of the cache key: bump when what a cached benchmark holds changes (15: tiles from 641 px)
# 2,000, as the paired comparison: with 300 an interval's ends moved by a standard deviation of 0.014 from one
# seed to another on the modern swaps' 22 real and 24 fake files (the shipped model's face AUC [0.464, 0.849]
# at seed 0 against [0.490, 0.871]), where the intervals are read to three decimals; 2,000 cost 1.4 s an epoch.
BOOTSTRAP_RESAMPLES = 2000


class BenchmarkOverlapError(DeepShieldError):
    """A benchmark shares files with the training data."""


def benchmark_name(path: Path) -> str:
    return metric_key(Path(path).resolve().name)


# Training's data.benchmarks and compare's sets have no --format: a folder of another layout is named by a listing.
LAYOUT_ADVICE = (
    "list its files in a CSV (path,label[,group]) and name that, or name a dataset prepared by `deepshield prepare`"
)


def check_benchmark_layout(path: Path) -> None:
    """Refuse, before any face is found, a benchmark whose layout cannot be told (a raw set is read as
    `deepshield evaluate` reads it, with its layout detected)."""
    from deepshield.data.sources import detect_format

    if not is_prepared_dataset(path):
        detect_format(Path(path), LAYOUT_ADVICE)


@dataclass
class Benchmark:
    """One labelled set's faces, cut with one crop policy, ready to be scored by any network."""

    name: str
    files: list[FileRecord]
    rows: list[FaceRow]
    crops: np.ndarray  # len(rows) x S x S x 3 uint8
    synthetic_crops: SyntheticCrops | None = None  # what the synthetic-face score reads in place of some crops

    def scored(self, logits: np.ndarray, temperature: float) -> ScoredSet:
        return ScoredSet(self.files, [CLEAN], face_columns(self.rows, logits), temperature, "media")

    def real_files_only(self) -> Benchmark:
        """The same benchmark without its fake files: all that a threshold held on real media reads."""
        real = {f.file_id for f in self.files if f.label == 0}
        kept = [i for i, row in enumerate(self.rows) if row.file_id in real]
        return Benchmark(
            self.name,
            [f for f in self.files if f.file_id in real],
            [self.rows[i] for i in kept],
            self.crops[kept],
            None if self.synthetic_crops is None else self.synthetic_crops.taken(np.asarray(kept, np.int64)),
        )

    def save(self, path: Path) -> None:
        arrays = {
            "name": self.name,
            "files": json.dumps([asdict(f) for f in self.files]),
            "rows": np.array(self.rows, dtype=np.float64).reshape(len(self.rows), len(FaceRow._fields)),
            "crops": self.crops,
        }
        if self.synthetic_crops is not None:
            arrays |= {"synthetic_rows": self.synthetic_crops.rows, "synthetic_crops": self.synthetic_crops.pixels}
        atomic_write_npz(path, arrays, clear_left=True)

    @classmethod
    def load(cls, path: Path) -> Benchmark:
        with np.load(path, allow_pickle=False) as data:
            files = [FileRecord(**f) for f in json.loads(str(data["files"]))]
            kinds = [float if name in FLOAT_COLUMNS else int for name in FaceRow._fields]
            rows = [FaceRow._make(kind(v) for kind, v in zip(kinds, row)) for row in data["rows"]]
            synthetic = (
                None
                if "synthetic_crops" not in data
                else SyntheticCrops(data["synthetic_rows"], data["synthetic_crops"])
            )
            return cls(str(data["name"]), files, rows, data["crops"], synthetic)


def files_shared(
    files: Iterable[Path], training_files: Iterable[Path], training_digests: Collection[str] = ()
) -> dict[Path, Path | None]:
    """Those of `files` that are training files, each with the training file it is: by resolved path, or by
    identical content under another name (prepare's copy check, `same_bytes`); None for one whose content is
    that of a training file not on this machine (`training_digests`, source_key: a packed bank's sources)."""
    training = list(dict.fromkeys(real_path(p) for p in training_files))
    candidates = sorted({real_path(p) for p in files if Path(p).is_file()})
    shared: dict[Path, Path | None] = dict.fromkeys(keyed_among(candidates, set(training_digests)))
    shared |= same_bytes(candidates, training)
    shared |= {path: path for path in set(training).intersection(candidates)}
    return dict(sorted(shared.items()))


def check_no_overlap(
    benchmark: str,
    benchmark_files: Iterable[Path],
    training_files: Iterable[Path],
    training_digests: Collection[str] = (),
) -> None:
    """Refuse a benchmark that holds a training file (files_shared)."""
    if shared := list(files_shared(benchmark_files, training_files, training_digests)):
        listed = ", ".join(map(str, shared[:3])) + (f" and {len(shared) - 3} more" if len(shared) > 3 else "")
        raise BenchmarkOverlapError(
            f"benchmark {benchmark} shares {numbered(len(shared), 'file')} with the training data ({listed}): a benchmark is for "
            "choosing epochs and recipes and must never be trained on; remove them from one side"
        )


def _listing_key(path: Path, policy: CropPolicy, frames: int, min_face_size: int) -> str:
    """The cache key of a benchmark's faces: its files' names, sizes and times, and the settings. A file set
    (a CSV, a DFDC metadata.json) counts the media it lists too: keyed by its own file alone, a listed
    photo replaced kept its old faces."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    else:
        from deepshield.evaluation.scoring import list_items  # the set's own reading: data.sources

        files = [path, *sorted({item.path for item in list_items([path])[0] if item.path.is_file()})]
    listing = "\n".join(
        f"{p.relative_to(path) if path.is_dir() else p}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in files
    )
    text = "\n".join(
        [BENCH_FORMAT, str(path.resolve()), policy.model_dump_json(), str(frames), str(min_face_size), listing]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_benchmark(
    path: Path,
    policy: CropPolicy,
    cache_dir: Path,
    training_files: Iterable[Path],
    frames: int = DEFAULT_VIDEO_FRAMES,
    min_face_size: int = 20,
    split: str = "all",
    training_digests: Collection[str] = (),
    progress: bool = True,
) -> Benchmark:
    """A benchmark's faces from the cache, or found and cut now (then cached); `split`: a prepared dataset's
    (compare --split). Refuses overlap with training (`training_digests`: see check_no_overlap)."""
    name = benchmark_name(path)
    check_benchmark_layout(path)
    if is_prepared_dataset(path):
        from deepshield.data.manifest import read_manifest

        media = [Path(r.source_file) for r in read_manifest(path) if split in ("all", r.split)]
    else:
        from deepshield.evaluation.scoring import list_items

        split = "all"  # raw media have no split: compare --split names the prepared sets' among them
        media = [item.path for item in list_items([path])[0]]
    check_no_overlap(name, media, training_files, training_digests)
    cache_dir.mkdir(parents=True, exist_ok=True)
    within = "" if split == "all" else f"-{split}"  # the whole set keeps its cache key
    cache = cache_dir / f"benchmark-{name}{within}-{_listing_key(path, policy, frames, min_face_size)}.npz"
    # One build at a time, as the face bank's: two trainings cutting one benchmark at once wrote one temporary
    # file, and the second to rename it ended in FileNotFoundError. The second waits, then reads the cache.
    with waited_lock(cache.with_suffix(".lock"), waiting=logged_wait(log, f"benchmark {cache}")):
        return _cached_benchmark(cache, name, path, policy, frames, min_face_size, split, progress)


def _cached_benchmark(
    cache: Path,
    name: str,
    path: Path,
    policy: CropPolicy,
    frames: int,
    min_face_size: int,
    split: str,
    progress: bool,
) -> Benchmark:
    if cache.exists():
        log.info("benchmark %s from cache %s", name, cache)
        return Benchmark.load(cache)
    labelled = open_labelled_set(
        [path], policy, frames=frames, min_face_size=min_face_size, split=split, warn=log.warning, progress=progress
    )
    rows: list[FaceRow] = []
    crops: list[np.ndarray] = []
    synthetic: list[tuple[int, SyntheticCrops | None]] = []
    for item in labelled.cropped:
        synthetic.append((len(rows), item.synthetic_crops))
        rows.extend(item.rows)
        crops.append(item.crops)
    benchmark = Benchmark(
        name,
        labelled.files,
        rows,
        np.concatenate(crops) if crops else np.zeros((0, policy.size, policy.size, 3), np.uint8),
        SyntheticCrops.joined(synthetic),
    )
    benchmark.save(cache)
    faces_by_label = np.bincount([labelled.files[r.file_id].label for r in rows], minlength=2)
    log.info(
        "benchmark %s: %d files, %d faces (%d real, %d fake)", name, len(labelled.files), len(rows), *faces_by_label
    )
    return benchmark


@dataclass
class BenchmarkScores:
    """One epoch's scores of one benchmark."""

    benchmark: Benchmark
    scored: ScoredSet

    def real_file_scores(self, rule: VideoRule, temperature: float | None = None) -> np.ndarray:
        scores = self.scored.file_scores(CLEAN, rule, temperature)
        labels = np.array([f.label for f in self.scored.files])
        return scores[(labels == 0) & ~np.isnan(scores)]


def _auc_with_interval(labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray, prefix: str) -> dict[str, float]:
    try:
        auc = detection_metrics(labels, scores).auc
    except MetricsError:
        return {}
    interval = bootstrap_intervals(labels, scores, clusters, resamples=BOOTSTRAP_RESAMPLES).intervals["auc"]
    return {prefix: auc, f"{prefix}_lo": interval.low, f"{prefix}_hi": interval.high}


# (labels, scores, file clusters) of one level, face or file
Levels = tuple[np.ndarray, np.ndarray, np.ndarray]


def _pooled(parts: list[Levels]) -> Levels:
    labels, scores, clusters = (np.concatenate(column) for column in zip(*parts))
    return labels, scores, clusters


def _levels(scored: ScoredSet, rule: VideoRule, offset: int = 0) -> tuple[Levels, Levels]:
    """(labels, scores, file clusters) at face level and at file level."""
    face_ids = scored.faces["file_id"]
    face = (scored.labels_of_faces(), scored.probabilities(), face_ids + offset)
    file_scores = scored.file_scores(CLEAN, rule)
    keep = np.flatnonzero(~np.isnan(file_scores))
    file = (np.array([scored.files[i].label for i in keep], np.int64), file_scores[keep], keep + offset)
    return face, file


# The share of a benchmark's real files its low-false-alarm catch rate allows (bench_*_tpr_at_2pct_fpr).
LOW_FPR = 0.02


def pooled_bench_auc(per_set_face_aucs: list[float] | list[np.ndarray]) -> np.ndarray:
    """bench_auc, the one figure that picks epochs, trials and candidates: the mean of the sets' face-level
    AUCs (each set counts once, whatever its size). Given per-set resamples, their mean per resample."""
    return np.mean(per_set_face_aucs, axis=0)


def benchmark_metrics(
    results: list[BenchmarkScores], threshold: float, rule: VideoRule = VideoRule()
) -> dict[str, float]:
    """Every bench_* metric of one epoch (see the module's docstring)."""
    metrics: dict[str, float] = {}
    pooled_face: list[Levels] = []
    pooled_file: list[Levels] = []
    real_flags: list[np.ndarray] = []
    face_aucs = []
    low_fpr_catches: list[float] = []
    offset = 0
    for result in results:
        name = result.benchmark.name
        face, file = _levels(result.scored, rule, offset)
        offset += len(result.scored.files)
        pooled_face.append(face)
        pooled_file.append(file)
        metrics |= _auc_with_interval(*face, f"bench_{name}_face_auc")
        metrics |= _auc_with_interval(*file, f"bench_{name}_file_auc")
        real_files, fake_files = files_per_class(file[0], file[2])
        metrics[f"bench_{name}_real_files"], metrics[f"bench_{name}_fake_files"] = real_files, fake_files
        if f"bench_{name}_face_auc" in metrics:
            face_aucs.append(metrics[f"bench_{name}_face_auc"])
            metrics[f"bench_{name}_ap"] = detection_metrics(face[0], face[1]).ap
        face_reals = face[1][face[0] == 0]
        if face_reals.size:
            metrics[f"bench_{name}_face_fpr"] = float((face_reals >= threshold).mean())
        flags = result.real_file_scores(rule) >= threshold
        real_flags.append(flags)
        if flags.size:
            metrics[f"bench_{name}_fpr"] = float(flags.mean())
        fake_file_scores = file[1][file[0] == 1]
        if fake_file_scores.size:
            metrics[f"bench_{name}_tpr"] = float((fake_file_scores >= threshold).mean())  # fakes caught
            if fake_file_scores.size < file[0].size:
                metrics[f"bench_{name}_tpr_at_2pct_fpr"] = caught_at_fpr(file[0], file[1], LOW_FPR)
                low_fpr_catches.append(metrics[f"bench_{name}_tpr_at_2pct_fpr"])
    if results:
        metrics |= _auc_with_interval(*_pooled(pooled_face), "bench_face_auc")
        metrics |= _auc_with_interval(*_pooled(pooled_file), "bench_file_auc")
        flags = np.concatenate(real_flags)
        if flags.size:
            metrics["bench_fpr"] = float(flags.mean())
        if face_aucs:
            metrics["bench_auc"] = float(pooled_bench_auc(face_aucs))
        if low_fpr_catches:
            metrics["bench_tpr_at_2pct_fpr"] = float(np.mean(low_fpr_catches))
    return metrics


@dataclass(frozen=True)
class CatchesAtEqualFalseAlarms:
    """One benchmark's fake files caught when at most k of its real files are flagged, for several k."""

    benchmark: str
    reals: int
    fakes: int
    caught: dict[int, int]  # k -> fake files caught
    beyond_reals: tuple[int, ...] = ()  # the k asked for at or above its number of reals: nothing measured

    def nothing_to_compare(self, caught_by: str = "") -> str | None:
        """What a k at or above the set's number of reals measures (nothing): said, not left out without a
        word (--caught-with-reals 1 5 on a set of one real video printed nothing for it)."""
        if not self.beyond_reals:
            return None
        return (
            f"{self.benchmark} with at most {' or '.join(map(str, self.beyond_reals))} of {self.reals} real files "
            f"flagged: every real file may be, and every fake caught{caught_by}: nothing to compare"
        )


def catches_at_equal_false_alarms(
    results: list[BenchmarkScores], reals_flagged: Iterable[int], rule: VideoRule = VideoRule()
) -> list[CatchesAtEqualFalseAlarms]:
    """Per benchmark with real and fake files, the catch count at each allowed number of flagged real files
    (those below its number of reals; the others are its beyond_reals): how two models compare where verdicts
    are made, file by file."""
    out = []
    for result in results:
        _, (labels, scores, _) = _levels(result.scored, rule)
        reals, fakes = int((labels == 0).sum()), int((labels == 1).sum())
        if reals and fakes:
            asked = sorted(set(reals_flagged))
            caught = {k: caught_with_reals_flagged(labels, scores, k) for k in asked if k < reals}
            beyond = tuple(k for k in asked if k >= reals)
            out.append(CatchesAtEqualFalseAlarms(result.benchmark.name, reals, fakes, caught, beyond))
    return out


def paired_comparison(
    reference: list[BenchmarkScores],
    candidate: list[BenchmarkScores],
    rule: VideoRule = VideoRule(),
    resamples: int = 2000,
) -> dict[str, PairedDifference]:
    """The candidate's AUCs minus the reference's on the same benchmarks, resampled together (paired
    bootstrap over files): bench_<set>_face_auc and bench_<set>_file_auc per set, and bench_auc (the mean
    of the face-level differences, each set resampled on its own). Both must score the same faces."""
    out: dict[str, PairedDifference] = {}
    face_resamples = []
    face_differences = []
    for index, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        name = ref.benchmark.name
        if cand.benchmark.name != name or not np.array_equal(ref.scored.faces["file_id"], cand.scored.faces["file_id"]):
            raise DeepShieldError(f"benchmark {name}: the two models scored other faces; they cannot be paired")
        for level, ref_level, cand_level in zip(
            ("face", "file"), _levels(ref.scored, rule), _levels(cand.scored, rule)
        ):
            # the same faces (checked above) give both models the same scored files; a NaN score is refused
            labels, ref_scores, clusters = ref_level
            if len(np.unique(labels)) < 2:
                continue  # one class: no AUC to compare, as benchmark_metrics gives none
            difference, resampled = paired_auc_resamples(
                labels, ref_scores, cand_level[1], clusters, resamples=resamples, seed=index
            )
            out[f"bench_{name}_{level}_auc"] = PairedDifference.from_resamples(difference, resampled)
            if level == "face":
                face_differences.append(difference)
                face_resamples.append(resampled)
    if face_resamples:
        out["bench_auc"] = PairedDifference.from_resamples(
            float(pooled_bench_auc(face_differences)), pooled_bench_auc(face_resamples)
        )
    return out
