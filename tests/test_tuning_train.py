"""The search with the real trainer (tiny backbone, 32 px, a few astronaut-derived faces), MLflow
in a temporary SQLite store: nested runs, --train-best, resume of an interrupted trial from its
checkpoint, and the MLRun handler with a fake context."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepshield.cli.main import main
from deepshield.errors import DeepShieldError
from deepshield.training.checkpoint import BEST, load_checkpoint
from deepshield.training.config import load_config
from deepshield.training.trainer import Trainer
from deepshield.tuning.objective import run_training
from deepshield.tuning.study import SearchSettings, run_search
from deepshield.tuning.trials import MLFLOW_RUN_ID, RETRY_OF


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, astronaut, mlflow_store) -> Path:
    """Six real-face images (crops, a flip, darker/brighter copies of the astronaut photo), a tiny
    training config, one face-bank cache and one MLflow store for every test here."""
    root = tmp_path_factory.mktemp("tune")
    faces = root / "faces"
    faces.mkdir()
    image = astronaut.astype(np.int16)
    variants = [
        image[20:300, 100:360],
        image[40:260, 130:330],
        image[0:320, 60:380],
        image[30:280, 110:350][:, ::-1],
        image[20:300, 100:360] * 0.7,
        image[10:290, 90:350] + 40,
    ]
    for index, variant in enumerate(variants):
        Image.fromarray(np.clip(variant, 0, 255).astype(np.uint8)).save(faces / f"face_{index}.png")
    (root / "train.yaml").write_text(
        f"""
seed: 0
threads: 1
data:
  real_dirs: ["{faces}"]
  val_fraction: 0.34
  cache_dir: "{root / "cache"}"
  loader_workers: 0
  bank_workers: 1
