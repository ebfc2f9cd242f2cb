"""A tiny real training run: tracked, checkpointed, resumable, exported to a loadable bundle."""

import logging
import multiprocessing
import os
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from deepshield.errors import EXIT_USAGE, DeepShieldError, exit_status
from deepshield.inference.runtime import OnnxClassifier
from deepshield.training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from deepshield.training.config import TrainConfig, load_config
from deepshield.training.dataset import TrainingSamples
from deepshield.training.export import export_checkpoint
from deepshield.training.trainer import Trainer, _lr_lambda, content_digest, training_data_line
from tests.conftest import file_size_limit, python_ctrl_c
from tests.face_data import write_real_faces


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    return write_real_faces(tmp_path_factory.mktemp("faces") / "real", 8)


def tiny_config(real_dir: Path, run_dir: Path, db: Path, cache: Path, **overrides) -> TrainConfig:
    return load_config(None, tiny_settings(real_dir, run_dir, db, cache, **overrides))


def tiny_settings(real_dir: Path, run_dir: Path, db: Path, cache: Path, **overrides) -> list[str]:
    return [
        f"run_dir={run_dir}",
        f"data.real_dirs={[str(real_dir)]}".replace("'", '"'),
        "data.group_pattern=^(person\\d)_",
        "data.val_fraction=0.25",
        f"data.cache_dir={cache}",
        "data.benchmarks=[]",
        "export.select=max.val_auc",
        "export.threshold_fpr=null",
        "data.loader_workers=0",
        "data.bank_workers=1",
        "model.backbone=tiny",
        "model.input_size=48",
        "model.pretrained=false",
        "optim.epochs=2",
        "optim.samples_per_epoch=16",
        "optim.batch_size=4",
        "optim.checkpoint_every_steps=2",
        f"tracking.uri=sqlite:///{db}",
        "tracking.experiment=test",
        "threads=1",
    ] + [f"{k}={v}" for k, v in overrides.items()]


def test_tiny_run_is_tracked_checkpointed_and_exported(real_dir, tmp_path, mlflow_store):
    config = tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache")
    result = Trainer(config, command="pytest").run()
    assert result.progress.global_step == 2 * (16 // 4)
    assert [h["epoch"] for h in result.progress.history] == [0, 1]
    assert all(0.0 <= h["val_auc"] <= 1.0 and h["images_per_s"] > 0 for h in result.progress.history)
    # Each epoch's rate is its last step's (steps 3 and 7 of the cosine), not the next one's: the last was 0.
    factor = _lr_lambda(8, int(8 * config.optim.warmup_fraction))
    assert [h["lr"] for h in result.progress.history] == pytest.approx([config.optim.lr * factor(s) for s in (3, 7)])
    assert result.progress.history[-1]["lr"] > 0
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert checkpoints == ["best.pt", "epoch_001.pt", "epoch_002.pt", "last.pt"]
    for plot in ("roc.png", "pr.png", "confusion.png", "hardest.png", "loss.png"):
        assert (tmp_path / "run" / "plots" / plot).stat().st_size > 1000

    with pytest.raises(DeepShieldError, match=r"last.pt is a resume checkpoint .* export the run's best.pt"):
        export_checkpoint(tmp_path / "run" / "checkpoints" / LAST, tmp_path / "not-a-bundle")
    assert not (tmp_path / "not-a-bundle").exists()
    # Any epoch exports as the chosen one does, its card saying it was named rather than chosen.
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    chosen = export_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", tmp_path / "chosen")
    assert chosen.training.selected_by == "max.val_auc" and chosen.training.epochs == best["epoch"] + 1
    for epoch in (0, 1):
        named = export_checkpoint(tmp_path / "run" / "checkpoints" / f"epoch_00{epoch + 1}.pt", tmp_path / f"e{epoch}")
        assert named.training.epochs == epoch + 1
        assert named.version.endswith(f".ep{epoch + 1}")  # two epochs of one run were one name and version
        assert named.training.selected_by == f"named at export (epoch {epoch + 1})"
        assert named.metrics["val_auc"] == pytest.approx(result.progress.history[epoch]["val_auc"], abs=1e-4)
        if epoch == best["epoch"]:
            assert named.calibration == chosen.calibration

    classifier = OnnxClassifier(result.bundle_dir)
    card = classifier.card
    assert card.input_size == 48 and card.crop_policy.size == 48 and card.training.command == "pytest"
    assert card.calibration.temperature > 0 and 0 <= card.calibration.threshold <= 1
    band = card.calibration.inconclusive  # fitted on the validation split by export
    assert (
        band is not None
        and band.low <= card.calibration.threshold <= band.high
        and "balanced accuracy" in band.fitted_on
    )
    # the run's bundle is its best epoch's (max.val_auc), with that epoch's figure
    best_auc = max(h["val_auc"] for h in result.progress.history)
    assert card.metrics["val_auc"] == pytest.approx(best_auc, abs=1e-4)
    assert card.metrics["val_auc"] == pytest.approx(result.progress.history[best["epoch"]]["val_auc"], abs=1e-4)
    # The packaged configuration's licence names its own data (UTKFace, ...), not this run's folder.
    assert card.license.startswith(f"Weights: trained on the data of {real_dir}, whose terms apply to them")
    assert "research-use" not in card.intended_use and f"trained on the data of {real_dir} (" in card.intended_use
    scores = classifier.score(np.zeros((3, 48, 48, 3), np.uint8))
    assert scores.logits.shape == (3,) and scores.cams.shape[0] == 3

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}")
    run = client.get_run(result.progress.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == card.name == "run"  # MLflow's run is named as its bundle (a random name)
    assert run.data.params["optim.lr"] == str(config.optim.lr) and run.data.params["model.backbone"] == "tiny"
    # The data it read, by content (the folders' names alone were logged, whatever their files held).
    data = Trainer(config)._build_data()
    assert run.data.params["digests.train_faces"] == content_digest(data.bank.images, data.fake_pool)
    assert re.fullmatch(r"[0-9a-f]{16}", run.data.params["digests.val_samples"])
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in history] == [1, 2]  # epochs as printed and as the card counts them
    (final,) = client.get_metric_history(run.info.run_id, "final_val_auc")
    assert final.step == card.training.epochs  # the exported epoch's step (it was logged at step 0)
    for metric in (
        "train_loss",
        "val_loss",
        "val_ap",
        "val_eer",
        "val_log_loss",
        "val_balanced_accuracy",
        "lr",
        "images_per_s",
    ):
        assert metric in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "bundle"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "bundle")} == {
        "bundle/model.onnx",
        "bundle/model_card.json",
    }


def test_a_checkpoint_that_cannot_be_written_keeps_the_one_before_and_says_so_in_one_line(tmp_path, capsys):
    # A full disk during a checkpoint: torch's RuntimeError traceback ("unexpected pos"), last.tmp left beside it.
    path = tmp_path / LAST
    save_checkpoint({"weights": torch.zeros(4)}, path)
    before = path.read_bytes()
    with file_size_limit(64 * 1024):
        status = exit_status(lambda: save_checkpoint({"weights": torch.zeros(100_000)}, path), "deepshield")
    assert status == EXIT_USAGE
    assert capsys.readouterr().err == f"deepshield: error: {path}: File too large\n"
    assert path.read_bytes() == before and os.listdir(tmp_path) == [LAST]


def test_a_checkpoint_written_removes_the_temporary_files_killed_writers_left(tmp_path):
    # Each training killed while it wrote a checkpoint (SIGKILL, the OOM killer) left last.pt.<its pid>.part for
    # good, where the one fixed last.tmp used before was written over by the next.
    from tests.conftest import dead_pid

    gone = dead_pid()
    left, recent, running = (tmp_path / f"{LAST}.{pid}.part" for pid in (gone, gone + 100_000, os.getppid()))
    for path in (left, recent, running):
        path.write_bytes(b"half a checkpoint")
    old = os.path.getmtime(left) - 3600
    os.utime(left, (old, old))
    os.utime(running, (old, old))  # still being written, perhaps: its process runs
    os.utime(recent, None)  # touched a moment ago: perhaps written on another machine
    save_checkpoint({"weights": torch.zeros(4)}, tmp_path / LAST)
    assert sorted(os.listdir(tmp_path)) == sorted([LAST, recent.name, running.name])


