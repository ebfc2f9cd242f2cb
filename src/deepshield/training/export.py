"""From a training checkpoint to a served bundle: temperature fitted on the validation split, the
threshold on it too or, with export.threshold_fpr, for a stated false-positive rate on real media."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deepshield.errors import DeepShieldError
from deepshield.evaluation.calibration import (
    fit_inconclusive_band,
    fit_temperature,
    fit_threshold,
    fit_threshold_each,
    sets_over_target,
    temperature_at_edge,
)
from deepshield.evaluation.metrics import detection_metrics, metric_key
from deepshield.evaluation.recalibrate import (
    Fit,
    Method,
    at_calibration,
    band_at_calibration,
    fit_scale,
    holding,
    kept_below,
)
from deepshield.evaluation.scoring import CLEAN, ScoredSet, aggregate_tracks
from deepshield.faces.crop import CropPolicy
from deepshield.inference.video_rule import VideoRule
from deepshield.models.card import (
    PREPARED_ENTRY,
    SYNTHESISED_FAKES,
    Calibration,
    InconclusiveBand,
    ModelCard,
    SyntheticScoreInfo,
    TrainingInfo,
    card_outputs,
    validation_fakes,
)
from deepshield.models.export import export_bundle
from deepshield.models.network import DeepfakeNet
from deepshield.training.checkpoint import load_checkpoint
from deepshield.training.config import (
    PACKAGED_CONFIGS,
    DataConfig,
    ExportConfig,
    SyntheticConfig,
    TrainConfig,
    checkpoint_config,
    data_folders,
    read_mapping,
    recorded_command,
)
from deepshield.training.synthetic import ScoredChecks

# One real file's faces: (track id per face, logit per face, frames sampled); plain arrays so that a
# checkpoint stays loadable whatever this module's classes become.
RealFileFaces = tuple[np.ndarray, np.ndarray, int]
# One benchmark's clean faces: (label per face, logit per face).
BenchmarkFaces = tuple[np.ndarray, np.ndarray]

log = logging.getLogger(__name__)


def real_file_faces(scored: ScoredSet) -> list[RealFileFaces]:
    """The real files of a scored benchmark, face by face, for fitting a threshold on real media."""
    mask = scored.condition_mask(CLEAN)
    out = []
    for record in scored.files:
        if record.label != 0:
            continue
        faces = mask & (scored.faces["file_id"] == record.file_id)
        if faces.any():
            out.append(
                (scored.faces["track_id"][faces].copy(), scored.faces["logit"][faces].astype(np.float64), record.frames)
            )
    return out


def benchmark_faces(scored: ScoredSet) -> BenchmarkFaces:
    """A scored benchmark's clean faces, real and fake: what a real-media probability scale is fitted on."""
    mask = scored.condition_mask(CLEAN)
    return scored.labels_of_faces()[mask].copy(), scored.faces["logit"][mask].astype(np.float64)


def _file_score(faces: RealFileFaces, scale: Calibration, rule: VideoRule) -> float:
    tracks, logits, frames = faces
    return aggregate_tracks(np.asarray(tracks), scale.probability(logits), frames, rule)


@dataclass(frozen=True)
class RealMediaScale:
    """Labelled faces of real media to fit a score's probability scale on (`calibrate_on = "benchmarks"`):
    the temperature by log-loss, or (`offset_only`) an offset with the validation temperature kept."""

    labels: np.ndarray
    logits: np.ndarray
    described: str  # what the faces are, for the card
    offset_only: bool = False

    def fit(self, validation: Calibration) -> Calibration:
        """The scale `calibrate --keep-verdicts` would fit on these faces, from the validation's."""
        method = Method(keep_verdicts=True, keep_temperature=self.offset_only, fit_offset=self.offset_only)
        return fit_scale(self.labels, self.logits, method, validation, "benchmark faces")

    def how(self, scale: Calibration) -> str:
        what = (
            f"offset {scale.offset:.4g}, temperature kept"
            if self.offset_only
            else f"temperature {scale.temperature:.4g}"
        )
        return (
            f"; probabilities on real media: {what}, by log-loss on {self.described}; threshold and band kept at "
            "the logits the validation fit put them"
        )


