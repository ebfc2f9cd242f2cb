"""The search: an Optuna study in SQLite (or any RDB URL), trials run by study workers on an engine,
one MLflow parent run holding the results, and an optional full-budget training of the winner.

`run_search` goes through four steps, one function each: `plan_search` (read and check everything
before anything is written), `open_study` (create or resume the study, recover lost trials),
`run_trials` (the engine runs n_jobs study workers, deepshield.tuning.workers) and `finish_search`
(report, MLflow parent run); then `train_best` if asked.

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

import functools
import itertools
import math
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from deepshield.engines import ENGINES, Engine, make_engine
from deepshield.errors import DeepShieldError
from deepshield.plural import numbered, plural
from deepshield.tracking.tracker import check_store
from deepshield.training.config import recipe
from deepshield.tuning.objective import EXPORT_SELECT, TrainFn, TrialContext, run_training
from deepshield.tuning.parent_run import log_parent, start_parent_run
from deepshield.tuning.report import BEST_FILE, Report, format_table, write_report
from deepshield.tuning.samplers import make_pruner, resolve_sampler_name
from deepshield.tuning.selector import Selector, direction_warning, parse_selector
from deepshield.tuning.space import (
    BANK_KEYS,
    SearchSpace,
    apply_values,
    check_against,
    load_space,
    parse_assignments,
)
from deepshield.tuning.storage import (
    check_storage_url,
    check_study,
    counts,
    enqueue_baseline,
    open_storage,
    recover_lost_trials,
    safe_url,
    study_lock,
    study_sampler,
)
from deepshield.tuning.trials import new_search_id, stop_requested, storage_failure
from deepshield.tuning.workers import WorkerSpec, quiet_optuna, worker_loop

DEFAULT_RANDOM_TRIALS = 10


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
    progress: bool = True  # the face banks' and --train-best's bars, on a terminal (the trials' go to train.log)


@dataclass
class SearchPlan:
    """The settings, read and checked: what the search will run."""

    settings: SearchSettings
    selector: Selector
    base: Any  # TrainConfig after --config, --set, --tracking-uri / --no-tracking
    space: SearchSpace
    sampler: str  # resolved: grid, random or tpe
    pruner: optuna.pruners.BasePruner
    name: str
    out_dir: Path
    storage_url: str
    target: int | None  # trials of the study in all; None: until the timeout
    notes: list[str] = field(default_factory=list)  # for the report


@dataclass
class SearchResult:
    study_name: str
    storage: str
    out_dir: Path
    report: Report
    parent_run_id: str | None
    counts: dict[str, int]
    best_bundle: Path | None = None
    interrupted: bool = False


def default_names(settings: SearchSettings) -> tuple[str, Path, str]:
    name = settings.study or Path(settings.space).stem
    out_dir = Path(settings.out or Path("runs/tune") / name).resolve()
    storage = settings.storage or f"sqlite:///{out_dir / 'study.db'}"
    return name, out_dir, storage


# ---- 1. plan -----------------------------------------------------------------------------------


def _load_base_config(settings: SearchSettings):
    from deepshield.training.config import load_config

    config = load_config(settings.config, settings.overrides)
    extra: dict[str, Any] = {}
    if config.data.root is None and (root := config.data.data_root()) is not None:
        # $DEEPSHIELD_DATA_ROOT as this process reads it: trials on a Ray cluster's workers, started without
        # it, read relative data paths from their working directory, and every trial failed.
        extra["data.root"] = str(root.resolve())
    if settings.tracking_uri:
        extra["tracking.uri"] = settings.tracking_uri
    if settings.tracking is not None:
        extra["tracking.enabled"] = settings.tracking
    return apply_values(config, extra) if extra else config


def _target(settings: SearchSettings, space: SearchSpace, sampler: str) -> int | None:
    target = settings.trials
    if sampler == "grid":
        size = space.grid_size()
        target = size if target is None else min(target, size)
    elif target is None and settings.timeout is None:
        target = DEFAULT_RANDOM_TRIALS
    if target is not None and target < 1:
        raise DeepShieldError("--trials must be at least 1")
    # "--timeout 0" ran forever (0 read as none), and so did nan (no deadline compares as passed) and inf.
    if settings.timeout is not None and not (math.isfinite(settings.timeout) and settings.timeout > 0):
        raise DeepShieldError("--timeout must be a positive number of seconds")
    return target


def plan_search(settings: SearchSettings, echo: Callable[[str], None] = print) -> SearchPlan:
    """Read and check the settings, the config and the space; nothing is written."""
    selector = parse_selector(settings.select)
    if (note := direction_warning(selector)) is not None:
        echo(note)
    if settings.n_jobs < 1:
        raise DeepShieldError("--n-jobs must be at least 1")
    if settings.engine not in ENGINES:
        raise DeepShieldError(f"unknown engine {settings.engine!r}; choose {' or '.join(ENGINES)}")
    overridden = parse_assignments(settings.overrides)
    if "run_dir" in overridden:  # accepted and ignored: the trials trained under --out all the same
        raise DeepShieldError(
            "run_dir is set by the search itself (each trial trains in <out>/trials/<study>/trial_NNNN, "
            "--train-best in <out>/best): do not --set it; name the search folder with --out"
        )
    if EXPORT_SELECT in overridden:
        raise DeepShieldError(
            f"{EXPORT_SELECT} follows --select in a search (the kept epoch is the selected one): do not --set it"
        )
    base = _load_base_config(settings)
    # Each trial exports by the selector: one the configuration cannot give (max.bench_auc without
    # benchmarks) failed every trial after the face bank, and the study then refused the mended settings.
    apply_values(base, {EXPORT_SELECT: str(selector)})
    space = load_space(settings.space, parse_assignments(settings.trial_overrides))
    clash = sorted(set(overridden) & set(space.names))
    if clash:
        raise DeepShieldError(f"{', '.join(clash)} is searched: do not also --set it")
    check_against(space, base)
    if "max_steps" in space.names or apply_values(base, space.budget).max_steps is not None:
        # Every trial stopped before its first validation failed "no finite val_auc ... (is the validation split too
        # small?)", each counted as done: the study's grid was used up by them, resumed or not.
        raise DeepShieldError(
            "max_steps (a smoke run's cap) stops each trial part-way, judging it on the epochs it reached or failing it "
            "before its first: give the trials a small budget instead (--trial-set optim.epochs=1 "
            "--trial-set optim.samples_per_epoch=...)"
        )
    sampler = resolve_sampler_name(settings.sampler, space)
    pruner = make_pruner(settings.pruner) if isinstance(settings.pruner, str) else settings.pruner
    name, out_dir, storage_url = default_names(settings)
    check_storage_url(storage_url)
    target = _target(settings, space, sampler)
    return SearchPlan(settings, selector, base, space, sampler, pruner, name, out_dir, storage_url, target)


def _capped(plan: SearchPlan) -> list[str]:
    """The note of a grid smaller than --trials, for the sampler the study goes on with: planned with auto's pick,
    a random study resumed with --sampler auto ran its --trials 8 and said 'the grid has 6 points: capped to 6'."""
    trials = plan.settings.trials
    if plan.sampler == "grid" and trials is not None and trials > (size := plan.space.grid_size()):
        return [f"the grid has {size} points: --trials {trials} capped to {size}"]
    return []


# ---- 2. open the study -------------------------------------------------------------------------


def open_study(plan: SearchPlan, echo: Callable[[str], None] = print) -> optuna.Study:
    """Create the study (or load it to resume: same space and selector), queue the baseline on a new
    one if asked, and queue again the trials a kill or an interruption lost."""
    quiet_optuna()
    with study_lock(plan.storage_url):  # another search may be opening it too (another terminal's tune)
        storage = open_storage(plan.storage_url)  # first: a database that cannot be opened left an empty --out
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        created = plan.name not in optuna.study.get_all_study_names(storage)
        study = optuna.create_study(
            storage=storage, study_name=plan.name, direction=plan.selector.direction, load_if_exists=True
        )
        check_study(study, plan.space, plan.selector, created, recipe(plan.base.model_dump(mode="json")))
        sampler = study_sampler(study, plan.sampler, plan.settings.sampler, created)
        if sampler != plan.sampler:  # the study's own, which --sampler auto would not pick today
            plan.sampler, plan.target = sampler, _target(plan.settings, plan.space, sampler)
        if created and plan.settings.baseline:
            note = enqueue_baseline(study, plan.space, apply_values(plan.base, plan.space.budget), plan.sampler)
            if note:
                plan.notes.append(note)
        requeued = recover_lost_trials(study)
    done = counts(study)["done"]
    state = "new" if created else f"resumed: {numbered(done, 'trial')} done"
    target = numbered(plan.target, "trial") if plan.target is not None else "until timeout"
    echo(
        f"study '{plan.name}' ({state}) in {safe_url(plan.storage_url)}; "
        f"sampler {plan.sampler}, selector {plan.selector}, target {target}"
        + (
            f"; re-running interrupted {plural(len(requeued), 'trial')} {', '.join(map(str, requeued))} from their checkpoints"
            if requeued
            else ""
        )
    )
    return study


# ---- 3. run the trials -------------------------------------------------------------------------


def _bank_configs(space: SearchSpace, base) -> list:
    """Configurations whose face banks the trials will need (None: cannot tell, e.g. a searched input size range)."""
    searched = [p for p in space.params if p.name in BANK_KEYS]
    if any(p.kind != "categorical" for p in searched):
        return []
    combos = list(itertools.product(*[p.choices for p in searched]))
    if len(combos) > 8:
        return []
    return [apply_values(base, {**space.budget, **{p.name: v for p, v in zip(searched, combo)}}) for combo in combos]


def prewarm_facebanks(space: SearchSpace, base, echo: Callable[[str], None], progress: bool = True) -> None:
    from deepshield.training.facebank import facebank_for

    for config in _bank_configs(space, base):
        if not config.data.real_dirs:  # prepared datasets only: nothing to detect
            continue
        echo(
            f"face bank: {numbered(len(config.data.real_dirs), 'folder')}, {config.model.input_size} px (built once, cached in {config.data.cache_dir})"
        )
        facebank_for(config, progress)


def _warn_about_shared_stores(plan: SearchPlan, engine: Engine, echo: Callable[[str], None]) -> None:
    """Workers on other machines cannot share a file-based study or MLflow store."""
    if engine.node_count() <= 1:
        return
    if plan.storage_url.startswith("sqlite"):
        echo(
            "warning: an SQLite study on a multi-node cluster: workers on other nodes cannot share it; use --storage postgresql://... (see docs/ray.md)"
        )
    uri = str(plan.base.tracking.uri) if plan.base.tracking.enabled else ""
    if uri.startswith(("sqlite", "file:")) or (uri and "://" not in uri):
        echo(
            f"warning: MLflow store {uri} is a local file; on a multi-node cluster use a tracking server (--tracking-uri http://...)"
        )


def run_trials(
    plan: SearchPlan,
    study: optuna.Study,
    engine: Engine,
    parent_run_id: str | None,
    train_fn: TrainFn,
    echo: Callable[[str], None],
) -> None:
    """n_jobs study workers on the engine until the study reaches its target (or the timeout); each
    worker gets an equal share of the engine's CPUs as torch threads (all of them when alone)."""
    settings = plan.settings
    echo(f"{engine.name}: {numbered(settings.n_jobs, 'study worker')} on {engine.describe()}")
    _warn_about_shared_stores(plan, engine, echo)
    cpus = engine.worker_cpus(settings.n_jobs)
    context = TrialContext(
        base_config=plan.base,
        space=plan.space,
        selector=plan.selector,
        out_dir=plan.out_dir,
        study_name=plan.name,
        target=plan.target,
        parent_run_id=parent_run_id,
        threads=cpus if settings.n_jobs > 1 else None,
        train_fn=train_fn,
        keep_checkpoints=settings.keep_checkpoints,
    )
    deadline = time.time() + settings.timeout if settings.timeout is not None else None  # 0 is a deadline
    # This search's own: another search on the study (another terminal's tune) goes on when this one stops.
    stop_attr = stop_requested(new_search_id())
    spec = WorkerSpec(context, plan.storage_url, plan.sampler, plan.pruner, settings.seed, deadline, stop_attr)
    if settings.prewarm:
        prewarm_facebanks(plan.space, apply_values(plan.base, plan.space.budget), echo, plan.settings.progress)
    study.set_user_attr(stop_attr, False)
    # On Ctrl-C no worker starts another trial, whether or not the interrupt reaches it: a Ray worker that
    # missed its cancellation ran the rest of the grid.
    stop = functools.partial(study.set_user_attr, stop_attr, True)
    if engine.run_workers(functools.partial(worker_loop, spec), settings.n_jobs, echo, cpus=cpus, on_interrupt=stop):
        echo("note: the trials those workers were running are re-run on the next start")
    if failed := study.user_attrs.get(storage_failure(stop_attr)):  # a full disk stopped a worker: said in one line
        raise OSError(*failed)


