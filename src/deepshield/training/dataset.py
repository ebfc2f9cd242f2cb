"""Samples for training and validation: real faces and fakes synthesised on the fly.

Every sample is a pure function of (seed, epoch, index), and a training dataset is indexed by
(epoch, index): the same run gives the same data whatever the worker count, one dataset serves every
epoch, and a resumed run continues with exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from deepshield.synthesis.blend import FaceSample, SynthesisConfig, SynthesisResult, cross_blend, part_paste, self_blend
from deepshield.training.augment import degrade_framed, draw_framing
from deepshield.training.config import AugmentConfig
from deepshield.training.facebank import FaceBank
from deepshield.training.loading import Item

REAL, FAKE = 0, 1


def split_by_group(bank: FaceBank, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Identity-disjoint split: a group goes to validation when its draw, a hash of the seed and the group
    alone, is under val_fraction (so about that share of groups; the lowest draw when none is). A group's
    side never depends on which other faces a bank holds: the manipulation and synthetic-face scores split
    the same folders as differently filtered banks (padding-heavy faces dropped, other per-folder limits),
    and shuffled as a whole, 32 of the 40 synthetic-validation identities of one such pair were the
    manipulation score's training faces, which the shared trunk had learnt."""
    groups = np.unique(bank.groups)
    draws = np.array([_unit_draw(seed, group) for group in groups])
    val_groups = set(groups[draws < val_fraction]) or ({groups[int(np.argmin(draws))]} if val_fraction > 0 else set())
    is_val = np.array([g in val_groups for g in bank.groups])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _unit_draw(seed: int, group: str) -> float:
    """A number in [0, 1) fixed by the seed and the group (the same in every process and run)."""
    digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Donors:
    """Faces used only as cross-blend donors, never as real samples (e.g. generated faces, so that a
    blend carries a generator's texture as regional GAN swaps do); drawn for `fraction` of the cross blends."""

    bank: FaceBank
    fraction: float


@dataclass
class FakeMaker:
    bank: FaceBank
    synthesis: SynthesisConfig
    cross_fraction: float
    donors: Donors | None = None

    def make(self, index: int, rng: np.random.Generator) -> SynthesisResult:
        target = self.bank.sample(index)
        paste = self.synthesis.paste_probability
        # No draw without pasting: a recipe without it keeps its samples exactly.
        if paste > 0 and len(self.bank) > 1 and rng.random() < paste:
            return part_paste(target, self._donor(index, rng), rng, self.synthesis)
        if len(self.bank) > 1 and rng.random() < self.cross_fraction:
            return cross_blend(target, self._donor(index, rng), rng, self.synthesis)
        return self_blend(target, rng, self.synthesis)

    def _donor(self, index: int, rng: np.random.Generator) -> FaceSample:
        # No draw without donors: a recipe without them keeps its samples exactly.
        if self.donors is not None and rng.random() < self.donors.fraction:
            return self.donors.bank.sample(int(rng.integers(len(self.donors.bank))))
        return self.bank.sample(self.bank.donor_for(index, rng))


NO_MASK = torch.empty(0, 0, dtype=torch.uint8)  # every sample's mask when the dataset makes none


class TrainingSample(NamedTuple):
    """One manipulation sample (batched alike by the data loader): the degraded face, its label, and,
    when the dataset makes masks, where it was blended (uint8, 255 = all source; zeros for a real face).
    `mask_known` is False for a prepared dataset's fake (its mask is unknown: zeros, not to be learnt)
    and when masks are off (every mask empty)."""

    image: torch.Tensor
    label: int
    mask: torch.Tensor
    mask_known: bool


class TrainingSamples(Dataset):
    """Balanced: even indices are real faces, odd indices fakes. A fake is synthesised from a real
    face, or drawn from the pool of prepared fakes (half and half when both are available)."""

    def __init__(
        self,
        bank: FaceBank,
        fake_pool: np.ndarray,
        length: int,
        seed: int,
        synthesis: SynthesisConfig,
        augment: AugmentConfig,
        cross_fraction: float,
        synthesize: bool = True,
        donors: Donors | None = None,
        masks: bool = False,
    ):
        if len(bank) == 0:
            raise ValueError("training needs real faces")
        if not synthesize and len(fake_pool) == 0:
            raise ValueError("training needs fakes: enable synthesis or give datasets with fake crops")
        self.bank = bank
        self.fake_pool = fake_pool
        self.length = length
        self.seed = seed
        self.fakes = FakeMaker(bank, synthesis, cross_fraction, donors)
        self.synthesize = synthesize
        self.augment = augment
        self.masks = masks  # only the mask loss reads them: off, no sample spends time on one

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, item: Item) -> TrainingSample:
        epoch, index = item
        rng = np.random.default_rng([self.seed, epoch, index])
        face = int(rng.integers(len(self.bank)))
        label = index % 2
        made: SynthesisResult | None = None  # the fake, when synthesised here: its mask is known
        if label == REAL:
            image = self.bank.images[face]
        elif self.synthesize and (len(self.fake_pool) == 0 or rng.random() < 0.5):
            made = self.fakes.make(face, rng)
            image = made.image
        else:
            image = self.fake_pool[int(rng.integers(len(self.fake_pool)))]
        framing = draw_framing(image.shape[0], rng, self.augment)
        degraded = torch.from_numpy(degrade_framed(framing.apply(image), rng, self.augment))
        if not self.masks:
            return TrainingSample(degraded, label, NO_MASK, False)
        # A real face has nothing blended wherever the framing puts it; a prepared fake's mask is unknown.
        mask = np.zeros(image.shape[:2], np.uint8) if made is None else framing.apply(made.mask_levels())
        return TrainingSample(degraded, label, torch.from_numpy(mask), label == REAL or made is not None)


def validation_samples(
    bank: FaceBank,
    fake_pool: np.ndarray,
    seed: int,
    synthesis: SynthesisConfig,
    cross_fraction: float,
    synthesize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Every validation face as itself, plus one fixed fake made from it (when synthesising) and
    every prepared fake: an unchanging set."""
    maker = FakeMaker(bank, synthesis, cross_fraction)
    fakes = (
        [maker.make(i, np.random.default_rng([seed, 10**6, i])).image for i in range(len(bank))] if synthesize else []
    )
    fake_images = np.concatenate([np.stack(fakes), fake_pool]) if fakes else fake_pool
    images = np.concatenate([bank.images, fake_images])
    labels = np.concatenate([np.zeros(len(bank), np.int64), np.ones(len(fake_images), np.int64)])
    return images, labels