@dataclass(frozen=True, kw_only=True)
class FittedCalibration(Fit):
    """A fit (temperature, offset, threshold) with what it was fitted on, its band and its real-media rates."""

    fitted_on: str
    band: InconclusiveBand  # around the threshold, on the validation split
    real_fpr: dict[str, float] = field(default_factory=dict)  # real media flagged at the threshold, per source
    # What the fit warns of (its temperature at its range's end, a real-media target missed; fitted_on says
    # each too): said by the export that writes it on a card, not by every epoch's fit again.
    warnings: list[str] = field(default_factory=list)


MANIPULATION_SPLIT = f"validation split ({{count}} faces: real + {SYNTHESISED_FAKES}, identity-disjoint)"


def manipulation_split(data: DataConfig) -> str:
    """The face-swap validation split in words, {count} left to fill: a run on prepared datasets' fakes alone
    (data.synthesize = false) was described as validated on synthesised fakes it never made."""
    return MANIPULATION_SPLIT.replace(SYNTHESISED_FAKES, validation_fakes(data.model_dump()))


SYNTHETIC_SPLIT = (
    "synthetic-face validation split ({count} faces: generated files apart from training and holdout, "
    "identity-disjoint real faces)"
)


def manipulation_real_media(faces: dict[str, BenchmarkFaces] | None, export: ExportConfig) -> RealMediaScale | None:
    """The benchmarks' faces the face-swap score's temperature is fitted on (export.calibrate_on), else None."""
    if export.calibrate_on == "validation":
        return None
    if not faces:
        raise DeepShieldError(
            "export.calibrate_on = 'benchmarks' needs the benchmarks' scored faces, which this checkpoint does not "
            "hold (trained before they were kept, or without data.benchmarks)"
        )
    labels = np.concatenate([labels for labels, _ in faces.values()])
    logits = np.concatenate([logits for _, logits in faces.values()])
    described = f"{labels.size} faces of {', '.join(faces)} ({int((labels == 0).sum())} real, {int(labels.sum())} fake)"
    return RealMediaScale(labels, logits, described)


