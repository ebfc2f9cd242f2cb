"""Training configuration: one TOML or YAML file, overridden by `--set section.key=value` and by a
`--params` file of dotted keys (what a hyperparameter search writes). Every section is strict: an
unknown key is an error naming it (and the nearest valid key)."""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from deepshield.dotted import flatten, merge_dotted, parse_assignment
from deepshield.errors import DeepShieldError, say
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.strict import (
    BundleVersion,
    CrfRange,
    JpegQualityRange,
    ScaleRange,
    StrictModel,
    check_version,
    explain,
    takes_text,
)
from deepshield.synthesis.blend import SynthesisConfig
from deepshield.text_files import read_text, unique_keys

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")
PACKAGED_CONFIGS = (DEFAULT_CONFIG, DEFAULT_CONFIG.with_name("synthetic-frozen.toml"))
DATA_DIR_ENV = "DEEPSHIELD_DATA_ROOT"
Backbone = Literal["efficientnet_lite0", "tiny"]  # deepshield.models.network.BACKBONES
MaskMap = Literal["last", "middle"]  # deepshield.models.network.MaskMap
CalibrateOn = Literal["validation", "benchmarks"]


class DataConfig(StrictModel):
    root: Path | None = Field(
        None,
        description=f"folder that relative real_dirs, datasets and benchmarks are read from (default: ${DATA_DIR_ENV}, else the working directory)",
    )
    real_dirs: list[Path] = Field(
        default_factory=list,
        description="folders of real face images, or packed face banks (`deepshield facebank pack`); fakes are synthesised",
    )
    datasets: list[Path] = Field(
        default_factory=list, description="prepared datasets (deepshield prepare): their train/val splits are used"
    )
    benchmarks: list[Path] = Field(
        default_factory=list,
        description=(
            "labelled sets scored every epoch with the product's pipeline, to choose with (never trained on); "
            "their real files also hold each score's threshold_fpr"
        ),
    )
    benchmark_frames: int = Field(
        DEFAULT_VIDEO_FRAMES, ge=1, le=256, description="frames sampled per benchmark video (as `deepshield scan`)"
    )
    synthesize: bool = Field(True, description="synthesise fakes from the real faces (off: only the datasets' fakes)")
    group_pattern: str | None = Field(
        None, description="regex on file names; its first group is the identity (others: one identity per file)"
    )
    limit_per_folder: int | None = Field(None, ge=1, description="at most this many faces a folder (0 was all of them)")
    max_padding_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="leave out real faces whose crop is more than this share padding (tightly cropped, low-resolution photos)",
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of data.real_dirs' identities held out for validation (not trained on)"
    )
    cache_dir: Path = Field(
        Path(".cache/deepshield"), description="where built face banks and benchmark faces are kept"
    )
    cross_blend_fraction: float = Field(
        0.3, ge=0, le=1, description="share of fakes made by cross-identity blending (rest: self-blending)"
    )
    donor_dirs: list[Path] = Field(
        default_factory=list,
        description=(
            "faces used only as cross-blend donors, never as real samples: generated faces make a blend carry "
            "a generator's texture, as regional GAN swaps (e4s, MegaFS) do"
        ),
    )
    donor_fraction: float = Field(
        0.0, ge=0, le=1, description="share of cross-identity blends whose donor is from donor_dirs"
    )
    donor_limit_per_folder: int | None = Field(
        None,
        ge=1,
        description="at most this many donors a folder, the first by name: the rest stay unseen (for the synthetic-face checks)",
    )
    loader_workers: int = Field(
        1, ge=0, description="processes that make training samples (0: the training process itself)"
    )
    bank_workers: int = Field(2, ge=1, description="processes that find and crop faces while a face bank is built")

    @field_validator("group_pattern")
    @classmethod
    def _a_pattern_with_a_group(cls, pattern: str | None) -> str | None:
        """Compiled when the settings load: a bad one failed with re.error's traceback after the face bank."""
        if pattern is None:
            return None
        try:
            groups = re.compile(pattern).groups
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if groups < 1:
            raise ValueError("needs a group, the identity: e.g. ^(person\\d+)_")
        return pattern

    @model_validator(mode="after")
    def _donors_go_together(self) -> DataConfig:
        if (self.donor_fraction > 0) != bool(self.donor_dirs):
            raise ValueError("data.donor_dirs and data.donor_fraction go together: set both, or neither")
        return self

    def data_root(self) -> Path | None:
        root = self.root or (Path(os.environ[DATA_DIR_ENV]) if os.environ.get(DATA_DIR_ENV) else None)
        return root.expanduser() if root else None

    def check_paths(self) -> None:
        """Every configured folder found, before any slow work: a misspelt benchmark was reported only
        after the face bank (12k face detections with default.toml) had been built."""
        for what, paths in (
            ("real-face folder or packed face bank", self.real_dirs),
            ("prepared dataset", self.datasets),
            ("benchmark", self.benchmarks),
            ("donor-face folder", self.donor_dirs),
        ):
            for path in paths:
                self.locate(path, what)

    def locate(self, path: Path, what: str) -> Path:
        """A configured path on this machine: absolute as written; relative under the data root, else from
        the working directory (a dataset prepared beside the command, with the data root set for the shared
        real-faces/ and dev-eval/, was "not found under data root": the README's own example failed)."""
        path = Path(path).expanduser()
        root = self.data_root()
        candidates = [path] if path.is_absolute() or root is None else [root / path, path]
        for found in candidates:
            if found.exists():
                return found
        if path.is_absolute():
            # Read as written: the advice to give an absolute path, or to set the data root, changed nothing.
            raise DeepShieldError(f"{what} {path} not found")
        if len(candidates) == 2:
            # The root's source, said: the advice to set the variable was given when it was set, to another folder.
            source = "data.root or --data-dir" if self.root else f"${DATA_DIR_ENV}"
            where = f"under data root {root} ({source}), nor from the working directory"
        else:
            where = "from the working directory"
        if self.root:  # it wins over the variable: advice to set the variable changed nothing
            advice = "point data.root (or --data-dir) to the folder that holds it"
        else:
            advice = (
                f"{'point' if root is not None else 'set'} {DATA_DIR_ENV} (or data.root, or --data-dir) to the folder "
                f"that holds it, e.g. `export {DATA_DIR_ENV}=../shared/data` for real-faces/ and dev-eval/"
            )
        raise DeepShieldError(f"{what} {path} not found ({where}): give its absolute path, or {advice}")


