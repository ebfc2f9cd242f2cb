"""The search: an Optuna study in SQLite (or any RDB URL), trials run by worker processes, one MLflow
parent run holding the results, and an optional full-budget training of the winner.

Resuming: run the same command again. The study keeps every trial; `--trials` is the total for the
study (completed + pruned + failed-with-error), so finished trials are never run again. A trial
that was interrupted (Ctrl-C / SIGTERM) or killed (found RUNNING with a dead worker process) is
re-run with the same parameters in the same run_dir, and its training resumes from its last
checkpoint (same MLflow child run).

With `engine="ray"` the n_jobs workers are Ray tasks running the same worker loop against the same
storage URL (see docs/ray.md: on a multi-node cluster that is a server database, and the MLflow
store a tracking server); sampling, pruning, selection and MLflow logging are unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from deepshield.errors import DeepShieldError
from deepshield.tuning.objective import Objective, TrainFn, TrialContext, run_training
from deepshield.tuning.samplers import (
    GridSearchSampler,
    make_pruner,
    make_sampler,
    process_seed,
    resolve_sampler_name,
)
from deepshield.tuning.selector import direction_warning, parse_selector
from deepshield.tuning.space import (
    BANK_KEYS,
    SearchSpace,
    apply_values,
    check_against,
    load_space,
    parse_assignments,
)
from deepshield.tuning.trials import (
    BASELINE,
    BEST_EPOCH,
    ERROR,
    GRID_ID,
    INTERRUPTED,
    RETRY_OF,
    RUN_DIR,
    counts_as_done,
    dead_worker,
    is_error,
    lost_without_retry,
)

log = logging.getLogger(__name__)
DEFAULT_RANDOM_TRIALS = 10
ATTR_SPACE, ATTR_SELECTOR, ATTR_PARENTS = "deepshield.space", "deepshield.selector", "deepshield.mlflow_parent_runs"
ATTR_BASELINE = "deepshield.baseline"  # the config's own values of the searched keys (--baseline)


@dataclass
class SearchSettings:
    space: Path
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)  # --set: trials and --train-best
    trial_overrides: list[str] = field(default_factory=list)  # --trial-set: per-trial budget only
    sampler: str = "auto"
    trials: int | None = None
    timeout: float | None = None
    select: str = "max.val_auc"
    storage: str | None = None
    study: str | None = None
    pruner: str | optuna.pruners.BasePruner = "median"
    n_jobs: int = 1
    out: Path | None = None
    tracking_uri: str | None = None
    tracking: bool | None = None  # None: as the config says
    train_best: bool = False
    seed: int = 0
    prewarm: bool = True  # build the face bank(s) once before the trials
    baseline: bool = False  # first trial: the config's own values of the searched keys (random / tpe)
    keep_checkpoints: bool = False  # keep every checkpoint of finished trials (default: best.pt only)
    engine: str = "local"  # "ray": the n_jobs study workers run as Ray tasks (see docs/ray.md)
    ray_address: str | None = None  # None: $RAY_ADDRESS, else Ray's default


@dataclass
class SearchResult:
    study_name: str
    storage: str
    out_dir: Path
    report: Any  # deepshield.tuning.report.Report
    parent_run_id: str | None
    counts: dict[str, int]
    best_bundle: Path | None = None
    interrupted: bool = False


def default_names(settings: SearchSettings) -> tuple[str, Path, str]:
    name = settings.study or Path(settings.space).stem
    out_dir = Path(settings.out or Path("runs/tune") / name).resolve()
    storage = settings.storage or f"sqlite:///{out_dir / 'study.db'}"
    return name, out_dir, storage


def safe_url(url: str) -> str:
    """The storage URL without its password, for printing and for MLflow tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy knows: show only what follows the credentials
        return url.split("@")[-1]


def open_storage(url: str) -> optuna.storages.RDBStorage:
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # Worker processes share the file: wait for locks rather than fail.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    # A server database may be shared by several machines: a heartbeat finds trials whose machine
    # died (the dead-process check only sees this machine), and they are re-run like lost trials.
    return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=600, failed_trial_callback=enqueue_retry)


