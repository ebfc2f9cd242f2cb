"""What a search leaves behind: results table (CSV), plots (matplotlib, offline), best.yaml (dotted
keys that `deepshield train --params` takes) and a short report.md."""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from deepshield.data.layout import atomic_text_file, atomic_write_text
from deepshield.evaluation.plots import save_figure
from deepshield.plural import numbered
from deepshield.tuning.selector import VALIDATION_METRICS, Selector
from deepshield.tuning.space import Param, SearchSpace, shown
from deepshield.tuning.storage import ATTR_BASELINE
from deepshield.tuning.trials import (
    BASELINE,
    BEST_EPOCH,
    ERROR,
    LAST_METRICS,
    METRICS,
    MLFLOW_RUN_ID,
    RETRY_OF,
    RUN_DIR,
    is_surplus,
    state_label,
)

BEST_FILE, RESULTS_FILE, REPORT_FILE = "best.yaml", "results.csv", "report.md"


@dataclass
class Report:
    results_csv: Path
    report_md: Path
    best_yaml: Path | None
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: FrozenTrial | None = None
    baseline: FrozenTrial | None = None  # the config's own values (--baseline), if it was run


def _value(trial: FrozenTrial) -> float | None:
    if trial.value is not None and math.isfinite(trial.value):
        return float(trial.value)
    return None


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
    return None


def visible_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if not is_surplus(t)]


def is_baseline(study: optuna.Study, trial: FrozenTrial) -> bool:
    values = study.user_attrs.get(ATTR_BASELINE)
    return bool(trial.user_attrs.get(BASELINE)) or (bool(values) and trial.params == values)


def result_rows(study: optuna.Study, space: SearchSpace, selector: Selector) -> list[dict[str, Any]]:
    trials = visible_trials(study)
    retried_by = {int(t.user_attrs[RETRY_OF]): t.number for t in trials if RETRY_OF in t.user_attrs}
    metric_names = [selector.metric] + [m for m in VALIDATION_METRICS if m != selector.metric] + ["train_loss"]
    rows = []
    for trial in trials:
        metrics = trial.user_attrs.get(METRICS) or trial.user_attrs.get(LAST_METRICS) or {}
        row: dict[str, Any] = {
            "trial": trial.number,
            "state": state_label(trial),
            str(selector): _value(trial),
            "best_epoch": trial.user_attrs.get(BEST_EPOCH),
            "epochs_reported": max(trial.intermediate_values, default=None),
            "baseline": "yes" if is_baseline(study, trial) else "",
        }
        row.update({name: shown(trial.params[name]) if name in trial.params else None for name in space.names})
        row.update({name: metrics.get(name) for name in metric_names})
        row.update(
            duration_s=_duration(trial),
            retry_of=trial.user_attrs.get(RETRY_OF),
            retried_as=retried_by.get(trial.number),
            run_dir=trial.user_attrs.get(RUN_DIR),
            mlflow_run_id=trial.user_attrs.get(MLFLOW_RUN_ID),
            error=trial.user_attrs.get(ERROR),
        )
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_text_file(path, clear_left=True) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or ["trial"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _value(t) is not None]
    if not complete:
        return None
    return study.best_trial


def write_best_yaml(trial: FrozenTrial, study_name: str, selector: Selector, space: SearchSpace, path: Path) -> Path:
    import yaml

    header = [
        f"# Best trial of search '{study_name}': trial {trial.number}, {selector.metric} = {trial.value:.4f} (best epoch {trial.user_attrs.get(BEST_EPOCH)}).",
        "# Dotted training-config keys: deepshield train --config <the search's config> <its --set ...> --params",
        f"# best.yaml --set export.select={selector} trains it at full budget (the search printed the command).",
        "# The search's per-trial budget was: "
        + (json.dumps(space.budget, sort_keys=True) if space.budget else "none"),
    ]
    body = yaml.safe_dump(
        {k: trial.params[k] for k in space.names if k in trial.params}, sort_keys=False, default_flow_style=False
    )
    atomic_write_text(path, "\n".join(header) + "\n" + body, clear_left=True)
    return path


# ---- plots -------------------------------------------------------------------------------------