class ModelConfig(StrictModel):
    backbone: Backbone = Field("efficientnet_lite0", description="the network's trunk (tiny: a small one for tests)")
    input_size: int = Field(224, ge=32, le=512, description="side of the square face crop the network reads, in pixels")
    crop_scale: float = Field(1.5, gt=1, le=3, description="the crop's side as a multiple of the face box's")
    pretrained: bool = Field(True, description="start the trunk from its ImageNet weights (off: random weights)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout on the feature map before the classifier")
    cam_pooling_temperature: float | None = Field(
        None,
        gt=0,
        description=(
            "how the CAM's per-location logits make the face's logit: t x log(mean(exp(cam / t))), which weighs the "
            "most suspicious locations more as t shrinks (a part edit or a partial swap is local); None: the mean"
        ),
    )
    mask_map: MaskMap = Field(
        "last",
        description=(
            "the feature map the blend-mask head reads when optim.mask_loss_weight > 0: the last (5 x 5 at 160 px) "
            "or the finer stride-16 one (10 x 10)"
        ),
    )
    init: Path | None = Field(
        None,
        description=(
            "start from these weights and train them all (fine-tuning): a run's checkpoint (its best.pt) or a "
            "bundle folder with the same backbone and input size; a different crop scale fine-tunes them to the "
            "new framing (None: the backbone's ImageNet weights)"
        ),
    )
    init_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description=(
            "weight-space ensembling with the starting point (WiSE-FT): every epoch evaluates, selects and exports "
            "init_share x model.init's weights + (1 - init_share) x the fine-tuned ones, which keeps what the "
            "starting model knew; training itself is unchanged (0: the fine-tuned weights alone)"
        ),
    )

    @model_validator(mode="after")
    def _check_init_share(self) -> ModelConfig:
        if self.init_share and self.init is None:
            raise ValueError("model.init_share mixes in model.init's weights: set model.init")
        return self


