"""The MLRun integration without an MLRun service (mlrun is not installed here, nor needed)."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from deepshield.errors import DeepShieldError


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
    context = types.SimpleNamespace(parameters={"optim.lr": "1e-3"}, uid="u", iteration=1, log_result=lambda k, v: logged.append((k, v)))
    integration.train_trial(context, budget={"optim.epochs": 2}, out_dir=str(tmp_path), seed=5, **{"model.dropout": 0.1})
    config = seen["config"]
    assert (config.optim.lr, config.model.dropout, config.optim.epochs, config.seed) == (1e-3, 0.1, 2, 5)
    assert dict(logged) == {"val_auc": 0.8, "val_loss": 0.5, "val_eer": 0.25, "epochs": 2, "best_epoch": 2, "run_dir": str(tmp_path / "u-0001")}
    with pytest.raises(DeepShieldError, match="not a training-config key"):
        integration.train_trial(context, **{"optim.lrate": 1.0})
