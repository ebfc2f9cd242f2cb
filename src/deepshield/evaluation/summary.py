"""From a ScoredSet to every figure of an evaluation (the content of metrics.json).

Two levels are measured:

* face level: every face of every sampled frame is one sample, labelled with its file's label;
* file level: one score per file (image or video) by the video rule, as `Detector` gives verdicts.

Every metric comes with a bootstrap confidence interval that resamples *files* (stratified by
class): faces of one video are correlated, so resampling faces would overstate the precision.

Files in which no face was found have no score. With ``no_face="exclude"`` (the default) they are
left out of the file-level metrics and counted and listed; with ``no_face="zero"`` they enter the
file-level metrics with score 0 (called real), which charges a detector for fakes it never saw.
They never enter face-level metrics (they have no face). Files that could not be read at all are
always left out, counted and listed: those missing (named by a listing, not on disk) apart from
those unreadable (corrupt, not media).

Subsets: per source dataset (that source's files), and per manipulation method (that method's
fakes against every real of the sources the method appears in). A subset holding one class only
gets its accuracy at the threshold (the detection rate for fakes, the true-negative rate for reals)
with a bootstrap interval, and no AUC.

`summarize` returns an `EvaluationSummary`; `EvaluationSummary.to_json()` is metrics.json: a block
leaves out what it does not have (a one-class subset has no `metrics`), and NaN is written as null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deepshield.data.sources import MISSING_FILE
from deepshield.evaluation.calibration import reliability
from deepshield.evaluation.metrics import (
    FEW_FILES,
    METRIC_NAMES,
    MetricsError,
    bootstrap_intervals,
    bootstrap_weights,
    check_inputs,
    confusion_counts,
    detection_metrics,
    few_files_caution,
    files_per_class,
)
from deepshield.evaluation.scoring import CLEAN, ScoredSet
from deepshield.faces.crop import CropPolicy
from deepshield.inference.video_rule import VIDEO_RULE_KINDS, VideoRule, VideoRuleKind
from deepshield.models.card import InconclusiveBand

NoFacePolicy = Literal["exclude", "zero"]
NO_FACE_POLICIES: tuple[NoFacePolicy, ...] = ("exclude", "zero")

# Which class is positive, in the words the page, the terminal and metrics.json say it: the figures (recall,
# precision, the confusion matrix) read the wrong way round without it.
CALLED_FAKE = "score ≥ is called fake"
POSITIVE_CLASS = "fake: a score ≥ the threshold is called fake"


@dataclass(frozen=True)
class EvaluationSettings:
    threshold: float = 0.5
    rules: tuple[VideoRuleKind, ...] = VIDEO_RULE_KINDS  # the first is the headline rule; all are compared
    bootstrap: int = 1000  # resamples; 0 = no intervals
    seed: int = 0
    confidence: float = 0.95
    no_face: NoFacePolicy = "exclude"
    extra: dict = field(
        default_factory=dict
    )  # recorded in metrics.json "settings" (keys: SummarySettings' optional ones)
    band: InconclusiveBand | None = None  # files.csv calls files three-way with it (default: threshold +- 0.10)

    def __post_init__(self) -> None:
        if not self.rules or any(r not in VIDEO_RULE_KINDS for r in self.rules):
            raise MetricsError(f"video rules must be among {', '.join(VIDEO_RULE_KINDS)}, got {list(self.rules)}")
        if self.no_face not in NO_FACE_POLICIES:
            raise MetricsError(f"no-face policy must be one of {', '.join(NO_FACE_POLICIES)}, got {self.no_face!r}")

    @property
    def rule(self) -> VideoRule:
        return VideoRule(kind=self.rules[0])

    @property
    def inconclusive(self) -> InconclusiveBand:
        return self.band or InconclusiveBand.around(self.threshold)


# ---- the summary: metrics.json as typed objects -----------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Strict):
    value: float | None
    low: float | None = None
    high: float | None = None


class Confusion(_Strict):
    tn: int
    fp: int
    fn: int
    tp: int

    @property
    def false_positive_rate(self) -> float | None:
        return None if self.tn + self.fp == 0 else self.fp / (self.tn + self.fp)

    @property
    def true_positive_rate(self) -> float | None:
        return None if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)


class MetricBlock(_Strict):
    """One set's figures. Both classes: `metrics` (every metric name -> Interval) and `confusion`.
    One class only, or nothing to measure: `error`, and for one class the share called right."""

    count: int
    positives: int
    files: int
    error: str | None = None
    detection_rate: Interval | None = None  # fakes only
    true_negative_rate: Interval | None = None  # reals only
    metrics: dict[str, Interval] | None = None
    confusion: Confusion | None = None
    caution: str | None = None  # how far the intervals can be trusted, when a class has few files

    def value(self, name: str) -> float | None:
        """A metric's value; None when the block has no metrics."""
        return self.metrics[name].value if self.metrics else None


