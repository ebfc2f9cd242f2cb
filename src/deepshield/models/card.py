"""The model bundle's layout and its card: everything needed to use model.onnx correctly, stored
beside it as JSON. Torch-free: the serving side imports this."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field, model_validator

from deepshield.errors import BundleError
from deepshield.evaluation.metrics import POINT_INTERVAL_CAUTION, few_files_caution, metric_key
from deepshield.faces.crop import CropPolicy
from deepshield.locks import file_lock
from deepshield.strict import StrictModel

BUNDLE_FORMAT = 1
ONNX_FILE = "model.onnx"
CARD_FILE = "model_card.json"


class Normalization(StrictModel):
    # Applied inside the ONNX graph (which takes uint8 RGB NHWC), recorded here for people and ports.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


# Half-width of the inconclusive band given to a card without a fitted one (cards written before
# bands were fitted): +-10 points of probability around the threshold. See README "Verdicts".
DEFAULT_BAND_HALF_WIDTH = 0.10
DEFAULT_BAND_METHOD = f"default for a card without a fitted band: threshold +- {DEFAULT_BAND_HALF_WIDTH:g}"
# A score the model rates at least as likely manipulated as not is never called no_signs_found.
EVEN_ODDS = 0.5

VerdictLabel = Literal["likely_manipulated", "inconclusive", "no_signs_found"]


class InconclusiveBand(StrictModel):
    """Scores in [low, high) are too close to the threshold to call either way."""

    low: float = Field(ge=0, le=1, description="probability from which a score is inconclusive (below: no signs found)")
    high: float = Field(ge=0, le=1, description="probability from which a score is likely manipulated")
    fitted_on: str = Field(description="how the band was chosen")

    @model_validator(mode="after")
    def _ordered(self) -> InconclusiveBand:
        if self.low > self.high:
            raise ValueError(f"inconclusive band low {self.low} is above its high {self.high}")
        return self

    @classmethod
    def around(cls, threshold: float, half_width: float = DEFAULT_BAND_HALF_WIDTH) -> InconclusiveBand:
        return cls(
            low=max(0.0, threshold - half_width), high=min(1.0, threshold + half_width), fitted_on=DEFAULT_BAND_METHOD
        )

    def moved(self, old_threshold: float, new_threshold: float) -> InconclusiveBand:
        """The band for another threshold: the same distances below and above it (clipped to [0, 1])."""
        if new_threshold == old_threshold:
            return self
        return InconclusiveBand(
            low=max(0.0, new_threshold - (old_threshold - self.low)),
            high=min(1.0, new_threshold + (self.high - old_threshold)),
            fitted_on=f"{self.fitted_on}; moved with the threshold from {old_threshold:.4f} to {new_threshold:.4f}",
        )

    def from_even_odds(self) -> InconclusiveBand:
        """The band verdicts use: it reaches down to even odds at least. A band fitted around a threshold set
        high for few false alarms on real media can start above 50%, and a score of 52% read "no signs of
        face swapping found" while the model rated manipulation the likelier."""
        if self.low <= EVEN_ODDS:
            return self
        return InconclusiveBand(
            low=EVEN_ODDS,
            high=self.high,
            fitted_on=f"{self.fitted_on}; from {self.low:.4f} down to {EVEN_ODDS:g}: no score at even odds or above "
            "is called no signs found",
        )

    def classify(self, probability: float) -> VerdictLabel:
        if probability >= self.high:
            return "likely_manipulated"
        return "no_signs_found" if probability < self.low else "inconclusive"


def sigmoid(x: Any) -> NDArray[np.float64]:
    """1 / (1 + exp(-x)), through exp(-|x|), which never overflows: exp(-x) itself printed numpy's
    "overflow encountered in exp" for x below -709 (a logit of -60 at temperature 0.05), right as the result was."""
    x = np.asarray(x, dtype=np.float64)
    small = np.exp(-np.abs(x))
    return np.asarray(np.where(x >= 0, 1.0 / (1.0 + small), small / (1.0 + small)), dtype=np.float64)