def test_cam_pooling_temperature_is_trained_exported_and_served(real_dir, tmp_path, mlflow_store):
    config = tiny_config(
        real_dir,
        tmp_path / "run",
        mlflow_store(tmp_path / "mlruns.db"),
        tmp_path / "cache",
        **{"optim.epochs": 1, "model.cam_pooling_temperature": 0.5},
    )
    classifier = OnnxClassifier(Trainer(config).run().bundle_dir)
    assert "t = 0.5" in classifier.card.outputs["cam"]
    assert classifier.card.training.config["model"]["cam_pooling_temperature"] == 0.5
    scores = classifier.score(np.random.default_rng(0).integers(0, 256, (3, 48, 48, 3), dtype=np.uint8))
    cams = scores.cams.reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(scores.logits, 0.5 * np.log(np.exp(cams / 0.5).mean(axis=1)), rtol=1e-4, atol=1e-5)


def test_a_flip_averaging_bundle_is_calibrated_on_the_scores_it_serves(real_dir, tmp_path, mlflow_store):
    # export.test_time_flip: the bundle averages each face with its mirror, and its calibration, threshold
    # and card figures were fitted on scores without (the largest difference on a tiny run: 1.2e-3 logit).
    config = tiny_config(
        real_dir,
        tmp_path / "run",
        mlflow_store(tmp_path / "m.db"),
        tmp_path / "cache",
        **{"export.test_time_flip": "true"},
    )
    result = Trainer(config).run()
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    data = Trainer(config)._build_data()
    served = OnnxClassifier(result.bundle_dir)
    assert served.card.test_time_flip
    np.testing.assert_allclose(served.score(data.val_images).logits, checkpoint["val_logits"], atol=1e-5)


def test_the_heap_is_kept_only_once_the_data_is_loaded(real_dir, tmp_path, monkeypatch, mlflow_store):
    """The allocator setting comes after the face bank is loaded: taken before, the bank's loading copies
    stayed in the never-trimmed heap (a 288 px run was killed for memory)."""
    import deepshield.training.trainer as trainer_module

    calls: list[str] = []
    build_data = Trainer._build_data

    def recorded_build(self, *args, **kwargs):
        calls.append("data")
        return build_data(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_build_data", recorded_build)
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append("keep heap") or True)
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "mlruns.db"), tmp_path / "cache", max_steps=1
    )
    Trainer(config).run()
    assert calls == ["data", "keep heap"]


def test_a_loader_worker_is_forked_once_before_the_heap_is_kept_and_changes_nothing(
    real_dir, tmp_path, monkeypatch, mlflow_store
):
    """A worker forked at each epoch kept a copy-on-write view of every page the trainer rewrote
    (19-20 GB together at 288 px): the run's one worker is forked before the heap is kept, serves
    every epoch, and its samples train exactly the model the training process makes by itself. It makes
    them on one OpenCV thread (parallelism comes from the workers: 14 of them on a GPU machine)."""
    from torch.utils.data import dataloader

    import deepshield.training.trainer as trainer_module

    calls: list[str] = []
    start_workers = dataloader._MultiProcessingDataLoaderIter.__init__

    def recorded_start(self, loader):
        calls.append("fork workers")
        start_workers(self, loader)

    monkeypatch.setattr(dataloader._MultiProcessingDataLoaderIter, "__init__", recorded_start)
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append("keep heap") or True)
    made_by = tmp_path / "made-by"
    made_by.mkdir()
    make_sample = TrainingSamples.__getitem__

    def recorded_sample(self, item):
        (made_by / f"{os.getpid()}-{item[0]}-{cv2.getNumThreads()}").touch()  # written from the worker
        return make_sample(self, item)

    monkeypatch.setattr(TrainingSamples, "__getitem__", recorded_sample)
    cache = tmp_path / "cache"
    workers = {"data.loader_workers": 1}
    before = set(multiprocessing.active_children())
    threads_before = cv2.getNumThreads()
    cv2.setNumThreads(4)  # what a worker would inherit from a process that never limited OpenCV
    try:
        Trainer(tiny_config(real_dir, tmp_path / "worker", mlflow_store(tmp_path / "a.db"), cache, **workers)).run()
    finally:
        cv2.setNumThreads(threads_before)
    assert calls == ["fork workers", "keep heap"]
    assert set(multiprocessing.active_children()) <= before  # stopped when the run ended
    pids, epochs, cv2_threads = zip(*(path.name.split("-") for path in made_by.iterdir()))
    assert len(set(pids)) == 1 and int(pids[0]) != os.getpid()
    assert sorted(set(epochs)) == ["0", "1"]
    assert set(cv2_threads) == {"1"}

    Trainer(tiny_config(real_dir, tmp_path / "alone", mlflow_store(tmp_path / "b.db"), cache)).run()
    a = load_checkpoint(tmp_path / "worker" / "checkpoints" / LAST)["model"]
    b = load_checkpoint(tmp_path / "alone" / "checkpoints" / LAST)["model"]
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), name


def test_a_failed_run_stops_its_loader_worker(real_dir, tmp_path, mlflow_store):
    """The raised error's traceback keeps the run's frames, and so its loader, alive (a search goes on
    to its next trial in the same process): the worker is stopped all the same."""

    def fail(progress):
        raise RuntimeError("trial failed")

    before = set(multiprocessing.active_children())
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), tmp_path / "cache", **{"data.loader_workers": 1}
    )
    with pytest.raises(RuntimeError, match="trial failed") as raised:
        Trainer(config, epoch_callback=fail).run()
    assert raised.traceback  # still held here
    assert set(multiprocessing.active_children()) <= before


def test_interrupted_run_resumes_to_the_same_model(real_dir, tmp_path, mlflow_store):
    cache = tmp_path / "cache"
    straight = Trainer(tiny_config(real_dir, tmp_path / "straight", mlflow_store(tmp_path / "a.db"), cache)).run()

    interrupted = Trainer(
        tiny_config(real_dir, tmp_path / "resumed", mlflow_store(tmp_path / "b.db"), cache, max_steps=3)
    ).run()
    assert interrupted.stopped_early and interrupted.bundle_dir is None
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / LAST)["progress"]["global_step"] == 3
    resumed = Trainer(tiny_config(real_dir, tmp_path / "resumed", mlflow_store(tmp_path / "b.db"), cache)).run(
        resume=True
    )

    assert resumed.progress.global_step == straight.progress.global_step == 8
    assert resumed.progress.run_id == interrupted.progress.run_id  # the same MLflow run, continued
    assert_resumed_as_straight(tmp_path, resumed, straight)


