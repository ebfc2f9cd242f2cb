"""One data loader per training stream for the whole run, its worker processes forked once.

Samples are pure functions of (seed, epoch, index), so a loader does not need a dataset per epoch:
the sampler hands out (epoch, index) items and is set before each epoch. Forking the workers once,
before the trainer's heap grows, is what keeps memory flat: a worker forked at each epoch's start
keeps a copy-on-write view of every page the trainer then rewrites (its activations live in a heap
that is never trimmed, see `allocator`), so at 288 px the trainer and its worker held 19-20 GB
together against 13 GB for the trainer alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

Item = tuple[int, int]  # (epoch, index): what a training dataset is indexed by


class EpochSampler(Sampler[Item]):
    """The items an epoch still has to go through (all of them, or the rest of a resumed epoch)."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def set(self, epoch: int, indices: Sequence[int]) -> None:
        self.items = [(epoch, index) for index in indices]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)  # `set` rebinds the list: an iteration under way keeps its own

    def __len__(self) -> int:
        return len(self.items)


class EpochLoader:
    """Batches of one dataset indexed by `Item`, epoch after epoch, from workers started at construction."""

    def __init__(self, samples: Dataset, batch_size: int, workers: int, seed: int) -> None:
        self.sampler = EpochSampler()
        self.loader = DataLoader(
            samples,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            persistent_workers=workers > 0,
            # Its own generator: a DataLoader otherwise draws its base seed from the global torch RNG,
            # which would shift the dropout masks of a resumed run away from an uninterrupted one.
            generator=torch.Generator().manual_seed(seed),
        )
        if workers:
            # Parallelism comes from the workers: OpenCV's own threads in each (as many as cores) would
            # only contend, most on a GPU machine's 14 workers. Set before the fork, which the workers
            # inherit: a forked child that resizes OpenCV's thread pool itself hangs.
            cv2.setNumThreads(1)
            iter(self.loader)  # forks the workers now; the empty sampler gives them nothing to make yet

    def epoch(self, epoch: int, indices: Sequence[int]) -> Iterator:
        """The batches of `indices` (whole batches only) for `epoch`."""
        self.sampler.set(epoch, indices)
        return iter(self.loader)

    def close(self) -> None:
        """Stop the workers now. Garbage collection would stop them too, but a run that raised keeps its
        frames (and so this loader) alive in the traceback, and a search trains trial after trial in one
        process: each trial's forked workers would linger. torch has no public call for this."""
        shutdown = getattr(self.loader._iterator, "_shutdown_workers", None)  # None: no workers
        if shutdown is not None:
            shutdown()  # idempotent: the iterator's own __del__ calls it again harmlessly
        self.loader._iterator = None


@dataclass(frozen=True)
class Loaders:
    """A run's two training streams: manipulation samples and synthetic-face samples (either may be absent)."""

    manipulation: EpochLoader | None
    synthetic: EpochLoader | None

    def __post_init__(self) -> None:
        if self.manipulation is None and self.synthetic is None:
            raise ValueError("training needs at least one stream of samples")

    def close(self) -> None:
        for loader in (self.manipulation, self.synthetic):
            if loader is not None:
                loader.close()

    def epoch(self, epoch: int, indices: Sequence[int]) -> Iterator[tuple[Any, Any]]:
        """(manipulation batch, synthetic-face batch) pairs, a stream's batch None when it is absent."""
        absent = itertools.repeat(None)
        return zip(
            *(
                absent if loader is None else loader.epoch(epoch, indices)
                for loader in (self.manipulation, self.synthetic)
            )
        )
