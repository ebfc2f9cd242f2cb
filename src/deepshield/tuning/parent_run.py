"""The search's MLflow parent run: one per study and tracking URI (found again on resume), holding
the search's settings, its results table, report, plots and best.yaml, and the trial counts. The
trials are its nested runs."""

from __future__ import annotations

import json
import logging

import optuna

from deepshield.tuning.storage import ATTR_PARENTS, safe_url
from deepshield.tuning.trials import MLFLOW_RUN_ID

log = logging.getLogger(__name__)

BEST_TAG = "best"  # "true" on the best trial's own run, and on no other trial's run of the search


def start_parent_run(study: optuna.Study, plan):
    """The study's parent run under plan.base's tracking URI (a new one if MLflow lost it), with the
    search's settings as parameters. `plan`: a deepshield.tuning.study.SearchPlan."""
    from deepshield.tracking.tracker import MlflowTracker

    config, settings = plan.base, plan.settings
    uri = config.tracking.uri
    parents = dict(study.user_attrs.get(ATTR_PARENTS) or {})
    tags = {"deepshield.role": "search", "optuna.study": study.study_name}
    # Found again, or a new one where MLflow lost it (deleted: the tracker says so and starts one).
    tracker = MlflowTracker(
        uri, config.tracking.experiment, run_name=f"{study.study_name}-search", run_id=parents.get(uri), tags=tags
    )
    if parents.get(uri) != tracker.run_id:
        parents[uri] = tracker.run_id
        study.set_user_attr(ATTR_PARENTS, parents)
    tracker.log_params(
        {
            "search.sampler": plan.sampler,
            "search.pruner": settings.pruner if isinstance(settings.pruner, str) else type(settings.pruner).__name__,
            "search.selector": str(plan.selector),
            "search.space": json.dumps(plan.space.to_dict()["params"], sort_keys=True),
            "search.budget": json.dumps(plan.space.budget, sort_keys=True),
            "search.config": str(settings.config or "default"),
            "search.seed": settings.seed,
        }
    )
    tracker.set_tags(
        {
            "search.trials": str(plan.target),
            "search.n_jobs": str(settings.n_jobs),
            "search.storage": safe_url(plan.storage_url),
            "search.engine": settings.engine,
        }
    )
    return tracker


def log_parent(tracker, report, final: dict[str, int], selector, status: str) -> None:
    """The search's outcome on its parent run, which ends with `status` (FINISHED, KILLED, FAILED)."""
    try:
        for path in [report.results_csv, report.report_md, *([report.best_yaml] if report.best_yaml else [])]:
            tracker.log_artifact(path)
        for path in report.plots:
            tracker.log_artifact(path, "plots")
        metrics = {f"trials_{k}": float(v) for k, v in final.items() if k != "running"}
        if report.best is not None:
            metrics[f"best_{selector.metric}"] = float(report.best.value)
            tracker.set_tags(
                {"best.trial": str(report.best.number), "best.params": json.dumps(report.best.params, sort_keys=True)}
            )
        mark_best_trial(tracker, None if report.best is None else report.best.user_attrs.get(MLFLOW_RUN_ID))
        tracker.log_metrics(metrics)
        if report.notes:
            tracker.set_tags({"search.notes": " | ".join(report.notes)[:5000]})
    except Exception as exc:  # noqa: BLE001 - the search's results are on disk whatever MLflow says
        log.warning("could not log the search to MLflow: %s", exc)
    finally:  # the run ends whatever could be logged (an artifact store it cannot write left it RUNNING)
        try:
            tracker.finish(status)
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("could not end the search's MLflow run: %s", exc)


def mark_best_trial(tracker, best_run_id: str | None) -> None:
    """Tag the best trial's own run best=true, and take the tag off any other trial run of the search (a
    resumed search's new best): only the parent's best.trial named it, so the trials' runs, listed in MLflow's
    UI and search_runs, did not say which one won."""
    client = tracker.client
    experiment = client.get_run(tracker.run_id).info.experiment_id
    marked = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{tracker.run_id}' and tags.{BEST_TAG} = 'true'"
    )
    for run in marked:
        if run.info.run_id != best_run_id:
            client.delete_tag(run.info.run_id, BEST_TAG)
    if best_run_id:
        client.set_tag(best_run_id, BEST_TAG, "true")
