"""Refit a bundle's calibration (temperature, offset, threshold, band) on a labelled set -> a new bundle version.

* Temperature: fitted on the face logits (what the temperature scales), minimising log-loss; or
  (``keep_temperature``) the bundle's own, so that only the threshold moves: the way to set a
  threshold on real media alone, or on media the model ranks poorly, where a log-loss fit would
  flatten every probability towards one half.
* Offset (``fit_offset``): probability = sigmoid((logit - offset) / temperature), fitted with the
  temperature by log-loss (Platt scaling), or alone with the temperature kept: for a score that ranks
  well but sits too high (real photos all scored high, generated faces higher). Without it the
  bundle's offset is kept (0 for plain temperature scaling).
* Threshold: fitted on the *file* scores (the video rule over face tracks, an image's most suspicious
  face), since the threshold decides verdicts on files: the lowest threshold whose false-positive
  rate over the real files of *each* source is at most the target (the rule training's export uses),
  or (``target_fpr=None``) the best balanced accuracy.
  Files without a face take no part.
* Inconclusive band: fitted on the same file scores around the new threshold
  (`deepshield.evaluation.calibration.fit_inconclusive_band`).
* Or (``keep_verdicts``) only the scale is refitted (the temperature, and the offset if asked) and the
  threshold and band stay where they cut the logits, re-expressed at the new calibration: the probabilities a user reads become honest on
  the calibration media while an image's verdict stays exactly what it was (a video's track score is a
  mean of probabilities, so a video lying on a boundary can cross it). The way to make probabilities
  calibrated on real media without moving operating points that were chosen for a false-positive rate.

The new bundle is a copy of the old one (model.onnx byte for byte) with a new model card: the new
calibration, ``fitted_on`` saying on what and how, the version given or the old one with ``cal.<date>`` ending its local part (``calibrated_version``),
and the metrics on the calibration set before and after (``calibration_before_*``,
``calibration_after_*``). Those are in-sample figures: measure the new bundle on another set.

The card's rates at a threshold (real files flagged, fakes caught: ``real_fpr_<set>``, ``bench_<set>_fpr``,
``bench_<set>_face_fpr``, ``bench_<set>_tpr``, ``synthetic_bench_<set>_fpr``, ...; `measured_at_calibration`)
are never carried past a refit of the score they were measured with: on every labelled set the card has
figures on (its ``training.benchmarks``) whose real (or fake) files the calibration set holds whole
(`benchmarks_held`), they are measured again, by both scores, at the thresholds the new bundle applies and
by the product's file rule (`rates_on_held_sets`); the refitted score's others are removed. Carried over,
the shipped 1.2.3 said 1 of 22 modern-swaps real files flagged by each score where the product flagged
none, and no face-edits real file by the synthetic-face score where it flagged 3 of 534.

``score="synthetic"`` refits the synthetic-face score's calibration instead (``synthetic.calibration``,
metrics ``synthetic_calibration_*``) from the same faces' synthetic logits, with label 1 meaning a
generated face: e.g. its threshold for a false-positive rate on one's own real photos, which the
verdict would otherwise flag as AI-generated.

With files from two or more sources (datasets), each source is also held out in turn: the same fit on
the other sources, applied to the held-out one (real files flagged, fakes caught, face ECE, before and
after; ``calibration_heldout_<source>_*``). That says whether the fit carries over to media it never
saw, which the in-sample figures cannot.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date as Date
from pathlib import Path
from typing import Literal

import numpy as np

from deepshield.errors import BundleError, DeepShieldError
from deepshield.evaluation.calibration import (
    expected_calibration_error,
    fit_inconclusive_band,
    fit_platt,
    fit_temperature,
    fit_threshold,
    fit_threshold_each,
    sets_over_target,
    temperature_at_edge,
)
from deepshield.evaluation.metrics import check_inputs, detection_metrics, metric_key
from deepshield.evaluation.scoring import CLEAN, ScoredSet
from deepshield.evaluation.summary import LevelData, file_level, subset_by_file
from deepshield.inference.runtime import read_card
from deepshield.inference.video_rule import VideoRule
from deepshield.media.files import real_path
from deepshield.models.card import (
    CARD_FILE,
    GENERATED_ENTRY,
    MANIPULATION_OUTPUTS,
    PREPARED_ENTRY,
    SYNTHETIC_OUTPUT,
    SYNTHETIC_OUTPUT_DOC,
    Calibration,
    InconclusiveBand,
    ModelCard,
    building_bundle,
    check_bundle_folder,
    sigmoid,
)

Score = Literal["manipulation", "synthetic"]
REPORTED = ("auc", "log_loss", "balanced_accuracy", "recall", "eer")


@dataclass(frozen=True)
class Fit:
    """A scale (temperature, offset) and the threshold fitted at it."""

    temperature: float
    threshold: float
    offset: float = 0.0

    @property
    def scale(self) -> Calibration:
        """How this fit turns logits into probabilities (its temperature and offset)."""
        return Calibration(temperature=self.temperature, offset=self.offset)


@dataclass(frozen=True)
class Method:
    """How to refit: the threshold for a false-positive rate (else the best balanced accuracy), or the
    verdicts kept (threshold and band at the same logits); the temperature fitted or kept; with
    `fit_offset`, the offset fitted too (Platt scaling; with the temperature kept, the offset alone),
    else the bundle's offset kept."""

    target_fpr: float | None = None
    keep_temperature: bool = False
    keep_verdicts: bool = False
    fit_offset: bool = False

    def __post_init__(self) -> None:
        if self.target_fpr is not None and not 0 <= self.target_fpr < 1:
            raise DeepShieldError(f"target false-positive rate must be in [0, 1), got {self.target_fpr}")
        if self.keep_verdicts and self.target_fpr is not None:
            raise DeepShieldError("keeping the verdicts keeps the threshold: it cannot also fit one")
        if self.keep_verdicts and self.keep_temperature and not self.fit_offset:
            raise DeepShieldError("keeping the verdicts and the temperature leaves nothing to refit (fit the offset?)")