def fit_calibration(
    val_labels: np.ndarray,
    val_logits: np.ndarray,
    benchmark_reals: dict[str, list[RealFileFaces]],
    target_fpr: float | None,
    split: str = MANIPULATION_SPLIT,
    real_media: RealMediaScale | None = None,
) -> FittedCalibration:
    """Temperature on the validation split; threshold at the best validation balanced accuracy, or
    (target_fpr) the lowest one that flags at most that share of every real source: validation real
    faces and each benchmark's real files (scored by the video rule); band around it on the validation
    split. With `real_media`, the probability scale is then refitted on those faces and the threshold and
    band re-expressed at the same logits: the verdicts stay the validation fit's (a video's track score is a
    mean of probabilities, so one lying on a boundary can cross it), the probabilities become real media's."""
    labels = np.asarray(val_labels)
    logits = np.asarray(val_logits, dtype=np.float64)
    rule = VideoRule()

    def real_scores(scale: Calibration) -> dict[str, np.ndarray]:
        reals = {"validation": scale.probability(logits[labels == 0])}
        return reals | {
            name: np.array([_file_score(f, scale, rule) for f in files])
            for name, files in benchmark_reals.items()
            if files
        }

    scale = Calibration(temperature=fit_temperature(labels, logits))
    reals = real_scores(scale)
    validation = split.format(count=len(labels))
    if target_fpr is None:
        threshold = fit_threshold(labels, scale.probability(logits))
        fitted_on = f"temperature and threshold (best balanced accuracy): {validation}"
    else:
        threshold = fit_threshold_each(reals.values(), target_fpr)
        counts = ", ".join(f"{name} {scores.size}" for name, scores in reals.items())
        fitted_on = (
            f"temperature: {validation}; threshold: the lowest flagging at most {target_fpr * 100:g}% of each set of real media "
            f"(real faces or files: {counts})"
        )
    warnings = []
    if (note := temperature_at_edge(scale.temperature)) is not None:
        fitted_on += f"; {note}"
        warnings.append(f"{note} ({validation})")
    band = fit_inconclusive_band(labels, scale.probability(logits), threshold)
    if real_media is not None:
        refitted = real_media.fit(scale)
        refitted_reals = real_scores(refitted)
        # Every real the fitted threshold left below it stays below (kept_below): rounding put a set's top real
        # back above, flagged by the bundle whose card said that set's reals were not.
        below = [refitted_reals[name][scores < threshold] for name, scores in reals.items()]
        threshold = kept_below(at_calibration(threshold, scale, refitted), below)
        band = holding(band_at_calibration(band, scale, refitted), threshold)
        fitted_on += real_media.how(refitted)
        scale, reals = refitted, refitted_reals
    real_fpr = {name: float((scores >= threshold).mean()) for name, scores in reals.items()}
    if target_fpr is not None and (missed := sets_over_target(reals, threshold, target_fpr)):
        # Not refused, as calibrate refuses: a run's end is no place to lose it. Its card and its log say so.
        fitted_on += f"; the target is missed: at {threshold:.4f} it flags {missed}"
        warnings.append(f"no threshold flags at most {target_fpr * 100:g}% of each set of real media: {fitted_on}")
    return FittedCalibration(
        temperature=scale.temperature,
        threshold=threshold,
        offset=scale.offset,
        fitted_on=fitted_on,
        band=band,
        real_fpr=real_fpr,
        warnings=warnings,
    )


def fit_synthetic_calibration(
    scored: ScoredChecks,
    target_fpr: float | None,
    benchmark_reals: dict[str, list[RealFileFaces]] | None = None,
    on_benchmarks: bool = False,
) -> FittedCalibration:
    """The synthetic-face score's own temperature, threshold and band: `fit_calibration` on its validation
    split. With a target rate, the threshold also keeps to it on the validation's real photos at the
    generated set's resolution alone (FFHQ): pooled with the low-resolution faces, which it rarely
    flags, their rate could hide three times the target; and on each benchmark's real files, scored by
    the synthetic head (`benchmark_reals`): the verdict calls a face by the more severe of its two
    scores, so real media the synthetic score flags are flagged by the product. `on_benchmarks`: the
    scale is then refitted (an offset, the temperature kept) on the validation's generated faces against
    the benchmarks' real faces, photos of other kinds than the training ones."""
    matched = scored.logits["confound"][scored.labels["confound"] == 0]
    photos: dict[str, list[RealFileFaces]] = {
        "matched-resolution real photos": [(np.zeros(1, np.int64), np.array([logit]), 1) for logit in matched]
    }
    photos |= benchmark_reals or {}
    real_media = None
    if on_benchmarks:
        generated = scored.logits["val"][scored.labels["val"] == 1].astype(np.float64)
        real = [logits for files in (benchmark_reals or {}).values() for _, logits, _ in files]
        real_logits = np.concatenate(real) if real else np.zeros(0)
        real_media = RealMediaScale(
            np.r_[np.ones(generated.size, np.int64), np.zeros(real_logits.size, np.int64)],
            np.r_[generated, real_logits],
            f"{generated.size} generated validation faces and {real_logits.size} faces of the benchmarks' real files",
            offset_only=True,
        )
    return fit_calibration(scored.labels["val"], scored.logits["val"], photos, target_fpr, SYNTHETIC_SPLIT, real_media)


