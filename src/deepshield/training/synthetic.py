"""Data and checks for the synthetic-face score (is the face fully AI-generated?).

A detector learns a generator's fingerprint only if nothing else tells the classes apart, so both
classes go through the same path: the face bank's detection, crop policy and resize (`facebank`),
and the same random degradations (`augment.degrade` with `synthetic.augment`, heavier than the
manipulation recipe's), with the same random downscale for 512 px generated faces and 512 px FFHQ
photos. The head pools only the crop's centre (see `models.network`), so plain studio backgrounds
are not its cue.

Generated files are split three ways, by file: training, validation (calibration) and a holdout that
is never trained or calibrated on (the disjoint check, also scored downscaled and at JPEG-70). The
resolution-confound check scores real photos at the generated set's resolution (FFHQ, 512 px) against
downscaled generated faces: a model that had learnt "512 px studio portrait" instead of the generator
would rank these the wrong way round (AUC well below 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from deepshield.errors import DeepShieldError
from deepshield.evaluation.metrics import bootstrap_intervals, check_inputs, detection_metrics
from deepshield.evaluation.perturb import Cut, Jpeg, Resize
from deepshield.faces.crop import CropPolicy
from deepshield.models.card import GENERATED_ENTRY, REAL_ENTRY, Calibration, ModelCard, sigmoid
from deepshield.training.augment import degrade
from deepshield.training.config import TrainConfig
from deepshield.training.dataset import FAKE, REAL, split_by_group
from deepshield.training.facebank import FaceBank, donor_files, facebank_of_files, list_images
from deepshield.training.loading import Item

log = logging.getLogger(__name__)
# A stream of its own in the (seed, epoch, index) seeding, apart from the manipulation samples'.
SYNTHETIC_STREAM = 7


@dataclass(frozen=True)
class LabelledCrops:
    """Face crops with labels (1: generated, 0: real)."""

    images: np.ndarray  # N x S x S x 3 uint8
    labels: np.ndarray  # N int64

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(cls, fake: np.ndarray, real: np.ndarray) -> LabelledCrops:
        images = np.concatenate([fake, real])
        return cls(images, np.concatenate([np.full(len(fake), FAKE, np.int64), np.full(len(real), REAL, np.int64)]))


@dataclass(frozen=True)
class SyntheticChecks:
    """The fixed sets scored every epoch (never trained on); their names are the metric names' middle."""

    val: LabelledCrops  # validation generated vs validation real: calibration and selection
    holdout: LabelledCrops  # generated files never trained or calibrated on vs validation real
    holdout_downscaled: LabelledCrops  # both sides' photos downscaled (synthetic.downscale_check) before cropping
    holdout_jpeg: LabelledCrops  # both sides' photos re-encoded at synthetic.jpeg_check
    confound: LabelledCrops  # downscaled holdout generated vs matched-resolution real photos (FFHQ) at full size
    holdout_cut: LabelledCrops  # both sides' photos cut to their centre (synthetic.cut_check): crops run into padding

    def named(self) -> dict[str, LabelledCrops]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class SyntheticData:
    train_fake: np.ndarray
    train_real: np.ndarray
    train_real_valid: np.ndarray  # N x S x S bool: each real training crop's pixels inside its photo
    checks: SyntheticChecks
    sources: list[str]  # the folders, as the card records them
    training_files: list[Path]  # the photos trained on: a benchmark must share none


def split_generated_files(
    files: list[Path], holdout: float, val: float, seed: int, seen: frozenset[Path] = frozenset()
) -> tuple[list[Path], list[Path], list[Path]]:
    """(train, val, holdout) generated files, by a seeded shuffle. Files in `seen` (the trunk was trained
    on them, as blend donors) only ever go to training: a check must score faces the network has not seen."""
    order = np.random.default_rng([seed, SYNTHETIC_STREAM]).permutation(len(files))
    n_holdout, n_val = max(1, round(holdout * len(files))), max(1, round(val * len(files)))
    picked = [files[i] for i in order]
    unseen = [f for f in picked if f not in seen]
    if n_holdout + n_val >= len(unseen):
        faces = f"{len(files)} generated faces"
        if len(unseen) < len(files):
            faces = (
                f"{len(unseen)} generated faces the network has not seen ({len(files) - len(unseen)} were blend "
                "donors in its training: fewer with data.donor_limit_per_folder)"
            )
        raise DeepShieldError(f"{faces} are too few for a {holdout:.0%} holdout and {val:.0%} validation")
    return (
        unseen[n_holdout + n_val :] + [f for f in picked if f in seen],
        unseen[n_holdout : n_holdout + n_val],
        unseen[:n_holdout],
    )