def test_a_full_disk_mid_run_marks_its_mlflow_run_killed_and_the_run_resumes(
    real_dir, tmp_path, monkeypatch, mlflow_store
):
    # The checkpoint a failed step saves as it stops failed too on a full disk, and the MLflow run was never
    # ended: RUNNING for good unless resumed.
    import errno

    import deepshield.training.trainer as trainer_module

    cache, db = tmp_path / "cache", mlflow_store(tmp_path / "a.db")
    straight = Trainer(tiny_config(real_dir, tmp_path / "straight", mlflow_store(tmp_path / "s.db"), cache)).run()
    written = []

    def fills_the_disk(state: dict, path: Path) -> None:
        if len(written) == 2:  # the run's first checkpoint and its step 2's fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        save_checkpoint(state, path)
        written.append(path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", fills_the_disk)
    with pytest.raises(OSError, match="No space left on device"):
        Trainer(tiny_config(real_dir, tmp_path / "resumed", db, cache)).run()
    progress = load_checkpoint(tmp_path / "resumed" / "checkpoints" / LAST)["progress"]
    assert progress["global_step"] == 2
    assert MlflowClient(tracking_uri=f"sqlite:///{db}").get_run(progress["run_id"]).info.status == "KILLED"

    monkeypatch.undo()  # room again
    resumed = Trainer(tiny_config(real_dir, tmp_path / "resumed", db, cache)).run(resume=True)
    assert resumed.progress.run_id == progress["run_id"] and resumed.progress.global_step == 8
    assert_resumed_as_straight(tmp_path, resumed, straight)


def test_a_run_that_fails_before_its_epochs_or_at_its_bundle_is_not_left_running(
    real_dir, tmp_path, monkeypatch, mlflow_store
):
    # A full disk at the run's first checkpoint, or at its bundle, left its MLflow run RUNNING for good.
    import errno

    import deepshield.training.trainer as trainer_module

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    db = mlflow_store(tmp_path / "a.db")
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    for failing, status in (("save_checkpoint", "KILLED"), ("export_checkpoint", "FAILED")):
        with monkeypatch.context() as patch:
            patch.setattr(trainer_module, failing, full_disk)
            with pytest.raises(OSError, match="No space left on device"):
                Trainer(tiny_config(real_dir, tmp_path / failing, db, tmp_path / "cache")).run()
        (run,) = client.search_runs(
            [client.get_experiment_by_name("test").experiment_id], f"attributes.run_name = '{failing}'"
        )
        assert run.info.status == status


def test_a_resume_stops_at_max_steps_and_one_without_tracking_keeps_the_runs_record(real_dir, tmp_path, mlflow_store):
    cache = tmp_path / "cache"
    first = Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), cache, max_steps=3)).run()
    # Resumed with the same max_steps: it took one step past it each time.
    again = Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), cache, max_steps=3)).run(
        resume=True
    )
    assert again.stopped_early and again.progress.global_step == 3
    # A resume without tracking erased the run's id: the next tracked resume opened a second MLflow run.
    untracked = tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), cache, max_steps=5)
    untracked = untracked.model_copy(update={"tracking": untracked.tracking.model_copy(update={"enabled": False})})
    Trainer(untracked).run(resume=True)
    last = Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), cache)).run(resume=True)
    assert last.progress.run_id == first.progress.run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'a.db'}")
    assert len(client.search_runs([client.get_experiment_by_name("test").experiment_id])) == 1


def test_a_resumed_run_takes_back_the_gpus_random_state(real_dir, tmp_path, monkeypatch, mlflow_store):
    # On a GPU, dropout draws from the GPU's own generator, which checkpoints did not keep: a resumed GPU
    # run's masks restarted from the seed's. (Stood in for here: this machine has no GPU.)
    states, restored = [torch.tensor([7], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    cache = tmp_path / "cache"
    Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), cache, max_steps=3)).run()
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / LAST)["cuda_rng"][0].tolist() == [7]
    Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), cache)).run(resume=True)
    assert [state[0].tolist() for state in restored] == [[7]]


def assert_resumed_as_straight(tmp_path: Path, resumed, straight) -> None:
    """The run in tmp_path/resumed, stopped and resumed, ended as the uninterrupted one in tmp_path/straight."""
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / LAST)["model"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / LAST)["model"]
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), name
    assert [h["val_auc"] for h in resumed.progress.history] == pytest.approx(
        [h["val_auc"] for h in straight.progress.history]
    )
    # The epoch it stopped in is recorded whole: its loss over all its steps, before the stop and after.
    assert [h["train_loss"] for h in resumed.progress.history] == pytest.approx(
        [h["train_loss"] for h in straight.progress.history]
    )


def test_ctrl_c_in_the_middle_of_a_step_resumes_to_the_same_model(real_dir, tmp_path, monkeypatch, mlflow_store):
    import os
    import signal

    from deepshield.training.step import Step

    cache = tmp_path / "cache"
    straight = Trainer(tiny_config(real_dir, tmp_path / "straight", mlflow_store(tmp_path / "a.db"), cache)).run()
    whole = Step.__call__
    calls = []

    def interrupted_after_the_update(self, batch):
        loss = whole(self, batch)  # the weights have moved: Ctrl-C lands before the step is counted
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(Step, "__call__", interrupted_after_the_update)
    with python_ctrl_c(), pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(real_dir, tmp_path / "resumed", mlflow_store(tmp_path / "b.db"), cache)).run()
    monkeypatch.setattr(Step, "__call__", whole)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / LAST)["progress"]["global_step"] == 3
    resumed = Trainer(tiny_config(real_dir, tmp_path / "resumed", mlflow_store(tmp_path / "b.db"), cache)).run(
        resume=True
    )
    assert_resumed_as_straight(tmp_path, resumed, straight)


def test_train_says_its_data_where_an_interrupted_run_is_kept_and_that_it_resumes(
    real_dir, tmp_path, monkeypatch, capsys, mlflow_store
):
    # A fresh run printed nothing before its first bar, a stopped one only "deepshield: interrupted", and a
    # resumed one's bar started at 0 with no word that it went on from a checkpoint.
    import shlex
    import signal
    import sys

    from deepshield.cli.main import main
    from deepshield.errors import EXIT_INTERRUPTED
    from deepshield.training.step import Step

    settings = tiny_settings(real_dir, tmp_path / "run", mlflow_store(tmp_path / "i.db"), tmp_path / "cache")
    argv = ["train", *(word for setting in settings for word in ("--set", setting))]
    monkeypatch.setattr(sys, "argv", ["deepshield", *argv])  # the command train records
    whole, calls = Step.__call__, []

    def interrupted_at_the_third(self, batch):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return whole(self, batch)

    monkeypatch.setattr(Step, "__call__", interrupted_at_the_third)
    with python_ctrl_c():
        assert main(argv) == EXIT_INTERRUPTED
    out, err = capsys.readouterr()
    assert re.search(r"^training data: \d+ real faces, \d+ validation samples, 0 benchmarks$", out, re.M)
    last = tmp_path / "run" / "checkpoints" / LAST
    command = shlex.join(["deepshield", *argv])
    assert f"deepshield train: the run is kept in {last}; resume it with: {command} --resume\n" in err
    monkeypatch.setattr(Step, "__call__", whole)
    assert main([*argv, "--resume"]) == 0
    assert f"resuming {tmp_path / 'run'} at step 3/8 (epoch 1/2)\n" in capsys.readouterr().out


SIGTERMED_TRAINING = """
import os, signal, sys
from deepshield.cli.main import main
from deepshield.training.step import Step

whole, calls = Step.__call__, []


def terminated_at_the_third(self, batch):
    loss = whole(self, batch)
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)  # as `timeout`, `docker stop` or a scheduler stops a job
    return loss


Step.__call__ = terminated_at_the_third
sys.exit(main(["train", *(word for setting in sys.argv[1:] for word in ("--set", setting))]))
"""


def test_sigterm_stops_training_as_ctrl_c_does(real_dir, tmp_path, mlflow_store):
    # SIGTERM killed `train` outright: the steps since the last checkpoint lost, its MLflow run left RUNNING.
    import subprocess
    import sys

    settings = tiny_settings(real_dir, tmp_path / "run", mlflow_store(tmp_path / "t.db"), tmp_path / "cache")
    settings.append("optim.checkpoint_every_steps=50")  # no checkpoint but the one the stop writes
    ran = subprocess.run([sys.executable, "-c", SIGTERMED_TRAINING, *settings], capture_output=True, timeout=300)
    assert ran.returncode == 130, ran.stderr[-2000:]
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / LAST)
    assert state["progress"]["global_step"] >= 2
    (run,) = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 't.db'}").search_runs(
        [MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 't.db'}").get_experiment_by_name("test").experiment_id]
    )
    assert run.info.status == "KILLED"


