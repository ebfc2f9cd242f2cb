"""Samplers (grid, random, TPE) and pruners (median, successive halving, none)."""

from __future__ import annotations

import random
import time
import zlib
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from deepshield.errors import DeepShieldError
from deepshield.tuning.optuna_api import set_trial_attr, trial_id
from deepshield.tuning.space import SearchSpace
from deepshield.tuning.trials import GRID_ID, INTERRUPTED, holds_slot

SAMPLERS = ("auto", "grid", "random", "tpe")
CLAIM_ROUNDS = 5  # tries at an uncontested grid point before a trial gives up as surplus
PRUNERS = ("median", "halving", "none")


class GridSearchSampler(BaseSampler):
    """Every grid point once, resumable and safe with parallel workers.

    Optuna's GridSampler counts any finished trial as a visited point, so a trial lost to a kill
    (or one skipped as surplus) would leave its point unvisited for good. Here a point is taken only
    while a trial on it is done (complete, pruned, error), running or queued (a retry carries its
    point in its `grid_id` user attribute). Free points are picked at random (with a per-process
    seed) so that concurrent workers rarely collide; a trial that finds no free point gets
    grid_id -1 and the objective drops it as surplus.
    """

    def __init__(self, space: SearchSpace, seed: int | None = None) -> None:
        self._names = space.names
        self._points = space.grid_points()
        self._rng = random.Random(seed)
        self._chosen: dict[int, int] = {}  # trial_id -> grid id, for this process's trials

    def __len__(self) -> int:
        return len(self._points)

    def taken(self, study: optuna.Study) -> set[int]:
        trials = study.get_trials(deepcopy=False)
        return {int(t.user_attrs[GRID_ID]) for t in trials if GRID_ID in t.user_attrs and holds_slot(t)}

    def free_points(self, study: optuna.Study) -> list[int]:
        taken = self.taken(study)
        return [i for i in range(len(self._points)) if i not in taken]

    def grid_id(self, trial: optuna.Trial | FrozenTrial) -> int | None:
        """The grid point this process chose for a running trial (-1: none was free; None: not one of this process's trials)."""
        return self._chosen.get(trial_id(trial))

    def contested(self, study: optuna.Study, trial: FrozenTrial, grid_id: int) -> bool:
        """Whether another trial that holds its slot claims `grid_id` too."""
        mine = trial_id(trial)
        return any(
            trial_id(t) != mine and int(t.user_attrs.get(GRID_ID, -1)) == grid_id and holds_slot(t)
            for t in study.get_trials(deepcopy=False)
        )

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if GRID_ID in trial.user_attrs:  # a retry: its point travels with it
            self._chosen[trial_id(trial)] = int(trial.user_attrs[GRID_ID])
            return
        try:
            grid_id = self._claim(study, trial)
        except KeyboardInterrupt:
            # Optuna's ask() leaves RUNNING a trial whose sampler raised: close it, as the objective
            # closes an interrupted trial (it has no parameters yet, so nothing is retried).
            set_trial_attr(study, trial, INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            raise
        self._chosen[trial_id(trial)] = grid_id

    def _claim(self, study: optuna.Study, trial: FrozenTrial) -> int:
        """A free grid point, claimed in the storage (-1: none is free).

        Two workers can read the same free point before either writes its claim (Ray tasks finish
        importing at the same moment). So: claim, then re-read; whoever sees a rival claim yields and
        picks again. The later of two writers always sees the earlier one's claim, so no point stays
        claimed twice; a worker still contested after CLAIM_ROUNDS gives up (surplus, dropped)."""
        for _ in range(CLAIM_ROUNDS):
            free = self.free_points(study)
            if not free:
                break
            grid_id = self._rng.choice(free)
            set_trial_attr(study, trial, GRID_ID, grid_id)
            if not self.contested(study, trial, grid_id):
                return grid_id
            set_trial_attr(study, trial, GRID_ID, -1)
            time.sleep(self._rng.uniform(0.005, 0.05))  # out of step with the rival before picking again
        set_trial_attr(study, trial, GRID_ID, -1)
        return -1

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        grid_id = self._chosen.get(trial_id(trial), int(trial.user_attrs.get(GRID_ID, -1)))
        if grid_id < 0 or param_name not in self._names:
            raise RuntimeError(f"no grid point for {param_name} in trial {trial.number}")
        return self._points[grid_id][param_name]

    def after_trial(self, study, trial, state, values) -> None:
        self._chosen.pop(trial_id(trial), None)


def resolve_sampler_name(name: str, space: SearchSpace) -> str:
    if name not in SAMPLERS:
        raise DeepShieldError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if name == "auto":
        return "grid" if space.finite else "tpe"
    if name == "grid":
        space.grid()  # raises a clear error for continuous ranges
    return name


def process_seed(seed: int, *parts: Any) -> int:
    """A seed per (search seed, worker, trials so far): a resumed search or a second worker does not
    replay the first one's random draws."""
    return zlib.crc32(repr((seed, *parts)).encode())


def make_sampler(name: str, space: SearchSpace, seed: int, n_trials: int | None) -> BaseSampler:
    if name == "grid":
        return GridSearchSampler(space, seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        # Few trials on a laptop: start modelling after a third of them (at least 2, at most 10).
        startup = max(2, min(10, (n_trials or 30) // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)
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