def synthetic_flagged(
    scored: ScoredChecks, fitted: FittedCalibration, benchmark_reals: dict[str, list[RealFileFaces]]
) -> dict[str, float]:
    """Faces the synthetic score calls synthetic at its threshold: the checks' (`ScoredChecks.called_at`)
    and each benchmark's real files (synthetic_bench_<name>_fpr; a benchmark without real files has none)."""
    return scored.called_at(fitted.scale, fitted.threshold) | {
        f"synthetic_bench_{metric_key(name)}_fpr": fitted.real_fpr[name]
        for name, files in benchmark_reals.items()
        if files
    }


def build_network(config: TrainConfig, pretrained: bool) -> DeepfakeNet:
    """The network a configuration trains: the one place its model settings become a DeepfakeNet."""
    model = config.model
    return DeepfakeNet(
        model.backbone,
        model.input_size,
        pretrained=pretrained,
        dropout=model.dropout,
        # the synthetic head pools the face box inside the crop
        synthetic_center=1 / model.crop_scale if config.synthetic is not None else None,
        cam_pooling_temperature=model.cam_pooling_temperature,
        mask_map=model.mask_map if config.optim.mask_loss_weight > 0 else None,
    )


def network_from_checkpoint(checkpoint: dict, path: Path) -> tuple[DeepfakeNet, TrainConfig]:
    config = checkpoint_config(checkpoint, path)
    net = build_network(config, pretrained=False)
    net.load_state_dict(checkpoint["model"])
    return net.eval(), config


def bundle_identity(config: TrainConfig, run_id: str | None, epoch: int) -> tuple[str, str]:
    """Name and version: the configuration's, else the run's name and 0.0.0+<run id>.ep<epoch> (never the
    shipped model's; `epoch` 1-based: two epochs of one run exported were one name and version)."""
    name = config.export.name or config.run_name()
    version = config.export.version or f"0.0.0+{(run_id or 'untracked')[:12]}.ep{epoch}"
    return name, version


def export_checkpoint(
    checkpoint_path: Path,
    out_dir: Path,
    name: str | None = None,
    version: str | None = None,
) -> ModelCard:
    """Write a bundle from a checkpoint holding an epoch's scores: the trainer's best.pt (the epoch
    export.select chose) or any epoch_NNN.pt. Its test-time flip is the run's (export.test_time_flip): the
    scores its calibration and figures come from were measured with it, or without (switched at export, as
    an option once allowed, the card described another function than the one served)."""
    checkpoint = load_checkpoint(checkpoint_path)
    if "val_labels" not in checkpoint and "card" not in (checkpoint.get("parent") or {}):
        raise DeepShieldError(
            f"{checkpoint_path} is a resume checkpoint (last.pt, or an epoch_NNN.pt written before epoch "
            "checkpoints kept their scores): it holds no validation scores to calibrate a bundle on; export the "
            "run's best.pt (the epoch export.select chose) or one of its epoch_NNN.pt"
        )
    net, config = network_from_checkpoint(checkpoint, checkpoint_path)
    # A frozen synthetic run keeps its parent's manipulation score: calibrated and served as the parent's was.
    parent = checkpoint.get("parent")
    manipulation_export = ExportConfig.model_validate(parent["export"]) if parent else config.export
    calibration, manipulation_metrics = _manipulation_calibration(checkpoint, manipulation_export, config.data)
    default_name, default_version = bundle_identity(
        config,
        checkpoint.get("progress", {}).get("run_id"),
        int(checkpoint.get("epoch", -1)) + 1,
    )
    synthetic, synthetic_metrics = _synthetic_score(checkpoint, config, net)
    card = ModelCard(
        name=name or default_name,
        version=version or default_version,
        architecture=config.model.backbone,
        input_size=config.model.input_size,
        crop_policy=CropPolicy(size=config.model.input_size, scale=config.model.crop_scale),
        test_time_flip=manipulation_export.test_time_flip,
        calibration=calibration,
        outputs=card_outputs(synthetic is not None, config.model.cam_pooling_temperature),
        synthetic=synthetic,
        training=training_info(config, checkpoint),
        metrics=manipulation_metrics | _selected_epoch_metrics(checkpoint) | synthetic_metrics,
        intended_use=card_intended_use(config),
        license=card_license(config),
    )
    export_bundle(net, card, out_dir)
    return card