@dataclass(frozen=True)
class HeldOutCheck:
    """One source held out: the fit on the other sources against the bundle's calibration, on it."""

    source: str
    real_files: int
    fake_files: int
    fit: Fit
    before: dict[str, float]  # flagged (real files at or above the threshold), caught (fakes), ece (faces)
    after: dict[str, float]


@dataclass
class CalibrationResult:
    card: ModelCard
    calibration: Calibration  # the refitted score's new calibration (in the card)
    shipped: Fit  # the bundle's calibration of the refitted score
    before: dict[str, dict[str, float]]  # level -> metric -> value
    after: dict[str, dict[str, float]]
    files: int
    real_files: int
    faces: int
    held_out: list[HeldOutCheck]
    verdicts_changed: int  # files of the calibration set whose verdict (three-way, from this score) moved
    rates_measured_on: list[str] = field(default_factory=list)  # the sets whose rates were measured again
    rates_removed: list[str] = field(default_factory=list)  # the card's rates at the refitted score's old calibration
    scale_note: str | None = None  # temperature_at_edge's, where the fitted temperature stopped at its range's end

    def removed_by_reason(self, source: ModelCard) -> list[str]:
        """The rates not carried over, grouped by why (calibrate's report): rates calibrate measures again on a
        labelled set of the card that the calibration set did not hold whole (the sets not found on this
        machine named), and figures it cannot measure (validation, holdout, a prepared dataset's, rates by
        either score). The data root was blamed for all of them."""
        from deepshield.training.config import DATA_DIR_ENV

        found, missing = located_benchmarks(source)
        measurable = {"bench_fpr", *(key for name in [*found, *missing] for key in _rate_keys(benchmark_key(name)))}
        on_sets = [k for k in self.rates_removed if k in measurable]
        others = [k for k in self.rates_removed if k not in measurable]
        lines = []
        if on_sets:
            where = (
                f"; not found here, under ${DATA_DIR_ENV} or the working folder: {', '.join(missing)}"
                if missing
                else ""
            )
            lines.append(
                "on the card's labelled sets the calibration set does not hold whole (calibrate on them too to "
                f"measure these again{where}): {', '.join(on_sets)}"
            )
        if others:
            lines.append(
                f"which calibrate cannot measure (of the training run, or by either score): {', '.join(others)}"
            )
        return lines

    @property
    def temperature_after(self) -> float:
        return self.calibration.temperature

    @property
    def threshold_after(self) -> float:
        return self.calibration.threshold


def calibrated_version(version: str, when: Date) -> str:
    """'1.0.0' -> '1.0.0+cal.20250101'; an earlier calibration's date is replaced, and any other local part kept:
    a trained bundle's '0.0.0+<run id>.ep<epoch>' became '0.0.0+cal.<date>', its run and epoch lost, and two
    epochs of one run calibrated the same day were one name and version."""
    public, _, local = version.partition("+")
    kept = re.sub(r"(^|\.)cal\.\d{8}$", "", local)
    return f"{public or '0.0.0'}+{kept + '.' if kept else ''}cal.{when:%Y%m%d}"


def new_bundle_version(source: str, version: str | None, when: Date) -> str:
    """The calibrated bundle's version: `version`, else calibrated_version's. Refused when it is the
    source's (calibrated again the same day): two bundles of one name and version would score differently."""
    new = version or calibrated_version(source, when)
    if new == source:
        raise DeepShieldError(
            f"the calibrated bundle would carry its source's version {source} (calibrated again the same day, "
            "or --version named it): give it another with --version"
        )
    return new


def _level_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    metrics = detection_metrics(labels, probabilities, threshold)
    out = {name: float(getattr(metrics, name)) for name in REPORTED}
    real = probabilities[labels == 0]
    out["false_positive_rate"] = float((real >= threshold).mean())
    out["ece"] = expected_calibration_error(labels, probabilities)
    return out