def _pruned_value(trial: FrozenTrial) -> float | None:
    if trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
        return float(value) if math.isfinite(value) else None
    return None


def history_plot(trials: list[FrozenTrial], selector: Selector, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    complete = [(t.number, v) for t in trials if t.state == TrialState.COMPLETE and (v := _value(t)) is not None]
    pruned = [(t.number, v) for t in trials if t.state == TrialState.PRUNED and (v := _pruned_value(t)) is not None]
    if pruned:
        axis.scatter(*zip(*pruned), marker="x", color="grey", label="pruned (last epoch reported)")
    if complete:
        axis.scatter(*zip(*complete), color="tab:blue", label="complete", zorder=3)
        best, steps = complete[0][1], []
        for number, value in complete:
            best = value if selector.better(value, best) else best
            steps.append((number, best))
        axis.step(*zip(*steps), where="post", color="tab:red", label="best so far")
    axis.set(xlabel="trial", ylabel=selector.metric, title=f"optimisation history ({selector})")
    if complete or pruned:
        axis.legend(fontsize=8)
    return save_figure(figure, path)


def intermediate_plot(trials: list[FrozenTrial], selector: Selector, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    for trial in trials:
        if not trial.intermediate_values:
            continue
        steps = sorted(trial.intermediate_values)
        style = {"color": "grey", "ls": "--", "alpha": 0.7} if trial.state == TrialState.PRUNED else {"marker": "o"}
        axis.plot(
            steps,
            [trial.intermediate_values[s] for s in steps],
            label=f"#{trial.number}" if len(trials) <= 12 else None,
            **style,
        )
    axis.set(xlabel="epochs done", ylabel=selector.metric, title="per-epoch validation metric (dashed: pruned)")
    if len(trials) <= 12 and any(t.intermediate_values for t in trials):
        axis.legend(fontsize=7, ncol=2)
    return save_figure(figure, path)


def _axis_position(param: Param, value: Any) -> float:
    if param.kind == "categorical":
        index = (
            [repr(c) for c in param.choices].index(repr(value))
            if repr(value) in [repr(c) for c in param.choices]
            else 0
        )
        return index / max(1, len(param.choices) - 1)
    low, high = param.bounds
    x = float(value)
    if param.log:
        low, high, x = math.log10(low), math.log10(high), math.log10(x)
    return (x - low) / (high - low) if high > low else 0.5


def _axis_labels(param: Param) -> list[tuple[float, str]]:
    if param.kind == "categorical":
        return [(i / max(1, len(param.choices) - 1), str(c)) for i, c in enumerate(param.choices)]
    return [(0.0, f"{param.low:.3g}"), (1.0, f"{param.high:.3g}")]


def parallel_plot(trials: list[FrozenTrial], space: SearchSpace, selector: Selector, path: Path) -> Path:
    scored = [(t, v) for t in trials if t.state == TrialState.COMPLETE and (v := _value(t)) is not None]
    params = space.params
    figure, axis = plt.subplots(figsize=(1.8 * (len(params) + 1) + 1.5, 4.2))
    values = [v for _, v in scored] + [
        v for t in trials if t.state == TrialState.PRUNED and (v := _pruned_value(t)) is not None
    ]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    span = high - low or 1.0
    colormap = plt.get_cmap("viridis" if selector.mode == "max" else "viridis_r")
    xs = list(range(len(params) + 1))
    for trial in trials:
        if trial.state == TrialState.PRUNED and all(p.name in trial.params for p in params):
            ys = [_axis_position(p, trial.params[p.name]) for p in params]
            pruned = _pruned_value(trial)
            ys.append((pruned - low) / span if pruned is not None else np.nan)
            axis.plot(xs, ys, color="lightgrey", lw=1, ls="--", zorder=1)
    best = max(scored, key=lambda item: item[1] if selector.mode == "max" else -item[1], default=(None, None))[0]
    for trial, value in scored:
        ys = [_axis_position(p, trial.params[p.name]) for p in params] + [(value - low) / span]
        axis.plot(
            xs,
            ys,
            color=colormap((value - low) / span),
            lw=3 if trial is best else 1.4,
            zorder=3 if trial is best else 2,
        )
    for x, param in enumerate(params):
        axis.axvline(x, color="black", lw=0.8)
        for y, label in _axis_labels(param):
            axis.text(x + 0.03, y, label, fontsize=7, va="center")
    axis.axvline(len(params), color="black", lw=0.8)
    axis.text(len(params) + 0.03, 0, f"{low:.3g}", fontsize=7, va="center")
    axis.text(len(params) + 0.03, 1, f"{high:.3g}", fontsize=7, va="center")
    axis.set_xticks(
        xs, [p.name + (" (log)" if p.log else "") for p in params] + [selector.metric], fontsize=8, rotation=15
    )
    axis.set_yticks([])
    axis.set_ylim(-0.08, 1.08)
    axis.set_title("parallel coordinates (colour: metric; thick: best; dashed: pruned)")
    return save_figure(figure, path)


def _x_position(param: Param, value: Any) -> float:
    """Categorical values at 0, 1, 2, ... (labelled), numbers as they are."""
    if param.kind == "categorical":
        labels = [repr(c) for c in param.choices]
        return labels.index(repr(value)) if repr(value) in labels else np.nan
    return float(value)


def params_plot(trials: list[FrozenTrial], space: SearchSpace, selector: Selector, path: Path) -> Path:
    params = space.params
    columns = min(3, len(params))
    rows = math.ceil(len(params) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(params) :]:
        axis.axis("off")
    scored = [(t, v) for t in trials if t.state == TrialState.COMPLETE and (v := _value(t)) is not None]
    best, best_value = max(
        scored, key=lambda item: item[1] if selector.mode == "max" else -item[1], default=(None, None)
    )
    for axis, param in zip(axes.flat, params):
        complete = [(_x_position(param, t.params[param.name]), v) for t, v in scored if param.name in t.params]
        pruned = [
            (_x_position(param, t.params[param.name]), v)
            for t in trials
            if t.state == TrialState.PRUNED and param.name in t.params and (v := _pruned_value(t)) is not None
        ]
        if pruned:
            axis.scatter(*zip(*pruned), marker="x", color="grey", label="pruned")
        if complete:
            axis.scatter(*zip(*complete), color="tab:blue", label="complete", zorder=3)
        if best is not None and param.name in best.params:
            axis.scatter(
                [_x_position(param, best.params[param.name])],
                [best_value],
                marker="*",
                s=180,
                color="tab:red",
                label="best",
                zorder=4,
            )
        if param.kind == "categorical":
            axis.set_xticks(range(len(param.choices)), [str(c) for c in param.choices])
        elif param.log:
            axis.set_xscale("log")
        axis.set(xlabel=param.name, ylabel=selector.metric)
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize=7)
    figure.suptitle(f"{selector.metric} against each parameter")
    return save_figure(figure, path)


def importance_plot(study: optuna.Study, space: SearchSpace, path: Path) -> tuple[Path | None, str | None]:
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _value(t) is not None]
    if len(complete) < 2:
        return (
            None,
            f"parameter importances skipped: {numbered(len(complete), 'completed trial')}, at least 2 are needed",
        )
    varying = [p.name for p in space.params if len({repr(t.params.get(p.name)) for t in complete}) > 1]
    if not varying:
        return None, "parameter importances skipped: no parameter varies among the completed trials"
    try:
        with warnings.catch_warnings(record=True) as cautions:  # the estimator's doubts go into the report
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(study, params=varying)
    except Exception as exc:  # noqa: BLE001 - few trials can defeat the estimator: the search still has its report
        return None, f"parameter importances skipped: {type(exc).__name__}: {exc}"
    caution = "; ".join(dict.fromkeys(str(c.message) for c in cautions)) or None
    if not importances:
        return None, "parameter importances skipped: the estimator returned nothing"
    names = list(importances)[::-1]
    figure, axis = plt.subplots(figsize=(6, 0.5 * len(names) + 1.6))
    axis.barh(names, [importances[n] for n in names], color="tab:blue")
    axis.set(
        xlabel="importance (normalised, Optuna's default evaluator)",
        title=f"parameter importances ({len(complete)} completed trials)",
    )
    return save_figure(figure, path), None if caution is None else f"parameter importances: {caution}"