class SourceBlock(_Strict):
    file: MetricBlock
    face: MetricBlock


class MethodBlock(_Strict):
    reals_from: list[str]  # the sources whose reals the method's fakes are measured against
    file: MetricBlock
    face: MetricBlock


class VideoRuleBlock(_Strict):
    rule: str  # the rule in words
    file: MetricBlock
    videos_only: MetricBlock | None = None  # when images and videos are mixed


class Reliability(_Strict):
    ece: float | None
    edges: list[float]
    mean_predicted: list[float | None]  # None: an empty bin
    fraction_fake: list[float | None]
    counts: list[int]


class Calibration(_Strict):
    file: Reliability | None = None  # None: nothing to bin
    face: Reliability | None = None


class PerturbationRow(_Strict):
    condition: str  # "clean" or a perturbation, e.g. "jpeg:50"
    faces: int
    files_with_face: int
    files_without_face: int
    file_auc: float | None
    file_auc_low: float | None
    file_auc_high: float | None
    file_auc_change: float | None  # against clean, on the files with a face under both (paired)
    fakes_lost: int = 0  # files with a face when clean and none under this condition: a hidden fake...
    reals_lost: int = 0  # ...and a real, which the other figures leave out (under the no-face policy)
    face_auc: float | None
    face_auc_change: float | None  # against clean, on the faces of the files with a face under both (paired)
    file_balanced_accuracy: float | None
    file_recall: float | None
    file_false_positive_rate: float | None
    by_source_file_auc: dict[str, float | None]


class FileEntry(_Strict):
    """A file listed in the report: without a face (`method`), missing or unreadable (`reason`)."""

    path: str
    label: str
    source: str
    method: str | None = None
    reason: str | None = None


class UnlabelledEntry(_Strict):
    path: str
    reason: str


class Example(_Strict):
    path: str
    kind: str = ""  # "image", "video" or "crops"
    video: bool = False  # a video's faces (raw, or a prepared dataset's file of several frames)
    source: str
    method: str
    score: float
    face_probability: float
    frame_index: int
    face_index: int


class WorstExamples(_Strict):
    """The gallery's files: the real files scored highest (false positives first, then the reals nearest to
    being flagged) and the fake files scored lowest, whether or not the threshold misjudges them."""

    highest_real: list[Example]
    lowest_fake: list[Example]


class ModelInfo(_Strict):
    """The evaluated bundle, as far as the caller tells (all optional)."""

    name: str | None = None
    version: str | None = None
    bundle: str | None = None
    temperature: float | None = None
    offset: float | None = None
    threshold: float | None = None
    calibration_fitted_on: str | None = None
    crop_policy: CropPolicy | None = None
    onnx_sha256: str | None = None