model: {{backbone: tiny, input_size: 32, pretrained: false}}
optim: {{epochs: 2, samples_per_epoch: 16, batch_size: 8, checkpoint_every_steps: 1}}
tracking: {{enabled: true, uri: "sqlite:///{mlflow_store(root / "mlruns.db")}", experiment: tune-test}}
"""
    )
    (root / "space.yaml").write_text("optim.lr: [1.0e-3, 1.0e-2]\n")
    return root


def client(workspace: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlruns.db'}")


def runs_by_parent(workspace: Path, parent_id: str):
    mlflow = client(workspace)
    experiment = mlflow.get_experiment_by_name("tune-test").experiment_id
    return mlflow.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_cli_search_nested_runs_and_train_best(workspace, capsys):
    out = workspace / "cli"
    code = main(["tune", "--config", str(workspace / "train.yaml"), "--space", str(workspace / "space.yaml"), "--out", str(out),
                 "--trial-set", "optim.epochs=1", "--pruner", "none", "--select", "min.val_loss", "--train-best",
                 "--set", "model.dropout=0.3"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "best: trial" in printed and printed.count(f"written to {out / 'best' / 'bundle'}") == 1

    mlflow = client(workspace)
    experiment = mlflow.get_experiment_by_name("tune-test").experiment_id
    (parent,) = mlflow.search_runs(
        [experiment], filter_string="tags.`deepshield.role` = 'search' and tags.`optuna.study` = 'space'"
    )
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 2
    artifacts = {a.path for a in mlflow.list_artifacts(parent.info.run_id)} | {
        a.path for a in mlflow.list_artifacts(parent.info.run_id, "plots")
    }
    assert {
        "results.csv",
        "best.yaml",
        "report.md",
        "plots/optimization_history.png",
        "plots/parallel_coordinates.png",
        "plots/metric_vs_params.png",
    } <= artifacts

    children = runs_by_parent(workspace, parent.info.run_id)
    trials = [r for r in children if r.data.tags.get("deepshield.role") == "trial"]
    best = [r for r in children if r.data.tags.get("deepshield.role") == "best"]
    assert len(trials) == 2 and len(best) == 1
    assert {r.data.params["optim.lr"] for r in trials} == {"0.001", "0.01"}
    assert all(r.data.tags["optuna.state"] == "COMPLETE" and r.data.params["optim.epochs"] == "1" for r in trials)
    assert all(len(mlflow.get_metric_history(r.info.run_id, "val_auc")) == 1 for r in trials)  # the per-trial budget
    assert len(mlflow.get_metric_history(best[0].info.run_id, "val_auc")) == 2  # --train-best: the full budget
    assert (out / "best" / "bundle" / "model.onnx").exists()
    # the bundle is the full-budget epoch with the lowest val_loss (--select), not the highest val_auc
    card = json.loads((out / "best" / "bundle" / "model_card.json").read_text())
    losses = [m.value for m in sorted(mlflow.get_metric_history(best[0].info.run_id, "val_loss"), key=lambda m: m.step)]
    assert card["training"]["config"]["export"]["select"] == "min.val_loss"
    # The command reruns the recipe (the search's --set was missing) and names no folder of this machine.
    assert card["training"]["config"]["model"]["dropout"] == 0.3
    assert card["training"]["command"] == (
        "deepshield train --config train.yaml --set model.dropout=0.3 --params best.yaml --set export.select=min.val_loss"
    )
    assert card["training"]["epochs"] == losses.index(min(losses)) + 1
    assert sorted(p.name for p in (out / "trials" / "space" / "trial_0000" / "checkpoints").iterdir()) == [
        "best.pt"
    ]  # finished: no resume needed

    config = load_config(workspace / "train.yaml", params=out / "best.yaml")  # what `deepshield train --params` does
    assert config.optim.lr == float(best[0].data.params["optim.lr"])
    assert config.optim.epochs == 2
    assert parent.data.tags["best.trial"] in {r.data.tags["optuna.trial_number"] for r in trials}
    # The best trial's own run says so (only the parent's best.trial named it)
    assert [r.data.tags["optuna.trial_number"] for r in trials if r.data.tags.get("best") == "true"] == [
        parent.data.tags["best.trial"]
    ]


def test_the_best_tag_moves_to_a_later_best_trials_run(tmp_path, mlflow_store):
    from deepshield.tracking.tracker import MlflowTracker
    from deepshield.tuning.parent_run import mark_best_trial

    uri = f"sqlite:///{mlflow_store(tmp_path / 'mlruns.db')}"
    parent = MlflowTracker(uri, "tags", run_name="search")
    first, second = (MlflowTracker(uri, "tags", run_name=n, parent_run_id=parent.run_id) for n in ("t0", "t1"))
    mark_best_trial(parent, first.run_id)
    mark_best_trial(parent, second.run_id)  # a resumed search's new best
    tagged = [t.run_id for t in (parent, first, second) if parent.client.get_run(t.run_id).data.tags.get("best")]
    assert tagged == [second.run_id]


def test_train_best_resumes_a_run_that_only_runs_differently_and_restarts_another_recipe(workspace, tmp_path):
    # Any difference in the checkpoint's configuration (threads, device, tracking, which `train --resume`
    # allows) threw the best parameters' resumable run away without a word.
    from types import SimpleNamespace

    import deepshield.training.trainer as trainer_module
    from deepshield.training.checkpoint import LAST, save_checkpoint
    from deepshield.tuning.study import train_best

    best_yaml = tmp_path / "best.yaml"
    best_yaml.write_text("optim.lr: 0.001\n")
    settings = SimpleNamespace(
        config=workspace / "train.yaml", overrides=[], tracking_uri=None, tracking=None, progress=True
    )
    plan = SimpleNamespace(settings=settings, out_dir=tmp_path, selector="max.val_auc", name="space")
    said: list[str] = []
    resumed: list[bool] = []

    class Recorded:
        def __init__(self, config, **kwargs):
            self.config = config

        def run(self, resume=False):
            resumed.append(resume)
            return SimpleNamespace(bundle_dir=None)

    last = tmp_path / "best" / "checkpoints" / LAST
    config = load_config(
        workspace / "train.yaml", [f"run_dir={tmp_path / 'best'}", "export.select=max.val_auc"], best_yaml
    )
    for changed, resumes in ((("threads", 2),), True), ((("seed", 5),), False):
        started = config.model_dump(mode="json") | dict(changed)
        save_checkpoint({"config": started}, last)
        original = trainer_module.Trainer
        trainer_module.Trainer = Recorded
        try:
            train_best(plan, best_yaml, None, said.append)
        finally:
            trainer_module.Trainer = original
        assert resumed[-1] is resumes and last.exists() is resumes
    assert "had other settings (seed: 5 -> 0): starting again" in said[-2]


def test_trainer_keeps_the_epoch_export_select_picks(workspace, tmp_path, monkeypatch):
    """best.pt (what the bundle is exported from) is the best epoch by export.select: val_auc by default."""
    from deepshield.training import trainer as trainer_module

    real = trainer_module.detection_metrics
    for select, kept in (("min.val_eer", 0), ("max.val_auc", 1)):
        scripted = iter(
            [(0.6, 0.10), (0.9, 0.40), (0.7, 0.30)]
        )  # (auc, eer) of epochs 0, 1, 2: the two selectors disagree

        def metrics(labels, probabilities, scripted=scripted):
            auc, eer = next(scripted)
            return real(labels, probabilities).model_copy(update={"auc": auc, "eer": eer})

        monkeypatch.setattr(trainer_module, "detection_metrics", metrics)
        overrides = [
            f"run_dir={tmp_path / select}",
            "optim.epochs=3",
            "tracking.enabled=false",
            f"export.select={select}",
        ]
        result = Trainer(load_config(workspace / "train.yaml", overrides), export_bundle=False).run()
        assert (result.progress.best_epoch, load_checkpoint(result.run_dir / "checkpoints" / BEST)["epoch"]) == (
            kept,
            kept,
        ), select
    with pytest.raises(DeepShieldError, match="training metric"):
        Trainer(load_config(workspace / "train.yaml", ["export.select=min.train_loss"]))


def test_interrupted_trial_resumes_from_its_checkpoint(workspace):
    state = {"interrupt": True}

    def train_once_interrupted(config, *, epoch_callback, **kwargs):
        def callback(progress):
            epoch_callback(progress)
            if state["interrupt"] and progress.epoch == 1:
                state["interrupt"] = False
                raise KeyboardInterrupt  # Ctrl-C after the first epoch's checkpoint

        return run_training(config, epoch_callback=callback, **kwargs)

    settings = SearchSettings(
        space=workspace / "space.yaml",
        config=workspace / "train.yaml",
        out=workspace / "resume",
        study="resume",
        pruner="none",
        trials=1,
        sampler="grid",
    )
    with pytest.raises(KeyboardInterrupt):
        run_search(settings, train_fn=train_once_interrupted, echo=lambda _: None)
    result = run_search(settings, train_fn=train_once_interrupted, echo=lambda _: None)

    import optuna

    trials = optuna.load_study(study_name="resume", storage=result.storage).get_trials()
    lost, retry = trials
    assert lost.state.name == "FAIL" and retry.state.name == "COMPLETE" and retry.user_attrs[RETRY_OF] == lost.number
    assert retry.user_attrs[MLFLOW_RUN_ID] == lost.user_attrs[MLFLOW_RUN_ID]  # the same MLflow run, continued
    log = (Path(retry.user_attrs["run_dir"]) / "train.log").read_text()
    assert log.count("epoch 1: train_loss") == 1 and log.count("epoch 2: train_loss") == 1  # epoch 1 not trained again
    mlflow = client(workspace)
    run = mlflow.get_run(retry.user_attrs[MLFLOW_RUN_ID])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "val_auc")] == [1, 2]
    assert sorted(retry.intermediate_values) == [1, 2]


class FakeMLRunContext:
    """What the handler uses of mlrun.execution.MLClientCtx."""

    def __init__(self, parameters):
        self.parameters = parameters
        self.uid, self.iteration = "abc123", 3
        self.results: dict = {}

    def log_result(self, key, value):
        self.results[key] = value


def test_mlrun_handler_trains_one_trial_and_logs_results(workspace, tmp_path):
    from deepshield.integrations.mlrun import train_trial

    context = FakeMLRunContext(
        {"optim.lr": 0.01, "config": "ignored.yaml"}
    )  # older MLRun: hyperparameters only in context.parameters
    train_trial(
        context,
        config=str(workspace / "train.yaml"),
        budget={"optim.epochs": 1},
        out_dir=str(tmp_path),
        **{"optim.batch_size": 4},
    )
    results = context.results
    assert {"val_auc", "val_loss", "val_eer", "val_ap", "epochs", "best_epoch", "run_dir"} <= set(results)
    assert "train_loss" not in results and results["epochs"] == 1
    assert 0 <= results["val_auc"] <= 1
    run_dir = Path(results["run_dir"])
    assert run_dir == tmp_path / "abc123-0003" and (run_dir / "checkpoints" / "best.pt").exists()
    config = load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]
    assert (config["optim"]["lr"], config["optim"]["batch_size"], config["tracking"]["enabled"]) == (0.01, 4, False)