KILLED_AT_ITS_FIRST_STEP = """
import os, sys
from deepshield.cli.main import main
from deepshield.training.step import Step

Step.__call__ = lambda self, batch: os._exit(9)  # as kill -9: no handler runs
sys.exit(main(["train", *(word for setting in sys.argv[1:] for word in ("--set", setting))]))
"""


def test_a_run_killed_before_its_first_checkpoint_resumes_its_own_mlflow_run(real_dir, tmp_path, mlflow_store):
    # Killed before its first checkpoint, a run was started afresh on resume: its MLflow run stayed RUNNING
    # for good beside a second one (every repeat added another).
    import subprocess
    import sys

    db = mlflow_store(tmp_path / "k.db")
    settings = tiny_settings(real_dir, tmp_path / "run", db, tmp_path / "cache")
    ran = subprocess.run([sys.executable, "-c", KILLED_AT_ITS_FIRST_STEP, *settings], capture_output=True, timeout=300)
    assert ran.returncode == 9, ran.stderr[-2000:]
    resumed = Trainer(tiny_config(real_dir, tmp_path / "run", db, tmp_path / "cache")).run(resume=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_id == resumed.progress.run_id


def test_a_resumed_run_logs_no_step_twice(real_dir, tmp_path, mlflow_store):
    # An epoch validated again on resume (stopped between its metrics and its checkpoint), or a finished run
    # resumed, logged its figures a second time at the same step: val_auc [(1, a), (2, b), (2, b), ...].
    from deepshield.tracking.tracker import MlflowTracker

    db = mlflow_store(tmp_path / "t.db")
    first = MlflowTracker(f"sqlite:///{db}", "test")
    first.log_metrics({"val_auc": 0.5}, step=1)
    resumed = MlflowTracker(f"sqlite:///{db}", "test", run_id=first.run_id)
    resumed.log_metrics({"val_auc": 0.5, "images_per_s": 3.0}, step=1)
    resumed.log_metrics({"val_auc": 0.75}, step=2)
    resumed.log_metrics({"val_auc": 0.75}, step=2)
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    assert sorted(m.step for m in client.get_metric_history(first.run_id, "val_auc")) == [1, 2]
    assert [m.step for m in client.get_metric_history(first.run_id, "images_per_s")] == [1]
    done = Trainer(tiny_config(real_dir, tmp_path / "run", db, tmp_path / "cache")).run()
    Trainer(tiny_config(real_dir, tmp_path / "run", db, tmp_path / "cache")).run(resume=True)  # finished already
    for key in ("val_auc", "train_loss", "final_val_auc"):
        steps = [m.step for m in client.get_metric_history(done.progress.run_id, key)]
        assert steps and len(steps) == len(set(steps)), (key, steps)


def test_a_run_records_the_code_it_ran_and_a_resume_with_other_code(tmp_path, monkeypatch, mlflow_store):
    # A run's parameters said what it was told, not which code computed it: no version, no commit.
    import subprocess

    import deepshield
    import deepshield.tracking.tracker as tracker_module

    db = mlflow_store(tmp_path / "v.db")
    first = tracker_module.MlflowTracker(f"sqlite:///{db}", "test")
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    tags = client.get_run(first.run_id).data.tags
    assert tags["deepshield.version"] == deepshield.__version__
    source = Path(deepshield.__file__).parent
    checkout = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True)
    if checkout.returncode == 0:  # run from a git checkout (an installed wheel has no commit to record)
        assert tags["mlflow.source.git.commit"] == checkout.stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert tags["deepshield.source.modified"] == ("true" if changes else "false")  # tracked files changed or not
    monkeypatch.setattr(tracker_module, "code_tags", lambda: {"deepshield.version": "9.9.9"})
    tracker_module.MlflowTracker(f"sqlite:///{db}", "test", run_id=first.run_id)
    tags = client.get_run(first.run_id).data.tags
    assert tags["deepshield.version"] == deepshield.__version__ and tags["changed.deepshield.version"] == "9.9.9"


def test_a_package_installed_inside_another_checkout_records_no_commit(tmp_path, monkeypatch):
    # A virtual environment inside another project's git checkout: that project's commit was recorded as the code's.
    import subprocess

    import deepshield
    from deepshield.tracking.tracker import code_tags

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".venv/\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "add", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-qm", "project"], check=True)
    installed = tmp_path / ".venv" / "site-packages" / "deepshield"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    monkeypatch.setattr(deepshield, "__file__", str(installed / "__init__.py"))
    assert code_tags.__wrapped__() == {"deepshield.version": deepshield.__version__}


def test_a_run_whose_mlflow_run_was_deleted_resumes_as_a_new_one(tmp_path, caplog):
    # Deleted in MLflow's UI, the run could not be continued: the resume was refused, after its data had loaded,
    # as "the MLflow store ... cannot be used (... must be in the 'active' state ...)".
    from deepshield.tracking import open_tracker

    uri = f"sqlite:///{tmp_path / 'd.db'}"
    first = open_tracker(True, uri, "test")
    first.finish("KILLED")
    client = MlflowClient(tracking_uri=uri)
    client.delete_run(first.run_id)
    resumed = open_tracker(True, uri, "test", run_name="again", run_id=first.run_id)
    resumed.log_metrics({"val_auc": 0.5}, step=1)
    resumed.finish()
    assert resumed.run_id != first.run_id and "or was deleted there" in caplog.text
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "again" and "val_auc" in run.data.metrics


def test_a_run_resumed_with_another_tracking_store_is_logged_as_a_new_run(real_dir, tmp_path, caplog, mlflow_store):
    # The default store (sqlite:///mlruns.db) is relative: resumed from another folder, the run's MLflow run
    # was not there and the resume died with MlflowException's traceback.
    cache = tmp_path / "cache"
    Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "first.db"), cache, max_steps=3)).run()
    with caplog.at_level("WARNING"):
        resumed = Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "other.db"), cache)).run(
            resume=True
        )
    assert resumed.bundle_dir is not None and "is not in sqlite:///" in caplog.text
    (run,) = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}").search_runs(
        [MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}").get_experiment_by_name("test").experiment_id]
    )
    assert run.info.status == "FINISHED" and run.info.run_id == resumed.progress.run_id


def test_a_tracking_store_that_fails_mid_run_stops_the_tracking_not_the_training(
    real_dir, tmp_path, caplog, monkeypatch, mlflow_store
):
    # A store locked by another process at the first epoch's plots killed the run with SQLAlchemy's
    # traceback, before the epoch's checkpoints, and its MLflow run stayed RUNNING.
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient as Client

    calls = []

    def locked(self, *args, **kwargs):
        calls.append(args)
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(Client, "log_artifact", locked)
    config = tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "m.db"), tmp_path / "cache")
    with caplog.at_level("WARNING"):
        result = Trainer(config).run()
    assert result.bundle_dir is not None and len(calls) == 1  # tried once, then left alone
    # The run is still ended (the artifact store failed, its database did not): it stayed RUNNING.
    assert (
        Client(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}").get_run(result.progress.run_id).info.status == "FINISHED"
    )
    assert "MLflow: storing" in caplog.text and "the rest of this run is not tracked" in caplog.text
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt"))
    assert checkpoints == ["best.pt", "epoch_001.pt", "epoch_002.pt", "last.pt"]