class SummarySettings(_Strict):
    threshold: float
    positive_class: str = POSITIVE_CLASS  # absent from a metrics.json written before it was said
    video_rule: VideoRuleKind
    video_rule_text: str
    compared_rules: list[VideoRuleKind]
    bootstrap_resamples: int
    bootstrap_unit: str
    confidence: float
    seed: int
    no_face: NoFacePolicy
    mode: str  # how the set was scored: "media" or "crops"
    # What the command recorded (EvaluationSettings.extra):
    datasets: list[str] = []
    format: str | None = None
    frames: int | None = None
    perturbations: list[str] = []
    min_face_size: int | None = None
    split: str | None = None


class Counts(_Strict):
    files: int
    real_files: int
    fake_files: int
    images: int  # images and videos: the files read (a missing or unreadable file is neither), so that
    videos: int  # images + videos + missing_files + unreadable_files = files
    files_with_face: int
    files_without_face: int
    # Counted apart; a metrics.json written before has no missing_files, and its unreadable_files held them too.
    missing_files: int = 0
    unreadable_files: int
    unlabelled_entries: int
    faces: int
    files_in_file_metrics: int


class EvaluationSummary(_Strict):
    model: ModelInfo
    settings: SummarySettings
    counts: Counts
    file: MetricBlock
    face: MetricBlock
    calibration: Calibration
    by_source: dict[str, SourceBlock]
    by_method: dict[str, MethodBlock]
    video_rules: dict[str, VideoRuleBlock]
    perturbations: list[PerturbationRow]  # clean first
    no_face_files: list[FileEntry]
    missing_files: list[FileEntry] = []  # as Counts.missing_files: in unreadable_files in an earlier metrics.json
    unreadable_files: list[FileEntry]
    unlabelled_entries: list[UnlabelledEntry]
    worst: WorstExamples
    notes: list[str]
    synthetic: EvaluationSummary | None = Field(
        None,
        description="the same set scored by the synthetic-face score (a two-output bundle): AUCs, real faces flagged",
    )

    def to_json(self) -> dict:
        """metrics.json: only what was set (a block without metrics has no `metrics` key)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def headline(self, level: Literal["file", "face"] = "file") -> dict[str, float]:
        """Flat name -> value of one level's metrics, interval ends as <name>_low / _high (for MLflow)."""
        block = self.file if level == "file" else self.face
        out = {}
        for name, interval in (block.metrics or {}).items():
            for part in ("value", "low", "high"):
                value = getattr(interval, part)
                if value is not None:
                    out[f"{level}_{name}" + ("" if part == "value" else f"_{part}")] = value
        return out