def write_report(
    study: optuna.Study,
    space: SearchSpace,
    selector: Selector,
    out_dir: Path,
    train_command: str,
    extra_notes: Sequence[str] = (),
) -> Report:
    """`train_command`: the `deepshield train` of the winner at full budget, as the search prints it."""
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    trials = visible_trials(study)
    rows = result_rows(study, space, selector)
    report = Report(
        results_csv=write_csv(rows, out_dir / RESULTS_FILE),
        report_md=out_dir / REPORT_FILE,
        best_yaml=None,
        rows=rows,
        notes=list(extra_notes),
    )
    report.best = best_trial(study)
    report.baseline = next((t for t in trials if t.state == TrialState.COMPLETE and is_baseline(study, t)), None)
    if report.best is not None:
        report.best_yaml = write_best_yaml(report.best, study.study_name, selector, space, out_dir / BEST_FILE)
    else:
        report.notes.append("no trial completed: no best.yaml")
    report.plots.append(history_plot(trials, selector, plots_dir / "optimization_history.png"))
    report.plots.append(intermediate_plot(trials, selector, plots_dir / "intermediate_values.png"))
    report.plots.append(parallel_plot(trials, space, selector, plots_dir / "parallel_coordinates.png"))
    report.plots.append(params_plot(trials, space, selector, plots_dir / "metric_vs_params.png"))
    importance, note = importance_plot(study, space, plots_dir / "param_importances.png")
    if importance is not None:
        report.plots.append(importance)
        if note is not None:
            report.notes.append(note)
    else:
        (plots_dir / "param_importances.png").unlink(missing_ok=True)
        report.notes.append(note or "parameter importances skipped")
    atomic_write_text(
        report.report_md, _markdown(study.study_name, rows, report, space, selector, train_command), clear_left=True
    )
    return report