def test_a_tracking_store_that_cannot_be_used_is_refused_in_one_line(real_dir, tmp_path, capsys):
    from deepshield.cli.main import main
    from deepshield.tracking import open_tracker

    (tmp_path / "afile").write_text("")
    settings = tiny_settings(real_dir, tmp_path / "new" / "run", tmp_path / "afile" / "m.db", tmp_path / "cache")
    args = ["train", *(a for s in settings for a in ("--set", s))]
    assert main(args) == 2 and not (tmp_path / "cache").exists()  # before the face bank is built
    # Nothing new behind: the check of run/checkpoints, before this one, had left new/run made and empty.
    assert not (tmp_path / "new").exists()
    assert "tracking.uri's folder" in capsys.readouterr().err
    with pytest.raises(DeepShieldError, match=r"the MLflow store sqlite:///.* cannot be used"):
        open_tracker(True, f"sqlite:///{tmp_path / 'afile' / 'm.db'}", "test")


def test_a_run_refused_for_its_data_leaves_no_tracking_store_behind(tmp_path, capsys):
    # The store was made (a new SQLite file and its folder) to check it, before the data's folders were looked for.
    from deepshield.cli.main import main

    db = tmp_path / "mlflow" / "m.db"
    settings = tiny_settings(tmp_path / "no-such-faces", tmp_path / "run", db, tmp_path / "cache")
    assert main(["train", *(a for s in settings for a in ("--set", s))]) == 2
    missing = tmp_path / "no-such-faces"  # absolute: where it was looked for, with no advice to give such a path
    assert capsys.readouterr().err == f"deepshield: error: real-face folder or packed face bank {missing} not found\n"
    assert not list(tmp_path.iterdir())


def test_a_tracking_store_mlflow_cannot_open_is_refused_before_the_face_bank(real_dir, tmp_path):
    (tmp_path / "m.db").write_text("not a database")  # its folder can be written: only MLflow can tell
    config = tiny_config(real_dir, tmp_path / "run", tmp_path / "m.db", tmp_path / "cache")
    with pytest.raises(DeepShieldError, match=r"the MLflow store sqlite:///.*m.db cannot be used"):
        Trainer(config).run()
    assert not (tmp_path / "cache").exists()


def test_max_steps_at_an_epochs_end_keeps_its_record_and_resumes_to_validate_it(real_dir, tmp_path, mlflow_store):
    config = tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "d.db"), tmp_path / "cache", max_steps=4)
    stopped = Trainer(config).run()  # 4 steps: the whole first epoch, stopped before its validation
    assert stopped.stopped_early and [h["epoch"] for h in stopped.progress.history] == [0]
    resumed = Trainer(tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "d.db"), tmp_path / "cache")).run(
        resume=True
    )
    first = resumed.progress.history[0]
    assert [h["epoch"] for h in resumed.progress.history] == [0, 1]
    # MLflow params are write-once: the resumed run's own max_steps is kept beside the first one.
    run = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'd.db'}").get_run(resumed.progress.run_id)
    assert run.data.params["max_steps"] == "4" and run.data.tags["changed.max_steps"] == "None"
    assert np.isfinite(first["train_loss"]) and first["images_per_s"] > 0 and "val_auc" in first


def test_a_run_folder_is_not_trained_over_and_a_resume_keeps_the_runs_recipe(real_dir, tmp_path, capsys, mlflow_store):
    from deepshield.cli.main import EXIT_USAGE, main

    def train(*extra: str, **overrides) -> int:
        settings = tiny_settings(
            real_dir, tmp_path / "run", mlflow_store(tmp_path / "f.db"), tmp_path / "cache", **overrides
        )
        return main(["train", *(word for s in settings for word in ("--set", s)), *extra])

    assert train(max_steps=2) == 0
    kept = (tmp_path / "run" / "checkpoints" / LAST).read_bytes()
    assert train() == EXIT_USAGE  # without --resume: refused, the run kept
    assert "holds a run already" in capsys.readouterr().err
    assert train("--resume", **{"optim.lr": 0.01, "model.input_size": 64}) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "was trained with other settings: model.input_size: 48 -> 64; optim.lr:" in err
    assert (tmp_path / "run" / "checkpoints" / LAST).read_bytes() == kept
    assert train("--resume", **{"data.loader_workers": 0, "threads": 2}) == 0  # how it runs may change
    from deepshield.locks import folder_lock

    with folder_lock(tmp_path / "run", "this training run"):  # as a second `train` in the same folder finds it
        assert train("--resume") == EXIT_USAGE
    assert "another deepshield process is writing this training run" in capsys.readouterr().err


def test_a_resume_with_other_settings_is_refused_before_any_data_is_loaded(
    real_dir, tmp_path, monkeypatch, mlflow_store
):
    # It loaded all the data first (on a large set, minutes and gigabytes, and a face bank of the wrong
    # settings), and did not say which command would resume the run.
    command = "deepshield train --config 'my run.toml' --run-dir run"
    Trainer(
        tiny_config(real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), tmp_path / "cache", max_steps=2),
        command,
    ).run()

    def loaded(self, *args):
        raise AssertionError("the data was built")

    monkeypatch.setattr(Trainer, "_build_data", loaded)
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "a.db"), tmp_path / "cache", **{"optim.lr": 0.01}
    )
    with pytest.raises(DeepShieldError) as refused:
        Trainer(config).run(resume=True)
    assert "other settings: optim.lr:" in str(refused.value)
    assert f"started with: {command} --resume; or" in str(refused.value)


def test_a_resume_on_other_data_under_the_same_settings_is_refused_before_any_step(
    tmp_path, monkeypatch, caplog, mlflow_store
):
    # A face bank packed again under its name (or a folder's files changed): the settings matched, so the
    # run went on, unsaid, on other faces.
    faces = write_real_faces(tmp_path / "real", 8)
    settings = (faces, tmp_path / "run", mlflow_store(tmp_path / "a.db"), tmp_path / "cache")
    Trainer(tiny_config(*settings, max_steps=2)).run()
    last = tmp_path / "run" / "checkpoints" / LAST
    kept = last.read_bytes()
    for name in ("person0_0.png", "person1_1.png"):
        (faces / name).unlink()
    monkeypatch.setattr(Trainer, "_train_epoch", lambda *args: pytest.fail("a step was taken"))
    with pytest.raises(DeepShieldError) as refused:
        Trainer(tiny_config(*settings)).run(resume=True)
    said = str(refused.value)
    assert "was trained on other data" in said and "digests.train_faces: " in said
    assert "train a new run on these in another run_dir" in said
    assert last.read_bytes() == kept
    monkeypatch.undo()
    # A checkpoint of an older version, without the digests, resumes as before.
    state = load_checkpoint(last)
    del state["digests"]
    save_checkpoint(state, last)
    with caplog.at_level(logging.WARNING):
        assert Trainer(tiny_config(*settings)).run(resume=True).progress.global_step == 8
    assert "records no digests of its data (an older version's): resumed without comparing them" in caplog.text


def test_a_temperature_fit_at_its_ranges_end_is_said_once_and_kept_on_the_card(
    real_dir, tmp_path, monkeypatch, caplog, mlflow_store
):
    # Each epoch's fit said it again, and the export once more: three warnings in a two-epoch run.
    import deepshield.training.export as export

    monkeypatch.setattr(export, "fit_temperature", lambda labels, logits: 20.0)
    monkeypatch.setattr(export, "sets_over_target", lambda *args: "validation 1 of 4 (25.0%)")
    config = tiny_config(
        real_dir,
        tmp_path / "run",
        mlflow_store(tmp_path / "a.db"),
        tmp_path / "cache",
        **{"export.threshold_fpr": 0.05},
    )
    with caplog.at_level(logging.WARNING):
        result = Trainer(config).run()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("the temperature fit stopped")]
    assert len(said) == 1 and "validation split" in said[0]
    # So is a real-media target no threshold meets.
    assert len([r for r in caplog.records if r.getMessage().startswith("no threshold flags at most 5%")]) == 1
    assert "temperature fit stopped at the top" in OnnxClassifier(result.bundle_dir).card.calibration.fitted_on