def at_calibration(probability: float, old: Calibration, new: Calibration) -> float:
    """A boundary (threshold or band edge: a score at it lies on its upper side) re-expressed under `new`
    at the logit where `old` put it. Thresholds are fitted at a sample's own score, so the logit is
    lowered by its rounding: the float resolution of `probability`, magnified by the logit's slope there,
    and the logit's own resolution (a score is its logit divided by the temperature, rounded). A score the
    old boundary held exactly then stays on its upper side. The result is lowered by a few of its own ulps
    too: the new scale's exp and division round as well, by up to 3 ulps on some CPUs' maths."""
    clipped = float(np.clip(probability, 1e-12, 1 - 1e-12))
    logit = old.logit(probability)
    resolution = old.temperature * float(np.spacing(clipped)) / (clipped * (1 - clipped))
    rounding = 4 * (resolution + float(np.spacing(abs(logit))))
    boundary = float(new.probability(logit - rounding))
    return boundary - 8 * float(np.spacing(boundary))


def kept_below(boundary: float, below: Iterable[np.ndarray]) -> float:
    """A re-expressed boundary raised, where need be, just above `below`: the new scale's scores of the
    samples the old boundary left below it. at_calibration lowers a boundary so that a score it held stays
    above; a threshold fitted one ulp above a set's top real (none of them to be flagged) was lowered under
    that real, which the new bundle then flagged while its card said it did not."""
    tops = [float(scores.max()) for scores in below if scores.size]
    top = max(tops, default=-math.inf)
    return boundary if top < boundary else float(min(1.0, np.nextafter(top, np.inf)))


def holding(band: InconclusiveBand, threshold: float) -> InconclusiveBand:
    """The band widened, if need be, to hold the threshold (a threshold kept above a real may pass an edge
    by an ulp)."""
    return band.model_copy(update={"low": min(band.low, threshold), "high": max(band.high, threshold)})


def band_at_calibration(
    band: InconclusiveBand, old: Calibration, new: Calibration, scores: tuple[np.ndarray, np.ndarray] | None = None
) -> InconclusiveBand:
    """The band kept at the same logits under `new`; `scores` (the same files' scores under old and new):
    each edge kept above the files it left below (kept_below)."""

    def edge(value: float) -> float:
        moved = at_calibration(value, old, new)
        return moved if scores is None else kept_below(moved, [scores[1][scores[0] < value]])

    return InconclusiveBand(
        low=edge(band.low),
        high=edge(band.high),
        fitted_on=f"{band.fitted_on}; kept at the same logits, re-expressed at {_describe(new)}",
    )


def _describe(calibration: Calibration) -> str:
    offset = f", offset {calibration.offset:.4g}" if calibration.offset else ""
    return f"temperature {calibration.temperature:.4g}{offset}"


def fit_scale(
    labels: np.ndarray, logits: np.ndarray, method: Method, shipped: Calibration, what: str = "faces"
) -> Calibration:
    """The probability scale `method` fits on these labelled face logits, from `shipped`'s: the temperature
    by log-loss (the offset kept) or kept, or with `fit_offset` the offset too (Platt scaling) or alone."""
    check_inputs(labels, sigmoid(logits), what)
    if method.fit_offset:
        temperature, offset = fit_platt(labels, logits, shipped.temperature if method.keep_temperature else None)
    elif method.keep_temperature:
        temperature, offset = shipped.temperature, shipped.offset
    else:
        temperature, offset = fit_temperature(labels, logits - shipped.offset), shipped.offset
    return Calibration(temperature=temperature, offset=offset)


def fit(scored: ScoredSet, rule: VideoRule, method: Method, shipped: Fit, sources: set[str] | None = None) -> Fit:
    """Temperature (and offset) on the clean face logits of `sources` (else all), threshold on their
    file scores; or, keeping the verdicts, the threshold that cuts the logits where `shipped`'s did."""
    faces = _face_mask(scored, sources)
    scale = fit_scale(
        scored.labels_of_faces()[faces], scored.faces["logit"][faces].astype(np.float64), method, shipped.scale
    )
    temperature, offset = scale.temperature, scale.offset
    files = _files(scored, rule, scale, sources)
    if method.keep_verdicts:
        before = _files(scored, rule, shipped.scale, sources).scores
        moved = at_calibration(shipped.threshold, shipped.scale, scale)
        return Fit(temperature, kept_below(moved, [files.scores[before < shipped.threshold]]), offset)
    check_inputs(files.labels, files.scores, "files with a face")
    if method.target_fpr is None:
        return Fit(temperature, fit_threshold(files.labels, files.scores), offset)
    return Fit(
        temperature, fit_threshold_each(_real_scores_by_source(scored, files).values(), method.target_fpr), offset
    )


def _real_scores_by_source(scored: ScoredSet, files: LevelData) -> dict[str, np.ndarray]:
    """The real files' scores, source by source."""
    real = files.labels == 0
    real_sources = np.array([scored.files[i].source for i in files.file_ids[real]])
    return {str(source): files.scores[real][real_sources == source] for source in np.unique(real_sources)}


