"""The study in its storage: opening SQLite or a server database, the study's own attributes (space,
selector, baseline, MLflow parent runs), recovery of lost trials and the trial counts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from deepshield.errors import DeepShieldError
from deepshield.locks import waited_lock
from deepshield.tracking.tracker import sqlite_file
from deepshield.training.config import recipe_changes
from deepshield.tuning.optuna_api import set_trial_attr
from deepshield.tuning.selector import Selector
from deepshield.tuning.space import SearchSpace
from deepshield.tuning.trials import (
    BASELINE,
    GRID_ID,
    INTERRUPTED,
    RETRY_OF,
    RUN_DIR,
    counts_as_done,
    dead_worker,
    is_error,
    lost_without_retry,
)

ATTR_SPACE, ATTR_SELECTOR, ATTR_PARENTS = "deepshield.space", "deepshield.selector", "deepshield.mlflow_parent_runs"
ATTR_BASELINE = "deepshield.baseline"  # the config's own values of the searched keys (--baseline)
ATTR_RECIPE = "deepshield.base_recipe"  # the configuration every trial starts from (--config, --set)
ATTR_SAMPLER = "deepshield.sampler"  # grid, random or tpe: what the study was started with


def safe_url(url: str) -> str:
    """The storage URL without its password, for printing and for MLflow tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy knows: show only what follows the credentials
        return url.split("@")[-1]


def check_storage_url(url: str) -> None:
    """Refuse, before anything is made, a storage URL that names no database SQLAlchemy knows, or one whose
    driver is not installed here (both were tracebacks from the study's creation, after --out was made)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = safe_url(url)
    try:
        create_engine(url).dispose()  # loads the dialect and its driver; connects to nothing
    except NoSuchModuleError:
        scheme = url.split(":", 1)[0]
        raise DeepShieldError(
            f"--storage {shown}: {scheme}:// is no database SQLAlchemy knows; use sqlite:///PATH or a server "
            "database, e.g. postgresql://user@host/db"
        ) from None
    except ImportError as exc:
        raise DeepShieldError(
            f"--storage {shown}: its database driver is not installed here ({exc}): install it, or use sqlite:///PATH"
        ) from None
    except (ArgumentError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DeepShieldError(f"--storage {shown} is not a database URL ({detail}); e.g. sqlite:///PATH") from None


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """The study's storage, opened (a server database connected); one that cannot be is refused in one line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return _open_storage(url)
    # A server that cannot be reached or a database it may not use; a file database where no folder can be made.
    except (SQLAlchemyError, ImportError, OSError) as exc:
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise DeepShieldError(
            f"the Optuna storage {safe_url(url)} cannot be opened ({type(exc).__name__}: {detail})"
        ) from None


def study_lock(url: str) -> contextlib.AbstractContextManager[None]:
    """Held while a search opens its study (makes the database and the study, checks it, queues lost trials
    again), beside a SQLite database: two searches started at once on a new one both made its tables, and
    one stopped ('table alembic_version already exists'); both took the study for new. None for a server
    database (its tables made once, by hand or by the first search)."""
    lock = beside_database(url, ".lock")
    if lock is None:
        return contextlib.nullcontext()
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # open_storage says why
        return contextlib.nullcontext()
    return waited_lock(lock)


def beside_database(url: str, suffix: str) -> Path | None:
    """The file named `suffix` beside a SQLite study database (the study's and the grid claims' locks); None
    for a server database."""
    database = sqlite_file(url)
    return None if database is None else database.with_name(database.name + suffix)


def _open_storage(url: str) -> optuna.storages.RDBStorage:
    database = sqlite_file(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        # Worker processes share the file: wait for locks rather than fail.
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
        # Write-ahead logging: readers and the writer no longer block each other, so a worker stopped
        # half-way through a read (Ctrl-C, ray.cancel) cannot hold up every other worker's write and
        # the driver's report behind it. The mode is stored in the file; all processes are on one host.
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        return storage
    # A server database may be shared by several machines: a heartbeat finds trials whose machine
    # died (the dead-process check only sees this machine), and they are re-run like lost trials.
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=60, grace_period=600, heartbeat_stale_trial_callback=enqueue_retry
    )


def enqueue_retry(study: optuna.Study, lost) -> None:
    if not lost.params or RUN_DIR not in lost.user_attrs:
        return
    attrs = {RETRY_OF: lost.number, RUN_DIR: lost.user_attrs[RUN_DIR]}
    if int(lost.user_attrs.get(GRID_ID, -1)) >= 0:
        attrs[GRID_ID] = int(lost.user_attrs[GRID_ID])
    study.enqueue_trial(dict(lost.params), user_attrs=attrs, skip_if_exists=False)


