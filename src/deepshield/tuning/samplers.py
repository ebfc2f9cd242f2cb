"""Samplers (grid, random, TPE) and pruners (median, successive halving, none)."""

from __future__ import annotations

import random
import zlib
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from deepshield.errors import DeepShieldError
from deepshield.locks import waited_lock
from deepshield.tuning.optuna_api import set_trial_attr, trial_id
from deepshield.tuning.space import SearchSpace, stepped
from deepshield.tuning.storage import beside_database
from deepshield.tuning.trials import GRID_ID, holds_slot

SAMPLERS = ("auto", "grid", "random", "tpe")
PRUNERS = ("median", "halving", "none")


class GridSearchSampler(BaseSampler):
    """Every grid point once, resumable and safe with parallel workers.

    Optuna's GridSampler counts any finished trial as a visited point, so a trial lost to a kill
    (or one skipped as surplus) would leave its point unvisited for good. Here a point is taken only
    while a trial on it is done (complete, pruned, error), running or queued (a retry carries its
    point in its `grid_id` user attribute). Free points are picked at random (with a per-process
    seed); with a SQLite storage, reading the free points and writing the claim happen under one
    file lock beside the database, so two workers that start together never take the same point (a
    server database has no such lock: there the random pick only makes a collision rare). A trial that
    finds no free point gets grid_id -1 and the objective drops it as surplus.
    """

    def __init__(self, space: SearchSpace, seed: int | None = None, lock_path: Path | None = None) -> None:
        self._space = space
        self._size = space.grid_size()
        self._rng = random.Random(seed)
        self._lock_path = lock_path
        self._chosen: dict[int, int] = {}  # trial_id -> grid id, for this process's trials

    def __len__(self) -> int:
        return self._size

    def taken(self, study: optuna.Study) -> set[int]:
        trials = study.get_trials(deepcopy=False)
        claims = {int(t.user_attrs[GRID_ID]) for t in trials if GRID_ID in t.user_attrs and holds_slot(t)}
        return claims - {-1}  # a running trial that found no free point holds none

    def has_free_point(self, study: optuna.Study) -> bool:
        return len(self.taken(study)) < self._size

    def pick_free_point(self, study: optuna.Study) -> int:
        """A free point at random (-1: none is free). While most of the grid is free a draw is tried until it
        lands on one (twice at most on average); else the free points are few enough to list."""
        taken = self.taken(study)
        if 2 * len(taken) < self._size:
            while (grid_id := self._rng.randrange(self._size)) in taken:
                pass
            return grid_id
        free = [i for i in range(self._size) if i not in taken]
        return self._rng.choice(free) if free else -1

    def grid_id(self, trial: optuna.Trial | FrozenTrial) -> int | None:
        """The grid point this process chose for a running trial (-1: none was free; None: not one of this process's trials)."""
        return self._chosen.get(trial_id(trial))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if GRID_ID in trial.user_attrs:  # a retry: its point travels with it
            self._chosen[trial_id(trial)] = int(trial.user_attrs[GRID_ID])
            return
        # Marked as this process's before waiting for the lock: an interrupt while waiting, or inside the
        # write, still finds the trial (as holding no point until the claim is written).
        self._chosen[trial_id(trial)] = -1
        with waited_lock(self._lock_path):
            grid_id = self.pick_free_point(study)
            self._chosen[trial_id(trial)] = grid_id
            set_trial_attr(study, trial, GRID_ID, grid_id)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        grid_id = self._chosen.get(trial_id(trial), int(trial.user_attrs.get(GRID_ID, -1)))
        if grid_id < 0 or param_name not in self._space.names:
            raise RuntimeError(f"no grid point for {param_name} in trial {trial.number}")
        return self._space.grid_point(grid_id)[param_name]

    def after_trial(self, study, trial, state, values) -> None:
        self._chosen.pop(trial_id(trial), None)


def grid_lock_path(storage_url: str) -> Path | None:
    """The claim lock of a SQLite study database (None for a server database)."""
    return beside_database(storage_url, ".grid-lock")


def resolve_sampler_name(name: str, space: SearchSpace) -> str:
    if name not in SAMPLERS:
        raise DeepShieldError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if name == "auto":
        return "grid" if space.listed else "tpe"
    if name == "grid":
        space.grid()  # raises a clear error for continuous ranges
    return name


def process_seed(seed: int, *parts: Any) -> int:
    """A seed per (search seed, worker, trials so far): a resumed search or a second worker does not
    replay the first one's random draws."""
    return zlib.crc32(repr((seed, *parts)).encode())


def off_noise(distribution: BaseDistribution, value: Any) -> Any:
    """A stepped float's draw as the grid spells it: Optuna's low + k x step left 0.30000000000000004 of
    {low: 0.0, high: 0.4, step: 0.1} in the trial, its results row, its MLflow tags and best.yaml."""
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        return stepped(distribution.low, distribution.step, round((value - distribution.low) / distribution.step))
    return value


class SteppedTPESampler(optuna.samplers.TPESampler):
    """TPE whose stepped floats are drawn without float noise (off_noise)."""

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        drawn = super().sample_relative(study, trial, search_space)
        return {name: off_noise(search_space[name], value) for name, value in drawn.items()}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return off_noise(param_distribution, super().sample_independent(study, trial, param_name, param_distribution))


class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
    """Random search whose draws for a trial come from the search's seed and the trial's number alone: a
    search resumed after a crash, or shared by several workers, draws what one uninterrupted run draws for
    the same trial numbers. (RandomSampler's one generator, seeded per process, made a resumed search draw
    other values.) A lost trial's retry takes a new number and replays the lost one's values, so the
    trials after it are drawn as the uninterrupted run's one number later were."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed=seed)
        self._seed = seed

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        self._rng.rng.seed(process_seed(self._seed, trial.number, param_name))
        return off_noise(param_distribution, super().sample_independent(study, trial, param_name, param_distribution))


def make_sampler(
    name: str, space: SearchSpace, seed: int, n_trials: int | None, storage_url: str, process: tuple[int, ...] = ()
) -> BaseSampler:
    """`process` (a worker's index, the trials the study held when it started) seeds the grid's picks and TPE
    per process, so that two workers or a resumed search do not replay each other's draws; random draws
    are seeded per trial instead."""
    if name == "grid":
        return GridSearchSampler(space, process_seed(seed, *process), grid_lock_path(storage_url))
    if name == "random":
        return TrialSeededRandomSampler(seed)
    if name == "tpe":
        # Few trials on a laptop: start modelling after a third of them (at least 2, at most 10).
        startup = max(2, min(10, (n_trials or 30) // 3))
        return SteppedTPESampler(
            seed=process_seed(seed, *process), n_startup_trials=startup, multivariate=True, constant_liar=True
        )
    raise DeepShieldError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """Pruning looks at the selected metric after each epoch (step = epochs done)."""
    if name == "median":
        # Prune a trial whose epoch-k value is worse than the median of earlier trials at epoch k,
        # once two trials have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0, interval_steps=1)
    if name == "halving":
        # Asynchronous successive halving: at epochs 1, 2, 4, ... keep the better half.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2, min_early_stopping_rate=0)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise DeepShieldError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")