def generated_split(card: ModelCard) -> tuple[list[Path], list[Path], list[Path]]:
    """The (train, val, holdout) generated files a bundle's synthetic head was trained with, as its run split
    them (the seed, fractions and limit its card recorded; the parent's blend donors kept to training)."""
    if card.synthetic is None or not card.training.config:
        raise DeepShieldError(f"{card.name} {card.version} has no synthetic-face score or no training record")
    config = TrainConfig.model_validate(card.training.config)
    synthetic = config.synthetic
    if synthetic is None:
        raise DeepShieldError(f"{card.name} {card.version}'s training record has no [synthetic] section")
    parent = card.synthetic.parent_training
    donors = donor_files(TrainConfig.model_validate(parent.config).data if parent is not None else config.data)
    generated = list_images(
        [config.data.locate(p, "generated-face folder") for p in synthetic.fake_dirs], synthetic.limit_per_folder
    )
    return split_generated_files(
        generated,
        synthetic.holdout_fraction,
        synthetic.val_fraction,
        config.seed,
        frozenset(p.resolve() for p in donors),
    )


def build_synthetic_data(
    config: TrainConfig, seen_by_trunk: Iterable[Path] = (), progress: bool = True
) -> SyntheticData:
    """Generated and real faces, cropped by the face bank; the real split is `split_by_group`'s with
    the run's seed (the manipulation split's, when the real folders are the same). `seen_by_trunk`: image
    files the network's trunk trains or was trained on (blend donors), kept out of the checks."""
    synthetic = config.synthetic
    if synthetic is None:
        raise ValueError("the configuration has no [synthetic] section")
    data = config.data
    policy = CropPolicy(size=config.model.input_size, scale=config.model.crop_scale)
    cache = Path(data.cache_dir)
    limit = synthetic.limit_per_folder

    def bank(
        files: list[Path], perturbation: str | None = None, group_pattern: str | None = None, inside: bool = False
    ) -> FaceBank:
        return facebank_of_files(files, policy, cache, group_pattern, data.bank_workers, perturbation, inside, progress)

    def checked(files: list[Path], perturbation: str | None = None) -> FaceBank:
        """The faces a check scores, as the product reads them (a padded face cut within its picture)."""
        return bank(files, perturbation, inside=True)

    fake_folders = [data.locate(p, "generated-face folder") for p in synthetic.fake_dirs]
    real_paths = synthetic.real_folders(data)
    if not real_paths:
        raise DeepShieldError("the synthetic-face score needs real faces: set synthetic.real_dirs or data.real_dirs")
    real_folders = [data.locate(p, "real-face folder") for p in real_paths]
    matched = data.locate(synthetic.matched_real_dir, "matched-resolution real folder").resolve()
    train_files, val_files, holdout_files = split_generated_files(
        list_images(fake_folders, limit),
        synthetic.holdout_fraction,
        synthetic.val_fraction,
        config.seed,
        frozenset(Path(p).resolve() for p in seen_by_trunk),
    )
    reals = bank(list_images(real_folders, limit), group_pattern=data.group_pattern)
    train_idx, val_idx = split_by_group(reals, data.val_fraction, config.seed)
    val_real = reals.subset(val_idx)
    val_real_files = [Path(p) for p in val_real.paths]
    # The checks score faces as the product reads them (a padded one cut within its picture): the threshold
    # fitted on them is the one the product applies. Training reads the bank's crops as they are.
    shown_real = checked(val_real_files)
    matched_real = shown_real.images[[Path(p).is_relative_to(matched) for p in shown_real.paths]]
    if not len(matched_real):
        # Said apart: a folder the real faces do not include needs another setting than one too small to
        # have a person drawn for validation (a few photos at val_fraction 0.1, as on a first small run).
        held = sum(Path(p).is_relative_to(matched) for p in reals.paths)
        why = (
            f"none of its {held} faces' people was drawn for validation (data.val_fraction {data.val_fraction:g}): "
            "add photos of more people to it, or raise data.val_fraction"
            if held
            else "it is not one of the real-face folders (synthetic.real_dirs, else data.real_dirs): name one of them"
        )
        raise DeepShieldError(
            f"no validation real face comes from {matched} (synthetic.matched_real_dir), which the confound check "
            f"needs: {why}"
        )
    downscale, jpeg = Resize(synthetic.downscale_check).name, Jpeg(synthetic.jpeg_check).name
    cut = Cut(synthetic.cut_check).name
    holdout_downscaled = checked(holdout_files, downscale).images
    checks = SyntheticChecks(
        val=LabelledCrops.of(checked(val_files).images, shown_real.images),
        holdout=LabelledCrops.of(checked(holdout_files).images, shown_real.images),
        holdout_downscaled=LabelledCrops.of(holdout_downscaled, checked(val_real_files, downscale).images),
        holdout_jpeg=LabelledCrops.of(checked(holdout_files, jpeg).images, checked(val_real_files, jpeg).images),
        confound=LabelledCrops.of(holdout_downscaled, matched_real),
        holdout_cut=LabelledCrops.of(checked(holdout_files, cut).images, checked(val_real_files, cut).images),
    )
    train_fake = bank(train_files).images
    log.info(
        "synthetic faces: %d generated / %d real for training; checks %s",
        len(train_fake),
        len(train_idx),
        {name: len(crops) for name, crops in checks.named().items()},
    )
    sources = [f"{GENERATED_ENTRY}{p}" for p in synthetic.fake_dirs] + [f"{REAL_ENTRY}{p}" for p in real_paths]
    training_files = train_files + [Path(reals.paths[i]) for i in train_idx]
    return SyntheticData(train_fake, reals.images[train_idx], reals.valid[train_idx], checks, sources, training_files)