def _refuse_missed_target(scored: ScoredSet, files: LevelData, threshold: float, target_fpr: float) -> None:
    """Refuse a threshold that flags more of a source's real files than the target: where reals score at the
    top of the scale (saturated probabilities), no threshold below 1 leaves them out, and the card claimed
    FPR <= 0.05 over each source with 20% of one flagged at a threshold of 1.0."""
    missed = sets_over_target(_real_scores_by_source(scored, files), threshold, target_fpr)
    if missed:
        raise DeepShieldError(
            f"no threshold flags at most {target_fpr:g} of each source's real files: at {threshold:.4f} it flags "
            f"{missed}, real files scored at the top of the scale; fit --balanced, or refit the scale (without "
            "--keep-temperature, or with --fit-offset)"
        )


def _file_mask(scored: ScoredSet, sources: set[str] | None) -> np.ndarray:
    return np.array([sources is None or f.source in sources for f in scored.files], dtype=bool)


def _face_mask(scored: ScoredSet, sources: set[str] | None) -> np.ndarray:
    if not scored.face_count:
        return np.zeros(0, bool)
    return scored.condition_mask(CLEAN) & _file_mask(scored, sources)[scored.faces["file_id"]]


def _files(scored: ScoredSet, rule: VideoRule, calibration: Calibration, sources: set[str] | None) -> LevelData:
    """File scores at `calibration`'s temperature and offset (of `sources`, else all)."""
    at = replace(scored, offset=calibration.offset)
    files = file_level(at, CLEAN, rule, "exclude", temperature=calibration.temperature)
    return subset_by_file(files, _file_mask(scored, sources))


def _held_out_figures(scored: ScoredSet, files: LevelData, calibration: Fit, source: str) -> dict[str, float]:
    """`files`: the source's file scores at the calibration."""
    flagged = files.scores >= calibration.threshold
    faces = _face_mask(scored, {source})
    labels = scored.labels_of_faces()[faces]
    probabilities = calibration.scale.probability(scored.faces["logit"][faces])
    figures = {"flagged": float(flagged[files.labels == 0].mean()) if (files.labels == 0).any() else float("nan")}
    figures["caught"] = float(flagged[files.labels == 1].mean()) if (files.labels == 1).any() else float("nan")
    figures["ece"] = expected_calibration_error(labels, probabilities) if labels.size else float("nan")
    return figures


def held_out_checks(
    scored: ScoredSet, shipped: Fit, method: Method, rule: VideoRule = VideoRule()
) -> list[HeldOutCheck]:
    """Each source held out in turn (see the module's docstring); a source whose others hold only one
    class cannot be checked and is skipped."""
    sources = sorted({f.source for f in scored.files})
    if len(sources) < 2:
        return []
    checks = []
    for source in sources:
        try:
            refit = fit(scored, rule, method, shipped, set(sources) - {source})
        except DeepShieldError:
            continue
        before = _files(scored, rule, shipped.scale, {source})
        after = _files(scored, rule, refit.scale, {source})
        checks.append(
            HeldOutCheck(
                source,
                int((before.labels == 0).sum()),
                int((before.labels == 1).sum()),
                refit,
                _held_out_figures(scored, before, shipped, source),
                _held_out_figures(scored, after, refit, source),
            )
        )
    return checks


@dataclass(frozen=True)
class HeldBenchmark:
    """A labelled set the card has figures on (``training.benchmarks``) whose files the calibration set holds:
    `reals` and `fakes` pick its real and its fake files among the scored ones (a mask over `ScoredSet.files`),
    each given only when the set holds every one of them (a share of some of them is not the set's)."""

    name: str  # as the card names it, e.g. "dev-eval/modern-swaps"
    reals: np.ndarray | None
    fakes: np.ndarray | None

    @property
    def key(self) -> str:
        return benchmark_key(self.name)


def benchmark_key(name: str) -> str:
    """A labelled set's name in metric keys (as training names its figures: `bench_<key>_fpr`)."""
    return metric_key(Path(name).name)


def card_benchmarks(card: ModelCard) -> list[str]:
    """The labelled sets a card has figures on: its face-swap score's benchmarks (a frozen synthetic head's
    parent's), then its own run's."""
    return list(dict.fromkeys([*card.manipulation_training().benchmarks, *card.training.benchmarks]))


def located_benchmarks(card: ModelCard) -> tuple[dict[str, Path], list[str]]:
    """The card's labelled sets found here (under $DEEPSHIELD_DATA_ROOT, else the working directory, as
    training read them), name -> folder, and the names of those not found. A prepared dataset is in
    neither: it is scored as crops of its split, never matched to its files, so its rates are never
    measured again here."""
    from deepshield.evaluation.scoring import is_prepared_dataset
    from deepshield.training.config import DataConfig

    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in card_benchmarks(card):
        try:
            folder = DataConfig().locate(Path(name), "benchmark")
        except DeepShieldError:
            missing.append(name)
            continue
        if not is_prepared_dataset(folder):
            found[name] = folder
    return found, missing


