"""A study worker: loads the study, runs trials one at a time until the search's target, deadline or
grid is reached. The engine (local processes or Ray tasks) runs `worker_loop` n_jobs times."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from deepshield.tuning.objective import Objective, TrialContext, drop_checkpoints
from deepshield.tuning.optuna_api import set_trial_attr
from deepshield.tuning.samplers import GridSearchSampler, make_sampler
from deepshield.tuning.space import shown
from deepshield.tuning.storage import open_storage
from deepshield.tuning.trials import (
    BEST_EPOCH,
    ERROR,
    INTERRUPTED,
    RETRY_OF,
    RUN_DIR,
    WORKER,
    counts_as_done,
    is_error,
    is_surplus,
    storage_failure,
    worker_id,
)

ERRORS_IN_ROW = 3  # a worker stops after this many failed trials in a row: the configuration is broken


@dataclass
class WorkerSpec:
    """What every worker needs (picklable: it travels to spawned processes and Ray tasks)."""

    context: TrialContext
    storage: str
    sampler: str
    pruner: Any
    seed: int
    deadline: float | None  # time.time() after which no trial starts
    stop_attr: str  # the study attribute that stops this search's workers (trials.stop_requested)


def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def trial_line(trial: FrozenTrial, metric: str) -> str:
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={shown(v)}" for k, v in trial.params.items())
    retry = f" (resumes trial {trial.user_attrs[RETRY_OF]})" if RETRY_OF in trial.user_attrs else ""
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}{retry}: {metric}={trial.value:.4f} (epoch {trial.user_attrs.get(BEST_EPOCH)} of {max(trial.intermediate_values, default='?')}) [{params}]"
    if trial.state == TrialState.PRUNED:
        step = max(trial.intermediate_values, default=0)
        value = trial.intermediate_values.get(step)
        return (
            f"trial {trial.number}{retry}: pruned after epoch {step}"
            + (f" ({metric}={value:.4f})" if value is not None else "")
            + f" [{params}]"
        )
    return f"trial {trial.number}{retry}: failed: {trial.user_attrs.get(ERROR, trial.state.name)} [{params}]"


def worker_loop(spec: WorkerSpec, worker_index: int = 0, echo: Callable[[str], None] = print) -> None:
    """Run trials until the study has `target` done trials, the deadline passes, or the grid is used up."""
    quiet_optuna()
    context = spec.context
    storage = open_storage(spec.storage)
    study: optuna.Study | None = None
    sampler: BaseSampler | None = None
    try:
        existing = len(optuna.load_study(study_name=context.study_name, storage=storage).get_trials(deepcopy=False))
        sampler = make_sampler(
            spec.sampler, context.space, spec.seed, context.target, spec.storage, process=(worker_index, existing)
        )
        study = optuna.load_study(study_name=context.study_name, storage=storage, sampler=sampler, pruner=spec.pruner)
        objective = Objective(context)
        errors_in_row = 0
        while True:
            if spec.deadline is not None and time.time() >= spec.deadline:
                break
            if study.user_attrs.get(spec.stop_attr):  # the interrupt may not reach this worker (Ray's cancel)
                break
            trials = study.get_trials(deepcopy=False)
            done = sum(counts_as_done(t) for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if context.target is not None and done + running >= context.target:
                break
            if isinstance(sampler, GridSearchSampler) and not waiting and not sampler.has_free_point(study):
                break
            objective.last_number = None
            study.optimize(objective, n_trials=1, catch=(Exception,))
            if (failed := objective.stopped_by) is not None:  # its trial is lost (no error set): a resume runs it
                # again. Left to the driver to raise, with this search's other workers stopped: raised here, in a
                # worker process of its own (--n-jobs), it was a traceback, and the search ended as if done.
                study.set_user_attr(storage_failure(spec.stop_attr), [failed.errno, failed.strerror, failed.filename])
                study.set_user_attr(spec.stop_attr, True)
                break
            if objective.last_number is None:
                continue
            trial = study.get_trials(deepcopy=False)[objective.last_number]
            if is_surplus(trial):
                continue
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and not context.keep_checkpoints:
                drop_checkpoints(Path(trial.user_attrs[RUN_DIR]))
            echo(trial_line(trial, context.selector.metric))
            errors_in_row = errors_in_row + 1 if is_error(trial) else 0
            if errors_in_row >= ERRORS_IN_ROW:
                echo(
                    f"worker {worker_index}: {ERRORS_IN_ROW} trials in a row failed; stopping (see each trial's train.log)"
                )
                break
    except BaseException as stop:
        # Objective errors never get here (optimize catches them): whatever does stops this worker.
        close_own_running_trials(study, storage, sampler)
        if not isinstance(stop, KeyboardInterrupt) and interrupted(stop):
            raise KeyboardInterrupt from stop
        raise
    finally:  # a Ray worker process outlives its task: it keeps no connection to the study
        storage.remove_session()
        storage.engine.dispose()


def interrupted(error: BaseException) -> bool:
    """An interrupt somewhere in the error's chain. One that lands inside Optuna's own `tell` comes
    out as an UnboundLocalError from the `finally` of optuna/study/_optimize.py, the interrupt as
    its context."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


def close_own_running_trials(
    study: optuna.Study | None, storage: optuna.storages.RDBStorage, sampler: BaseSampler | None
) -> None:
    """When a worker stops on an exception: leave the study as a killed process would, for the next
    start to recover. An interrupt (Ctrl-C, SIGTERM, `ray.cancel`) can land inside a storage write, whose open transaction would keep the
    SQLite file locked for as long as a reused Ray worker process lives; or after Optuna created a
    trial and before it closed it, which would stay RUNNING in a process that is still alive."""
    storage.remove_session()  # ends a half-done read or write: the database lock goes with it
    if study is not None:  # None: interrupted while loading the study, before any trial of this worker
        me = worker_id()
        with contextlib.suppress(Exception):
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                mine = trial.user_attrs.get(WORKER) == me or (
                    isinstance(sampler, GridSearchSampler) and sampler.grid_id(trial) is not None
                )
                if mine:
                    set_trial_attr(study, trial, INTERRUPTED, True)
                    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
