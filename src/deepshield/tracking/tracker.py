"""A small tracker interface over MLflow.

The default store is a local SQLite file (no server); artifacts go to a folder beside it. The
client API is used instead of mlflow's module-level "active run", so that trainings, nested search
trials and servers in one process never step on each other's runs.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from deepshield.dotted import flatten
from deepshield.errors import DeepShieldError

log = logging.getLogger(__name__)


class Tracker(Protocol):
    @property
    def run_id(self) -> str | None: ...  # None: not tracked

    @property
    def failed(self) -> bool: ...  # the store failed a call: what followed was not tracked

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...


class NullTracker:
    run_id = None
    failed = False

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_artifact(self, path, folder=None):
        pass

    def set_tags(self, tags):
        pass

    def finish(self, status="FINISHED"):
        pass


def _client(uri: str):
    """An MLflow client of the store `uri`, its setup messages kept off the terminal."""
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    from mlflow.tracking import MlflowClient

    # A new SQLite store says "Creating initial MLflow database tables" at INFO on stderr, between our lines.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def sqlite_file(url: str) -> Path | None:
    """The database file of a `sqlite:///` URL, an MLflow store's or an Optuna study's (None for a server)."""
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def _artifact_root(uri: str) -> str | None:
    """For sqlite:///x/mlruns.db keep artifacts in x/mlartifacts (MLflow's default is the cwd)."""
    database = sqlite_file(uri)
    return None if database is None else (database.resolve().parent / "mlartifacts").as_uri()


@functools.cache
def code_tags() -> dict[str, str]:
    """Which code a run ran: the package's version and, where it runs from a git checkout, the commit (the tag
    MLflow's UI shows as the run's Git Commit) and whether tracked files differed from it. A run recorded
    neither: its parameters said what it was told, not what computed it."""
    import subprocess

    import deepshield

    tags = {"deepshield.version": deepshield.__version__}
    source = Path(deepshield.__file__).resolve().parent

    def git(*words: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(source), *words], capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (an installed wheel)
            return None
        return done.stdout.strip()

    # The package's own files tracked there: one installed in a virtual environment inside another project's
    # checkout is in that git work tree too, whose commit is not this code's.
    commit = git("rev-parse", "HEAD") if git("ls-files", "--error-unmatch", "__init__.py") is not None else None
    if commit:
        tags["mlflow.source.git.commit"] = commit
        changes = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        tags["deepshield.source.modified"] = "unknown" if changes is None else str(bool(changes)).lower()
    return tags