def enqueue_retry(study: optuna.Study, lost) -> None:
    if not lost.params or RUN_DIR not in lost.user_attrs:
        return
    attrs = {RETRY_OF: lost.number, RUN_DIR: lost.user_attrs[RUN_DIR]}
    if int(lost.user_attrs.get(GRID_ID, -1)) >= 0:
        attrs[GRID_ID] = int(lost.user_attrs[GRID_ID])
    study.enqueue_trial(dict(lost.params), user_attrs=attrs, skip_if_exists=False)


def config_value(config, key: str) -> Any:
    node: Any = config.model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return node


def enqueue_baseline(study: optuna.Study, space: SearchSpace, config, sampler: str) -> str | None:
    """Queue the configuration's own values of the searched keys as the first trial, so the report
    shows what the search gained over the defaults under the same budget. Returns a note if it cannot."""
    values = {p.name: config_value(config, p.name) for p in space.params}
    study.set_user_attr(ATTR_BASELINE, values)
    if sampler == "grid":
        return None if values in space.grid_points() else "baseline skipped: the config's values are not a grid point (add them to the lists to compare)"
    for param in space.params:
        value = values[param.name]
        if param.kind == "categorical":
            inside = repr(value) in {repr(c) for c in param.choices}
        else:
            inside = value is not None and param.low <= value <= param.high
            if inside and param.step is not None:
                inside = abs((value - param.low) / param.step - round((value - param.low) / param.step)) < 1e-6
        if not inside:
            return f"baseline skipped: the config's {param.name}={value!r} is outside the searched {param.describe()}"
    study.enqueue_trial(values, user_attrs={BASELINE: True})
    return None


