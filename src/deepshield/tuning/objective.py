"""One trial: its config (base + budget + sampled values), its training with the project's trainer
in its own run_dir as a nested MLflow run, per-epoch reporting of the selected validation metric
for pruning, and its value (the best epoch for the selector)."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from deepshield.errors import DeepShieldError, storage_failed
from deepshield.tuning.samplers import GridSearchSampler
from deepshield.tuning.selector import Selector, metric_direction
from deepshield.tuning.space import SearchSpace, apply_values
from deepshield.tuning.trials import (
    BEST_EPOCH,
    ERROR,
    INTERRUPTED,
    LAST_METRICS,
    METRICS,
    MLFLOW_RUN_ID,
    RETRY_OF,
    RUN_DIR,
    SURPLUS,
    WORKER,
    counts_as_done,
    worker_id,
)

log = logging.getLogger(__name__)
EXPORT_SELECT = "export.select"  # the trainer keeps (and exports) the epoch best by this selector


class SurplusTrial(Exception):
    """A worker started a trial after the search's budget was met (or the grid was used up)."""


@dataclass
class TrainingOutcome:
    history: list[dict]
    run_id: str | None


def run_training(
    config, *, epoch_callback, parent_run_id: str | None, run_tags: dict[str, str], resume: bool, command: str = ""
) -> TrainingOutcome:
    """Train one trial with the project's trainer (no bundle export: only the winner gets one)."""
    from deepshield.training.trainer import Trainer

    trainer = Trainer(
        config,
        command=command,
        epoch_callback=epoch_callback,
        parent_run_id=parent_run_id,
        run_tags=run_tags,
        export_bundle=False,
    )
    result = trainer.run(resume=resume)
    return TrainingOutcome(result.progress.history, result.progress.run_id)


TrainFn = Callable[..., TrainingOutcome]


@dataclass
class TrialContext:
    """Everything a worker process needs to run trials (picklable)."""

    base_config: Any  # TrainConfig after --config and --set
    space: SearchSpace
    selector: Selector
    out_dir: Path
    study_name: str
    target: int | None  # trials to reach (done ones count), None: until the timeout
    parent_run_id: str | None = None
    threads: int | None = None
    train_fn: TrainFn = run_training
    quiet: bool = True  # trial output to <run_dir>/train.log
    keep_checkpoints: bool = False  # False: a finished (complete / pruned) trial keeps only best.pt
    tags: dict[str, str] = field(default_factory=dict)


def trial_run_dir(out_dir: Path, study_name: str, number: int) -> Path:
    return Path(out_dir) / "trials" / study_name / f"trial_{number:04d}"


def trial_config(context: TrialContext, params: dict[str, Any], run_dir: Path, number: int):
    values = {
        **context.space.budget,
        **params,
        "run_dir": str(run_dir),
        "tracking.run_name": f"{context.study_name}-trial-{number:04d}",
        EXPORT_SELECT: str(context.selector),  # the trial's best.pt is the epoch its value comes from
    }
    # The worker's share of the CPUs, unless the configuration, the budget or the search sets threads (the
    # share overwrote a searched value, so the study recorded one and training used another).
    if context.threads is not None and context.base_config.threads is None and "threads" not in values:
        values["threads"] = context.threads
    return apply_values(context.base_config, values)


def drop_checkpoints(run_dir: Path) -> None:
    """A trial Optuna has recorded as finished is never resumed: keep best.pt (for `deepshield export`),
    drop last.pt and the per-epoch checkpoints (tens of MB each with the optimiser state). Called by
    the worker after the record, not by the objective: a trial interrupted while Optuna records it is
    retried, and its retry resumes from last.pt with nothing left to train."""
    folder = run_dir / "checkpoints"
    for path in [*folder.glob("epoch_*.pt"), folder / "last.pt"]:
        path.unlink(missing_ok=True)


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _metrics(record: dict) -> dict[str, float]:
    return {
        k: float(v) for k, v in record.items() if (metric_direction(k) is not None or k == "train_loss") and _finite(v)
    }


