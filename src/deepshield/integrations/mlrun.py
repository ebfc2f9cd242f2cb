"""MLRun: one training trial as an MLRun function handler, so MLRun's own hyperparameter runs
(`new_task().with_hyper_params(grid, selector="max.val_auc")`) drive the project's trainer.

mlrun is an optional extra (`pip install 'deepfake-shield[mlrun]'`, mlrun==1.12.1): it is imported
inside the functions that need it, and `train_trial` itself only needs the `context` object MLRun
passes in. docs/mlrun.md shows a local run (no MLRun service: results but no artifacts) and one
against a service.

Against an MLRun service (for example)::

    import mlrun
    from deepshield.integrations.mlrun import hyper_param_task

    fn = mlrun.code_to_function(
        "deepshield-trial",
        kind="job",
        image="<an image with deepshield[train]>",
        filename="trial.py",
        handler="train_trial",
    )  # trial.py: from deepshield.integrations.mlrun import train_trial
    task = hyper_param_task(
        {"optim.lr": [1e-4, 4e-4, 1e-3], "optim.batch_size": [16, 32]},
        selector="max.val_auc",
        params={"config": "train.yaml", "budget": {"optim.epochs": 2, "data.limit_per_folder": 300}},
    )
    run = fn.run(task)  # run.outputs["best_iteration"], run.outputs["val_auc"], ...

Hyperparameters are dotted training-config keys. Every trial logs, with `context.log_result`, the best
value over its epochs of each metric a selector can name: validation (val_auc, val_ap, val_balanced_accuracy:
highest; val_loss, val_log_loss, val_eer: lowest), benchmarks (bench_auc, bench_<set>_face_auc, ...) and the
synthetic-face score's (synthetic_val_auc, ...), plus `epochs` and `best_epoch` (the epoch the trial exports,
by its `export.select`). The training loss is deliberately not logged as a result: select on held-out
metrics, never on training loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepshield.errors import DeepShieldError

RESERVED = ("config", "budget", "out_dir", "tracking_uri", "seed")


def _context_params(context) -> dict[str, Any]:
    parameters = getattr(context, "parameters", None)
    if isinstance(parameters, dict):
        return dict(parameters)
    return {}


def trial_results(history: list[dict], exported: str = "max.val_auc") -> dict[str, float]:
    """The per-trial results MLRun's selector chooses from: the best epoch's value of every metric a
    selector can name (validation, benchmarks, the synthetic-face score; only validation ones were logged,
    so max.bench_auc, which `hyper_param_task` accepts, found nothing to select on), plus `epochs` and
    `best_epoch`: the epoch the trial exports (`export.select`, given as `exported`), 1-based as printed."""
    from deepshield.tuning.selector import metric_direction, parse_selector

    results: dict[str, float] = {}
    names = sorted({name for record in history for name in record if metric_direction(name) is not None})
    for name in names:
        best = parse_selector(f"{metric_direction(name)}.{name}").best_epoch(history)
        if best is not None:
            results[name] = best[0]
    results["epochs"] = len(history)
    chosen = parse_selector(exported).best_epoch(history)
    if chosen is not None:
        results["best_epoch"] = chosen[1] + 1
    return results


def train_trial(
    context,
    config: str | None = None,
    budget: dict | None = None,
    out_dir: str = "runs/mlrun",
    tracking_uri: str | None = None,
    seed: int | None = None,
    **params,
) -> None:
    """MLRun handler: train one trial with the hyperparameters MLRun passes (dotted config keys) on
    the given config plus per-trial budget, and log its validation results with context.log_result."""
    from deepshield.training.config import load_config
    from deepshield.tuning.objective import run_training
    from deepshield.tuning.selector import parse_selector
    from deepshield.tuning.space import _yaml_number, apply_values, check_keys

    # Newer MLRun passes unnamed parameters through **params; older ones only through context.parameters.
    # Every other parameter is a training setting, checked as such: top-level keys (max_steps, threads) were
    # dropped unread, and a misspelt task parameter (budgett, out-dir) too.
    values = {k: v for k, v in _context_params(context).items() if k not in RESERVED}
    values.update(params)
    values = {k: _yaml_number(v) for k, v in values.items()}
    check_keys(values, "MLRun hyperparameters")
    budget = dict(budget or {})
    check_keys(budget, "trial budget")
    iteration = int(getattr(context, "iteration", 0) or 0)
    uid = getattr(context, "uid", None) or "local"
    run_dir = Path(out_dir) / f"{uid}-{iteration:04d}"
    extra: dict[str, Any] = {**budget, **values, "run_dir": str(run_dir), "tracking.enabled": bool(tracking_uri)}
    if tracking_uri:
        extra.update({"tracking.uri": tracking_uri, "tracking.run_name": f"mlrun-{uid}-{iteration}"})
    if seed is not None:
        extra["seed"] = seed
    trial_config = apply_values(load_config(Path(config) if config else None), extra)
    logger = getattr(context, "logger", None)
    if logger is not None:
        logger.info(f"deepshield trial {iteration}: {values} (budget {budget}) in {run_dir}")
    outcome = run_training(
        trial_config,
        epoch_callback=None,
        parent_run_id=None,
        run_tags={"mlrun.uid": str(uid), "mlrun.iteration": str(iteration)},
        resume=False,
    )
    results = trial_results(outcome.history, trial_config.export.select)
    if "best_epoch" not in results:
        selector = parse_selector(trial_config.export.select)
        raise DeepShieldError(f"the trial produced no {selector.metric} {selector.missing_hint()}")
    for key, value in results.items():
        context.log_result(key, value)
    context.log_result("run_dir", str(run_dir))


def hyper_param_task(grid: dict[str, list], selector: str = "max.val_auc", params: dict | None = None, **task_kwargs):
    """`mlrun.new_task(params=...).with_hyper_params(grid, selector=...)`, after checking that the grid
    keys are training-config keys and that the selector is on a validation metric."""
    from deepshield.tuning.selector import parse_selector
    from deepshield.tuning.space import check_keys

    parse_selector(selector)  # rejects e.g. min.train_loss with the reason
    check_keys(grid, "MLRun hyperparameters")
    try:
        import mlrun
    except ImportError as exc:
        raise DeepShieldError(
            "mlrun is not installed here (pip install mlrun, matching your MLRun service's version)"
        ) from exc
    return mlrun.new_task(params=params or {}, **task_kwargs).with_hyper_params(grid, selector=selector)