def clean_json(value):
    """NaN and infinities become None; numpy scalars plain numbers (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _one_class_rate(correct: np.ndarray, clusters: np.ndarray, settings: EvaluationSettings) -> dict:
    rate = float(correct.mean())
    out = {"value": rate, "low": None, "high": None}
    if settings.bootstrap:
        keys, inverse = np.unique(clusters, return_inverse=True)
        per_correct = np.bincount(inverse, weights=correct.astype(np.float64))
        per_count = np.bincount(inverse).astype(np.float64)
        rng = np.random.default_rng(settings.seed)
        weights = bootstrap_weights(np.arange(len(keys)), np.zeros(len(keys), np.int64), settings.bootstrap, rng)
        values = (weights @ per_correct) / (weights @ per_count)
        tail = (1 - settings.confidence) / 2 * 100
        out["low"], out["high"] = (float(v) for v in np.percentile(values, [tail, 100 - tail]))
    return out


def metric_block(
    labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray, settings: EvaluationSettings, what: str
) -> MetricBlock:
    """count, positives, every metric with its interval, confusion matrix; or an `error` with what can be said."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    out: dict = {"count": int(labels.size), "positives": int(labels.sum()), "files": len(np.unique(clusters))}
    if labels.size == 0:
        out["error"] = f"no {what} to measure"
        return MetricBlock.model_validate(out)
    try:
        check_inputs(labels, scores, what)
        metrics = detection_metrics(labels, scores, settings.threshold)
    except MetricsError as exc:
        out["error"] = str(exc)
        # Both classes yet no metric, or a score that is not a number: no rate either (a NaN counted as right).
        if np.unique(labels).size > 1 or not np.isfinite(scores).all():
            return MetricBlock.model_validate(clean_json(out))
        correct = (scores >= settings.threshold) == (labels == 1)
        name = "detection_rate" if labels[0] == 1 else "true_negative_rate"
        out[name] = _one_class_rate(correct, clusters, settings)
        out["confusion"] = confusion_counts(labels, scores, settings.threshold)
        # its rate's interval over 3 files read [1.000, 1.000] without a word; with no bootstrap there is none
        if out["files"] < FEW_FILES and settings.bootstrap:
            out["caution"] = few_files_caution(*files_per_class(labels, clusters))
        return MetricBlock.model_validate(clean_json(out))
    intervals = None
    if settings.bootstrap:
        intervals = bootstrap_intervals(
            labels, scores, clusters, settings.threshold, settings.bootstrap, settings.seed, settings.confidence
        ).intervals
    out["metrics"] = {
        name: {
            "value": getattr(metrics, name),
            "low": intervals[name].low if intervals else None,
            "high": intervals[name].high if intervals else None,
        }
        for name in METRIC_NAMES
    }
    out["confusion"] = confusion_counts(labels, scores, settings.threshold)
    if intervals:  # the caution is of the bootstrap's intervals: --bootstrap 0 gives none to understate
        out["caution"] = few_files_caution(*files_per_class(labels, clusters))
    return MetricBlock.model_validate(clean_json(out))


@dataclass
class LevelData:
    labels: np.ndarray
    scores: np.ndarray
    clusters: np.ndarray  # file ids
    file_ids: np.ndarray  # per sample


def face_level(scored: ScoredSet, condition: str = CLEAN, temperature: float | None = None) -> LevelData:
    mask = scored.condition_mask(condition) if scored.face_count else np.zeros(0, bool)
    file_ids = scored.faces["file_id"][mask]
    return LevelData(scored.labels_of_faces()[mask], scored.probabilities(temperature)[mask], file_ids, file_ids)


def file_level(
    scored: ScoredSet, condition: str, rule: VideoRule, no_face: str, temperature: float | None = None
) -> LevelData:
    scores = scored.file_scores(condition, rule, temperature)
    readable = np.array([not f.error for f in scored.files], dtype=bool)
    if no_face == "zero":
        scores = np.where(np.isnan(scores) & readable, 0.0, scores)
    keep = readable & ~np.isnan(scores)
    ids = np.flatnonzero(keep)
    labels = np.array([scored.files[i].label for i in ids], dtype=np.int64)
    return LevelData(labels, scores[keep], ids, ids)


def subset_by_file(data: LevelData, file_mask: np.ndarray) -> LevelData:
    keep = file_mask[data.file_ids]
    return LevelData(data.labels[keep], data.scores[keep], data.clusters[keep], data.file_ids[keep])


def _block(data: LevelData, settings: EvaluationSettings, what: str) -> MetricBlock:
    return metric_block(data.labels, data.scores, data.clusters, settings, what)


def _auc(data: LevelData) -> float | None:
    try:
        return detection_metrics(data.labels, data.scores).auc
    except MetricsError:
        return None


def _paired_auc_change(clean: LevelData, now: LevelData, both: np.ndarray) -> float | None:
    """AUC under a condition minus the clean AUC, both on the files with a face under both (`both`, per file)."""
    before, after = _auc(subset_by_file(clean, both)), _auc(subset_by_file(now, both))
    return None if before is None or after is None else after - before


def _reliability(data: LevelData) -> Reliability | None:
    if data.labels.size == 0:
        return None
    rel = reliability(data.labels, data.scores)
    values = {
        "ece": rel.ece,
        "edges": rel.edges.tolist(),
        "mean_predicted": rel.mean_predicted.tolist(),
        "fraction_fake": rel.fraction_fake.tolist(),
        "counts": rel.counts.tolist(),
    }
    return Reliability.model_validate(clean_json(values))