class OptimConfig(StrictModel):
    epochs: int = Field(6, ge=1, description="epochs, each scored on validation and checkpointed")
    samples_per_epoch: int = Field(12000, ge=2, description="training samples drawn each epoch")
    batch_size: int = Field(32, ge=2, description="samples an optimisation step")
    optimizer: Literal["adamw", "sam"] = Field(
        "adamw", description="sam: sharpness-aware minimisation around AdamW (what SBI trains with; 2 passes a step)"
    )
    sam_rho: float = Field(0.05, gt=0, description="SAM's neighbourhood radius")
    mask_loss_weight: float = Field(
        0.0,
        ge=0,
        description=(
            "weight of an auxiliary loss that trains a second head to say where each synthesised fake was blended "
            "(Face X-ray's localisation supervision, on the map model.mask_map names); training only, not exported "
            "(0: no head, and no masks made)"
        ),
    )
    lr: float = Field(4e-4, gt=0, description="AdamW's peak learning rate")
    backbone_lr_scale: float = Field(
        1.0,
        ge=0,
        le=1,
        description=(
            "the pretrained trunk's learning rate as a share of optim.lr (the heads keep optim.lr): under 1 the "
            "trunk stays nearer its ImageNet features, which fine-tuning distorts (Kumar et al., ICLR 2022); "
            "0 trains the heads alone"
        ),
    )
    weight_decay: float = Field(1e-2, ge=0, description="AdamW's weight decay")
    warmup_fraction: float = Field(
        0.05, ge=0, lt=1, description="share of all steps over which the learning rate rises to optim.lr"
    )
    checkpoint_every_steps: int = Field(50, ge=1, description="mid-epoch checkpoints, so a kill loses little work")

    @model_validator(mode="after")
    def _a_batch_at_least(self) -> OptimConfig:
        # Fewer samples than a batch took no step at all, and exported the untrained network.
        if self.samples_per_epoch < self.batch_size:
            raise ValueError(
                f"optim.samples_per_epoch ({self.samples_per_epoch}) is below optim.batch_size ({self.batch_size}): "
                "an epoch would take no step"
            )
        return self


class AugmentConfig(StrictModel):
    jpeg_probability: float = Field(0.5, ge=0, le=1, description="chance a crop is JPEG-compressed (last)")
    jpeg_quality: JpegQualityRange = Field((30, 100), description="JPEG quality range (inclusive)")
    codec_probability: float = Field(
        0.0, ge=0, le=1, description="re-encode the crop with H.264, as compressed video does to real swaps"
    )
    codec_crf: CrfRange = Field((18, 40), description="H.264 constant rate factor range (higher: stronger compression)")
    retouch_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "retouch the crop as portrait apps do (edge-preserving skin smoothing, sharpening, tone and "
            "saturation), real and fake alike, so that a retouched real photo is not read as a blend"
        ),
    )
    rescale_probability: float = Field(0.3, ge=0, le=1, description="chance a crop is downscaled and scaled back up")
    rescale_range: ScaleRange = Field((0.35, 0.9), description="the downscaled side as a share of the crop's")
    blur_probability: float = Field(0.15, ge=0, le=1, description="chance of a Gaussian blur (sigma 0.5-1.5 px)")
    noise_probability: float = Field(0.15, ge=0, le=1, description="chance of Gaussian noise (sigma 2-8 levels)")
    colour_probability: float = Field(
        0.5, ge=0, le=1, description="chance of a brightness and contrast change (gain 0.85-1.15, bias +-15)"
    )
    flip_probability: float = Field(0.5, ge=0, le=1, description="chance a crop is mirrored")
    jitter_shift: float = Field(0.04, ge=0, description="largest random shift of the crop, share of its side")
    jitter_scale: float = Field(0.06, ge=0, description="largest random zoom of the crop, in or out (share)")
    jitter_rotation_deg: float = Field(8.0, ge=0, description="largest random rotation of the crop, in degrees")