def benchmarks_held(card: ModelCard, scored: ScoredSet) -> list[HeldBenchmark]:
    """The card's labelled sets found here (located_benchmarks) whose real or fake files `scored` holds,
    each class only where it holds all of them, under the same label. A set not found here is not held:
    its rates cannot be measured again."""
    from deepshield.data.sources import FAKE, REAL
    from deepshield.evaluation.scoring import list_items

    index: dict[Path, int] = {}
    for record in scored.files:
        index.setdefault(real_path(record.path), record.file_id)
    held = []
    for name, folder in located_benchmarks(card)[0].items():
        try:
            items, _ = list_items([folder])
        except DeepShieldError:  # a layout not told apart: its rates are not carried over (calibrate says so)
            continue
        masks: dict[str, np.ndarray | None] = {}
        for label in (REAL, FAKE):
            found = [index.get(real_path(item.path)) for item in items if item.label == label]
            ids = [i for i in found if i is not None and scored.files[i].label == int(label == FAKE)]
            masks[label] = np.isin(np.arange(len(scored.files)), ids) if len(ids) == len(found) else None
        if masks[REAL] is not None or masks[FAKE] is not None:
            held.append(HeldBenchmark(name, masks[REAL], masks[FAKE]))
    return held


def rates_on_held_sets(
    scored: ScoredSet,
    benchmarks: Sequence[HeldBenchmark],
    manipulation: Calibration,
    synthetic: Calibration | None,
    every_set: Sequence[str],
) -> dict[str, float]:
    """The card's rates on the sets `scored` holds, at these calibrations' thresholds, files scored as the
    product scores them (the detector's video rule; a file without a face takes no part): real files flagged
    (real_fpr_<set> and bench_<set>_fpr, as export and training name it), real faces flagged
    (bench_<set>_face_fpr), fake files caught (bench_<set>_tpr), real files the synthetic-face score flags
    (synthetic_bench_<set>_fpr); bench_fpr pooled when it holds the real files of `every_set`."""
    product = VideoRule()
    rates: dict[str, float] = {}
    files = _files(scored, product, manipulation, None)
    clean = _face_mask(scored, None)
    probabilities = manipulation.probability(scored.faces["logit"]) if scored.face_count else np.zeros(0)
    pooled: list[np.ndarray] = []
    for held in benchmarks:
        key = held.key
        if held.reals is not None:
            flags = files.scores[held.reals[files.file_ids]] >= manipulation.threshold
            if flags.size:
                rates[f"real_fpr_{key}"] = rates[f"bench_{key}_fpr"] = float(flags.mean())
            pooled.append(flags)
            faces = clean & held.reals[scored.faces["file_id"]] if scored.face_count else clean
            if faces.any():
                rates[f"bench_{key}_face_fpr"] = float((probabilities[faces] >= manipulation.threshold).mean())
        if held.fakes is not None:
            caught = files.scores[held.fakes[files.file_ids]] >= manipulation.threshold
            if caught.size:
                rates[f"bench_{key}_tpr"] = float(caught.mean())
    every_real = np.concatenate(pooled) if pooled else np.zeros(0, bool)
    if set(every_set) <= {h.name for h in benchmarks if h.reals is not None} and every_real.size:
        rates["bench_fpr"] = float(every_real.mean())  # pooled over the sets, as training pools it
    view = scored.synthetic_view()
    if synthetic is not None and view is not None:
        synthetic_files = _files(view, product, synthetic, None)
        for held in benchmarks:
            if held.reals is not None:
                flags = synthetic_files.scores[held.reals[synthetic_files.file_ids]] >= synthetic.threshold
                if flags.size:
                    rates[f"synthetic_bench_{held.key}_fpr"] = float(flags.mean())
    return {key: round(value, 4) for key, value in rates.items()}