class MlflowTracker:
    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        self.client = _client(uri)
        self.uri = uri
        self.failed = False  # set by the first failed call: the work goes on untracked
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found
            else self.client.create_experiment(experiment, artifact_location=_artifact_root(uri))
        )
        # A resumed run's steps already logged, per metric (read when first logged again): a run stopped
        # between an epoch's metrics and its checkpoint validates the epoch again, and logged it twice.
        self._logged_steps: dict[str, set[int]] | None = None
        if run_id and self._has_run(run_id):
            self.client.update_run(run_id, status="RUNNING")  # resuming: same run, continued
            self.run_id = run_id
            self._logged_steps = {}
            # The code it goes on with, where it is not what the run started with (the tags keep the first).
            started = self.client.get_run(run_id).data.tags
            self.set_tags({f"changed.{k}": v for k, v in code_tags().items() if started.get(k, v) != v})
        else:
            if run_id:  # resumed from another folder (the default store is relative), with another store, or deleted
                log.warning(
                    "the run's MLflow run %s is not in %s (or was deleted there): what it does from here is logged "
                    "as a new run",
                    run_id,
                    uri,
                )
            run_tags = code_tags() | dict(tags or {})
            if parent_run_id:
                run_tags["mlflow.parentRunId"] = parent_run_id
            self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=run_tags).info.run_id

    def _has_run(self, run_id: str) -> bool:
        """Whether the store holds the run, to go on with: a run deleted in MLflow's UI can be neither continued
        nor logged to (a resume was refused, after its data had loaded, as a store that 'cannot be used')."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage != "deleted"

    def _guarded(self, action: Callable[[], object], what: str, always: bool = False) -> None:
        """Run one call to the store; a store that fails (locked by another process for longer than
        SQLite waits, a full disk, a server gone) stops the tracking, not the work: a locked database
        killed a training at an epoch's plots, before its checkpoints, with its run left RUNNING. `always`:
        tried after a failure too (ending the run: an artifact store that fails may leave the runs' own
        database working, and the run would stay RUNNING)."""
        if self.failed and not always:
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - MLflow, SQLAlchemy and OS errors alike
            self.failed = True
            log.warning(
                "MLflow: %s failed (%s): the rest of this run is not tracked in %s; its checkpoints and "
                "bundle are written as usual",
                what,
                _in_one_line(exc),
                self.uri,
            )

    def log_params(self, params: dict[str, Any]) -> None:
        self._guarded(lambda: self._log_params(params), "logging the parameters")

    def _log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param, RunTag

        existing = self.client.get_run(self.run_id).data.params
        flat = flatten(params, leaf=lambda v: str(v)[:6000])
        items = [Param(k, v) for k, v in flat.items() if k not in existing]
        # Params are write-once: a value changed since (a resumed run's max_steps, threads, device) is kept as
        # the tag `changed.<key>`, the last value given (the params kept saying the first).
        changed = [RunTag(f"changed.{k}", v) for k, v in flat.items() if k in existing and existing[k] != v]
        for start in range(0, max(len(items), len(changed)), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100], tags=changed[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._guarded(lambda: self._log_metrics(metrics, step), "logging metrics")

    def _log_metrics(self, metrics: dict[str, float], step: int | None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v)) and not self._logged_before(k, step or 0)
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def _logged_before(self, key: str, step: int) -> bool:
        """Whether a resumed run has `key` at `step` already (then it is not logged again); a new run never has."""
        if self._logged_steps is None:
            return False
        if key not in self._logged_steps:
            self._logged_steps[key] = {m.step for m in self.client.get_metric_history(self.run_id, key)}
        if step in self._logged_steps[key]:
            return True
        self._logged_steps[key].add(step)
        return False

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        path = Path(path)
        store = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
        self._guarded(lambda: store(self.run_id, str(path), folder), f"storing {path.name}")

    def set_tags(self, tags: dict[str, str]) -> None:
        def set_all() -> None:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, value)

        self._guarded(set_all, "setting tags")

    def finish(self, status: str = "FINISHED") -> None:
        self._guarded(
            lambda: self.client.set_terminated(self.run_id, status=status), f"marking the run {status}", always=True
        )


MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def where_to_look(uri: str, run_id: str) -> str:
    """One line saying how to open a run's experiment in the MLflow UI: the experiment's URL (it lists
    the runs) and the run's, with the `mlflow ui` command that serves a local store."""
    from mlflow.tracking import MlflowClient

    try:
        experiment = f"#/experiments/{MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id}"
    except Exception as exc:  # noqa: BLE001 - a store that failed during the run: say so, end the command
        return f"MLflow: run {run_id} in {uri} (the store could not be read: {type(exc).__name__})"
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        return f"MLflow: {base}/{experiment} (this run: {base}/{experiment}/runs/{run_id})"
    database = sqlite_file(uri)
    store = uri if database is None else f"sqlite:///{database.resolve()}"
    return f"MLflow: run `mlflow ui --backend-store-uri {store}`, then open {MLFLOW_UI}/{experiment} (this run: {MLFLOW_UI}/{experiment}/runs/{run_id})"


# What a refused store's message advises: train and tune can run untracked, the commands whose tracking is
# an option (evaluate, compare, dataset stats) run untracked without it.
WITHOUT_TRACKING = "give another --tracking-uri, or --no-tracking"
TRACKING_OPTIONAL = "give another --tracking-uri, or leave it out (nothing is logged to MLflow then)"


def open_tracker(enabled: bool, uri: str, experiment: str, remedy: str = WITHOUT_TRACKING, **kwargs) -> Tracker:
    """The run's tracker; a store that cannot be opened is refused in one line (it was a traceback)."""
    if not enabled:
        return NullTracker()
    try:
        return MlflowTracker(uri, experiment, **kwargs)
    except Exception as exc:
        raise _unusable_store(uri, exc, remedy) from exc


def check_store(uri: str, experiment: str, remedy: str = WITHOUT_TRACKING) -> None:
    """Refuse, before the work, a store that open_tracker would refuse after it: the store is opened (a
    new SQLite store made, as the run would make it) and its experiment looked up; no run is started."""
    try:
        _client(uri).get_experiment_by_name(experiment)
    except Exception as exc:
        raise _unusable_store(uri, exc, remedy) from exc


def _unusable_store(uri: str, exc: Exception, remedy: str) -> DeepShieldError:
    return DeepShieldError(f"the MLflow store {uri} cannot be used ({_in_one_line(exc)}): {remedy}")


def _in_one_line(exc: Exception) -> str:
    """`SomeError: its first line` (MLflow's and SQLAlchemy's messages run to pages)."""
    detail = str(exc).splitlines()[0][:300] if str(exc) else ""
    return f"{type(exc).__name__}: {detail}"