def format_table(rows: list[dict[str, Any]], space: SearchSpace, selector: Selector, limit: int = 10) -> str:
    key = str(selector)
    ordered = sorted(
        rows,
        key=lambda r: (
            r["state"] != "COMPLETE",
            r[key] is None,
            -(r[key] or 0) if selector.mode == "max" else (r[key] or 0),
        ),
    )
    columns = ["trial", "state", key, "best_epoch", *space.names]
    lines = [" | ".join(columns), " | ".join("---" for _ in columns)]
    for row in ordered[:limit]:
        lines.append(" | ".join(_fmt(row.get(c)) for c in columns))
    if len(ordered) > limit:
        lines.append(f"... {len(ordered) - limit} more in {RESULTS_FILE}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(
    name: str,
    rows: list[dict[str, Any]],
    report: Report,
    space: SearchSpace,
    selector: Selector,
    train_command: str,
) -> str:
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    lines = [
        f"# Search `{name}`",
        "",
        f"Selector: `{selector}` (best epoch of each trial). Trials: "
        + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
        + ".",
    ]
    lines += ["", "Search space:", ""] + [f"- `{p.name}`: {p.describe()}" for p in space.params]
    lines += [
        "",
        "Per-trial budget: "
        + (", ".join(f"`{k}={v}`" for k, v in space.budget.items()) if space.budget else "none (full configuration)"),
    ]
    if report.best is not None and report.best_yaml is not None:
        lines += ["", f"## Best: trial {report.best.number}, {selector.metric} = {report.best.value:.4f}", ""]
        lines += [f"- `{k}`: {shown(v)}" for k, v in report.best.params.items()]
        # The search's own --set and its selector: `train --config <config> --params best.yaml` kept the
        # val_auc epoch of a min.val_loss search, and trained without the search's overrides.
        lines += ["", f"Train it at full budget: `{train_command}` (or `deepshield tune ... --train-best`)."]
    if report.baseline is not None and report.baseline.value is not None:
        lines += [
            "",
            f"Baseline (the config's own values, same budget): trial {report.baseline.number}, {selector.metric} = {report.baseline.value:.4f}.",
        ]
    lines += ["", "## Trials", "", format_table(rows, space, selector, limit=20)]
    lines += ["", "## Plots", ""] + [f"- plots/{p.name}" for p in report.plots]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"