def recalibrate(
    scored: ScoredSet,
    card: ModelCard,
    method: Method = Method(),
    rule: VideoRule = VideoRule(),
    described_as: str = "",
    frames: int | None = None,
    when: Date | None = None,
    score: Score = "manipulation",
    version: str | None = None,
    benchmarks: Sequence[HeldBenchmark] = (),
) -> CalibrationResult:
    """`benchmarks`: the card's labelled sets `scored` holds (benchmarks_held), on which its rates are measured
    again at the new bundle's thresholds; the refitted score's other rates leave the card."""
    when = when or Date.today()
    calibration = card.calibration
    both = scored  # both scores' faces: the rates are measured again by each
    if score == "synthetic":
        view = scored.synthetic_view()
        if card.synthetic is None or view is None:
            raise DeepShieldError("this bundle has no synthetic-face score to calibrate")
        scored, calibration = view, card.synthetic.calibration
    shipped = Fit(calibration.temperature, calibration.threshold, calibration.offset)
    fitted = fit(scored, rule, method, shipped)
    after_files = _files(scored, rule, fitted.scale, None)
    if method.target_fpr is not None:
        _refuse_missed_target(scored, after_files, fitted.threshold, method.target_fpr)
    mask = _face_mask(scored, None)
    labels = scored.labels_of_faces()[mask]
    logits = scored.faces["logit"][mask].astype(np.float64)
    before_files = _files(scored, rule, shipped.scale, None)
    held_out = held_out_checks(scored, shipped, method, rule)
    if method.keep_verdicts:
        # The band verdicts use, reaching down to even odds: a new offset moves even odds to other logits,
        # and the stored band kept there turned files between the two from inconclusive to no signs found.
        band = holding(
            band_at_calibration(
                calibration.band.from_even_odds(),
                shipped.scale,
                fitted.scale,
                (before_files.scores, after_files.scores),
            ),
            fitted.threshold,
        )
    else:
        band = fit_inconclusive_band(after_files.labels, after_files.scores, fitted.threshold)
    # Counted with the bands verdicts use (reaching down to even odds: ScoreRule), not the stored ones.
    used_before, used_after = calibration.band.from_even_odds(), band.from_even_odds()
    verdicts_changed = sum(
        used_before.classify(float(old)) != used_after.classify(float(new))
        for old, new in zip(before_files.scores, after_files.scores, strict=True)
    )
    before = {
        "face": _level_metrics(labels, shipped.scale.probability(logits), shipped.threshold),
        "file": _level_metrics(before_files.labels, before_files.scores, shipped.threshold),
    }
    after = {
        "face": _level_metrics(labels, fitted.scale.probability(logits), fitted.threshold),
        "file": _level_metrics(after_files.labels, after_files.scores, fitted.threshold),
    }
    n_files = int(after_files.labels.size)
    n_real = int((after_files.labels == 0).sum())
    if method.keep_verdicts and verdicts_changed:
        why = (
            "the band's low edge at the new logits lying above even odds, where verdicts take it down to (the "
            "fitted offset moved even odds); fit without --fit-offset, or without --keep-verdicts"
            if method.fit_offset
            else "files' scores too close together for the new scale to keep them apart; fit without --keep-verdicts"
        )
        raise DeepShieldError(
            f"--keep-verdicts cannot keep every verdict here: {verdicts_changed} of {len(after_files.scores)} files "
            f"would change, {why}"
        )
    if method.keep_verdicts:
        threshold_how = (
            f", threshold and band kept at the same logits (threshold {shipped.threshold:.4f} at "
            f"{_describe(shipped.scale)}: the verdicts unchanged)"
        )
    else:
        how = (
            f"false-positive rate <= {method.target_fpr:g} over the real files of each source"
            if method.target_fpr is not None
            else "best balanced accuracy over files"
        )
        threshold_how = f", threshold on file scores ({rule.kind} rule) for {how}"
    if method.fit_offset and method.keep_temperature:
        scale_how = "; temperature kept, offset on face logits (log-loss)"
    elif method.fit_offset:
        scale_how = "; temperature and offset on face logits (Platt scaling, log-loss)"
    elif method.keep_temperature:
        scale_how = "; temperature kept"
    else:
        scale_how = "; temperature on face logits (log-loss)"
    fitted_on = (
        f"{described_as or 'a labelled set'}: {n_files} files with a face ({n_real} real, {n_files - n_real} fake), {labels.size} faces"
        + (f", {frames} frames per video" if frames else "")
        + f"{scale_how}{threshold_how}; {when:%Y-%m-%d}"
    )
    scale_note = None if method.keep_temperature else temperature_at_edge(fitted.temperature)
    if scale_note is not None:
        fitted_on += f"; {scale_note}"
    prefix = "calibration_" if score == "manipulation" else "synthetic_calibration_"
    earlier = tuple(f"{prefix}{stage}_" for stage in ("before", "after", "heldout"))
    refit = calibration.model_copy(
        update={
            "temperature": fitted.temperature,
            "offset": fitted.offset,
            "threshold": fitted.threshold,
            "fitted_on": fitted_on,
            "inconclusive": band,
        }
    )
    synthetic_now = card.synthetic.calibration if card.synthetic is not None else None
    measured = rates_on_held_sets(
        both,
        benchmarks,
        refit if score == "manipulation" else card.calibration,
        refit if score == "synthetic" else synthetic_now,
        card_benchmarks(card),
    )
    # Rates at the old threshold (reals flagged, fakes caught) say nothing of a new one; AUCs hold (the
    # order is the same). Those on the sets the calibration holds are measured again (both scores', at the
    # thresholds the new bundle applies), the refitted score's others leave the card. All were kept with the
    # verdicts: the shipped card then said 1 of 22 real files flagged where the product flagged none (training
    # measured them, on faces read another way), beside held-out figures of its own that said otherwise.
    moved = (fitted.temperature, fitted.offset, fitted.threshold) != (
        shipped.temperature,
        shipped.offset,
        shipped.threshold,
    )
    stale = [k for k in card.metrics if moved and k not in measured and measured_at_calibration(k, score)]
    metrics = {k: measured.get(k, v) for k, v in card.metrics.items() if not k.startswith(earlier) and k not in stale}
    metrics |= measured  # a rate the card did not have yet, after the others
    figures = {
        f"{prefix}{stage}_{level}_{name}": value
        for stage, levels in (("before", before), ("after", after))
        for level, numbers in levels.items()
        for name, value in numbers.items()
    }
    figures |= {
        f"{prefix}heldout_{metric_key(check.source)}_{stage}_{name}": value
        for check in held_out
        for stage, numbers in (("before", check.before), ("after", check.after))
        for name, value in numbers.items()
    }
    figures[f"{prefix}verdicts_changed"] = verdicts_changed
    metrics |= {key: round(float(value), 4) for key, value in figures.items() if np.isfinite(value)}
    output, described = (
        ("logit", MANIPULATION_OUTPUTS["logit"])
        if score == "manipulation"
        else (SYNTHETIC_OUTPUT, SYNTHETIC_OUTPUT_DOC)
    )
    new_version = new_bundle_version(card.version, version, when)
    update: dict = {
        "version": new_version,
        "metrics": metrics,
        "outputs": card.outputs | {output: described},  # says how the calibration, offset included, applies
    }
    if score == "manipulation":
        update["calibration"] = refit
    else:
        assert card.synthetic is not None, "checked above"
        update["synthetic"] = card.synthetic.model_copy(update={"calibration": refit})
    new_card = card.model_copy(update=update)
    ModelCard.model_validate(new_card.model_dump())  # the new values pass the card's own checks
    measured_on = [h.name for h in benchmarks if set(_rate_keys(h.key)) & measured.keys()]
    return CalibrationResult(
        new_card,
        refit,
        shipped,
        before,
        after,
        n_files,
        n_real,
        int(labels.size),
        held_out,
        verdicts_changed,
        measured_on,
        stale,
        scale_note,
    )