# ---- 4. report ---------------------------------------------------------------------------------


def finish_search(
    plan: SearchPlan, study: optuna.Study, tracker, status: str, echo: Callable[[str], None]
) -> SearchResult:
    """results.csv, report.md, plots and best.yaml in the search folder, and on the MLflow parent run
    (ended with `status`), whatever the way the trials ended."""
    command = full_budget_command(plan.settings, plan.selector, plan.out_dir / BEST_FILE)
    report = write_report(study, plan.space, plan.selector, plan.out_dir, command, [*_capped(plan), *plan.notes])
    final = counts(study)
    if tracker is not None:
        log_parent(tracker, report, final, plan.selector, status)
    if status == "KILLED":
        echo(f"search interrupted: {numbered(final['done'], 'trial')} done; run the same command again to resume")
    return SearchResult(
        plan.name,
        plan.storage_url,
        plan.out_dir,
        report,
        tracker.run_id if tracker else None,
        final,
        interrupted=status == "KILLED",
    )


def echo_summary(plan: SearchPlan, report: Report, echo: Callable[[str], None]) -> None:
    selector = plan.selector
    echo("")
    echo(format_table(report.rows, plan.space, selector))
    echo("")
    for line in report.notes:
        echo(f"note: {line}")
    if report.best is not None:
        echo(
            f"best: trial {report.best.number}, {selector.metric}={report.best.value:.4f}; parameters in {report.best_yaml}"
        )
        if report.best_yaml is not None and not plan.settings.train_best:
            # best.yaml's header can name only the config: a search's --set and --select were left to guess.
            echo(f"train it at full budget: {full_budget_command(plan.settings, selector, report.best_yaml)}")
    if report.baseline is not None and report.baseline.value is not None:
        echo(
            f"baseline (the config's own values, same budget): trial {report.baseline.number}, {selector.metric}={report.baseline.value:.4f}"
        )
    echo(f"results: {report.results_csv}, plots in {plan.out_dir / 'plots'}, summary {report.report_md}")