def test_a_cards_licence_names_the_packaged_data_only_where_the_run_trained_on_it():
    from deepshield.training.export import card_license

    packaged = load_config(None)
    assert "UTKFace" in card_license(packaged) == packaged.export.license
    reordered = load_config(None, ['data.real_dirs=["real-faces/ffhq", "real-faces/utkface", "real-faces/portraits"]'])
    assert card_license(reordered) == packaged.export.license
    own = card_license(load_config(None, ['data.real_dirs=["mine"]', 'data.datasets=["prep"]']))
    assert "UTKFace" not in own and "trained on the data of mine, prep, whose terms apply" in own
    assert card_license(load_config(None, ['data.real_dirs=["mine"]', "export.license=CC-BY-4.0"])) == "CC-BY-4.0"


def test_a_cards_intended_use_says_trained_on_the_packaged_data_only_where_the_run_trained_on_it():
    # "Trained only on research-use real-face datasets" was copied onto the card of a run on one's own photos.
    from deepshield.training.export import card_intended_use

    packaged = load_config(None)
    assert "research-use real-face datasets" in card_intended_use(packaged) == packaged.export.intended_use
    own = card_intended_use(load_config(None, ['data.real_dirs=["mine"]']))
    assert "research-use" not in own and "trained on the data of mine (export.intended_use unset" in own
    assert "not a sole basis" in own.lower()
    stated = load_config(None, ['data.real_dirs=["mine"]', "export.intended_use=Teaching."])
    assert card_intended_use(stated) == "Teaching."


def test_config_overrides_params_file_and_errors(tmp_path):
    params = tmp_path / "best.yaml"
    params.write_text("optim.lr: 0.002\noptim.batch_size: 8\n")
    config = load_config(None, ["model.input_size=96", "tracking.enabled=false"], params)
    assert config.optim.lr == 0.002 and config.optim.batch_size == 8
    assert config.model.input_size == 96 and config.tracking.enabled is False
    assert config.model.backbone == "efficientnet_lite0"  # default.toml
    with pytest.raises(DeepShieldError, match=r"section.key=value"):
        load_config(None, ["lr"])
    with pytest.raises(DeepShieldError, match="invalid training configuration"):
        load_config(None, ["optim.batch_size=-3"])
    with pytest.raises(DeepShieldError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize("interrupted", ["epoch_001.pt", "best.pt", "last.pt"])
def test_ctrl_c_among_an_epochs_checkpoint_writes_resumes_to_that_epochs_checkpoints(
    real_dir, tmp_path, monkeypatch, interrupted, mlflow_store
):
    # The epoch was counted done before its checkpoints were written: stopped among them, the resumed run
    # skipped it, its epoch_NNN.pt (and a best.pt it earned) never written: a stale epoch exported, or none.
    import deepshield.training.trainer as trainer_module

    cache = tmp_path / "cache"
    straight = Trainer(tiny_config(real_dir, tmp_path / "straight", mlflow_store(tmp_path / "a.db"), cache)).run()
    write = trainer_module.save_checkpoint
    reached = []

    def stopped_among_the_first_epochs(state, path):
        if path.name == interrupted and state["progress"]["epoch"] == 1 and not reached:
            reached.append(path)
            raise KeyboardInterrupt
        write(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", stopped_among_the_first_epochs)
    config = tiny_config(real_dir, tmp_path / "resumed", mlflow_store(tmp_path / "b.db"), cache)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config).run()
    assert reached
    resumed = Trainer(config).run(resume=True)
    assert [h["epoch"] for h in resumed.progress.history] == [0, 1]
    checkpoints = tmp_path / "resumed" / "checkpoints"
    assert (checkpoints / "epoch_001.pt").is_file() and (checkpoints / "epoch_002.pt").is_file()
    assert load_checkpoint(checkpoints / BEST)["epoch"] == straight.progress.best_epoch
    assert resumed.bundle_dir is not None
    assert_resumed_as_straight(tmp_path, resumed, straight)


@pytest.mark.parametrize("stage", ["_end_epoch", "_save_epoch"])
def test_a_run_stopped_during_validation_resumes_without_a_duplicate_epoch(
    real_dir, tmp_path, monkeypatch, stage, mlflow_store
):
    # _save_epoch: stopped once the epoch's record held its validation (its plots were being written), a
    # resumed run validated it again into a TypeError (val_loss given twice) and the trial was lost.
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "c.db"), tmp_path / "cache", **{"optim.epochs": 1}
    )
    original = getattr(Trainer, stage)

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, stage, crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config).run()
    monkeypatch.setattr(Trainer, stage, original)
    result = Trainer(config).run(resume=True)
    assert [h["epoch"] for h in result.progress.history] == [0]
    assert result.progress.history[0]["images_per_s"] > 0 and result.bundle_dir is not None


@pytest.fixture(scope="module")
def prepared_dataset(tmp_path_factory) -> Path:
    """A prepared folder dataset (deepshield prepare) of real and fake astronaut crops at 64 px."""

    from deepshield.data.extract import ExtractSettings
    from deepshield.data.prepare import prepare_dataset
    from deepshield.faces.crop import CropPolicy

    root = tmp_path_factory.mktemp("prepared")
    faces = write_real_faces(root / "raw" / "real", 8)
    (root / "raw" / "fake").mkdir()
    for k, path in enumerate(sorted(faces.glob("*.png"))):
        image = cv2.imread(str(path))
        cv2.imwrite(str(root / "raw" / "fake" / f"tinted_{k}.png"), cv2.GaussianBlur(image, (0, 0), 1.5))
    settings = ExtractSettings(frames=1, policy=CropPolicy(size=64, scale=1.5))
    prepare_dataset([root / "raw"], root / "ds", settings=settings, ratios=(0.5, 0.5, 0.0), progress=False)
    return root / "ds"


def test_training_on_a_prepared_dataset_alone(prepared_dataset, tmp_path, mlflow_store):
    from deepshield.cli.model import describe

    config = tiny_config(
        Path("unused"),
        tmp_path / "run",
        mlflow_store(tmp_path / "d.db"),
        tmp_path / "cache",
        **{"data.real_dirs": "[]", "data.datasets": f'["{prepared_dataset}"]', "data.synthesize": "false"},
    )
    trainer = Trainer(config)
    data = trainer._build_data()
    # The train split's real crops feed the bank (resized from 64 to the model's 48 px), its fake crops the
    # pool: 4 of each (8 real and 8 fake photos, half in train); val's stay out of both.
    assert len(data.bank) == len(data.fake_pool) == 4 and data.bank.images.shape[1:] == (48, 48, 3)
    assert set(data.val_labels.tolist()) == {0, 1}
    result = trainer.run()
    assert result.progress.global_step == 8 and result.bundle_dir is not None
    card = OnnxClassifier(result.bundle_dir).card
    assert card.training.data == [f"prepared dataset {prepared_dataset}"]
    # Its card said it was fitted on "real + synthesised fakes", which a run without synthesis never made.
    assert "real + the prepared datasets' fakes, identity-disjoint" in card.calibration.fitted_on
    assert "synthesised" not in card.calibration.fitted_on
    # So did `deepshield model` and the page: "own synthesised blends (validation)".
    assert card.record().validation_fakes == "the prepared datasets' fakes"
    assert "validation: real + the prepared datasets' fakes" in describe(card)


def test_a_prepared_dataset_without_train_reals_is_said_to_be_the_cause(prepared_dataset, tmp_path):
    # Its train split's want of real faces was blamed on data.val_fraction, which a prepared dataset's
    # splits (prepare's) do not follow.
    dataset = tmp_path / "ds"
    shutil.copytree(prepared_dataset, dataset)
    manifest = dataset / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",real,train,", ",real,val,"))
    config = tiny_config(
        Path("unused"),
        tmp_path / "run",
        tmp_path / "d.db",
        tmp_path / "cache",
        **{"data.real_dirs": "[]", "data.datasets": f'["{dataset}"]'},
    )
    with pytest.raises(DeepShieldError) as refused:
        Trainer(config)._build_data()
    said = str(refused.value)
    assert said.startswith(f"no real face is left to train on: the train split of the prepared dataset {dataset} ")
    assert "dataset balance DATASET_DIR --add-real FOLDER" in said and "val_fraction" not in said