def _manipulation_calibration(
    checkpoint: dict, export: ExportConfig, data: DataConfig
) -> tuple[Calibration, dict[str, float]]:
    """The manipulation score's calibration and validation figures: fitted on the run's validation
    logits, or (a frozen head on a bundle whose checkpoint was not kept) that bundle's, as shipped."""
    parent = checkpoint.get("parent") or {}
    if "card" in parent:
        card = ModelCard.model_validate(parent["card"])
        kept = {k: v for k, v in card.metrics.items() if k.startswith(("val_", "real_fpr_"))}
        return card.calibration, kept
    labels = np.asarray(checkpoint["val_labels"])
    logits = np.asarray(checkpoint["val_logits"], dtype=np.float64)
    real_media = manipulation_real_media(checkpoint.get("benchmark_faces"), export)
    fitted = fit_calibration(
        labels,
        logits,
        checkpoint.get("benchmark_reals", {}),
        export.threshold_fpr,
        manipulation_split(data),
        real_media=real_media,
    )
    metrics = detection_metrics(labels, fitted.scale.probability(logits), fitted.threshold)
    figures = {
        f"val_{k}": round(float(v), 4)
        for k, v in metrics.model_dump().items()
        if k not in ("count", "positives", "threshold")
    }
    return _card_calibration(fitted), figures | {f"real_fpr_{k}": round(v, 4) for k, v in fitted.real_fpr.items()}


def epoch_record(checkpoint: dict) -> dict[str, Any]:
    """What training logged for the checkpoint's epoch (its entry in the run's history; empty if none)."""
    epoch = int(checkpoint["epoch"])
    history = checkpoint.get("progress", {}).get("history", [])
    return next((r for r in history if int(r.get("epoch", -1)) == epoch), {})


def card_license(config: TrainConfig) -> str:
    """export.license as the card states it (card_text): where the packaged licence names other data, one naming
    the folders the run learnt from and saying that their terms apply."""
    return card_text(
        config,
        "license",
        lambda used: (
            f"Weights: trained on the data of {used}, whose terms apply to them (export.license unset for "
            "this data). Code: Apache-2.0."
        ),
    )


def card_intended_use(config: TrainConfig) -> str:
    """export.intended_use as the card states it (card_text): where the packaged text says what the run was trained
    on ("only on research-use real-face datasets"), one naming the folders it learnt from."""
    return card_text(
        config,
        "intended_use",
        lambda used: (
            "Flagging possibly manipulated faces for human review; trained on the data of "
            f"{used} (export.intended_use unset for this data). Not a sole basis for decisions about people."
        ),
    )


def card_text(config: TrainConfig, key: Literal["license", "intended_use"], instead: Callable[[str], str]) -> str:
    """export.`key` as the card states it. A packaged configuration's text names the data it trains on (its
    licence: UTKFace, a portrait set, FFHQ; its intended use: research-use datasets): a run of it on other folders
    carried that text, naming data its weights never saw. There the card says `instead(the run's folders)`."""
    given = getattr(config.export, key)
    used = data_folders(config.data, config.synthetic)
    for packaged in PACKAGED_CONFIGS:
        mapping = read_mapping(packaged)
        if given != mapping.get("export", {}).get(key):
            continue
        synthetic = mapping.get("synthetic")
        data = DataConfig.model_validate(mapping.get("data", {}))
        shipped = data_folders(data, None if synthetic is None else SyntheticConfig.model_validate(synthetic))
        if used != shipped:
            log.warning(
                "export.%s is the packaged %s's, which names that configuration's data: the card names this run's "
                "folders instead (set export.%s to state it for this data)",
                key,
                packaged.name,
                key,
            )
            return instead(", ".join(sorted(used)))
    return given