# Heavier than the manipulation recipe's: a generator's fingerprint must be learnt through blur, JPEG,
# resizing and noise (Wang et al., CVPR 2020), and applied to generated and real faces alike.
SYNTHETIC_AUGMENT = AugmentConfig(
    jpeg_probability=0.7,
    rescale_probability=0.5,
    rescale_range=(0.25, 0.9),
    blur_probability=0.3,
    noise_probability=0.3,
)


class SyntheticConfig(StrictModel):
    """The synthetic-face score (a face no camera saw): a second head on the shared trunk. Present in
    a configuration (a [synthetic] section or any `--set synthetic.<key>=...`): trained by this run."""

    fake_dirs: list[Path] = Field(
        default_factory=lambda: [Path("synthetic-faces/generated-photos")],
        description="folders of fully generated faces (label 1)",
    )
    real_dirs: list[Path] | None = Field(
        None,
        description=(
            "folders of real faces (label 0; default: data.real_dirs). "
            "Include FFHQ: real photos at the generated set's resolution"
        ),
    )
    matched_real_dir: Path = Field(
        Path("real-faces/ffhq"),
        description="the real folder at the generated set's resolution, for the resolution-confound check",
    )
    mode: Literal["frozen", "joint"] = Field(
        "frozen",
        description="frozen: only the synthetic head is trained, on init's frozen trunk; joint: both heads together",
    )
    init: Path | None = Field(
        None, description="frozen mode: the manipulation run's checkpoint (its best.pt) whose trunk and head are kept"
    )
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="generated files never trained or calibrated on: the disjoint check"
    )
    val_fraction: float = Field(0.15, gt=0, lt=1, description="generated files for validation and calibration")
    limit_per_folder: int | None = Field(None, ge=1, description="at most this many files a folder (None: all)")
    threshold_fpr: float | None = Field(
        0.05,
        gt=0,
        lt=1,
        description=(
            "threshold: the lowest flagging at most this share of validation real faces, of the matched-resolution "
            "real photos and of each benchmark's real files (None: best balanced accuracy)"
        ),
    )
    calibrate_on: CalibrateOn = Field(
        "validation",
        description=(
            "what the probability scale is fitted on: the validation split, or its generated faces against the "
            "benchmarks' real faces (an offset by log-loss, the validation temperature kept: real photos of "
            "another kind than the training ones; the threshold and band stay at the same logits)"
        ),
    )
    downscale_check: float = Field(
        0.35, gt=0, lt=1, description="holdout copies downscaled by this factor (the resize perturbation)"
    )
    jpeg_check: int = Field(70, ge=1, le=100, description="holdout copies re-encoded at this JPEG quality")
    cut_check: float = Field(
        0.6,
        gt=0,
        lt=1,
        description=(
            "holdout and validation real photos cut to their centre, this share of each side (the cut perturbation), "
            "before cropping: the framing check (faces whose crop runs past the picture's edge)"
        ),
    )
    fake_padding_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "share of generated training faces given the padding (the crop's part past its photo's edge) of a random "
            "real training face: tight real photos are padded and generated faces framed whole, a difference the "
            "head otherwise learns as a sign of a real photo"
        ),
    )
    augment: AugmentConfig = SYNTHETIC_AUGMENT

    @field_validator("augment", mode="before")
    @classmethod
    def _over_the_synthetic_recipe(cls, value: Any) -> Any:
        """Keys given are laid over SYNTHETIC_AUGMENT: `synthetic.augment.flip_probability=0.4` alone set
        every other key back to the manipulation recipe's lighter default (JPEG 0.5, not 0.7)."""
        if isinstance(value, dict):
            return {**SYNTHETIC_AUGMENT.model_dump(), **value}
        return value

    @model_validator(mode="after")
    def _generated_faces_left_to_train_on(self) -> SyntheticConfig:
        # Refused only once the generated files were listed, as "N generated faces are too few for a 60% holdout
        # and 50% validation", whatever N.
        if self.holdout_fraction + self.val_fraction >= 1:
            raise ValueError(
                f"synthetic.holdout_fraction ({self.holdout_fraction:g}) and synthetic.val_fraction "
                f"({self.val_fraction:g}) add up to 1 or more: no generated face would be left to train on"
            )
        return self

    def real_folders(self, data: DataConfig) -> list[Path]:
        return list(self.real_dirs if self.real_dirs is not None else data.real_dirs)


