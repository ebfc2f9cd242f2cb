"""Trial bookkeeping shared by the sampler, the objective and the runner.

A trial that ends in FAIL is one of three things, told apart by its user attributes:
- an error (`error` set): the configuration failed; it counts towards --trials and is not re-run;
- surplus (`surplus` set): started by a parallel worker after the budget was already met; ignored;
- lost (neither): interrupted (Ctrl-C, SIGTERM) or killed (then found RUNNING with a dead worker
  process and failed on the next start); it is re-run as a new trial with the same parameters and
  the same run_dir (`retry_of`), whose training resumes from the lost trial's last checkpoint.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime

from optuna.trial import FrozenTrial, TrialState

from deepshield.locks import process_running

ERROR, SURPLUS, RETRY_OF, RUN_DIR, WORKER, GRID_ID = "error", "surplus", "retry_of", "run_dir", "worker", "grid_id"
# A study attribute of each search run on it (STOP_REQUESTED:<search id>): the search was interrupted, and
# none of its workers starts another trial (set by its driver, made False when it starts). One attribute for
# the whole study stopped every search on it: a second terminal's (or machine's) tune on the same study
# stopped after its trial, and reported the search as done.
STOP_REQUESTED = "stop_requested"


def stop_requested(search: str) -> str:
    """The study attribute that stops the workers of the search `search` (a search id: new_search_id)."""
    return f"{STOP_REQUESTED}:{search}"


def storage_failure(stop_attr: str) -> str:
    """The study attribute in which a worker of the search whose stop attribute is `stop_attr` leaves the
    storage failure (a full disk: errno, message, file) that stopped it, for the driver to raise: a worker in
    a process of its own cannot raise it there."""
    return f"{stop_attr}:storage_failed"


def new_search_id() -> str:
    return uuid.uuid4().hex[:12]


MLFLOW_RUN_ID, BEST_EPOCH, METRICS, LAST_METRICS, INTERRUPTED = (
    "mlflow_run_id",
    "best_epoch",
    "metrics",
    "last_metrics",
    "interrupted",
)
BASELINE = "baseline"  # the config's own values, queued first with --baseline


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_surplus(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(SURPLUS))


def is_error(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and ERROR in trial.user_attrs


def is_lost(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and not is_error(trial) and not is_surplus(trial)


def counts_as_done(trial: FrozenTrial) -> bool:
    """Towards --trials: completed, pruned, or failed with an error."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or is_error(trial)


def holds_slot(trial: FrozenTrial) -> bool:
    """Done, running or queued: its grid point is taken."""
    return counts_as_done(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)


ORPHAN_AFTER_S = 3600


def dead_worker(trial: FrozenTrial) -> bool:
    """A RUNNING trial whose worker process on this machine no longer exists (killed), or one that
    never recorded its worker (killed in the instant after it was created) and is an hour old."""
    if trial.state != TrialState.RUNNING:
        return False
    if WORKER not in trial.user_attrs:
        started = trial.datetime_start
        return started is not None and (datetime.now() - started).total_seconds() > ORPHAN_AFTER_S
    host, _, pid = str(trial.user_attrs.get(WORKER, "")).rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not process_running(int(pid))


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    return {int(t.user_attrs[RETRY_OF]) for t in trials if RETRY_OF in t.user_attrs and not is_surplus(t)}


def lost_without_retry(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Lost trials that have parameters and a run_dir, and no (non-surplus) retry yet."""
    retried = retried_numbers(trials)
    return [t for t in trials if is_lost(t) and t.number not in retried and t.params and RUN_DIR in t.user_attrs]


def state_label(trial: FrozenTrial) -> str:
    if is_surplus(trial):
        return "SURPLUS"
    if is_lost(trial):
        return "INTERRUPTED"
    return trial.state.name