def check_study(
    study: optuna.Study, space: SearchSpace, selector: Selector, created: bool, base_recipe: dict[str, Any]
) -> None:
    """A new study records its space, selector and base recipe; a resumed one must have been made with the same."""
    if study.direction.name.lower() != selector.direction:
        raise DeepShieldError(
            f"study '{study.study_name}' was created to {study.direction.name.lower()}; {selector} needs {selector.direction}: use a new --study name"
        )
    attrs = study.user_attrs
    if created or ATTR_SPACE not in attrs:
        study.set_user_attr(ATTR_SPACE, space.fingerprint())
        study.set_user_attr(ATTR_SELECTOR, str(selector))
        study.set_user_attr(ATTR_RECIPE, base_recipe)
        return
    # Resumed with other --set values (or another --config), new trials trained another recipe than the
    # study's earlier ones, and the best was chosen among trials that cannot be compared.
    if ATTR_RECIPE in attrs and (changes := recipe_changes(attrs[ATTR_RECIPE], base_recipe)):
        raise DeepShieldError(
            f"study '{study.study_name}' was made with other training settings ({'; '.join(changes)}), so its "
            "trials are not comparable with new ones: use a new --study name (or the original --config and --set values)"
        )
    if attrs.get(ATTR_SELECTOR) != str(selector):
        raise DeepShieldError(
            f"study '{study.study_name}' selects with {attrs.get(ATTR_SELECTOR)}, not {selector}: use a new --study name (or the original selector)"
        )
    if attrs.get(ATTR_SPACE) != space.fingerprint():
        raise DeepShieldError(
            f"study '{study.study_name}' was made with another search space or trial budget, so its trials are not comparable "
            "with new ones: use a new --study name (or the original space file and --trial-set values)"
        )


def study_sampler(study: optuna.Study, resolved: str, asked: str, created: bool) -> str:
    """The sampler that goes on with the study: the one it was started with, which a new one records. A study
    resumed with `--sampler auto` went on with what auto picks now (a grid study went on as TPE once auto's
    rule changed); another sampler named on resume is refused. A study older than the record keeps `resolved`."""
    if created:
        study.set_user_attr(ATTR_SAMPLER, resolved)
        return resolved
    started = study.user_attrs.get(ATTR_SAMPLER)
    if started is None or started == resolved:
        return resolved
    if asked != "auto":
        raise DeepShieldError(
            f"study '{study.study_name}' was started with --sampler {started}, not {asked}: resume it with "
            f"--sampler {started} (or auto), or use a new --study name"
        )
    return str(started)


def _config_value(config, key: str) -> Any:
    node: Any = config.model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return node


def enqueue_baseline(study: optuna.Study, space: SearchSpace, config, sampler: str) -> str | None:
    """Queue the configuration's own values of the searched keys as the first trial, so the report
    shows what the search gained over the defaults under the same budget. Returns a note if it cannot."""
    values = {p.name: _config_value(config, p.name) for p in space.params}
    study.set_user_attr(ATTR_BASELINE, values)
    if sampler == "grid":
        return (
            None
            if space.on_grid(values)
            else "baseline skipped: the config's values are not a grid point (add them to the lists to compare)"
        )
    for param in space.params:
        value = values[param.name]
        if not param.holds(value):  # a float setting's 0.0 was "outside" the choices [0, 0.05]
            return f"baseline skipped: the config's {param.name}={value!r} is outside the searched {param.describe()}"
    study.enqueue_trial(values, user_attrs={BASELINE: True})
    return None


def recover_lost_trials(study: optuna.Study) -> list[int]:
    """Fail trials left RUNNING by a dead process on this machine, and on a server database those whose
    machine's heartbeat stopped, then queue a retry of every lost trial that has none yet. Returns the
    numbers of the lost trials queued again. (Optuna fails stale trials only inside optimize, which the
    workers no longer call once done and running trials reach the target: a dead machine's last trial
    stayed RUNNING for good, and every resume stopped short of --trials.)"""
    optuna.storages.fail_stale_trials(study)  # no heartbeats (a file database): nothing to do
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if dead_worker(trial):
            set_trial_attr(study, trial, INTERRUPTED, True)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    queued = []
    for lost in lost_without_retry(study.get_trials(deepcopy=False)):
        enqueue_retry(study, lost)
        queued.append(lost.number)
    return queued


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(is_error(t) for t in trials),
        "done": sum(counts_as_done(t) for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
    }