def recover_lost_trials(study: optuna.Study) -> list[int]:
    """Fail trials left RUNNING by a dead process on this machine, then queue a retry of every lost
    trial that has none yet. Returns the numbers of the lost trials queued again."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if dead_worker(trial):
            study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
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


# ---- workers -----------------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    context: TrialContext
    storage: str
    sampler: str
    pruner: Any
    seed: int
    deadline: float | None  # time.time() after which no trial starts


def _trial_line(trial, metric: str) -> str:
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    retry = f" (resumes trial {trial.user_attrs[RETRY_OF]})" if RETRY_OF in trial.user_attrs else ""
    if trial.state == TrialState.COMPLETE:
        return f"trial {trial.number}{retry}: {metric}={trial.value:.4f} (epoch {trial.user_attrs.get(BEST_EPOCH)} of {max(trial.intermediate_values, default='?')}) [{params}]"
    if trial.state == TrialState.PRUNED:
        step = max(trial.intermediate_values, default=0)
        value = trial.intermediate_values.get(step)
        return f"trial {trial.number}{retry}: pruned after epoch {step}" + (f" ({metric}={value:.4f})" if value is not None else "") + f" [{params}]"
    return f"trial {trial.number}{retry}: failed: {trial.user_attrs.get(ERROR, trial.state.name)} [{params}]"


def worker_loop(spec: WorkerSpec, worker_index: int = 0, echo: Callable[[str], None] = print) -> None:
    """Run trials until the study has `target` done trials, the deadline passes, or the grid is used up."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    context = spec.context
    storage = open_storage(spec.storage)
    existing = len(optuna.load_study(study_name=context.study_name, storage=storage).get_trials(deepcopy=False))
    sampler = make_sampler(spec.sampler, context.space, process_seed(spec.seed, worker_index, existing), context.target)
    study = optuna.load_study(study_name=context.study_name, storage=storage, sampler=sampler, pruner=spec.pruner)
    objective = Objective(context)
    errors_in_row = 0
    while True:
        if spec.deadline is not None and time.time() >= spec.deadline:
            break
        trials = study.get_trials(deepcopy=False)
        done = sum(counts_as_done(t) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        if context.target is not None and done + running >= context.target:
            break
        if isinstance(sampler, GridSearchSampler) and not waiting and not sampler.free_points(study):
            break
        objective.last_number = None
        study.optimize(objective, n_trials=1, catch=(Exception,))
        if objective.last_number is None:
            continue
        trial = study.get_trials(deepcopy=False)[objective.last_number]
        if trial.user_attrs.get("surplus"):
            continue
        echo(_trial_line(trial, context.selector.metric))
        errors_in_row = errors_in_row + 1 if is_error(trial) else 0
        if errors_in_row >= 3:
            echo(f"worker {worker_index}: 3 trials in a row failed; stopping (see each trial's train.log)")
            break


def _worker_main(spec: WorkerSpec, worker_index: int) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    os.environ.setdefault("GLOG_minloglevel", "2")  # each trial's trainer sets torch's threads from its config
    with contextlib.suppress(KeyboardInterrupt):
        worker_loop(spec, worker_index, echo=lambda line: print(line, flush=True))


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _ray_worker(spec: WorkerSpec, worker_index: int, emit: Callable[[str], None]) -> None:
    """Entry point of a study worker run as a Ray task; `ray.cancel` raises KeyboardInterrupt in it,
    as SIGTERM does in a local worker process."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    with contextlib.suppress(KeyboardInterrupt):
        worker_loop(spec, worker_index, echo=emit)


def start_ray(settings: SearchSettings, storage_url: str, config, echo: Callable[[str], None]):
    """Connect to the Ray cluster (or start a local instance); warn about stores one node cannot share."""
    from deepshield.engines import make_engine

    engine = make_engine("ray", address=settings.ray_address)
    nodes = engine.node_count()
    echo(f"ray: {settings.n_jobs} study worker(s) as Ray tasks on {nodes} node(s), {engine.cluster_cpus()} CPU(s)")
    if nodes > 1:
        if storage_url.startswith("sqlite"):
            echo("warning: an SQLite study on a multi-node cluster: workers on other nodes cannot share it; use --storage postgresql://... (see docs/ray.md)")
        uri = str(config.tracking.uri) if config.tracking.enabled else ""
        if uri.startswith(("sqlite", "file:")) or (uri and "://" not in uri):
            echo(f"warning: MLflow store {uri} is a local file; on a multi-node cluster use a tracking server (--tracking-uri http://...)")
    return engine


def ray_trial_cpus(engine, n_jobs: int) -> int:
    """CPUs (and torch threads) per study worker on Ray: the cluster's CPUs split between the
    workers, at most one node's worth (a task runs on one node)."""
    return max(1, min(engine.cluster_cpus() // n_jobs, engine.largest_node_cpus()))


def run_workers(spec: WorkerSpec, n_jobs: int, echo: Callable[[str], None]) -> None:
    if n_jobs <= 1:
        worker_loop(spec, 0, echo)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fresh interpreters: torch and MediaPipe dislike fork
    processes = []
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    try:
        for key in saved:
            os.environ[key] = str(spec.context.threads or 1)
        for index in range(n_jobs):
            process = context.Process(target=_worker_main, args=(spec, index), name=f"deepshield-tune-{index}")
            process.start()
            processes.append(process)
            time.sleep(1.0)  # staggered: fewer collisions on the study's first rows
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        echo("interrupted: waiting for the workers to checkpoint their trials ...")
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        for process in processes:
            process.join(timeout=120)
            if process.is_alive():
                process.kill()
        raise
    failed = [p.name for p in processes if p.exitcode not in (0, None)]
    if failed:
        echo(f"warning: worker process(es) {', '.join(failed)} exited abnormally; their running trials are re-run on the next start")


# ---- the search --------------------------------------------------------------------------------


def _load_base_config(settings: SearchSettings):
    from deepshield.training.config import load_config

    config = load_config(settings.config, settings.overrides)
    extra: dict[str, Any] = {}
    if settings.tracking_uri:
        extra["tracking.uri"] = settings.tracking_uri
    if settings.tracking is not None:
        extra["tracking.enabled"] = settings.tracking
    return apply_values(config, extra) if extra else config


def _check_study(study: optuna.Study, space: SearchSpace, selector, created: bool) -> None:
    attrs = study.user_attrs
    if created or ATTR_SPACE not in attrs:
        study.set_user_attr(ATTR_SPACE, space.fingerprint())
        study.set_user_attr(ATTR_SELECTOR, str(selector))
        return
    if attrs.get(ATTR_SELECTOR) != str(selector):
        raise DeepShieldError(
            f"study '{study.study_name}' selects with {attrs.get(ATTR_SELECTOR)}, not {selector}: use a new --study name (or the original selector)"
        )
    if attrs.get(ATTR_SPACE) != space.fingerprint():
        raise DeepShieldError(
            f"study '{study.study_name}' was made with another search space or trial budget, so its trials are not comparable "
            "with new ones: use a new --study name (or the original space file and --trial-set values)"
        )


def _parent_run(study: optuna.Study, config, settings: SearchSettings, space: SearchSpace, selector, sampler: str, target: int | None, storage_url: str):
    from deepshield.tracking.tracker import MlflowTracker

    uri = config.tracking.uri
    parents = dict(study.user_attrs.get(ATTR_PARENTS) or {})
    tags = {"deepshield.role": "search", "optuna.study": study.study_name}
    tracker = None
    if parents.get(uri):
        try:
            tracker = MlflowTracker(uri, config.tracking.experiment, run_id=parents[uri])
        except Exception as exc:  # noqa: BLE001 - e.g. deleted in MLflow: start a new parent run
            log.warning("parent run %s not found (%s): starting a new one", parents[uri], exc)
    if tracker is None:
        tracker = MlflowTracker(uri, config.tracking.experiment, run_name=f"{study.study_name}-search", tags=tags)
        parents[uri] = tracker.run_id
        study.set_user_attr(ATTR_PARENTS, parents)
    tracker.log_params(
        {
            "search.sampler": sampler,
            "search.pruner": settings.pruner if isinstance(settings.pruner, str) else type(settings.pruner).__name__,
            "search.selector": str(selector),
            "search.space": json.dumps(space.to_dict()["params"], sort_keys=True),
            "search.budget": json.dumps(space.budget, sort_keys=True),
            "search.config": str(settings.config or "default"),
            "search.seed": settings.seed,
        }
    )
    tracker.set_tags(
        {"search.trials": str(target), "search.n_jobs": str(settings.n_jobs), "search.storage": safe_url(storage_url), "search.engine": settings.engine}
    )
    return tracker


def _bank_configs(space: SearchSpace, base) -> list:
    """Configurations whose face banks the trials will need (None: cannot tell, e.g. a searched input size range)."""
    import itertools

    searched = [p for p in space.params if p.name in BANK_KEYS]
    if any(p.kind != "categorical" for p in searched):
        return []
    combos = list(itertools.product(*[p.choices for p in searched]))
    if len(combos) > 8:
        return []
    return [apply_values(base, {**space.budget, **{p.name: v for p, v in zip(searched, combo)}}) for combo in combos]


def prewarm_facebanks(space: SearchSpace, base, echo: Callable[[str], None]) -> None:
    from deepshield.training.facebank import facebank_for

    for config in _bank_configs(space, base):
        if not config.data.real_dirs:  # prepared datasets only: nothing to detect
            continue
        echo(f"face bank: {len(config.data.real_dirs)} folder(s), {config.model.input_size} px (built once, cached in {config.data.cache_dir})")
        facebank_for(config)


def run_search(settings: SearchSettings, *, train_fn: TrainFn = run_training, echo: Callable[[str], None] = print) -> SearchResult:
    from deepshield.tuning.report import (  # matplotlib: not in worker processes
        format_table,
        write_report,
    )

    selector = parse_selector(settings.select)
    if (note := direction_warning(selector)) is not None:
        echo(note)
    if settings.n_jobs < 1:
        raise DeepShieldError("--n-jobs must be at least 1")
    if settings.engine not in ("local", "ray"):
        raise DeepShieldError(f"unknown engine {settings.engine!r}; choose local or ray")
    base = _load_base_config(settings)
    space = load_space(settings.space, parse_assignments(settings.trial_overrides))
    clash = sorted(set(parse_assignments(settings.overrides)) & set(space.names))
    if clash:
        raise DeepShieldError(f"{', '.join(clash)} is searched: do not also --set it")
    check_against(space, base)
    sampler = resolve_sampler_name(settings.sampler, space)
    name, out_dir, storage_url = default_names(settings)
    notes: list[str] = []

    target = settings.trials
    if sampler == "grid":
        size = len(space.grid_points())
        if target is not None and target > size:
            notes.append(f"the grid has {size} points: --trials {target} capped to {size}")
        target = size if target is None else min(target, size)
    elif target is None and settings.timeout is None:
        target = DEFAULT_RANDOM_TRIALS
    if target is not None and target < 1:
        raise DeepShieldError("--trials must be at least 1")

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(storage_url)
    created = name not in optuna.study.get_all_study_names(storage)
    study = optuna.create_study(storage=storage, study_name=name, direction=selector.direction, load_if_exists=True)
    if study.direction.name.lower() != selector.direction:
        raise DeepShieldError(f"study '{name}' was created to {study.direction.name.lower()}; {selector} needs {selector.direction}: use a new --study name")
    _check_study(study, space, selector, created)
    if created and settings.baseline:
        note = enqueue_baseline(study, space, apply_values(base, space.budget), sampler)
        if note:
            notes.append(note)
    requeued = recover_lost_trials(study)
    before = counts(study)
    echo(
        f"study '{name}' ({'new' if created else 'resumed: ' + str(before['done']) + ' trial(s) done'}) in {safe_url(storage_url)}; "
        f"sampler {sampler}, selector {selector}, target {target if target is not None else 'until timeout'} trial(s)"
        + (f"; re-running interrupted trial(s) {', '.join(map(str, requeued))} from their checkpoints" if requeued else "")
    )

    pruner = make_pruner(settings.pruner) if isinstance(settings.pruner, str) else settings.pruner
    ray_engine = start_ray(settings, storage_url, base, echo) if settings.engine == "ray" else None
    try:
        tracker = _parent_run(study, base, settings, space, selector, sampler, target, storage_url) if base.tracking.enabled else None
        parent_run_id = tracker.run_id if tracker else None
        cpus = os.cpu_count() or 1
        threads = max(1, cpus // settings.n_jobs) if settings.n_jobs > 1 else None
        ray_cpus = ray_trial_cpus(ray_engine, settings.n_jobs) if ray_engine is not None else 1
        if ray_engine is not None and settings.n_jobs > 1:
            threads = ray_cpus  # the cluster's CPUs, not this machine's
        context = TrialContext(
            base_config=base,
            space=space,
            selector=selector,
            out_dir=out_dir,
            study_name=name,
            target=target,
            parent_run_id=parent_run_id,
            threads=threads,
            train_fn=train_fn,
            keep_checkpoints=settings.keep_checkpoints,
        )
        spec = WorkerSpec(context, storage_url, sampler, pruner, settings.seed, time.time() + settings.timeout if settings.timeout else None)
    except BaseException:
        if ray_engine is not None:
            ray_engine.close()
        raise

    status = "FINISHED"
    try:
        if settings.prewarm:
            prewarm_facebanks(space, apply_values(base, space.budget), echo)
        if ray_engine is not None:
            ray_engine.run_workers(functools.partial(_ray_worker, spec), settings.n_jobs, echo, cpus=ray_cpus)
        else:
            run_workers(spec, settings.n_jobs, echo)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if ray_engine is not None:
            ray_engine.close()
        report = write_report(study, space, selector, out_dir, notes)
        final = counts(study)
        if tracker is not None:
            _log_parent(tracker, report, final, selector, status)
        result = SearchResult(name, storage_url, out_dir, report, parent_run_id, final, interrupted=status == "KILLED")
        if status == "KILLED":
            echo(f"search interrupted: {final['done']} trial(s) done; run the same command again to resume")

    echo("")
    echo(format_table(report.rows, space, selector))
    echo("")
    for line in report.notes:
        echo(f"note: {line}")
    if report.best is not None:
        echo(f"best: trial {report.best.number}, {selector.metric}={report.best.value:.4f}; parameters in {report.best_yaml}")
    if report.baseline is not None and report.baseline.value is not None:
        echo(f"baseline (the config's own values, same budget): trial {report.baseline.number}, {selector.metric}={report.baseline.value:.4f}")
    echo(f"results: {report.results_csv}, plots in {out_dir / 'plots'}, summary {report.report_md}")

    if settings.train_best:
        if report.best_yaml is None:
            raise DeepShieldError("no trial completed, so there is no winner to train")
        trained = train_best(settings, report.best_yaml, out_dir, name, parent_run_id, echo)
        result.best_bundle = trained.bundle_dir
        if tracker is not None and trained.bundle_dir is not None:
            tracker.set_tags({"best.bundle": str(trained.bundle_dir.resolve())})
    return result


def _log_parent(tracker, report, final: dict[str, int], selector, status: str) -> None:
    try:
        for path in [report.results_csv, report.report_md, *([report.best_yaml] if report.best_yaml else [])]:
            tracker.log_artifact(path)
        for path in report.plots:
            tracker.log_artifact(path, "plots")
        metrics = {f"trials_{k}": float(v) for k, v in final.items() if k != "running"}
        if report.best is not None:
            metrics[f"best_{selector.metric}"] = float(report.best.value)
            tracker.set_tags({"best.trial": str(report.best.number), "best.params": json.dumps(report.best.params, sort_keys=True)})
        tracker.log_metrics(metrics)
        if report.notes:
            tracker.set_tags({"search.notes": " | ".join(report.notes)[:5000]})
        tracker.finish(status)
    except Exception as exc:  # noqa: BLE001 - the search's results are on disk whatever MLflow says
        log.warning("could not log the search to MLflow: %s", exc)


def train_best(settings: SearchSettings, best_yaml: Path, out_dir: Path, study_name: str, parent_run_id: str | None, echo: Callable[[str], None]):
    """`deepshield train --config <config> --set ... --params best.yaml` into <out>/best, nested
    under the search's MLflow run; resumes its own checkpoint if the configuration is unchanged."""
    from deepshield.training.checkpoint import LAST, load_checkpoint
    from deepshield.training.config import load_config
    from deepshield.training.trainer import Trainer

    run_dir = out_dir / "best"
    overrides = list(settings.overrides) + [f"run_dir={run_dir}", f"tracking.run_name={study_name}-best"]
    if settings.tracking_uri:
        overrides.append(f"tracking.uri={settings.tracking_uri}")
    if settings.tracking is not None:
        overrides.append(f"tracking.enabled={'true' if settings.tracking else 'false'}")
    config = load_config(settings.config, overrides, best_yaml)
    last = run_dir / "checkpoints" / LAST
    resume = False
    if last.exists():
        resume = load_checkpoint(last).get("config") == config.model_dump(mode="json")
        if not resume:
            shutil.rmtree(run_dir)
    echo(f"training the best parameters at full budget in {run_dir}" + (" (resuming)" if resume else ""))
    command = f"deepshield train --params {best_yaml}" + (f" --config {settings.config}" if settings.config else "")
    tags = {"deepshield.role": "best", "optuna.study": study_name}
    result = Trainer(config, command=command, parent_run_id=parent_run_id, run_tags=tags).run(resume=resume)
    if result.bundle_dir:
        echo(f"bundle written to {result.bundle_dir}")
    return result