def not_calibrated(threshold_given: bool = False) -> str:
    """Said wherever verdicts are read of a model whose face-swap score was never calibrated (a soup): its
    temperature and threshold are the defaults, which scan, serve and the Python API used without a word.
    threshold_given: scan's --threshold chose the threshold, so only the temperature is the default."""
    if threshold_given:
        return (
            "scores not calibrated: the default temperature 1, so a score is no probability (the threshold is the "
            "one given); `deepshield calibrate` fits the temperature"
        )
    return (
        "scores not calibrated: the defaults (temperature 1, threshold 50%), so a score is no probability and the "
        "threshold was not chosen; `deepshield calibrate` fits them"
    )


NOT_CALIBRATED = not_calibrated()


class Calibration(StrictModel):
    temperature: float = Field(1.0, gt=0, description="probability = sigmoid((logit - offset) / temperature)")
    offset: float = Field(
        0.0, description="logit at which the probability is one half (0: temperature scaling alone; Platt scaling)"
    )
    threshold: float = Field(0.5, ge=0, le=1, description="probability at or above which a face is labelled fake")
    fitted_on: str = "not fitted"
    inconclusive: InconclusiveBand | None = Field(
        None,
        description="scores too close to the threshold to call; a card without one gets threshold +- 0.10 when loaded",
    )

    @model_validator(mode="after")
    def _band_holds_threshold(self) -> Calibration:
        band = self.inconclusive
        if band is not None and not band.low <= self.threshold <= band.high:
            raise ValueError(
                f"the inconclusive band [{band.low}, {band.high}] must contain the threshold {self.threshold}"
            )
        return self

    def scaled(self, logits: Any) -> NDArray[np.float64]:
        """(logit - offset) / temperature of every logit: the calibrated logit, whose sigmoid is the probability."""
        return (np.asarray(logits, dtype=np.float64) - self.offset) / self.temperature

    def probability(self, logits: Any) -> NDArray[np.float64]:
        """The calibrated probability of every logit: the one place either score's logits become probabilities."""
        return sigmoid(self.scaled(logits))

    def logit(self, probability: float) -> float:
        """The logit this calibration scores `probability` (the inverse of `probability`)."""
        clipped = float(np.clip(probability, 1e-12, 1 - 1e-12))
        return float(np.log(clipped / (1 - clipped)) * self.temperature + self.offset)

    @property
    def fitted(self) -> bool:
        """Whether these values were fitted (a soup's, or a card's that gave none, are the defaults)."""
        return not self.fitted_on.startswith("not fitted")

    @property
    def band(self) -> InconclusiveBand:
        """The fitted band, or the documented default around the threshold."""
        return self.inconclusive or InconclusiveBand.around(self.threshold)


SYNTHETIC_OUTPUT = "synthetic_logit"
MANIPULATION_OUTPUTS = {
    "logit": "N: fake logit per face (uncalibrated; probability = sigmoid((logit - offset) / temperature), calibration)",
    "cam": "N x h x w: class-activation map, per-location logits whose mean is the logit",
}
SYNTHETIC_OUTPUT_DOC = (
    "N: synthetic-face logit per face (a face no camera saw; uncalibrated; probability = "
    "sigmoid((logit - offset) / temperature), synthetic.calibration)"
)


def card_outputs(synthetic: bool, cam_pooling_temperature: float | None = None) -> dict[str, str]:
    """The `outputs` of a card for a one-output (manipulation) or two-output graph, saying how the
    logit pools the CAM (the network's `cam_pooling_temperature`; None: the mean)."""
    outputs = dict(MANIPULATION_OUTPUTS)
    if cam_pooling_temperature is not None:
        outputs["cam"] = (
            "N x h x w: class-activation map, per-location logits; the logit is their log-mean-exp "
            f"t x log(mean(exp(cam / t))) at t = {cam_pooling_temperature:g}"
        )
    return outputs | ({SYNTHETIC_OUTPUT: SYNTHETIC_OUTPUT_DOC} if synthetic else {})


# The two-score verdict rule in words (deepshield.inference.verdict.combine applies it).
VERDICT_RULE = (
    "each score is called by its own threshold and inconclusive band; the verdict is the more severe call "
    "(likely_manipulated > inconclusive > no_signs_found) and its score drives it; on equal calls, the score "
    "further above its threshold drives"
)