def data_folders(data: DataConfig, synthetic: SyntheticConfig | None) -> set[str]:
    """The folders (as configured, relative to data.root or not) a run learns from: its face bank's, prepared
    datasets', donors' and the synthetic head's."""
    folders = [*data.real_dirs, *data.datasets, *data.donor_dirs]
    if synthetic is not None:
        folders += [*synthetic.fake_dirs, *synthetic.real_folders(data)]
    return {str(folder) for folder in folders}


class TrackingConfig(StrictModel):
    enabled: bool = Field(True, description="log the run to MLflow")
    # Empty, MLflow logged to a store of its own choosing (mlflow.db in the working folder), and the run's
    # last line said `mlflow ui --backend-store-uri ` with no store; an empty experiment was refused only
    # after the face bank.
    uri: str = Field("sqlite:///mlruns.db", min_length=1, description="MLflow tracking store")
    experiment: str = Field("deepshield-train", min_length=1, description="MLflow experiment")
    run_name: str | None = Field(
        None, description="MLflow run name, and the bundle name unless export.name (None: run_dir's name)"
    )


class ExportConfig(StrictModel):
    name: str | None = Field(None, description="bundle name (default: the run's name)")
    version: BundleVersion | None = Field(None, description="bundle version (default: 0.0.0+<run id>.ep<epoch>)")
    select: str = Field(
        "max.val_auc", description="the per-epoch metric that picks the exported epoch, e.g. max.bench_auc"
    )
    threshold_fpr: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="fit the threshold for this false-positive rate on real media (validation and benchmark real faces); default: best balanced accuracy on validation",
    )
    test_time_flip: bool = Field(
        False,
        description="served bundle averages each face's logit with its mirror image's (its scores are measured so in training)",
    )
    calibrate_on: CalibrateOn = Field(
        "validation",
        description=(
            "what the probability scale is fitted on: the validation split (synthesised fakes), or the benchmarks' "
            "faces, real and fake (a temperature by log-loss; the threshold and band stay at the logits the "
            "validation fit put them)"
        ),
    )
    intended_use: str = Field("", description="the model card's intended use")
    license: str = Field("", description="the model card's licence for the weights")