def summarize(
    scored: ScoredSet,
    settings: EvaluationSettings,
    model: ModelInfo | None = None,
    synthetic: tuple[EvaluationSettings, ModelInfo] | None = None,
) -> EvaluationSummary:
    """Everything the report shows (NaN already replaced by None). `synthetic`: the synthetic-face
    score's settings (its threshold and band) and model figures, for a set scored by a two-output bundle."""
    rule = settings.rule
    files = scored.files
    faces = face_level(scored)
    per_file = file_level(scored, CLEAN, rule, settings.no_face)
    clean_scores = scored.file_scores(CLEAN, rule)
    sources = sorted({f.source for f in files})
    methods = sorted({f.method for f in files if f.label == 1})
    source_of = np.array([f.source for f in files], dtype=object)
    method_of = np.array([f.method for f in files], dtype=object)
    label_of = np.array([f.label for f in files], dtype=np.int64)

    by_source = {}
    for source in sources:
        mask = source_of == source
        by_source[source] = {
            "file": _block(subset_by_file(per_file, mask), settings, "files"),
            "face": _block(subset_by_file(faces, mask), settings, "faces"),
        }
    by_method = {}
    for method in methods:
        method_sources = sorted({f.source for f in files if f.label == 1 and f.method == method})
        mask = ((label_of == 1) & (method_of == method)) | ((label_of == 0) & np.isin(source_of, method_sources))
        by_method[method] = {
            "reals_from": method_sources,
            "file": _block(subset_by_file(per_file, mask), settings, "files"),
            "face": _block(subset_by_file(faces, mask), settings, "faces"),
        }

    video_rules = {}
    for kind in settings.rules:
        video_rules[kind] = {
            "rule": VideoRule(kind=kind).describe(),
            "file": _block(file_level(scored, CLEAN, VideoRule(kind=kind), settings.no_face), settings, "files"),
        }
    is_video = np.array([f.is_video for f in files], dtype=bool)
    if is_video.any() and not is_video.all():
        for kind in settings.rules:
            video_rules[kind]["videos_only"] = _block(
                subset_by_file(file_level(scored, CLEAN, VideoRule(kind=kind), settings.no_face), is_video),
                settings,
                "videos",
            )

    perturbations = []
    readable = np.array([not f.error for f in files], dtype=bool)
    clean_with_face = ~np.isnan(clean_scores) & readable
    for condition in scored.conditions:
        condition_faces = face_level(scored, condition)
        condition_files = file_level(scored, condition, rule, settings.no_face)
        with_face = ~np.isnan(scored.file_scores(condition, rule))
        file_block = _block(condition_files, settings, "files")
        auc = file_block.metrics["auc"] if file_block.metrics else Interval(value=None)
        face_auc = _auc(condition_faces)
        # Paired, at both levels: the files with a face under both (a file that lost its face left the row's
        # set, so the change compared other files: noise:60 read +0.034, +0.019 on the files that kept a face;
        # the face-level change stayed unpaired, resize:0.25 read +0.000 where the paired change is -0.111).
        both = clean_with_face & with_face
        lost = clean_with_face & ~with_face
        perturbations.append(
            {
                "condition": condition,
                "faces": int(condition_faces.labels.size),
                "files_with_face": int((with_face & readable).sum()),
                "files_without_face": int((~with_face & readable).sum()),
                "file_auc": auc.value,
                "file_auc_low": auc.low,
                "file_auc_high": auc.high,
                "file_auc_change": _paired_auc_change(per_file, condition_files, both),
                "fakes_lost": int((lost & (label_of == 1)).sum()),
                "reals_lost": int((lost & (label_of == 0)).sum()),
                "face_auc": face_auc,
                "face_auc_change": _paired_auc_change(faces, condition_faces, both),
                "file_balanced_accuracy": file_block.value("balanced_accuracy"),
                # From the confusion, as the FPR: a set of fakes alone has no metrics, and its rows read "-".
                "file_recall": file_block.confusion.true_positive_rate if file_block.confusion else None,
                "file_false_positive_rate": file_block.confusion.false_positive_rate if file_block.confusion else None,
                "by_source_file_auc": {s: _auc(subset_by_file(condition_files, source_of == s)) for s in sources},
            }
        )

    no_face_files = [
        {"path": f.path, "label": f.label_name, "source": f.source, "method": f.method}
        for f in files
        if not f.error and np.isnan(clean_scores[f.file_id])
    ]

    def failed(f) -> dict:
        return {"path": f.path, "label": f.label_name, "source": f.source, "reason": f.error}

    # Apart: a missing file was counted as unreadable on the page and in metrics.json, where the terminal and
    # the page's own listings said "1 missing, 0 unreadable".
    missing = [failed(f) for f in files if f.error == MISSING_FILE]
    unreadable = [failed(f) for f in files if f.error and f.error != MISSING_FILE]
    highest_real = sorted((e for e in scored.examples.values() if files[e.file_id].label == 0), key=lambda e: -e.score)
    lowest_fake = sorted((e for e in scored.examples.values() if files[e.file_id].label == 1), key=lambda e: e.score)

    def describe_example(e) -> dict:
        f = files[e.file_id]
        return {
            "path": f.path,
            "kind": f.kind,
            "video": f.is_video,
            "source": f.source,
            "method": f.method,
            "score": e.score,
            "face_probability": e.probability,
            "frame_index": e.frame_index,
            "face_index": e.face_index,
        }

    summary = {
        "model": model or ModelInfo(),
        "settings": {
            "threshold": settings.threshold,
            "positive_class": POSITIVE_CLASS,
            "video_rule": rule.kind,
            "video_rule_text": rule.describe(),
            "compared_rules": list(settings.rules),
            "bootstrap_resamples": settings.bootstrap,
            "bootstrap_unit": "file (stratified by class)",
            "confidence": settings.confidence,
            "seed": settings.seed,
            "no_face": settings.no_face,
            "mode": scored.mode,
            **settings.extra,
        },
        "counts": {
            "files": len(files),
            "real_files": int((label_of == 0).sum()),
            "fake_files": int((label_of == 1).sum()),
            "images": sum(1 for f in files if not f.error and f.kind in ("image", "crops") and not f.is_video),
            "videos": sum(1 for f in files if not f.error and f.is_video),
            "files_with_face": int((~np.isnan(clean_scores) & readable).sum()),
            "files_without_face": len(no_face_files),
            "missing_files": len(missing),
            "unreadable_files": len(unreadable),
            "unlabelled_entries": len(scored.problems),
            "faces": int(faces.labels.size),
            "files_in_file_metrics": int(per_file.labels.size),
        },
        "file": _block(per_file, settings, "files"),
        "face": _block(faces, settings, "faces"),
        "calibration": {"file": _reliability(per_file), "face": _reliability(faces)},
        "by_source": by_source,
        "by_method": by_method,
        "video_rules": video_rules,
        "perturbations": perturbations,
        "no_face_files": no_face_files,
        "missing_files": missing,
        "unreadable_files": unreadable,
        "unlabelled_entries": [{"path": p, "reason": r} for p, r in scored.problems],
        "worst": {
            "highest_real": [describe_example(e) for e in highest_real],
            "lowest_fake": [describe_example(e) for e in lowest_fake],
        },
        "notes": list(scored.notes),
    }
    view = scored.synthetic_view()
    if synthetic is not None and view is not None:
        summary["synthetic"] = summarize(view, *synthetic).to_json()
    return EvaluationSummary.model_validate(clean_json(summary))