def test_photos_both_in_the_bank_and_a_prepared_dataset_are_refused(prepared_dataset, tmp_path, mlflow_store):
    """Each splits its photos its own way: one trained on through the bank was validated on through the
    dataset (the epoch and the threshold chosen on it), unsaid."""
    real = prepared_dataset.parent / "raw" / "real"
    config = tiny_config(
        real,
        tmp_path / "run",
        mlflow_store(tmp_path / "b.db"),
        tmp_path / "cache",
        **{"data.datasets": f'["{prepared_dataset}"]'},
    )
    with pytest.raises(DeepShieldError, match=r"8 photos are both real faces of data.real_dirs and sources of a prep"):
        Trainer(config)._build_data()
    # Copies under other names: by bytes, as prepare finds copies (a path alone let them through).
    copies = tmp_path / "copies"
    copies.mkdir()
    for path in sorted(real.glob("*.png"))[:3]:
        shutil.copyfile(path, copies / f"copy_{path.name}")
    config = tiny_config(
        copies,
        tmp_path / "run",
        mlflow_store(tmp_path / "b.db"),
        tmp_path / "cache",
        **{"data.datasets": f'["{prepared_dataset}"]'},
    )
    with pytest.raises(
        DeepShieldError, match=r"3 photos are both .*e\.g\. \S+person0_0\.png \(the same bytes as \S+copy_"
    ):
        Trainer(config)._build_data()


def test_a_prepared_dataset_with_another_crop_scale_is_refused(prepared_dataset, tmp_path, mlflow_store):
    config = tiny_config(
        Path("unused"),
        tmp_path / "run",
        mlflow_store(tmp_path / "e.db"),
        tmp_path / "cache",
        **{"data.real_dirs": "[]", "data.datasets": f'["{prepared_dataset}"]', "model.crop_scale": "1.3"},
    )
    with pytest.raises(DeepShieldError, match=r"re-run `deepshield prepare` with --crop-scale 1.3"):
        Trainer(config).run()


def test_a_cached_face_bank_takes_its_groups_from_the_pattern_given_now(real_dir, tmp_path):
    """The cache key does not hold the group pattern: a bank built under one pattern and read under
    another must split by the new one, not the pattern it was first built with."""
    from deepshield.faces.crop import CropPolicy
    from deepshield.training.facebank import build_facebank

    policy = CropPolicy(size=48)
    by_person = build_facebank([real_dir], policy, tmp_path, group_pattern=r"^(person\d)_", workers=1)
    assert len({str(g) for g in by_person.groups}) == 4
    by_file = build_facebank([real_dir], policy, tmp_path, group_pattern=None, workers=1)
    assert len(list(tmp_path.glob("facebank-*.npz"))) == 1  # the second call read the cache
    # One group per file (the fixture's views of one zoom that differ in colour only are one photo's copies,
    # joined: joined_copies), none per person.
    stems = {f"real/{Path(path).stem}" for path in by_file.paths.tolist()}
    assert (
        len(by_file) == len(by_person)
        and len(set(by_file.groups.tolist())) > 4
        and set(by_file.groups.tolist()) <= stems
    )


def test_mask_loss_rewards_a_head_that_points_at_the_blend_and_skips_unknown_masks():
    from deepshield.training.step import mask_loss

    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[:, 2:6, 2:6] = 255  # the central quarter blended, on a 4 x 4 grid: its central 2 x 2 cells
    inside = torch.zeros(2, 4, 4, dtype=torch.bool)
    inside[:, 1:3, 1:3] = True
    right = torch.where(inside, 6.0, -6.0)
    assert mask_loss(right, masks, None).item() < 0.01
    assert mask_loss(-right, masks, None).item() > 5.0
    assert mask_loss(torch.zeros(2, 4, 4), masks, None).item() == pytest.approx(np.log(2), abs=1e-6)
    # Only the known masks count; none known: no loss.
    known = torch.tensor([True, False])
    mixed = torch.stack([right[0], -right[1]])
    assert mask_loss(mixed, masks, known).item() < 0.01
    assert mask_loss(-right, masks, torch.tensor([False, False])).item() == 0.0