class TrainConfig(StrictModel):
    seed: int = Field(0, description="seeds the split, the samples and the network's initial weights")
    run_dir: Path = Field(Path("runs/default"), description="folder of the run's checkpoints, records and bundle")
    device: Literal["cpu", "cuda"] = Field("cpu", description="cuda: mixed precision (bfloat16) on the first GPU")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: all cores)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimisation steps (smoke runs)")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    synthesis: SynthesisConfig = SynthesisConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()
    synthetic: SyntheticConfig | None = Field(
        None, description="train the synthetic-face score too (None: manipulation only)"
    )

    @model_validator(mode="after")
    def _check_select(self) -> TrainConfig:
        from deepshield.training.records import parse_epoch_selector

        synthetic = self.synthetic
        selector = parse_epoch_selector(
            self.export.select, has_benchmarks=bool(self.data.benchmarks), has_synthetic=synthetic is not None
        )
        if synthetic is not None and synthetic.mode == "frozen":
            if self.model.init is not None:
                raise DeepShieldError(
                    "model.init is for fine-tuning every weight; a frozen synthetic run keeps synthetic.init's"
                )
            if synthetic.init is None:
                raise DeepShieldError(
                    "a [synthetic] section (any synthetic.* key sets one) trains the synthetic-face head, by default "
                    "with synthetic.mode = 'frozen', which needs synthetic.init: the manipulation run's best.pt "
                    "(or set synthetic.mode = 'joint' to train both scores in one run)"
                )
            if not selector.metric.startswith("synthetic_"):
                raise DeepShieldError(
                    f"export.select {self.export.select!r} is a manipulation metric, "
                    "which a frozen run does not change: "
                    "select on the synthetic score, e.g. export.select = 'max.synthetic_val_auc'"
                )
        on_benchmarks = [
            key
            for key, section in (("export", self.export), ("synthetic", synthetic))
            if section is not None and section.calibrate_on == "benchmarks"
        ]
        if on_benchmarks and not self.data.benchmarks:
            raise DeepShieldError(
                f"{on_benchmarks[0]}.calibrate_on = 'benchmarks' needs data.benchmarks: the labelled real media "
                "the probabilities are fitted on"
            )
        return self

    @property
    def frozen_synthetic(self) -> bool:
        """Only the synthetic head trains; the manipulation trunk and head are the parent run's."""
        return self.synthetic is not None and self.synthetic.mode == "frozen"

    def run_name(self) -> str:
        """The run's name, as MLflow and its bundle (unless export.name) both give it: tracking.run_name,
        else the run folder's name (absolute first: `run_dir = "."` has none)."""
        return self.tracking.run_name or Path(os.path.abspath(self.run_dir)).name

    def recorded(self) -> dict[str, Any]:
        """The configuration as a model card or tracker records it: without the folders that only say
        where this machine kept things (data root, run and cache folders, tracking store)."""
        exclude: dict[str, Any] = {}
        for key in MACHINE_KEYS:
            section, _, leaf = key.rpartition(".")
            if section:
                exclude.setdefault(section, set()).add(leaf)
            else:
                exclude[leaf] = True
        return self.model_dump(mode="json", exclude=exclude)


# The settings that only say where a machine keeps things: left out of a card's or tracker's record of the
# configuration (`TrainConfig.recorded`) and of its command (`recorded_command`).
MACHINE_KEYS = ("run_dir", "data.root", "data.cache_dir", "tracking.uri")


# Settings that say how or where a run is carried out, not what it computes: a resumed run may change them
# (a smoke run's max_steps dropped, the device changed for a GPU, more loader workers).
_RUN_CONTROL = (
    "run_dir", "device", "threads", "max_steps", "tracking.", "data.root", "data.cache_dir",
    "data.loader_workers", "data.bank_workers", "optim.checkpoint_every_steps",
)  # fmt: skip


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """A dumped configuration's settings (dotted keys) apart from how and where it runs."""
    return {key: value for key, value in flatten(config).items() if not key.startswith(_RUN_CONTROL)}