# ---- the search --------------------------------------------------------------------------------


def run_search(
    settings: SearchSettings, *, train_fn: TrainFn = run_training, echo: Callable[[str], None] = print
) -> SearchResult:
    plan = plan_search(settings, echo)
    if plan.base.tracking.enabled:
        # As train refuses it, before the study is made: a store MLflow cannot use was a traceback from the
        # parent run, and left the new study in its database.
        check_store(str(plan.base.tracking.uri), plan.base.tracking.experiment)
    with make_engine(settings.engine, address=settings.ray_address) as engine:
        # Where the trials run is known first: a cluster that cannot be reached stopped the search after its
        # study, report and MLflow run were made.
        engine.node_count()
        study = open_study(plan, echo)
        tracker = start_parent_run(study, plan) if plan.base.tracking.enabled else None
        status = "FAILED"
        try:
            run_trials(plan, study, engine, tracker.run_id if tracker else None, train_fn, echo)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            result = finish_search(plan, study, tracker, status, echo)
    echo_summary(plan, result.report, echo)
    if settings.train_best:
        if result.report.best_yaml is None:
            raise DeepShieldError("no trial completed, so there is no winner to train")
        trained = train_best(plan, result.report.best_yaml, result.parent_run_id, echo)
        result.best_bundle = trained.bundle_dir
        if tracker is not None and trained.bundle_dir is not None:
            tracker.set_tags({"best.bundle": str(trained.bundle_dir.resolve())})
    return result