def test_a_mask_head_is_trained_on_known_blends_and_left_out_of_the_bundle(prepared_dataset, tmp_path, mlflow_store):
    """Synthesised fakes carry where they were blended, reals an empty mask, a prepared dataset's fakes
    none; a run with the mask loss keeps the head in its checkpoints and exports the same two outputs."""
    import onnxruntime as ort

    from deepshield.training.checkpoint import load_checkpoint as read_checkpoint

    # The bank's own photos: copies of the dataset's real sources would be refused (one photo split twice).
    own = write_real_faces(tmp_path / "own", 8)
    for path in own.glob("*.png"):
        assert cv2.imwrite(str(path), cv2.imread(str(path)), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    config = tiny_config(
        own,
        tmp_path / "run",
        mlflow_store(tmp_path / "m.db"),
        tmp_path / "cache",
        **{"data.datasets": f'["{prepared_dataset}"]', "optim.epochs": 1, "optim.mask_loss_weight": 1.0},
    )
    trainer = Trainer(config)
    data = trainer._build_data()
    arguments = (data.bank, data.fake_pool, 64, config.seed, config.synthesis, config.augment, 0.3, True, data.donors)
    samples, without = TrainingSamples(*arguments, masks=True), TrainingSamples(*arguments)
    kinds = set()
    for index in range(64):
        sample, plain = samples[(0, index)], without[(0, index)]
        # Off (the default), no mask is made, and the faces are the same draws.
        assert torch.equal(plain.image, sample.image) and not plain.mask_known and plain.mask.numel() == 0
        assert sample.mask.shape == sample.image.shape[:2] and sample.mask.dtype == torch.uint8
        if sample.label == 0:
            assert sample.mask_known and int(sample.mask.max()) == 0
            continue
        kinds.add("blend" if sample.mask_known else "prepared")
        if sample.mask_known:
            assert int(sample.mask.max()) > 128  # somewhere the source dominates
        else:
            assert int(sample.mask.max()) == 0
    assert kinds == {"blend", "prepared"}

    result = trainer.run()
    weights = read_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["model"]
    assert weights["mask_head.weight"].shape == (1, 64, 1, 1)
    session = ort.InferenceSession(str(result.bundle_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["logit", "cam"]
    assert OnnxClassifier(result.bundle_dir).card.training.config["optim"]["mask_loss_weight"] == 1.0


@pytest.mark.parametrize(("mask_map", "cells"), [("last", 6), ("middle", 12)])
def test_a_mask_head_reads_the_map_it_is_given_and_leaves_the_scores_alone(mask_map, cells):
    from deepshield.models.network import DeepfakeNet

    torch.manual_seed(0)
    plain = DeepfakeNet("tiny", 48, pretrained=False, dropout=0.0).eval()
    masked = DeepfakeNet("tiny", 48, pretrained=False, dropout=0.0, mask_map=mask_map).eval()
    masked.load_state_dict(plain.state_dict() | {k: v for k, v in masked.state_dict().items() if "mask_head" in k})
    images = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        before, after = plain.forward_all(images), masked.forward_all(images)
    assert before.mask_logits is None and after.mask_logits is not None
    assert after.mask_logits.shape == (3, cells, cells)
    assert torch.equal(before.logit, after.logit) and torch.equal(before.cam, after.cam)


def test_the_efficientnet_middle_map_comes_from_the_same_pass_as_its_features():
    """`with_middle` repeats the library's feature pass (drop-connect included) to keep the stride-16
    map: its final map must be exactly what the library computes."""
    from deepshield.models.network import EfficientNetLite0Backbone

    backbone = EfficientNetLite0Backbone(96, pretrained=False).train()
    images = torch.randn(2, 3, 96, 96)
    torch.manual_seed(1)
    expected = backbone(images)
    torch.manual_seed(1)
    final, middle = backbone.with_middle(images)
    assert torch.equal(final, expected)
    assert middle.shape == (2, backbone.middle_channels, 6, 6)  # stride 16


@pytest.mark.parametrize("scale", [1.0, 0.1, 0.0])
def test_the_trunk_learns_at_its_share_of_the_learning_rate(scale, tmp_path):
    from deepshield.models.network import DeepfakeNet
    from deepshield.training.step import placed_for_training

    config = load_config(None, ["optim.lr=0.01", f"optim.backbone_lr_scale={scale}"])
    torch.manual_seed(0)
    net, optimizer = placed_for_training(
        DeepfakeNet("tiny", 48, pretrained=False, dropout=0.0), config, torch.device("cpu")
    )
    trunk = {id(p) for p in net.backbone.parameters()}
    assert sorted(id(p) for g in optimizer.param_groups for p in g["params"]) == sorted(id(p) for p in net.parameters())
    trunk_lrs = [g["lr"] for g in optimizer.param_groups if any(id(p) in trunk for p in g["params"])]
    assert trunk_lrs == [pytest.approx(0.01 * scale)]
    assert optimizer.param_groups[0]["lr"] == 0.01  # the logged lr is the heads'
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    for _ in range(3):
        optimizer.zero_grad()
        net.forward_all(torch.randn(4, 3, 48, 48)).logit.sum().backward()
        optimizer.step()
    moved = {name: float((p.detach() - before[name]).abs().max()) for name, p in net.named_parameters()}
    trunk_moved = max(v for k, v in moved.items() if k.startswith("backbone."))
    assert moved["head.weight"] > 0
    assert (trunk_moved == 0) if scale == 0 else (trunk_moved > 0)


def test_training_draws_no_progress_bar_where_stderr_is_no_terminal(real_dir, tmp_path, capsys, mlflow_store):
    # CI logs, `2> train.log` and the journal got the bar's every redraw, each after a carriage return: the
    # face bank's and the other commands' bars were off there, the training's was not.
    from deepshield.cli.main import main

    settings = tiny_settings(real_dir, tmp_path / "run", mlflow_store(tmp_path / "i.db"), tmp_path / "cache")
    assert main(["train", *(word for setting in settings for word in ("--set", setting))]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "epoch 1/2" not in err, err


def test_no_progress_keeps_the_training_bars_off_a_terminal(real_dir, tmp_path, monkeypatch, mlflow_store):
    # scan, evaluate, prepare and dataset balance took --no-progress; train, compare, facebank pack and tune
    # refused it, so a terminal piped to a log got every redraw of the face bank's and each epoch's bar.
    import contextlib
    import io
    import sys

    from deepshield.cli.main import build_parser, main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def stderr_of(run: str, *extra: str) -> str:
        terminal = Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        settings = tiny_settings(real_dir, tmp_path / run, mlflow_store(tmp_path / "i.db"), tmp_path / f"cache-{run}")
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", *(word for setting in settings for word in ("--set", setting)), *extra]) == 0
        return terminal.getvalue()

    assert "epoch 1/2" in stderr_of("drawn")  # the bars, on a terminal
    quiet = stderr_of("quiet", "--no-progress")
    assert "\r" not in quiet and "epoch 1/2" not in quiet and "face bank" not in quiet, quiet
    parser = build_parser()
    for argv in (
        ["compare", "bundle", "--on", "set"],
        ["facebank", "pack", "--out", "bank.npz"],
        ["tune", "--space", "space.yaml"],
    ):
        assert parser.parse_args([*argv, "--no-progress"]).no_progress, argv


def test_a_checkpoints_path_that_is_a_file_is_one_line_naming_it(real_dir, tmp_path, capsys, mlflow_store):
    # A run folder whose checkpoints/ was a plain file loaded all its data, then ended in a FileExistsError
    # traceback at its first checkpoint.
    from deepshield.cli.main import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a user's notes")
    settings = tiny_settings(real_dir, run, mlflow_store(tmp_path / "i.db"), tmp_path / "cache")
    assert main(["train", *(word for setting in settings for word in ("--set", setting))]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / 'checkpoints'} is a file" in err, err
    assert "face bank" not in err and (run / "checkpoints").read_text() == "a user's notes"  # refused before the data
    # Replaced while the run trains: the checkpoint's write says so in one line, the file left as it was.
    with pytest.raises(DeepShieldError, match=rf"cannot write the checkpoint {re.escape(str(run))}.*is a file"):
        save_checkpoint({"weights": torch.zeros(1)}, run / "checkpoints" / LAST)
    assert (run / "checkpoints").read_text() == "a user's notes"


def test_a_checkpoint_whose_settings_this_version_does_not_read_is_refused_in_one_line(tmp_path):
    # Written by an earlier version (a setting renamed, or a value refused since): export and model.init ended
    # in pydantic's traceback.
    from deepshield.training.parent import initial_weights

    path = tmp_path / "best.pt"
    save_checkpoint({"config": {"optim": {"lrr": 1e-3}}, "model": {}, "val_labels": torch.zeros(2)}, path)
    said = rf"{re.escape(str(path))} was trained with settings this version does not read: .*unknown key optim\.lrr"
    with pytest.raises(DeepShieldError, match=said):
        export_checkpoint(path, tmp_path / "bundle")
    with pytest.raises(DeepShieldError, match=said):
        initial_weights(load_config(None, [f"model.init={path}"]))
    save_checkpoint({"model": {}, "val_labels": torch.zeros(2)}, path)
    with pytest.raises(DeepShieldError, match="holds no training configuration"):
        export_checkpoint(path, tmp_path / "bundle")


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("data.val_fraction=0.99", r"no real face is left to train on: the validation split took every identity"),
        ("data.synthesize=false", r"data\.synthesize = false trains on the prepared datasets' fakes alone"),
    ],
)
def test_data_that_leaves_nothing_to_train_on_is_refused_in_one_line(real_dir, tmp_path, setting, said):
    # "ValueError: training needs real faces" (or fakes): a traceback once the face bank was built.
    config = tiny_config(real_dir, tmp_path / "run", tmp_path / "db", tmp_path / "cache", **dict([setting.split("=")]))
    with pytest.raises(DeepShieldError, match=said):
        Trainer(config).run()


def test_a_checkpoint_recording_a_free_text_export_version_is_still_read(tmp_path, capsys):
    # export.version took free text until it was held to a version's rule: such a checkpoint was refused
    # whole, its network neither exported (even with --version) nor taken as model.init.
    from deepshield.training.config import checkpoint_config

    recorded = load_config(None, []).model_dump(mode="json")
    recorded["export"]["version"] = "my model v2"
    config = checkpoint_config({"config": recorded}, tmp_path / "best.pt")
    assert config.export.version is None and config.model == load_config(None, []).model
    assert "its export.version 'my model v2' is not a version" in capsys.readouterr().err


def test_training_data_line_says_each_count_with_its_noun() -> None:
    # Of one, "1 real faces" read wrong; each count takes its own singular or plural.
    assert training_data_line(1, 1, 1, 1) == (
        "training data: 1 real face and 1 prepared fake, 1 validation sample, 1 benchmark"
    )
    assert training_data_line(5, 0, 2, 0) == "training data: 5 real faces, 2 validation samples, 0 benchmarks"
    assert training_data_line(3, 4, 2, 2) == (
        "training data: 3 real faces and 4 prepared fakes, 2 validation samples, 2 benchmarks"
    )