# How a card's `data` entries name what is not a plain real-face folder (training writes them, calibrate reads
# them back to tell which files the network learnt from).
PREPARED_ENTRY = "prepared dataset "  # TrainingInfo.data: a prepared dataset, "prepared dataset <folder>"
GENERATED_ENTRY = "generated: "  # SyntheticScoreInfo.data: a folder of generated faces (label 1)
REAL_ENTRY = "real: "  # SyntheticScoreInfo.data: a folder of real faces (label 0)


class TrainingInfo(StrictModel):
    data: list[str] = Field(default_factory=list)
    benchmarks: list[str] = Field([], description="labelled sets that chose the epoch and threshold (never trained on)")
    command: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    epochs: int = 0
    selected_by: str = Field("max.val_auc", description="the per-epoch metric that picked the exported epoch")
    seed: int | None = None
    soup: list[SoupIngredient] = Field(
        [], description="a soup (`deepshield soup`): not trained, the weighted average of these networks"
    )


class SoupIngredient(StrictModel):
    """One network of a soup: which bundle, its weight in the average, how its face-swap score was trained."""

    name: str
    version: str
    onnx_sha256: str
    weight: float = Field(gt=0, le=1)
    training: TrainingInfo


class SyntheticScoreInfo(StrictModel):
    """The second score of a two-output bundle: is the face fully AI-generated? Calibrated on its own."""

    calibration: Calibration = Calibration()
    verdict_rule: str = Field(VERDICT_RULE, description="how this score and the face-swap score make one verdict")
    pooling: str = Field(description="which part of the shared trunk's last feature map the synthetic head pools")
    trained: str = Field("", description="how the head was trained: frozen (on a parent run's trunk) or joint")
    parent: str | None = Field(
        None, description="the manipulation run whose trunk and head a frozen head was trained on"
    )
    data: list[str] = Field(
        [], description="generated-face folders (label 1) and real-face folders (label 0) it learned from"
    )
    parent_training: TrainingInfo | None = Field(
        None, description="a frozen head's parent: how its face-swap score (trunk and head) was trained"
    )


class AucFigure(BaseModel):
    value: float
    low: float | None = Field(None, description="the 95% bootstrap interval's bounds, when measured")
    high: float | None = None


class BenchmarkFigures(BaseModel):
    """How the model did on one labelled set of real media (a benchmark it was chosen on)."""

    labelled_set: str
    file_auc: AucFigure | None = None
    face_auc: AucFigure | None = None
    real_flagged: float | None = Field(None, description="share of the set's real files at or above the threshold")
    synthetic_real_flagged: float | None = Field(
        None,
        description="share of the set's real files the synthetic-face score flags at its threshold (the product "
        "flags a file either score flags, so its false alarms are at least the larger of the two)",
    )
    real_files: int | None = Field(None, description="real files scored (with a face): what the intervals resample")
    fake_files: int | None = None
    caution: str | None = Field(None, description="when either class has too few files for its intervals to be trusted")


SYNTHESISED_FAKES = "synthesised fakes"


def validation_fakes(data: Mapping[str, Any]) -> str:
    """What a face-swap run's validation fakes were, from its configuration's [data] (as a card records it):
    made from its real faces, and (data.datasets) the prepared datasets' own."""
    if not data.get("datasets"):
        return SYNTHESISED_FAKES
    prepared = "the prepared datasets' fakes"
    return f"{SYNTHESISED_FAKES} and {prepared}" if data.get("synthesize", True) else prepared


class ModelRecord(BaseModel):
    """What a card's metrics say about real media, set by set, beside its synthetic validation."""

    benchmarks: list[BenchmarkFigures]
    validation_auc: float | None = Field(None, description="face AUC on its own validation split (validation_fakes)")
    validation_fakes: str = Field(
        SYNTHESISED_FAKES, description="the validation split's fakes: synthesised, or a prepared dataset's"
    )
    validation_real_flagged: float | None = Field(None, description="share of validation real faces flagged")
    synthetic_holdout_auc: AucFigure | None = Field(
        None,
        description="the synthetic-face score's face AUC on held-out faces of the generator(s) it was trained on "
        "against real faces (other generators may be missed)",
    )
    synthetic_real_flagged: float | None = Field(
        None, description="share of validation real faces the synthetic-face score flags"
    )