def recipe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each setting of two recipes that differs."""
    return sorted(
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in before.keys() | after.keys()
        if before.get(key) != after.get(key)
    )


def changed_recipe(started_with: dict[str, Any], now: TrainConfig) -> list[str]:
    """The settings (dotted keys) a run's checkpoint was started with that `now` changes, apart from
    how and where it runs: a resumed run with any of them would not be the run it continues."""
    return recipe_changes(recipe(started_with), recipe(now.model_dump(mode="json")))


# `deepshield train` options that only say where a machine keeps things, as `TrainConfig.recorded` leaves
# run_dir, the data root and the tracking store out of a record; --data-dir only when absolute, since a
# relative one (a lease's `.kit`) is part of how the command reads its data. The same keys given with --set
# too; files the command reads (--config, --params) are named as the working folder reaches them, or by name.
_MACHINE_OPTIONS = ("--run-dir", "--tracking-uri")
_ABSOLUTE_MACHINE_OPTIONS = ("--data-dir",)
_ABSOLUTE_MACHINE_KEYS = ("data.root",)  # of MACHINE_KEYS, left out of a command only when absolute (as --data-dir)
_FILE_OPTIONS = ("--config", "--params")
_OPTIONS_WITH_VALUES = (*_MACHINE_OPTIONS, *_ABSOLUTE_MACHINE_OPTIONS, *_FILE_OPTIONS, "--set")


def recorded_command(command: str) -> str:
    """A training command as a model card records it: the command that trains the run again, without this
    machine's folders, and without --resume (a resumed run's card named the command that continued it)."""
    words = iter(shlex.split(command))
    kept: list[str] = []
    for word in words:
        if word == "--resume":
            continue
        option, has_value, value = word.partition("=")
        if option not in _OPTIONS_WITH_VALUES:
            kept.append(word)
            continue
        if not has_value:
            value = next(words, "")
        if option == "--set":
            key, _, setting = value.partition("=")
            key = key.strip()
            machine = key in MACHINE_KEYS and (key not in _ABSOLUTE_MACHINE_KEYS or Path(setting).is_absolute())
            if not machine:
                kept += [option, value]
        elif option in _FILE_OPTIONS:
            kept += [option, portable_path(value)]
        elif option in _ABSOLUTE_MACHINE_OPTIONS and not Path(value).is_absolute():
            kept += [option, value]
    return shlex.join(kept)


def resume_command(command: str) -> str | None:
    """A `deepshield train` command line as it resumes its run; None for another (a search's trial)."""
    words = shlex.split(command)
    # The command is the first word after the program's own options (-v, which take no value).
    if words[:1] != ["deepshield"] or [word for word in words[1:] if not word.startswith("-")][:1] != ["train"]:
        return None
    return command if "--resume" in words else f"{command} --resume"


def portable_path(value: str | Path) -> str:
    """A path as a bundle records it (the project's rule: no machine's folder in a card or its README): an
    absolute one as the working folder reaches it, else by its name alone (another machine's folder)."""
    value = str(value)
    path = Path(value)
    if not path.is_absolute():
        return value
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


def load_yaml(text: str, source: str) -> Any:
    """YAML as safe_load reads it, but a key given twice in one mapping is an error naming it and its line
    (safe_load kept the last: a second `optim:` section dropped the first without a word; TOML refuses).
    Malformed YAML is a DeepShieldError naming `source` and the place, in one line."""
    import yaml  # here alone: a TOML or JSON file is read without PyYAML

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:  # a list as a key: construct_mapping refuses it below, with its line
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=True)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:  # its str spans lines (the text quoted, a caret): one line here
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise DeepShieldError(f"{source} cannot be parsed: {where}{exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise DeepShieldError(f"{source} cannot be parsed: {exc}") from exc


def read_mapping(path: Path, what: str = "config file") -> dict[str, Any]:
    if path.is_dir():
        raise DeepShieldError(f"{what} {path} is a folder: name a file")
    if path.exists() and not path.is_file():  # /dev/null, a pipe: "does not exist"
        raise DeepShieldError(f"{what} {path} is not a regular file")
    if not path.is_file():
        raise DeepShieldError(f"{what} {path} does not exist")
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):  # before it is read: a picture is no text
        raise DeepShieldError(f"{what} {path} must be .toml, .yaml or .json")
    try:
        text = read_text(path, what)
    except OSError as exc:
        raise DeepShieldError(f"{what} {path} cannot be read ({exc.strerror or exc})") from None
    try:
        if path.suffix == ".toml":
            mapping = tomllib.loads(text)
        elif path.suffix == ".json":
            mapping = json.loads(text, object_pairs_hook=unique_keys)
        else:
            loaded = load_yaml(text, f"{what} {path}")
            mapping = {} if loaded is None else loaded  # an empty file; `[]` or `false` are no mapping
    except ValueError as exc:
        raise DeepShieldError(f"{what} {path} cannot be parsed: {exc}") from exc
    if not isinstance(mapping, dict):
        raise DeepShieldError(f"{what} {path} must hold a mapping of keys, not {type(mapping).__name__}")
    return mapping


