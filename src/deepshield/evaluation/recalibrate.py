"""Refit a bundle's temperature and threshold on a labelled set and write it as a new bundle version.

* Temperature: fitted on the face logits (what the temperature scales), minimising log-loss; or
  (``keep_temperature``) the bundle's own, so that only the threshold moves: the way to set a
  threshold on real media alone, or on media the model ranks poorly, where a log-loss fit would
  flatten every probability towards one half.
* Threshold: fitted on the *file* scores (the video rule over face tracks, an image's most suspicious
  face), since the threshold decides verdicts on files: the lowest threshold whose false-positive
  rate over the real files of *each* source is at most the target (the rule training's export uses),
  or (``target_fpr=None``) the best balanced accuracy.
  Files without a face take no part.
* Inconclusive band: fitted on the same file scores around the new threshold
  (`deepshield.evaluation.calibration.fit_inconclusive_band`).
* Or (``keep_verdicts``) the temperature alone is refitted and the threshold and band stay where they
  cut the logits, re-expressed at the new temperature: the probabilities a user reads become honest on
  the calibration media while an image's verdict stays exactly what it was (a video's track score is a
  mean of probabilities, so a video lying on a boundary can cross it). The way to make probabilities
  calibrated on real media without moving operating points that were chosen for a false-positive rate.

The new bundle is a copy of the old one (model.onnx byte for byte) with a new model card: the new
calibration, ``fitted_on`` saying on what and how, the version given or the old one with a ``+cal.<date>`` local part,
and the metrics on the calibration set before and after (``calibration_before_*``,
``calibration_after_*``). Those are in-sample figures: measure the new bundle on another set.

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

import shutil
from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path
from typing import Literal

import numpy as np

from deepshield.errors import BundleError, DeepShieldError
from deepshield.evaluation.calibration import (
    expected_calibration_error,
    fit_inconclusive_band,
    fit_temperature,
    fit_threshold,
    fit_threshold_each,
    sigmoid,
)
from deepshield.evaluation.metrics import check_inputs, detection_metrics, metric_key
from deepshield.evaluation.scoring import CLEAN, ScoredSet
from deepshield.evaluation.summary import LevelData, file_level, subset_by_file
from deepshield.inference.video_rule import VideoRule
from deepshield.models.card import CARD_FILE, Calibration, InconclusiveBand, ModelCard

Score = Literal["manipulation", "synthetic"]
REPORTED = ("auc", "log_loss", "balanced_accuracy", "recall", "eer")


@dataclass(frozen=True)
class Fit:
    temperature: float
    threshold: float


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
    temperature_before: float
    threshold_before: float
    before: dict[str, dict[str, float]]  # level -> metric -> value
    after: dict[str, dict[str, float]]
    files: int
    faces: int
    held_out: list[HeldOutCheck]
    verdicts_changed: int  # files of the calibration set whose verdict (three-way, from this score) moved

    @property
    def temperature_after(self) -> float:
        return self.calibration.temperature

    @property
    def threshold_after(self) -> float:
        return self.calibration.threshold


def calibrated_version(version: str, when: Date) -> str:
    """'1.0.0' -> '1.0.0+cal.20250101'; an earlier '+cal...' (or other local part) is replaced."""
    public = version.split("+", 1)[0] or "0.0.0"
    return f"{public}+cal.{when:%Y%m%d}"


def _level_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, float]:
    metrics = detection_metrics(labels, probabilities, threshold)
    out = {name: float(getattr(metrics, name)) for name in REPORTED}
    real = probabilities[labels == 0]
    out["false_positive_rate"] = float((real >= threshold).mean())
    out["ece"] = expected_calibration_error(labels, probabilities)
    return out


def at_temperature(probability: float, temperature: float, new_temperature: float) -> float:
    """The probability that the logit scored `probability` at `temperature` gets at `new_temperature`."""
    clipped = float(np.clip(probability, 1e-12, 1 - 1e-12))
    logit = np.log(clipped / (1 - clipped)) * temperature
    return float(sigmoid(np.asarray(logit / new_temperature)))


def band_at_temperature(band: InconclusiveBand, temperature: float, new_temperature: float) -> InconclusiveBand:
    return InconclusiveBand(
        low=at_temperature(band.low, temperature, new_temperature),
        high=at_temperature(band.high, temperature, new_temperature),
        fitted_on=f"{band.fitted_on}; kept at the same logits, re-expressed at temperature {new_temperature:.4g}",
    )


def fit(
    scored: ScoredSet,
    rule: VideoRule,
    target_fpr: float | None,
    sources: set[str] | None = None,
    temperature: float | None = None,
    verdicts_of: Fit | None = None,
) -> Fit:
    """Temperature on the clean face logits (unless one is given: kept), threshold on the file scores
    (of `sources`, else all); or, with `verdicts_of`, the threshold that cuts the logits where its
    threshold did (the verdicts kept)."""
    faces = _face_mask(scored, sources)
    labels = scored.labels_of_faces()[faces]
    logits = scored.faces["logit"][faces].astype(np.float64)
    check_inputs(labels, sigmoid(logits), "faces")
    if temperature is None:
        temperature = fit_temperature(labels, logits)
    if verdicts_of is not None:
        return Fit(temperature, at_temperature(verdicts_of.threshold, verdicts_of.temperature, temperature))
    files = _files(scored, rule, temperature, sources)
    check_inputs(files.labels, files.scores, "files with a face")
    if target_fpr is None:
        return Fit(temperature, fit_threshold(files.labels, files.scores))
    real = files.labels == 0
    real_scores = files.scores[real]
    real_sources = np.array([scored.files[i].source for i in files.file_ids[real]])
    per_source = (real_scores[real_sources == source] for source in np.unique(real_sources))
    return Fit(temperature, fit_threshold_each(per_source, target_fpr))


def _file_mask(scored: ScoredSet, sources: set[str] | None) -> np.ndarray:
    return np.array([sources is None or f.source in sources for f in scored.files], dtype=bool)


def _face_mask(scored: ScoredSet, sources: set[str] | None) -> np.ndarray:
    if not scored.face_count:
        return np.zeros(0, bool)
    return scored.condition_mask(CLEAN) & _file_mask(scored, sources)[scored.faces["file_id"]]


def _files(scored: ScoredSet, rule: VideoRule, temperature: float, sources: set[str] | None) -> LevelData:
    files = file_level(scored, CLEAN, rule, "exclude", temperature=temperature)
    return subset_by_file(files, _file_mask(scored, sources))


def _held_out_figures(scored: ScoredSet, files: LevelData, calibration: Fit, source: str) -> dict[str, float]:
    """`files`: the source's file scores at the calibration's temperature."""
    flagged = files.scores >= calibration.threshold
    faces = _face_mask(scored, {source})
    labels = scored.labels_of_faces()[faces]
    probabilities = sigmoid(scored.faces["logit"][faces].astype(np.float64) / calibration.temperature)
    figures = {"flagged": float(flagged[files.labels == 0].mean()) if (files.labels == 0).any() else float("nan")}
    figures["caught"] = float(flagged[files.labels == 1].mean()) if (files.labels == 1).any() else float("nan")
    figures["ece"] = expected_calibration_error(labels, probabilities) if labels.size else float("nan")
    return figures


def held_out_checks(
    scored: ScoredSet,
    shipped: Fit,
    target_fpr: float | None,
    rule: VideoRule = VideoRule(),
    temperature: float | None = None,
    keep_verdicts: bool = False,
) -> list[HeldOutCheck]:
    """Each source held out in turn (see the module's docstring); a source whose others hold only one
    class cannot be checked and is skipped."""
    sources = sorted({f.source for f in scored.files})
    if len(sources) < 2:
        return []
    checks = []
    for source in sources:
        try:
            others = set(sources) - {source}
            refit = fit(scored, rule, target_fpr, others, temperature, shipped if keep_verdicts else None)
        except DeepShieldError:
            continue
        before = _files(scored, rule, shipped.temperature, {source})
        after = _files(scored, rule, refit.temperature, {source})
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


def recalibrate(
    scored: ScoredSet,
    card: ModelCard,
    target_fpr: float | None = None,
    rule: VideoRule = VideoRule(),
    described_as: str = "",
    frames: int | None = None,
    when: Date | None = None,
    keep_temperature: bool = False,
    score: Score = "manipulation",
    keep_verdicts: bool = False,
    version: str | None = None,
) -> CalibrationResult:
    when = when or Date.today()
    if target_fpr is not None and not 0 <= target_fpr < 1:
        raise DeepShieldError(f"target false-positive rate must be in [0, 1), got {target_fpr}")
    if keep_verdicts and (keep_temperature or target_fpr is not None):
        raise DeepShieldError(
            "keeping the verdicts refits the temperature alone: it cannot also keep the temperature or fit a threshold"
        )
    calibration = card.calibration
    if score == "synthetic":
        view = scored.synthetic_view()
        if card.synthetic is None or view is None:
            raise DeepShieldError("this bundle has no synthetic-face score to calibrate")
        scored, calibration = view, card.synthetic.calibration
    kept = calibration.temperature if keep_temperature else None
    shipped = Fit(calibration.temperature, calibration.threshold)
    fitted = fit(scored, rule, target_fpr, temperature=kept, verdicts_of=shipped if keep_verdicts else None)
    temperature, threshold = fitted.temperature, fitted.threshold
    mask = _face_mask(scored, None)
    labels = scored.labels_of_faces()[mask]
    logits = scored.faces["logit"][mask].astype(np.float64)
    t_before, thr_before = calibration.temperature, calibration.threshold
    before_files = file_level(scored, CLEAN, rule, "exclude", temperature=t_before)
    after_files = file_level(scored, CLEAN, rule, "exclude", temperature=temperature)
    held_out = held_out_checks(scored, shipped, target_fpr, rule, kept, keep_verdicts)
    if keep_verdicts:
        band = band_at_temperature(calibration.band, t_before, temperature)
    else:
        band = fit_inconclusive_band(after_files.labels, after_files.scores, threshold)
    verdicts_changed = sum(
        calibration.band.classify(float(old)) != band.classify(float(new))
        for old, new in zip(before_files.scores, after_files.scores, strict=True)
    )
    before = {
        "face": _level_metrics(labels, sigmoid(logits / t_before), thr_before),
        "file": _level_metrics(before_files.labels, before_files.scores, thr_before),
    }
    after = {
        "face": _level_metrics(labels, sigmoid(logits / temperature), threshold),
        "file": _level_metrics(after_files.labels, after_files.scores, threshold),
    }
    n_files = int(after_files.labels.size)
    n_real = int((after_files.labels == 0).sum())
    if keep_verdicts:
        threshold_how = (
            f", threshold and band kept at the same logits (threshold {thr_before:.4f} at temperature {t_before:.4g}: "
            "the verdicts unchanged)"
        )
    else:
        how = (
            f"false-positive rate <= {target_fpr:g} over the real files of each source"
            if target_fpr is not None
            else "best balanced accuracy over files"
        )
        threshold_how = f", threshold on file scores ({rule.kind} rule) for {how}"
    fitted_on = (
        f"{described_as or 'a labelled set'}: {n_files} files with a face ({n_real} real, {n_files - n_real} fake), {labels.size} faces"
        + (f", {frames} frames per video" if frames else "")
        + ("; temperature kept" if keep_temperature else "; temperature on face logits (log-loss)")
        + f"{threshold_how}; {when:%Y-%m-%d}"
    )
    prefix = "calibration_" if score == "manipulation" else "synthetic_calibration_"
    earlier = tuple(f"{prefix}{stage}_" for stage in ("before", "after", "heldout"))
    metrics = {k: v for k, v in card.metrics.items() if not k.startswith(earlier)}
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
    refit = calibration.model_copy(
        update={"temperature": temperature, "threshold": threshold, "fitted_on": fitted_on, "inconclusive": band}
    )
    update: dict = {"version": version or calibrated_version(card.version, when), "metrics": metrics}
    if score == "manipulation":
        update["calibration"] = refit
    else:
        assert card.synthetic is not None, "checked above"
        update["synthetic"] = card.synthetic.model_copy(update={"calibration": refit})
    new_card = card.model_copy(update=update)
    ModelCard.model_validate(new_card.model_dump())  # the new values pass the card's own checks
    return CalibrationResult(
        new_card, refit, t_before, thr_before, before, after, n_files, int(labels.size), held_out, verdicts_changed
    )


def write_calibrated_bundle(source: Path, out: Path, card: ModelCard, force: bool = False) -> Path:
    """Copy the bundle folder `source` to `out` and write `card` there. Refuses to overwrite `source`
    or a non-empty `out` (unless force)."""
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise BundleError("--out must be a new folder: refusing to overwrite the bundle being calibrated")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise BundleError(f"{out} exists and is not empty (use --force to replace it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    temporary = out.with_name(out.name + ".part")
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(source, temporary, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    (temporary / CARD_FILE).write_text(card.model_dump_json(indent=2))
    if out.exists():
        out.rmdir()
    temporary.rename(out)
    return out
