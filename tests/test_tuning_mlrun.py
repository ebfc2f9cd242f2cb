"""The MLRun integration: its checks and handler with a stand-in context (mlrun not needed), and one
hyperparameter run through real MLRun in local mode where the `mlrun` extra is installed."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from deepshield.errors import DeepShieldError
from tests.test_tuning_train import workspace  # noqa: F401 - the fixture: faces, a tiny training config


def test_deepshield_and_the_cli_never_import_mlrun():
    code = (
        "import sys, deepshield, deepshield.integrations, deepshield.integrations.mlrun, deepshield.tuning\n"
        "from deepshield.cli.main import build_parser\n"
        "build_parser().parse_args(['tune', '--space', 'x.yaml'])\n"
        "assert 'mlrun' not in sys.modules, 'mlrun imported'\n"
        "assert 'optuna' not in sys.modules and 'torch' not in sys.modules, 'heavy imports at start-up'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_hyper_param_task_validates_then_builds_the_task(monkeypatch):
    from deepshield.integrations.mlrun import hyper_param_task

    with pytest.raises(DeepShieldError, match="validation metric"):
        hyper_param_task({"optim.lr": [1e-3]}, selector="min.train_loss")
    with pytest.raises(DeepShieldError, match="not a training-config key"):
        hyper_param_task({"lr": [1e-3]})
    monkeypatch.setitem(sys.modules, "mlrun", None)  # not installed
    with pytest.raises(DeepShieldError, match="mlrun is not installed"):
        hyper_param_task({"optim.lr": [1e-3]})

    calls = {}

    class Task:
        def with_hyper_params(self, grid, selector):
            calls["hyper"] = (grid, selector)
            return self

    fake = types.ModuleType("mlrun")
    fake.new_task = lambda **kwargs: calls.setdefault("new_task", kwargs) and Task()
    monkeypatch.setitem(sys.modules, "mlrun", fake)
    grid = {"optim.lr": [1e-4, 1e-3], "optim.batch_size": [16, 32]}
    hyper_param_task(grid, selector="max.val_auc", params={"config": "train.yaml"}, name="search")
    assert calls == {"new_task": {"params": {"config": "train.yaml"}, "name": "search"}, "hyper": (grid, "max.val_auc")}


def test_handler_parameters_and_results(monkeypatch, tmp_path):
    """MLRun hands hyperparameters as dotted keys (kwargs or context.parameters); results are the best epochs."""
    from deepshield.integrations import mlrun as integration
    from deepshield.tuning import objective

    seen = {}

    def fake_training(config, **kwargs):
        seen["config"] = config
        history = [
            {"epoch": 0, "train_loss": 0.6, "val_auc": 0.7, "val_loss": 0.5, "val_eer": 0.3},
            {"epoch": 1, "train_loss": 0.4, "val_auc": 0.8, "val_loss": 0.55, "val_eer": 0.25},
        ]
        return objective.TrainingOutcome(history, None)

    monkeypatch.setattr(objective, "run_training", fake_training)
    logged = []
    context = types.SimpleNamespace(
        parameters={"optim.lr": "1e-3"}, uid="u", iteration=1, log_result=lambda k, v: logged.append((k, v))
    )
    integration.train_trial(
        context, budget={"optim.epochs": 2}, out_dir=str(tmp_path), seed=5, **{"model.dropout": 0.1}
    )
    config = seen["config"]
    assert (config.optim.lr, config.model.dropout, config.optim.epochs, config.seed) == (1e-3, 0.1, 2, 5)
    assert dict(logged) == {
        "val_auc": 0.8,
        "val_loss": 0.5,
        "val_eer": 0.25,
        "epochs": 2,
        "best_epoch": 2,
        "run_dir": str(tmp_path / "u-0001"),
    }
    with pytest.raises(DeepShieldError, match="not a training-config key"):
        integration.train_trial(context, **{"optim.lrate": 1.0})
    # Parameters from the task that are not dotted: a setting is applied, a misspelt one refused.
    context.parameters = {"optim.lr": "1e-3", "max_steps": 3}
    integration.train_trial(context, out_dir=str(tmp_path))
    assert seen["config"].max_steps == 3  # it was dropped unread
    context.parameters = {"optim.lr": "1e-3", "budgett": {"optim.epochs": 1}}
    with pytest.raises(DeepShieldError, match="budgett"):
        integration.train_trial(context, out_dir=str(tmp_path))


def test_a_trial_logs_every_metric_a_selector_can_name_and_its_exported_epoch():
    from deepshield.integrations.mlrun import trial_results

    history = [
        {"epoch": 0, "val_auc": 0.9, "bench_auc": 0.6, "bench_fpr": 0.2, "synthetic_val_auc": 0.8, "lr": 1e-3},
        {"epoch": 1, "val_auc": 0.8, "bench_auc": 0.7, "bench_fpr": 0.1, "synthetic_val_auc": 0.85, "lr": 5e-4},
    ]
    # Only validation metrics were logged: max.bench_auc, accepted by hyper_param_task, had nothing to select.
    assert trial_results(history, "max.bench_auc") == {
        "val_auc": 0.9,
        "bench_auc": 0.7,
        "bench_fpr": 0.1,
        "synthetic_val_auc": 0.85,
        "epochs": 2,
        "best_epoch": 2,  # the epoch exported by bench_auc, not val_auc's
    }
    frozen = [{"epoch": 0, "synthetic_val_auc": 0.7}, {"epoch": 1, "synthetic_val_auc": 0.9}]
    assert trial_results(frozen, "max.synthetic_val_auc")["best_epoch"] == 2


def test_real_mlrun_hyper_param_run_selects_and_logs(workspace, tmp_path, monkeypatch):  # noqa: F811 - the imported fixture
    """`new_task().with_hyper_params(grid, selector="max.val_auc")` run by real MLRun, locally (no MLRun
    service): MLRun calls train_trial once per grid point, each trains with the project's trainer,
    and MLRun picks the iteration with the highest logged val_auc. Skipped where mlrun is not
    installed (the `mlrun` extra; `make test` installs only `test`).

    Without an MLRun API service, local runs keep results and the iterations table, but not
    artifacts: MLRun records them as store:// URIs that only the service resolves (so `run.outputs`
    raises), and here the handler logs none. Artifacts need `MLRUN_DBPATH` (docs/mlrun.md)."""
    mlrun = pytest.importorskip("mlrun")
    from deepshield.integrations.mlrun import hyper_param_task, train_trial
    from deepshield.training.checkpoint import load_checkpoint
    from deepshield.tuning.selector import VALIDATION_METRICS

    monkeypatch.delenv("MLRUN_DBPATH", raising=False)
    monkeypatch.chdir(tmp_path)  # MLRun writes its local run records under the working directory
    grid = {"optim.lr": [1e-3, 1e-2], "optim.batch_size": [4]}
    task = hyper_param_task(
        grid,
        selector="max.val_auc",
        params={
            "config": str(workspace / "train.yaml"),
            "budget": {"optim.epochs": 2},
            "out_dir": str(tmp_path / "trials"),
        },
    )
    run = mlrun.new_function(name="deepshield-trial", kind="local").run(
        task, handler=train_trial, local=True, artifact_path=str(tmp_path / "artifacts")
    )
    assert run.status.state == "completed"

    header, *rows = run.status.iterations
    table = [dict(zip(header, row)) for row in rows]
    assert sorted(r["param.optim.lr"] for r in table) == [1e-3, 1e-2] and all(r["state"] == "completed" for r in table)
    for row in table:  # every logged result is what the trainer recorded in the trial's history
        history = load_checkpoint(Path(row["output.run_dir"]) / "checkpoints" / "last.pt")["progress"]["history"]
        config = load_checkpoint(Path(row["output.run_dir"]) / "checkpoints" / "last.pt")["config"]
        assert (config["optim"]["lr"], config["optim"]["batch_size"], config["optim"]["epochs"]) == (
            row["param.optim.lr"],
            4,
            2,
        )
        assert row["output.epochs"] == len(history) == 2
        for metric, mode in VALIDATION_METRICS.items():
            best = (max if mode == "max" else min)(r[metric] for r in history)
            assert row[f"output.{metric}"] == pytest.approx(best), metric
        assert "output.train_loss" not in row

    winner = max(table, key=lambda r: r["output.val_auc"])
    assert run.output("best_iteration") == winner["iter"]
    assert run.output("val_auc") == pytest.approx(
        winner["output.val_auc"]
    )  # the run's results: the selected iteration's
    assert run.output("run_dir") == winner["output.run_dir"]


@pytest.mark.parametrize(
    ("select", "hint"),
    [
        ("max.val_auc", "is the validation split too small"),
        ("max.bench_auc", "does it give scored faces of both real and fake files"),
        ("max.bench_ffpp_face_auc", "does it give scored faces of both real and fake files"),
    ],
)
def test_a_trial_with_no_value_to_select_names_the_right_cause(monkeypatch, tmp_path, select, hint):
    # A benchmark metric with no finite value was blamed on the validation split, which does not give it.
    from deepshield.integrations import mlrun as integration
    from deepshield.tuning import objective

    def fake_training(config, **kwargs):
        return objective.TrainingOutcome([{"epoch": 0, "train_loss": 0.6, "val_auc": float("nan")}], None)

    monkeypatch.setattr(objective, "run_training", fake_training)
    config = tmp_path / "train.yaml"
    (tmp_path / "bench").mkdir()
    config.write_text(f"data:\n  benchmarks: [{tmp_path / 'bench'}]\nexport:\n  select: {select}\n")
    context = types.SimpleNamespace(parameters={}, uid="u", iteration=1, log_result=print)
    with pytest.raises(DeepShieldError) as caught:
        integration.train_trial(context, config=str(config), out_dir=str(tmp_path))
    assert hint in str(caught.value)
    assert ("validation split" in str(caught.value)) == (hint == "is the validation split too small")