class _Origins:
    """Which of the configuration file, --params and --set gave each dotted key: an invalid value's error
    says where it came from (`optim.lr: Input should be greater than 0 (got -1, from --set)`)."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}

    def record(self, key: str, value: Any, source: str) -> None:
        """`key` set to `value` by `source`, as merge_dotted sets it: a section given whole sets the keys it
        names, any other value replaces what was under its key."""
        if not (isinstance(value, dict) and value):
            for name in [name for name in self.sources if name.startswith(f"{key}.")]:
                del self.sources[name]
        for name in _given_keys(key, value):
            self.sources[name] = source

    def __call__(self, key: str) -> str | None:
        """Where the dotted `key` (a pydantic error's location: `data.real_dirs.0`, or a section) came from."""
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            if (source := self.sources.get(".".join(parts[:end]))) is not None:
                return source
        under = {source for name, source in self.sources.items() if name.startswith(f"{key}.")}
        return under.pop() if len(under) == 1 else None


def _given_keys(key: str, value: Any) -> list[str]:
    if isinstance(value, dict) and value:
        return [name for sub, item in value.items() for name in _given_keys(f"{key}.{sub}", item)]
    return [key]


def load_config(path: Path | None = None, overrides: Sequence[str] = (), params: Path | None = None) -> TrainConfig:
    mapping = read_mapping(path or DEFAULT_CONFIG)
    origins = _Origins()
    for key, value in mapping.items():
        origins.record(str(key), value, f"--config {path}" if path else f"the packaged {DEFAULT_CONFIG.name}")
    if params is not None:
        given = read_mapping(params, "params file")
        for key in given:
            if not isinstance(key, str):  # YAML reads `1: 2` as an int key
                raise DeepShieldError(f"params file {params}: key {key!r} is not a setting's name")
        try:
            flatten(given)  # `optim.lr: 1` beside `optim: {lr: 2}`: the last one won without a word
        except DeepShieldError as exc:
            raise DeepShieldError(f"params file {params}: {exc}") from None
        for key, value in given.items():
            merge_dotted(mapping, key, value)
            origins.record(key, value, f"--params {params}")
    for item in overrides:
        key, value = parse_assignment(item, text_setting)
        merge_dotted(mapping, key, value)
        origins.record(key, value, "--set")
    return validate_config(mapping, origins)


def text_setting(key: str) -> bool:
    """Whether `key` is a string (or path) setting of the training configuration: `--set` takes the
    text typed for it (`export.version=2.0`, `tracking.experiment=2024`), not the number JSON reads."""
    return takes_text(TrainConfig, key)


def checkpoint_config(checkpoint: dict[str, Any], path: Path) -> TrainConfig:
    """The configuration the training checkpoint at `path` was trained with. One this version does not read (a
    setting renamed or refused since, by an earlier version's run) is refused in one line naming the checkpoint
    and the setting: export, model.init and synthetic.init ended in pydantic's traceback."""
    if not isinstance(checkpoint.get("config"), dict):
        raise DeepShieldError(f"{path} is not a training checkpoint (it holds no training configuration)")
    recorded = checkpoint["config"]
    export = recorded.get("export")
    if isinstance(export, dict) and isinstance(version := export.get("version"), str):
        try:
            check_version(version)
        except ValueError as exc:
            # Free text (a name with spaces) was taken until a version was held to the rule: the network such a
            # checkpoint holds could then be neither exported, even with --version, nor taken as model.init.
            say(
                f"deepshield: {path}: its export.version {version!r} is {exc}: read as unset (export's --version "
                "names a bundle)"
            )
            recorded = {**recorded, "export": {**export, "version": None}}
    try:
        return validate_config(recorded)
    except DeepShieldError as exc:
        raise DeepShieldError(f"{path} was trained with settings this version does not read: {exc}") from None


def validate_config(mapping: dict[str, Any], origin: Callable[[str], str | None] | None = None) -> TrainConfig:
    """The configuration `mapping` gives, else an error naming each bad key, its value and, where `origin`
    says, the file or option that gave it."""
    try:
        return TrainConfig.model_validate(mapping)
    except ValidationError as exc:
        raise DeepShieldError(f"invalid training configuration: {explain(exc, TrainConfig, origin)}") from exc
    except DeepShieldError as exc:
        raise DeepShieldError(f"invalid training configuration: {exc}") from exc