def write_calibrated_bundle(
    source: Path, out: Path, card: ModelCard, force: bool = False, rates_measured_on: Sequence[str] = ()
) -> Path:
    """Copy the bundle folder `source` to `out` and write `card` there. Refuses to overwrite `source`
    or a non-empty `out` (unless force). `rates_measured_on`: the sets whose rates the calibration measured
    again (CalibrationResult.rates_measured_on), as its README says."""
    source, out = Path(source), Path(out)
    check_calibrated_folder(source, out, force)
    with building_bundle(out) as building:
        # The source's README describes the source's calibration and figures: this bundle gets its own.
        shutil.copytree(
            source, building, ignore=shutil.ignore_patterns(".*", "__pycache__", README_FILE), dirs_exist_ok=True
        )
        (building / CARD_FILE).write_text(card.model_dump_json(indent=2))
        (building / README_FILE).write_text(calibrated_readme(source, card, rates_measured_on))
    return out


def check_calibrated_folder(source: Path, out: Path, force: bool) -> None:
    """Refuse `out` for the bundle calibrated from `source`: the source itself, a folder inside it (the copy of
    the source took in the new bundle's own lock and part folder, a second model.onnx among them), or one
    check_bundle_folder refuses."""
    if out.resolve() == source.resolve():
        raise BundleError("--out must be a new folder: refusing to overwrite the bundle being calibrated")
    if out.resolve().is_relative_to(source.resolve()):
        raise BundleError(f"--out {out} is inside the bundle being calibrated ({source}): give a folder outside it")
    check_bundle_folder(out, force)


README_FILE = "README.md"


def calibrated_readme(source: Path, card: ModelCard, rates_measured_on: Sequence[str] = ()) -> str:
    """What the new bundle is, from its card: the source's network, recalibrated."""
    parent = read_card(source)
    lines = [
        f"# {card.name} {card.version}",
        "",
        f"The network of {parent.name} {parent.version} (the bundle `{source.name}`), recalibrated by `deepshield "
        "calibrate`: same weights and same ranking of faces (AUCs), new probabilities and threshold. Written by "
        "calibrate from `model_card.json`, which holds how the network was trained (`training`; a synthetic-face "
        "head's parent run: `synthetic.parent_training`) and its record (`deepshield model --model <this folder>`).",
        "",
        f"- Intended use: {card.intended_use or 'not stated'}",
        f"- Licence: {card.license or 'not stated'}",
        f"- Face-swap score: temperature {card.calibration.temperature:.4g}, offset {card.calibration.offset:.4g}, "
        f"threshold {card.calibration.threshold:.4f}; fitted on {card.calibration.fitted_on}.",
    ]
    if card.synthetic is not None:
        synthetic = card.synthetic.calibration
        lines.append(
            f"- Synthetic-face score: temperature {synthetic.temperature:.4g}, offset {synthetic.offset:.4g}, "
            f"threshold {synthetic.threshold:.4f}; fitted on {synthetic.fitted_on}."
        )
    measured = (
        f"Real files flagged (and fakes caught, where it holds them) on {', '.join(rates_measured_on)}: measured "
        "again on the calibration set, at this bundle's thresholds. Other rates "
        if rates_measured_on
        else "Rates "
    )
    lines += [
        "",
        f"{measured}at the source's threshold of the refitted score are not carried over; measure this bundle on "
        "labelled media of your own (`deepshield evaluate`). `model_card.json` holds the rest of the source's record.",
        "",
    ]
    return "\n".join(lines)