class SyntheticFaceSamples(Dataset):
    """Balanced: even indices real faces, odd indices generated ones, each degraded by the same
    random draw of `augment`; `fake_padding_share` of the generated ones first take a random real
    training face's padding (`real_valid`), so that padding tells neither class. A pure function of
    (seed, epoch, index), like `TrainingSamples`."""

    def __init__(
        self,
        fake: np.ndarray,
        real: np.ndarray,
        real_valid: np.ndarray,
        length: int,
        seed: int,
        augment,
        fake_padding_share: float = 0.0,
    ) -> None:
        if not len(fake) or not len(real):
            raise DeepShieldError(
                f"the synthetic-face score needs generated and real training faces (got {len(fake)} and {len(real)})"
            )
        self.fake, self.real, self.real_valid, self.length = fake, real, real_valid, length
        self.seed, self.augment, self.fake_padding_share = seed, augment, fake_padding_share

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, int]:
        epoch, index = item
        rng = np.random.default_rng([self.seed, epoch, index, SYNTHETIC_STREAM])
        label = index % 2
        pool = self.fake if label == FAKE else self.real
        image = pool[int(rng.integers(len(pool)))]
        # Drawn only when asked, so that a run without it keeps the random stream it always had.
        if label == FAKE and self.fake_padding_share and rng.random() < self.fake_padding_share:
            inside = self.real_valid[int(rng.integers(len(self.real_valid)))]
            image = np.where(inside[..., None], image, np.uint8(0))  # the crop's padding is black
        return torch.from_numpy(degrade(image, rng, self.augment)), label


@dataclass(frozen=True)
class ScoredChecks:
    """Every check's labels and synthetic-face logits: what an epoch computes its figures from and the
    best checkpoint keeps (as plain arrays, so that a checkpoint stays loadable whatever this class becomes)."""

    labels: dict[str, np.ndarray]
    logits: dict[str, np.ndarray]

    @classmethod
    def score(cls, checks: SyntheticChecks, predict) -> ScoredChecks:
        """`predict(images) -> synthetic logits` over every check."""
        named = checks.named()
        return cls(
            {name: crops.labels for name, crops in named.items()},
            {name: predict(c.images) for name, c in named.items()},
        )

    @classmethod
    def from_stored(cls, stored: dict[str, tuple[np.ndarray, np.ndarray]]) -> ScoredChecks:
        return cls(
            {name: np.asarray(labels) for name, (labels, _) in stored.items()},
            {name: np.asarray(logits, np.float64) for name, (_, logits) in stored.items()},
        )

    def stored(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {name: (self.labels[name], self.logits[name]) for name in self.labels}

    def metrics(self, intervals: bool = False) -> dict[str, float]:
        """synthetic_<check>_auc (and _ap) for every check; with `intervals`, 95% bootstrap intervals
        over faces too (`_lo`, `_hi`)."""
        out: dict[str, float] = {}
        for name in self.labels:
            labels, scores = check_inputs(self.labels[name], sigmoid(self.logits[name]))
            metrics = detection_metrics(labels, scores)
            out[f"synthetic_{name}_auc"], out[f"synthetic_{name}_ap"] = metrics.auc, metrics.ap
            if intervals:
                auc = bootstrap_intervals(labels, scores, resamples=1000).intervals["auc"]
                out[f"synthetic_{name}_auc_lo"], out[f"synthetic_{name}_auc_hi"] = auc.low, auc.high
        return out

    def called_at(self, scale: Calibration, threshold: float) -> dict[str, float]:
        """Shares of faces called synthetic at the threshold: of the real faces of validation
        (synthetic_real_fpr), the same photos downscaled, at JPEG-70 and cut, and the matched-resolution
        real photos (FFHQ); and of the holdout's generated faces, framed whole and cut
        (synthetic_holdout_tpr, synthetic_holdout_cut_tpr: what the threshold still catches). A check a
        checkpoint did not score (written before it existed) is left out."""
        sets = {
            ("real", REAL): "val",
            ("downscaled_real", REAL): "holdout_downscaled",
            ("jpeg_real", REAL): "holdout_jpeg",
            ("matched_real", REAL): "confound",
            ("holdout", FAKE): "holdout",
            ("cut_real", REAL): "holdout_cut",
            ("holdout_cut", FAKE): "holdout_cut",
        }
        out = {}
        for (metric, label), name in sets.items():
            if name not in self.labels:
                continue
            chosen = self.labels[name] == label
            probabilities = scale.probability(self.logits[name][chosen])
            out[f"synthetic_{metric}_{'fpr' if label == REAL else 'tpr'}"] = float((probabilities >= threshold).mean())
        return out