class EpochReporter:
    """The trainer's epoch callback: report the selected metric, prune if the pruner says so."""

    def __init__(self, trial: optuna.Trial, selector: Selector, epochs: int, reported: set[int]) -> None:
        self.trial = trial
        self.selector = selector
        self.epochs = epochs
        self.reported = reported  # steps reported already (a retry's, carried over from its lost trial)
        self.run_id: str | None = None

    def report(self, history: list[dict]) -> None:
        """Every epoch of `history` not reported yet, at its step (epochs done). Not the last alone: a trial
        stopped after an epoch's checkpoints and before its callback resumes past that epoch, which was never
        reported (pruning skipped it, the report said `epoch 1 of 1` of a 2-epoch trial)."""
        for record in history:
            step, value = int(record["epoch"]) + 1, record.get(self.selector.metric)
            if step not in self.reported and value is not None and _finite(value):
                self.trial.report(float(value), step)
                self.reported.add(step)

    def __call__(self, progress) -> None:
        record = progress.history[-1]
        step = progress.epoch  # epochs done
        if progress.run_id and self.run_id is None:
            self.run_id = progress.run_id
            self.trial.set_user_attr(MLFLOW_RUN_ID, progress.run_id)
        self.trial.set_user_attr(LAST_METRICS, {"epoch": step, **_metrics(record)})
        self.report(progress.history)
        if step < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after epoch {step}: {self.selector.metric}={record.get(self.selector.metric)}"
            )


def _tag_run(run_id: str | None, uri: str, tags: dict[str, str]) -> None:
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    except Exception as exc:  # noqa: BLE001 - tracking trouble must not lose a trial
        log.warning("could not tag MLflow run %s: %s", run_id, exc)