def full_budget_command(settings: SearchSettings, selector: Selector, best_yaml: Path) -> str:
    """The `deepshield train` that trains the winner at full budget, as --train-best does. As a card records
    it (without this machine's folders): the search's own --set too, which the card's command dropped, so that
    rerunning it trained another recipe; and its selector, without which the epoch kept was val_auc's."""
    return shlex.join(
        [
            "deepshield",
            "train",
            *(["--config", str(settings.config)] if settings.config else []),
            *(word for override in settings.overrides for word in ("--set", override)),
            "--params",
            str(best_yaml),
            "--set",
            f"{EXPORT_SELECT}={selector}",
        ]
    )


def train_best(plan: SearchPlan, best_yaml: Path, parent_run_id: str | None, echo: Callable[[str], None]):
    """`deepshield train --config <config> --set ... --params best.yaml --set export.select=<--select>`
    into <out>/best, nested under the search's MLflow run: its bundle is the epoch best by the
    search's selector. Resumes its own checkpoint if the configuration is unchanged."""
    from deepshield.training.checkpoint import LAST, load_checkpoint
    from deepshield.training.config import changed_recipe, load_config
    from deepshield.training.trainer import Trainer

    settings = plan.settings
    run_dir = plan.out_dir / "best"
    export_select = f"{EXPORT_SELECT}={plan.selector}"
    overrides = [*settings.overrides, f"run_dir={run_dir}", f"tracking.run_name={plan.name}-best", export_select]
    if settings.tracking_uri:
        overrides.append(f"tracking.uri={settings.tracking_uri}")
    if settings.tracking is not None:
        overrides.append(f"tracking.enabled={'true' if settings.tracking else 'false'}")
    config = load_config(settings.config, overrides, best_yaml)
    last = run_dir / "checkpoints" / LAST
    resume = False
    if last.exists():
        # As `train --resume` judges it: how and where it runs (threads, device, tracking) may change; a
        # different recipe is another run. (Any difference at all threw a resumable run away.)
        changed = changed_recipe(load_checkpoint(last)["config"], config)
        resume = not changed
        if changed:
            echo(
                f"the best parameters' earlier run in {run_dir} had other settings ({'; '.join(changed)}): starting again"
            )
            shutil.rmtree(run_dir)
    echo(f"training the best parameters at full budget in {run_dir}" + (" (resuming)" if resume else ""))
    command = full_budget_command(settings, plan.selector, best_yaml)
    tags = {"deepshield.role": "best", "optuna.study": plan.name}
    result = Trainer(
        config, command=command, parent_run_id=parent_run_id, run_tags=tags, progress=plan.settings.progress
    ).run(resume=resume)  # which says where its bundle went (said here again, it was said twice)
    return result