class ModelCard(StrictModel):
    """Strict, as the training configuration is: an edited card's misspelt key (`threshhold`) loaded with the
    default in its place. The card is written by export, calibrate and soup, never by hand."""

    format: int = BUNDLE_FORMAT
    name: str
    version: str
    architecture: str = Field(
        description="backbone name (deepshield.models.network.BACKBONES); the head is a 1x1-conv CAM"
    )
    input_size: int
    input_format: str = "uint8 RGB, N x H x W x 3; normalisation is inside the graph"
    outputs: dict[str, str] = Field(
        default_factory=lambda: dict(MANIPULATION_OUTPUTS), description="the graph's outputs, in order"
    )
    normalization: Normalization = Normalization()
    crop_policy: CropPolicy
    test_time_flip: bool = Field(False, description="a face's logit and CAM are averaged with its mirror image's")
    calibration: Calibration = Calibration()
    synthetic: SyntheticScoreInfo | None = Field(
        None,
        description="the synthetic-face score, when the graph has the synthetic_logit output (None: not in it)",
    )
    training: TrainingInfo = TrainingInfo()
    metrics: dict[str, float] = Field(default_factory=dict)
    intended_use: str = ""
    license: str = ""
    onnx_sha256: str = ""

    @model_validator(mode="after")
    def _outputs_match_scores(self) -> ModelCard:
        if (SYNTHETIC_OUTPUT in self.outputs) != (self.synthetic is not None):
            raise ValueError(
                f"outputs {list(self.outputs)} and the synthetic block disagree: a synthetic score needs both"
            )
        # The runtime reads the graph's outputs by position: other names or another order loaded, and every
        # file then failed with a TypeError.
        expected = [*MANIPULATION_OUTPUTS, *([SYNTHETIC_OUTPUT] if self.synthetic is not None else [])]
        if list(self.outputs) != expected:
            raise ValueError(f"outputs {list(self.outputs)}: a model gives {expected}, in that order")
        # Faces are cut at crop_policy.size and fed at input_size: apart, every file with a face failed.
        if self.crop_policy.size != self.input_size:
            raise ValueError(
                f"crop_policy.size {self.crop_policy.size} and input_size {self.input_size} differ: faces are cut "
                "at the size the model reads"
            )
        return self

    def output_names(self) -> list[str]:
        return list(self.outputs)

    def record(self) -> ModelRecord:
        """The benchmarks' figures as the metrics hold them (`bench_<set>_file_auc[_lo|_hi]`, ...), for the
        sets the card names that have them."""
        metrics = self.metrics

        def auc(key: str) -> AucFigure | None:
            if key not in metrics:
                return None
            return AucFigure(value=metrics[key], low=metrics.get(key + "_lo"), high=metrics.get(key + "_hi"))

        figures = []
        for name in self.manipulation_training().benchmarks:
            key = metric_key(Path(name).name)  # as training.benchmarks names its metrics
            if f"bench_{key}_file_auc" in metrics or f"bench_{key}_face_auc" in metrics:
                # file counts: logged by training after 1.2.2 (older cards have none)
                real, fake = (metrics.get(f"bench_{key}_{label}_files") for label in ("real", "fake"))
                file_auc, face_auc = auc(f"bench_{key}_file_auc"), auc(f"bench_{key}_face_auc")
                if real is not None and fake is not None:
                    caution = few_files_caution(int(real), int(fake))
                else:
                    point = any(f is not None and f.low is not None and f.low == f.high for f in (file_auc, face_auc))
                    caution = POINT_INTERVAL_CAUTION if point else None
                figures.append(
                    BenchmarkFigures(
                        labelled_set=name,
                        file_auc=file_auc,
                        face_auc=face_auc,
                        real_flagged=metrics.get(f"real_fpr_{key}"),
                        synthetic_real_flagged=metrics.get(f"synthetic_bench_{key}_fpr"),
                        real_files=None if real is None else int(real),
                        fake_files=None if fake is None else int(fake),
                        caution=caution,
                    )
                )
        return ModelRecord(
            benchmarks=figures,
            validation_auc=metrics.get("val_auc"),
            validation_fakes=validation_fakes(self.manipulation_training().config.get("data", {})),
            validation_real_flagged=metrics.get("real_fpr_validation"),
            synthetic_holdout_auc=auc("synthetic_holdout_auc"),
            synthetic_real_flagged=metrics.get("synthetic_real_fpr"),
        )

    def manipulation_training(self) -> TrainingInfo:
        """How the face-swap score was trained: a frozen synthetic head's parent run, else this card's run."""
        parent = self.synthetic.parent_training if self.synthetic is not None else None
        return parent or self.training