class Objective:
    def __init__(self, context: TrialContext) -> None:
        self.context = context
        self.last_number: int | None = None
        # What stopped the last trial that must stop the search too (a full disk would fail every trial after it).
        self.stopped_by: OSError | None = None

    def _surplus(self, trial: optuna.Trial) -> bool:
        if self._grid_exhausted(trial):
            return True
        if self.context.target is None:
            return False
        others = [t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number]
        done = sum(counts_as_done(t) for t in others)
        ahead = sum(t.state == optuna.trial.TrialState.RUNNING and t.number < trial.number for t in others)
        return done + ahead >= self.context.target

    @staticmethod
    def _grid_exhausted(trial: optuna.Trial) -> bool:
        sampler = trial.study.sampler
        return isinstance(sampler, GridSearchSampler) and sampler.grid_id(trial) == -1

    def __call__(self, trial: optuna.Trial) -> float:
        context = self.context
        self.last_number = trial.number
        trial.set_user_attr(WORKER, worker_id())  # first: a kill from here on is recognised on the next start
        if self._surplus(trial):
            trial.set_user_attr(SURPLUS, True)
            raise SurplusTrial(f"trial {trial.number} not needed: the search's budget is met")
        retry_of = trial.user_attrs.get(RETRY_OF)
        run_dir = Path(
            trial.user_attrs.get(RUN_DIR) or trial_run_dir(context.out_dir, context.study_name, trial.number)
        )
        if retry_of is None and run_dir.exists():
            shutil.rmtree(run_dir)  # left by a deleted study of the same name: not this trial's
        trial.set_user_attr(RUN_DIR, str(run_dir))
        try:
            params = context.space.suggest(trial)
            config = trial_config(context, params, run_dir, trial.number)
        except Exception as exc:
            trial.set_user_attr(ERROR, f"{type(exc).__name__}: {exc}"[:1000])
            raise
        reported = self._carry_over(trial, int(retry_of)) if retry_of is not None else set()
        reporter = EpochReporter(trial, context.selector, config.optim.epochs, reported)
        tags = {
            "deepshield.role": "trial",
            "optuna.study": context.study_name,
            "optuna.trial_number": str(trial.number),
            **{f"search.{k}": str(v) for k, v in params.items()},
            **context.tags,
        }
        uri = config.tracking.uri if config.tracking.enabled else None
        run_dir.mkdir(parents=True, exist_ok=True)
        resume = retry_of is not None and (run_dir / "checkpoints" / "last.pt").exists()
        try:
            with self._output(run_dir):
                outcome = context.train_fn(
                    config,
                    epoch_callback=reporter,
                    parent_run_id=context.parent_run_id,
                    run_tags=tags,
                    resume=resume,
                    command=f"deepshield tune (study {context.study_name}, trial {trial.number})",
                )
        except optuna.TrialPruned:
            if uri:
                _tag_run(reporter.run_id, uri, {"optuna.state": "PRUNED", "optuna.trial_number": str(trial.number)})
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(INTERRUPTED, True)
            raise
        except Exception as exc:
            if storage_failed(exc):  # not the configuration's failure: the trial is lost, resumed with the search
                self.stopped_by = exc
                raise
            trial.set_user_attr(ERROR, f"{type(exc).__name__}: {exc}"[:1000])
            with contextlib.suppress(OSError), open(run_dir / "train.log", "a") as handle:
                handle.write(traceback.format_exc())
            if uri:
                _tag_run(reporter.run_id, uri, {"optuna.state": "FAIL", "optuna.trial_number": str(trial.number)})
            raise
        reporter.report(outcome.history)  # an epoch the resumed training was past, never reported
        return self._record_outcome(trial, outcome, retry_of, uri)

    @staticmethod
    def _carry_over(trial: optuna.Trial, retry_of: int) -> set[int]:
        """A retry continues its lost trial: the lost epochs count for pruning here too, and the MLflow run
        goes on. Returns the steps reported."""
        lost = trial.study.get_trials(deepcopy=False)[retry_of]
        for step, value in sorted(lost.intermediate_values.items()):
            trial.report(value, step)
        if MLFLOW_RUN_ID in lost.user_attrs:
            trial.set_user_attr(MLFLOW_RUN_ID, lost.user_attrs[MLFLOW_RUN_ID])
        return set(lost.intermediate_values)

    def _record_outcome(
        self, trial: optuna.Trial, outcome: TrainingOutcome, retry_of: int | None, uri: str | None
    ) -> float:
        """The trial's value (its best epoch by the selector), kept on the trial and tagged on its MLflow run."""
        context = self.context
        if outcome.run_id:
            trial.set_user_attr(MLFLOW_RUN_ID, outcome.run_id)
        best = context.selector.best_epoch(outcome.history)
        if best is None:
            message = f"no finite {context.selector.metric} in the trial's history {context.selector.missing_hint()}"
            trial.set_user_attr(ERROR, message)
            raise DeepShieldError(message)
        value, epoch = best
        record = next(r for r in outcome.history if int(r.get("epoch", -1)) == epoch)
        epoch += 1  # 1-based, as the trainer prints epochs and as pruning steps count them
        trial.set_user_attr(BEST_EPOCH, epoch)
        trial.set_user_attr(METRICS, _metrics(record))
        if uri:
            run_tags = {
                "optuna.state": "COMPLETE",
                "optuna.trial_number": str(trial.number),
                "optuna.value": f"{value:.6g}",
                "optuna.best_epoch": str(epoch),
            }
            if retry_of is not None:
                run_tags["optuna.retry_of"] = str(retry_of)
            _tag_run(outcome.run_id, uri, run_tags)
        return value

    @contextlib.contextmanager
    def _output(self, run_dir: Path):
        if not self.context.quiet:
            yield
            return
        with (
            open(run_dir / "train.log", "a") as handle,
            contextlib.redirect_stdout(handle),
            contextlib.redirect_stderr(handle),
        ):
            yield