def _rate_keys(key: str) -> tuple[str, ...]:
    """The rates rates_on_held_sets measures on the set `key`."""
    return (
        f"real_fpr_{key}",
        f"bench_{key}_fpr",
        f"bench_{key}_face_fpr",
        f"bench_{key}_tpr",
        f"synthetic_bench_{key}_fpr",
    )


# Validation figures read at the threshold (or, log-loss, at the probability scale) export fitted.
AT_THRESHOLD = ("log_loss", "balanced_accuracy", "accuracy", "precision", "recall", "f1")


def measured_at_calibration(key: str, score: Score) -> bool:
    """A card figure that depends on the score's threshold or scale: a rate of reals flagged or of fakes
    caught (real_fpr_*, bench_*_fpr, bench_*_face_fpr, bench_*_tpr, synthetic_*_fpr, synthetic_holdout_tpr),
    a rate by either score (*_fpr_either), a validation figure at the threshold (val_recall, val_f1, ...)
    or at the scale (val_log_loss); not a rate at a fixed false-positive rate (*_tpr_at_*), a ranking (AUC,
    AP, EER) or calibrate's own figures."""
    if "tpr_at_" in key or key.startswith(("calibration_", "synthetic_calibration_")):
        return False
    if re.search(r"(^|_)fpr_either(_|$)", key):  # the product's flags: at either score's threshold
        return True
    if key.startswith("synthetic_") != (score == "synthetic"):
        return False
    name = key.removeprefix("synthetic_")
    if name.startswith("val_") and name.removeprefix("val_") in AT_THRESHOLD:
        return True
    return re.search(r"(^|_)(fpr|tpr)(_|$)", key) is not None


def training_folders_in(card: ModelCard, paths: Sequence[str], warn: Callable[[str], None]) -> list[str]:
    """The card's training data (read under $DEEPSHIELD_DATA_ROOT, else the working directory, as training read
    it) that holds any of `paths`: a calibration fitted on faces the network learnt is fitted to scores it gives
    no new face. A folder holds the paths under it; a prepared dataset ("prepared dataset <folder>") those its
    train split was cut from, by path or content as training refuses a benchmark (scored records name source
    files, never the dataset's folder, so its entry matched nothing). Its validation split was never trained on
    (the README calibrates on it). One not found here is said (`warn`) to be unchecked, not passed over."""
    from deepshield.training.benchmarks import files_shared
    from deepshield.training.config import DATA_DIR_ENV, DataConfig
    from deepshield.training.prepared import prepared_source_files

    root = Path(os.environ.get(DATA_DIR_ENV) or ".").expanduser()
    listed = [*card.training.data, *(card.synthetic.data if card.synthetic is not None else [])]
    folders = sorted({entry.split(": ", 1)[-1] for entry in listed})  # the synthetic score's say "real: <folder>"
    generated = {entry.split(": ", 1)[1] for entry in listed if entry.startswith(GENERATED_ENTRY)}
    resolved = [real_path(p) for p in paths]  # a link loop among them ended the run before its report
    trained_generated: set[Path] | None = None

    def holds_trained_generated() -> bool:
        """The synthetic head trained on its split's train part only: its validation faces, on which the
        README calibrates that score, were called the model's training data."""
        nonlocal trained_generated
        if trained_generated is None:
            from deepshield.training.synthetic import generated_split

            trained_generated = {real_path(path) for path in generated_split(card)[0]}
        return any(path in trained_generated for path in resolved)

    def holds(folder: str) -> bool:
        if folder in generated:
            try:
                return holds_trained_generated()
            except DeepShieldError:  # the split cannot be made again here: the folder as a whole, as before
                pass
        if folder.startswith(PREPARED_ENTRY):
            try:
                dataset = DataConfig().locate(Path(folder.removeprefix(PREPARED_ENTRY)), "prepared dataset")
                return bool(files_shared(resolved, prepared_source_files([dataset], splits=("train",))))
            except DeepShieldError as exc:
                warn(f"whether the set holds the model's training data could not be checked: {exc}")
                return False
        where = Path(folder).expanduser()
        # Relative as training read it: under the data root, else the working folder (DataConfig.locate).
        places = [where] if where.is_absolute() else [root / where, where]
        return any(path.is_relative_to(real_path(place)) for place in places for path in resolved)

    return [folder for folder in folders if holds(folder)]