def check_bundle_folder(folder: Path, force: bool) -> None:
    """Refuse a new bundle's folder that is a file or holds anything, unless `force`, or that is the working
    folder or holds it (said before slow work)."""
    # Built beside its folder and renamed into place: `--out .` ended, after the slow work, in a traceback
    # ("PosixPath('.') has an empty name"), and the working folder's full path would have been replaced whole.
    if Path.cwd().is_relative_to(os.path.abspath(folder)):
        raise BundleError(
            f"{folder} is the working folder or holds it: a new bundle replaces its folder whole; "
            f"give it a folder of its own (e.g. {Path(folder) / 'bundle'})"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        # --force replaces a bundle: it replaced any folder whole (a labelled set's real/ and fake/ photos, a
        # report, a home folder), and a file, deleted with no word of what they held. Said with or without it:
        # refused without, such a folder or file was told to use --force, which then refused it too.
        if not folder.is_dir():
            raise BundleError(f"{folder} is a file, and --force replaces only a model bundle: give a folder")
        if not (folder / CARD_FILE).is_file():
            raise BundleError(
                f"{folder} is not a model bundle (it has no {CARD_FILE}) and --force replaces only a bundle: "
                "give another folder, or empty this one yourself"
            )
        if not force:
            raise BundleError(f"{folder} exists and is not empty (use --force to replace it)")


@contextlib.contextmanager
def building_bundle(folder: Path) -> Iterator[Path]:
    """An empty `<folder>.part` to build a bundle in, put in place once the block ends (put_in_place), or
    removed if it fails (a full disk: the part of a graph written held the space that was short; the error
    names the bundle, where a failed write names no file). One
    process at a time: two exports or calibrations into one folder (a second terminal, a script run twice)
    filled the same `.part` folder, a bundle of both or a rename that failed; the second is refused, naming
    the first (the lock is `<folder>.part.lock`, gone when the bundle is in place)."""
    building = folder.with_name(folder.name + ".part")
    lock = folder.with_name(folder.name + ".part.lock")
    building.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock, "this bundle", named=folder):
        shutil.rmtree(building, ignore_errors=True)
        building.mkdir()
        try:
            yield building
        except BaseException as exc:
            shutil.rmtree(building, ignore_errors=True)
            if isinstance(exc, OSError) and exc.filename is None:  # a failed write names no file: the bundle's
                exc.filename = os.fspath(folder)
            raise
        put_in_place(building, folder)
        # Whoever made it: one a killed export left (file_lock removes only its own) stayed beside the bundle
        # through every later export.
        lock.unlink(missing_ok=True)


def put_in_place(building: Path, folder: Path) -> None:
    """Move a finished bundle from `building` to `folder`, replacing what was there only once the new one
    is whole: a soup or calibration with --force that emptied its folder first and then stopped lost the
    old bundle, which may have been one of its own inputs."""
    if not (folder.exists() or folder.is_symlink()):
        building.rename(folder)
        return
    # A name of its own beside the folder (a fixed `<out>.old` would be a user's folder of that name, removed).
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.replaced-", dir=folder.parent))
    folder.rename(aside / folder.name)
    building.rename(folder)
    shutil.rmtree(aside)