def training_info(config: TrainConfig, checkpoint: dict) -> TrainingInfo:
    """How the checkpoint's run trained and how its epoch was chosen, as its card records it (no machine
    folders: `TrainConfig.recorded`, `recorded_command`)."""
    return TrainingInfo(
        data=[str(p) for p in config.data.real_dirs] + [f"{PREPARED_ENTRY}{p}" for p in config.data.datasets],
        benchmarks=[str(p) for p in config.data.benchmarks],
        command=recorded_command(checkpoint.get("command", "")),
        config=config.recorded(),
        epochs=int(checkpoint["epoch"]) + 1,
        # a best.pt written before checkpoints said how their epoch was chosen: by export.select
        selected_by=checkpoint.get("selected_by", config.export.select),
        seed=config.seed,
    )


def _parent_name(parent: dict[str, Any]) -> str:
    if "card" in parent:
        card = ModelCard.model_validate(parent["card"])
        return f"bundle {card.name} {card.version} ({parent['path']})"
    return f"{parent['path']} (run {parent['run_id']})"


def portable_training(training: TrainingInfo) -> TrainingInfo:
    """Another model's training record, its command without machine folders (a bundle trained elsewhere,
    e.g. on a GPU lease, may have recorded them)."""
    return training.model_copy(update={"command": recorded_command(training.command)})


def _card_calibration(fitted: FittedCalibration) -> Calibration:
    """The card's calibration; what its fit warns of is said here, once per bundle: each epoch's fit (the same
    note, epoch after epoch) keeps it in its fitted_on alone."""
    for warning in fitted.warnings:
        log.warning("%s", warning)
    return Calibration(
        temperature=fitted.temperature,
        offset=fitted.offset,
        threshold=fitted.threshold,
        fitted_on=fitted.fitted_on,
        inconclusive=fitted.band,
    )


def _selected_epoch_metrics(checkpoint: dict) -> dict[str, float]:
    """The exported epoch's benchmark figures, as training logged them (a frozen synthetic run: its
    parent's, whose manipulation output it keeps unchanged)."""
    record = dict(checkpoint["parent"]["metrics"]) if "parent" in checkpoint else epoch_record(checkpoint)
    return {k: round(float(v), 4) for k, v in record.items() if k.startswith("bench_")}


def _synthetic_score(
    checkpoint: dict, config: TrainConfig, net: DeepfakeNet
) -> tuple[SyntheticScoreInfo | None, dict[str, float]]:
    """The card's synthetic block and figures: calibration on its validation split, every check's AUC
    with a 95% bootstrap interval, and the real faces it flags at the fitted threshold."""
    if config.synthetic is None:
        return None, {}
    scored = ScoredChecks.from_stored(checkpoint["synthetic_checks"])
    benchmark_reals = checkpoint.get("synthetic_benchmark_reals", {})
    fitted = fit_synthetic_calibration(
        scored, config.synthetic.threshold_fpr, benchmark_reals, config.synthetic.calibrate_on == "benchmarks"
    )
    metrics = scored.metrics(intervals=True) | synthetic_flagged(scored, fitted, benchmark_reals)
    parent = checkpoint.get("parent")
    info = SyntheticScoreInfo(
        calibration=_card_calibration(fitted),
        pooling=net.synthetic_pooling(),
        trained=(
            f"frozen: only this head trained, on the trunk and manipulation head of {_parent_name(parent)} "
            f"(epoch {parent['epoch'] + 1}), so the manipulation score is that model's"
            if parent
            else "joint: trained with the manipulation head, one loss per head"
        ),
        parent=None if parent is None else _parent_name(parent),
        data=checkpoint.get("synthetic_sources", []),
        parent_training=None if parent is None else portable_training(TrainingInfo.model_validate(parent["training"])),
    )
    return info, {k: round(v, 4) for k, v in metrics.items()}
