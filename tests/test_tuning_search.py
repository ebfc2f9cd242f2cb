"""The search machinery with a scripted trainer (no torch): grid coverage, selection, pruning,
resume after an interruption or a kill, parallel worker processes."""

from __future__ import annotations

import contextlib
import csv
import errno
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from deepshield.cpus import usable_cpus
from deepshield.errors import DeepShieldError
from deepshield.training.config import load_config
from deepshield.tuning.objective import TrainingOutcome
from deepshield.tuning.samplers import GridSearchSampler, make_sampler
from deepshield.tuning.space import load_space
from deepshield.tuning.storage import open_storage
from deepshield.tuning.study import SearchSettings, run_search
from deepshield.tuning.trials import GRID_ID, RETRY_OF, RUN_DIR

TESTS = Path(__file__).parent
CALLS: list[dict] = []


def scripted_metrics(lr: float, batch: int, epoch: int) -> dict:
    """val_auc peaks at lr=1e-3 (epoch 1 best); val_loss is lowest at lr=1e-2: the two selectors disagree."""
    distance = abs(math.log10(lr) + 3)
    auc = 0.9 - 0.1 * distance - 0.001 * batch + (0.02 if epoch == 1 else 0.0)
    loss = 0.3 + 0.05 * abs(math.log10(lr) + 2) + 0.01 * epoch
    return {"epoch": epoch, "train_loss": 0.01 * batch, "val_auc": auc, "val_loss": loss, "val_eer": 1 - auc}


def fake_train(config, *, epoch_callback, parent_run_id, run_tags, resume, command=""):
    """Stands in for the trainer: same callback protocol, scripted metrics, a checkpoint file per epoch."""
    run_dir = Path(config.run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    done = int(last.read_text()) if resume and last.exists() else 0
    progress = SimpleNamespace(
        epoch=done,
        history=[scripted_metrics(config.optim.lr, config.optim.batch_size, e) for e in range(done)],
        run_id=None,
    )
    CALLS.append(
        {"lr": config.optim.lr, "batch": config.optim.batch_size, "run_dir": str(run_dir), "resume": resume, "from_epoch": done, "threads": config.threads,
         "export_select": config.export.select}
    )  # fmt: skip
    kill_at = os.environ.get("FAKE_KILL_AT_LR")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "threads.txt").write_text(str(config.threads))
    while progress.epoch < config.optim.epochs:
        progress.history.append(scripted_metrics(config.optim.lr, config.optim.batch_size, progress.epoch))
        progress.epoch += 1
        last.parent.mkdir(parents=True, exist_ok=True)
        # Atomic, as the trainer's checkpoints are: a Ctrl-C between write_text's truncation and its
        # write would leave an empty file that the retry cannot resume from.
        last.with_suffix(".tmp").write_text(str(progress.epoch))
        last.with_suffix(".tmp").replace(last)
        if os.environ.get("FAKE_INTERRUPT_BEFORE_CALLBACK_AT_LR") == str(config.optim.lr) and not resume:
            del os.environ["FAKE_INTERRUPT_BEFORE_CALLBACK_AT_LR"]  # Ctrl-C once, the epoch checkpointed
            raise KeyboardInterrupt
        if epoch_callback is not None:
            epoch_callback(progress)
        time.sleep(float(os.environ.get("FAKE_EPOCH_SLEEP", "0")))
        if kill_at and float(kill_at) == config.optim.lr and not resume:
            os.kill(os.getpid(), signal.SIGKILL)  # a killed search: no cleanup at all
        if os.environ.get("FAKE_FULL_DISK_AT_LR") == str(config.optim.lr) and not resume:
            del os.environ["FAKE_FULL_DISK_AT_LR"]  # room again from here on
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(last))  # the next checkpoint's
        if (
            os.environ.get("FAKE_INTERRUPT_AT_LR")
            and float(os.environ["FAKE_INTERRUPT_AT_LR"]) == config.optim.lr
            and not resume
        ):
            del os.environ["FAKE_INTERRUPT_AT_LR"]  # Ctrl-C once
            raise KeyboardInterrupt
    return TrainingOutcome(progress.history, None)


@pytest.fixture
def space(tmp_path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text("optim.lr: [1e-4, 1e-3, 1e-2]\noptim.batch_size: [8, 16]\nbudget:\n  optim.epochs: 3\n")
    return path


def settings(space: Path, tmp_path: Path, **kwargs) -> SearchSettings:
    return SearchSettings(
        space=space,
        out=kwargs.pop("out", tmp_path / "out"),
        tracking=False,
        prewarm=False,
        pruner=kwargs.pop("pruner", "none"),
        **kwargs,
    )


def study_of(result) -> optuna.Study:
    return optuna.load_study(study_name=result.study_name, storage=result.storage)


def test_a_grid_of_a_trillion_points_runs_its_few_trials_without_listing_the_grid(tmp_path):
    """Four stepped ranges of 1,000 values: the grid was listed (a dict a point) before the first trial,
    which ran out of memory (and took minutes at a few million points) for a 2-trial search."""
    path = tmp_path / "huge.yaml"
    path.write_text(
        "optim.lr: {low: 1.0e-5, high: 1.0e-2, step: 1.0e-5}\n"
        "optim.weight_decay: {low: 0.0, high: 0.0999, step: 1.0e-4}\n"
        "model.dropout: {low: 0.0, high: 0.999, step: 0.001}\n"
        "optim.warmup_fraction: {low: 0.0, high: 0.999, step: 0.001}\nbudget:\n  optim.epochs: 1\n"
    )
    assert load_space(path).grid_size() == 1000**4
    lines: list[str] = []
    result = run_search(settings(path, tmp_path, trials=2), train_fn=fake_train, echo=lines.append)
    trials = study_of(result).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert trials[0].params != trials[1].params
    assert "sampler grid" in lines[0] and "target 2 trials" in lines[0]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_random_and_tpe_draw_a_stepped_float_as_the_grid_spells_it(tmp_path, sampler):
    """Optuna's low + k x step left 0.30000000000000004 of this range in the trials and best.yaml."""
    path = tmp_path / "space.yaml"
    path.write_text(
        "model.dropout: {low: 0.0, high: 0.4, step: 0.1}\noptim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
        "budget:\n  optim.epochs: 1\n"
    )
    result = run_search(settings(path, tmp_path, sampler=sampler, trials=12), train_fn=fake_train, echo=lambda _: None)
    drawn = {t.params["model.dropout"] for t in study_of(result).get_trials()}
    assert drawn <= {0.0, 0.1, 0.2, 0.3, 0.4} and len(drawn) > 2


def test_grid_covers_every_point_once_and_max_selects(space, tmp_path):
    CALLS.clear()
    result = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    trials = study_of(result).get_trials()
    points = sorted((t.params["optim.lr"], t.params["optim.batch_size"]) for t in trials)
    assert points == sorted((lr, b) for lr in (1e-4, 1e-3, 1e-2) for b in (8, 16))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and len(CALLS) == 6
    assert {c["run_dir"] for c in CALLS} == {
        str(tmp_path / "out" / "trials" / "space" / f"trial_{i:04d}") for i in range(6)
    }
    best = result.report.best
    assert best.params == {"optim.lr": 1e-3, "optim.batch_size": 8}
    assert (
        best.value
        == pytest.approx(max(t.value for t in trials))
        == pytest.approx(scripted_metrics(1e-3, 8, 1)["val_auc"])
    )
    assert best.user_attrs["best_epoch"] == 2  # the trial's best epoch (1-based), not its last (3)
    # best.yaml round-trips into the training config, as `deepshield train --params best.yaml` reads it
    config = load_config(params=result.report.best_yaml)
    assert (config.optim.lr, config.optim.batch_size) == (1e-3, 8)
    assert config.optim.epochs == load_config().optim.epochs  # the per-trial budget is not part of it
    assert {p.name for p in result.report.plots} >= {
        "optimization_history.png",
        "parallel_coordinates.png",
        "metric_vs_params.png",
        "param_importances.png",
    }
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("trial,state,max.val_auc")


def test_a_null_choice_shows_as_null_not_as_a_missing_value(tmp_path):
    """A null choice was an empty cell in the summary table and results.csv, as a parameter a trial never drew."""
    path = tmp_path / "space.yaml"
    path.write_text("model.cam_pooling_temperature: [null, 0.5]\nbudget:\n  optim.epochs: 1\n")
    lines: list[str] = []
    run_search(settings(path, tmp_path), train_fn=fake_train, echo=lines.append)
    assert "trial 0: val_auc=0.8282 (epoch 1 of 1) [model.cam_pooling_temperature=null]" in lines
    assert "\n0 | COMPLETE | 0.8282 | 1 | null\n" in "\n".join(lines)
    with (tmp_path / "out" / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["model.cam_pooling_temperature"] for row in rows] == ["null", "0.5"]


def test_a_resumed_study_goes_on_with_the_sampler_it_was_started_with(space, tmp_path):
    """The sampler was not kept with the study: resumed with --sampler auto, a random study went on as a grid
    (what auto picks for this space), and another --sampler named on resume was taken without a word."""
    lines: list[str] = []
    run_search(settings(space, tmp_path, sampler="random", trials=2), train_fn=fake_train, echo=lines.append)
    assert "sampler random" in lines[0]
    lines.clear()
    result = run_search(settings(space, tmp_path, sampler="auto", trials=3), train_fn=fake_train, echo=lines.append)
    assert "resumed: 2 trials done" in lines[0] and "sampler random" in lines[0] and "target 3 trials" in lines[0]
    assert not any(GRID_ID in t.user_attrs for t in study_of(result).get_trials())
    with pytest.raises(
        DeepShieldError, match=r"^study 'space' was started with --sampler random, not grid: resume it "
    ):
        run_search(settings(space, tmp_path, sampler="grid"), train_fn=fake_train, echo=lambda _: None)
    # A study older than the record goes on with the sampler asked for, as before.
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    optuna.create_study(storage=storage, study_name="old", direction="maximize")
    lines.clear()
    run_search(
        settings(space, tmp_path, sampler="auto", trials=1, study="old", storage=storage),
        train_fn=fake_train,
        echo=lines.append,
    )
    assert "sampler grid" in lines[0]
    assert "(resumed: 0 trials done)" in lines[0] and lines[0].endswith("target 1 trial")
    assert any(re.fullmatch(r"local: 1 study worker on this machine, \d+ CPUs?", line) for line in lines), lines


def test_a_study_resumed_with_its_own_sampler_notes_no_cap_of_the_sampler_auto_would_pick(space, tmp_path):
    """Resumed with --sampler auto and --trials 8, a random study on a grid of 6 ran its 8 trials, and its report
    still said 'the grid has 6 points: --trials 8 capped to 6', auto's pick for the space."""
    run_search(settings(space, tmp_path, sampler="random", trials=2), train_fn=fake_train, echo=lambda _: None)
    lines: list[str] = []
    result = run_search(settings(space, tmp_path, sampler="auto", trials=8), train_fn=fake_train, echo=lines.append)
    assert "sampler random" in lines[0] and "target 8 trials" in lines[0]
    assert not any("capped" in note for note in result.report.notes)
    assert "capped" not in (tmp_path / "out" / "report.md").read_text()
    grid = run_search(
        settings(space, tmp_path, sampler="grid", trials=8, out=tmp_path / "grid"),
        train_fn=fake_train,
        echo=lines.append,
    )
    assert grid.report.notes[0] == "the grid has 6 points: --trials 8 capped to 6"


def test_min_selector_uses_its_own_metric(space, tmp_path):
    CALLS.clear()
    result = run_search(
        settings(space, tmp_path, select="min.val_loss", study="by-loss"), train_fn=fake_train, echo=lambda _: None
    )
    assert {c["export_select"] for c in CALLS} == {
        "min.val_loss"
    }  # each trial's best.pt: the epoch its value comes from
    assert result.report.best.params["optim.lr"] == 1e-2  # lowest val_loss, although not the highest AUC
    assert result.report.best.value == pytest.approx(min(t.value for t in study_of(result).get_trials()))
    assert result.report.best.value == pytest.approx(scripted_metrics(1e-2, 8, 0)["val_loss"])


def test_the_search_ends_with_the_command_that_trains_its_winner(space, tmp_path):
    """best.yaml said `train --config <the search's config> --params best.yaml`: the search's --set and its
    selector (which picks the epoch kept) were left out, so that command trained and kept another recipe."""
    lines: list[str] = []
    config = tmp_path / "my.toml"
    config.write_text("seed = 0\n")
    result = run_search(
        settings(space, tmp_path, config=config, overrides=["model.dropout=0.3"], select="min.val_loss"),
        train_fn=fake_train,
        echo=lines.append,
    )
    best_yaml = result.report.best_yaml
    command = (
        f"deepshield train --config {config} --set model.dropout=0.3 --params {best_yaml} "
        "--set export.select=min.val_loss"
    )
    assert f"train it at full budget: {command}" in lines
    assert "--set export.select=min.val_loss trains it at full budget" in best_yaml.read_text()
    # report.md said `deepshield train --config <config> --params best.yaml`: the val_auc epoch, no --set.
    assert f"Train it at full budget: `{command}`" in result.report.report_md.read_text()


def test_export_select_follows_the_selector(space, tmp_path):
    with pytest.raises(DeepShieldError, match=r"export.select follows --select"):
        run_search(
            settings(space, tmp_path, overrides=["export.select=max.val_auc"], select="min.val_loss"),
            train_fn=fake_train,
            echo=lambda _: None,
        )
    # A selector the configuration cannot export by failed every trial after the face bank.
    with pytest.raises(DeepShieldError, match=r"needs benchmarks: set data\.benchmarks"):
        run_search(settings(space, tmp_path, select="max.bench_auc"), train_fn=fake_train, echo=lambda _: None)
    space.write_text("export.select: [max.val_auc, min.val_loss]\n")
    with pytest.raises(DeepShieldError, match="set by the search itself"):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_pruned_trials_are_recorded_as_pruned(space, tmp_path):
    CALLS.clear()
    always = optuna.pruners.ThresholdPruner(lower=2.0)  # every AUC is below 2: prune at the first epoch
    result = run_search(
        settings(space, tmp_path, pruner=always, sampler="random", trials=3), train_fn=fake_train, echo=lambda _: None
    )
    trials = study_of(result).get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 3
    assert all(list(t.intermediate_values) == [1] for t in trials)  # stopped after epoch 1 of 3
    assert result.counts["pruned"] == 3 and result.report.best is None and result.report.best_yaml is None
    assert "PRUNED" in (tmp_path / "out" / "results.csv").read_text()


def test_median_pruner_stops_a_trial_worse_than_earlier_ones(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: [1e-3, 1e-2, 1e-4]\nbudget:\n  optim.epochs: 3\n")
    order = iter([1e-3, 1e-2, 1e-4])  # the third trial is the worst at every epoch

    class Ordered(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):
            return next(order)

    from deepshield.tuning import workers as workers_module

    original = workers_module.make_sampler
    workers_module.make_sampler = lambda *a, **k: Ordered()
    try:
        result = run_search(
            settings(space, tmp_path, pruner="median", sampler="random", trials=3),
            train_fn=fake_train,
            echo=lambda _: None,
        )
    finally:
        workers_module.make_sampler = original
    states = {t.params["optim.lr"]: t.state.name for t in study_of(result).get_trials()}
    assert states == {1e-3: "COMPLETE", 1e-2: "COMPLETE", 1e-4: "PRUNED"}


def test_resume_does_not_repeat_finished_trials(space, tmp_path):
    CALLS.clear()
    first = run_search(settings(space, tmp_path, trials=2), train_fn=fake_train, echo=lambda _: None)
    assert first.counts["done"] == 2 and len(CALLS) == 2
    second = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)  # the whole grid now
    trials = study_of(second).get_trials()
    assert len(CALLS) == 6 and len(trials) == 6
    assert len({(t.params["optim.lr"], t.params["optim.batch_size"]) for t in trials}) == 6
    # another space (or budget) under the same study name would mix incomparable trials
    space.write_text("optim.lr: [1e-4, 1e-3]\nbudget:\n  optim.epochs: 3\n")
    with pytest.raises(DeepShieldError, match="another search space"):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)


def test_a_study_resumed_with_other_training_settings_is_refused(space, tmp_path):
    # The base recipe was not in the study's fingerprint: resumed with another --set, new trials trained
    # another recipe and the best was chosen among trials that cannot be compared.
    run_search(settings(space, tmp_path, trials=2), train_fn=fake_train, echo=lambda _: None)
    changed = settings(space, tmp_path, overrides=["optim.weight_decay=0.5"])
    with pytest.raises(DeepShieldError, match=r"made with other training settings \(optim\.weight_decay: .* -> 0\.5\)"):
        run_search(changed, train_fn=fake_train, echo=lambda _: None)
    # how it runs may change: the search goes on
    run_search(settings(space, tmp_path, overrides=["threads=2"]), train_fn=fake_train, echo=lambda _: None)


def test_a_grid_whose_space_file_lists_its_keys_in_another_order_is_another_search(tmp_path):
    # A grid point is stored by its index in the grid, whose order follows the file's: with the keys
    # sorted in the fingerprint, the reordered file resumed the study, ran some points twice, others never.
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: [1e-4, 1e-3, 1e-2]\noptim.batch_size: [8, 16]\nbudget:\n  optim.epochs: 1\n")
    run_search(settings(space, tmp_path, trials=3), train_fn=fake_train, echo=lambda _: None)
    space.write_text("optim.batch_size: [8, 16]\noptim.lr: [1e-4, 1e-3, 1e-2]\nbudget:\n  optim.epochs: 1\n")
    with pytest.raises(DeepShieldError, match="another search space"):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_a_timeout_of_zero_is_refused(space, tmp_path, timeout):
    # 0 read as no timeout at all: a random search ran forever, a grid to its end; nan was no deadline
    # either (769 trials in 10 minutes, "target until timeout").
    with pytest.raises(DeepShieldError, match="--timeout must be a positive number of seconds"):
        run_search(settings(space, tmp_path, timeout=timeout), train_fn=fake_train, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["nan", "inf", "0", "-5"])
def test_the_cli_refuses_a_timeout_that_is_no_finite_number_of_seconds(space, tmp_path, capsys, text):
    from deepshield.cli.main import main

    with pytest.raises(SystemExit) as stopped:
        main(["tune", "--space", str(space), "--sampler", "random", "--timeout", text, "--out", str(tmp_path / "out"),
              "--no-tracking"])  # fmt: skip
    assert stopped.value.code == 2
    assert "--timeout: must be a finite number of seconds above 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_resumed_random_search_draws_what_an_uninterrupted_one_draws(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "optim.lr: {low: 1.0e-5, high: 1.0e-1, log: true}\noptim.batch_size: [8, 16, 32]\nbudget:\n  optim.epochs: 1\n"
    )

    def drawn(out: Path, *runs: int) -> list[dict]:
        for trials in runs:
            result = run_search(
                settings(space, tmp_path, out=out, sampler="random", trials=trials), train_fn=fake_train, echo=print
            )
        return [t.params for t in sorted(study_of(result).get_trials(), key=lambda t: t.number)]

    straight = drawn(tmp_path / "straight", 4)
    # Stopped after 2 trials and run again: each process seeded one generator from the trials it found, so
    # trials 2 and 3 drew other values than the uninterrupted search's.
    assert drawn(tmp_path / "resumed", 2, 4) == straight
    assert len({t["optim.lr"] for t in straight}) == 4


def test_baseline_trial_runs_the_config_defaults_first(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\noptim.batch_size: [8, 16, 32]\nbudget:\n  optim.epochs: 2\n"
    )
    result = run_search(
        settings(space, tmp_path, sampler="tpe", trials=2, baseline=True), train_fn=fake_train, echo=lambda _: None
    )
    first = study_of(result).get_trials()[0]
    defaults = load_config()
    assert first.params == {"optim.lr": defaults.optim.lr, "optim.batch_size": defaults.optim.batch_size}
    assert result.report.baseline.number == 0 and result.counts["done"] == 2


def test_a_baseline_float_of_zero_is_the_choice_0(tmp_path):
    """A float setting of 0.0 against the choices [0, 0.05] (YAML's 0 an int) was compared by repr: the
    baseline was skipped as "0.0 ... outside the searched {0, 0.05}"."""
    space = tmp_path / "space.yaml"
    space.write_text("optim.weight_decay: [0, 0.05]\noptim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    config = tmp_path / "train.yaml"
    config.write_text("optim:\n  weight_decay: 0\n  epochs: 1\n")
    lines: list[str] = []
    result = run_search(
        settings(space, tmp_path, config=config, sampler="random", trials=1, baseline=True),
        train_fn=fake_train,
        echo=lines.append,
    )
    assert not [line for line in lines if "baseline skipped" in line]
    assert result.report.baseline.number == 0 and result.report.baseline.params["optim.weight_decay"] == 0


def test_interrupted_trial_resumes_in_its_run_dir(space, tmp_path, monkeypatch):
    CALLS.clear()
    monkeypatch.setenv("FAKE_INTERRUPT_AT_LR", "0.001")  # Ctrl-C during the first trial with lr=1e-3
    with pytest.raises(KeyboardInterrupt):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    lost_dir = CALLS[-1]["run_dir"]
    result = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    trials = study_of(result).get_trials()
    retry = next(t for t in trials if RETRY_OF in t.user_attrs)
    lost = trials[retry.user_attrs[RETRY_OF]]
    assert lost.state.name == "FAIL" and lost.user_attrs[RUN_DIR] == retry.user_attrs[RUN_DIR] == lost_dir
    assert retry.state.name == "COMPLETE" and retry.params == lost.params
    resumed = next(c for c in CALLS if c["resume"])
    assert resumed["run_dir"] == lost_dir and resumed["from_epoch"] == 1  # continued, not restarted
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert result.counts["done"] == 6 and len({tuple(sorted(t.params.items())) for t in complete}) == 6


def test_an_epoch_checkpointed_before_its_trial_was_stopped_is_reported_by_the_retry(space, tmp_path, monkeypatch):
    # The retry's training resumed past the epoch, whose callback never came: the study lacked its value
    # (no pruning on it, "epoch 2 of 3" said of a 3-epoch trial) and the trial's printed line said so.
    monkeypatch.setenv("FAKE_INTERRUPT_BEFORE_CALLBACK_AT_LR", "0.001")
    with pytest.raises(KeyboardInterrupt):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    lines: list[str] = []
    result = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lines.append)
    retry = next(t for t in study_of(result).get_trials() if RETRY_OF in t.user_attrs)
    assert sorted(retry.intermediate_values) == [1, 2, 3]
    assert any(f"trial {retry.number} (resumes" in line and "of 3)" in line for line in lines)


@pytest.mark.parametrize("where", ["overrides", "trial_overrides"])
def test_a_search_whose_trials_max_steps_would_stop_is_refused_before_its_study(space, tmp_path, where):
    # Each trial stopped before its first validation and failed "is the validation split too small?", counted as
    # done: the grid used up by failures.
    with pytest.raises(DeepShieldError, match=r"max_steps .* stops each trial part-way.*--trial-set optim\.epochs=1"):
        run_search(settings(space, tmp_path, **{where: ["max_steps=2"]}), train_fn=fake_train, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_trial_stopped_by_a_full_disk_stops_the_search_and_resumes_with_it(space, tmp_path, monkeypatch):
    # A full disk was the trial's configuration failing: an error, counted as done and never run again, and
    # the search went on to fail the next trials alike (their parameters left out of the search for good).
    CALLS.clear()
    monkeypatch.setenv("FAKE_FULL_DISK_AT_LR", "0.001")
    with pytest.raises(OSError, match="No space left on device"):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    lost_dir = CALLS[-1]["run_dir"]
    result = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    trials = study_of(result).get_trials()
    retry = next(t for t in trials if RETRY_OF in t.user_attrs)
    assert retry.state.name == "COMPLETE" and retry.user_attrs[RUN_DIR] == lost_dir
    assert next(c for c in CALLS if c["resume"])["from_epoch"] == 1  # continued from its checkpoint
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert result.counts["done"] == 6 and len({tuple(sorted(t.params.items())) for t in complete}) == 6


def test_a_full_disk_in_a_worker_process_stops_the_search_in_one_line(space, tmp_path, monkeypatch, capfd):
    # With --n-jobs, the worker raised it in its own process: a traceback each, and the search ended as if done.
    monkeypatch.setenv("FAKE_FULL_DISK_AT_LR", "0.001")
    with pytest.raises(OSError, match=r"No space left on device: .*/checkpoints/last\.pt"):
        run_search(settings(space, tmp_path, n_jobs=2), train_fn=fake_train, echo=lambda _: None)
    assert "Traceback" not in capfd.readouterr().err
    monkeypatch.delenv("FAKE_FULL_DISK_AT_LR")
    result = run_search(settings(space, tmp_path, n_jobs=2), train_fn=fake_train, echo=lambda _: None)
    trials = [t for t in study_of(result).get_trials() if t.state.name == "COMPLETE"]
    assert result.counts["done"] == 6 and len({tuple(sorted(t.params.items())) for t in trials}) == 6
    assert any(RETRY_OF in t.user_attrs for t in trials)  # the lost trials continued


def test_interrupt_inside_optunas_tell_leaves_the_trial_lost_not_running(space, tmp_path, monkeypatch):
    """Ctrl-C while Optuna records a finished trial: Optuna's own `finally` turns it into an
    UnboundLocalError; the worker still closes its trial (not left RUNNING in a live process) and the
    search stops as interrupted, and the next start retries that trial from its own last checkpoint:
    its training had finished, so nothing is trained again."""
    import optuna.study._optimize as optimize

    tell = optimize._tell_with_warning
    calls = {"n": 0}

    def interrupted_tell(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second trial, after its training finished
            raise KeyboardInterrupt
        return tell(**kwargs)

    monkeypatch.setattr(optimize, "_tell_with_warning", interrupted_tell)
    with pytest.raises(KeyboardInterrupt):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    states = [t.state.name for t in study.get_trials()]
    assert states == ["COMPLETE", "FAIL"]
    monkeypatch.setattr(optimize, "_tell_with_warning", tell)
    CALLS.clear()
    result = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    trials = study_of(result).get_trials()
    assert result.counts["done"] == 6 and trials[2].user_attrs.get(RETRY_OF) == 1
    retry = next(c for c in CALLS if c["resume"])
    assert retry["run_dir"] == trials[1].user_attrs[RUN_DIR] and retry["from_epoch"] == 3  # all 3 epochs kept
    for trial in trials:
        if trial.state.name == "COMPLETE":  # recorded: only best.pt is left
            assert not (Path(trial.user_attrs[RUN_DIR]) / "checkpoints" / "last.pt").exists()


def test_killed_search_resumes_without_repeating(space, tmp_path):
    """SIGKILL a search process in the middle of a trial; the next run finishes the grid exactly once."""
    script = (
        "import sys; from pathlib import Path; from test_tuning_search import fake_train, settings;"
        "from deepshield.tuning.study import run_search;"
        f"run_search(settings(Path({str(space)!r}), Path({str(tmp_path)!r})), train_fn=fake_train, echo=print)"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "FAKE_KILL_AT_LR": "0.01",
    }
    process = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    study = optuna.load_study(study_name="space", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    running = [t for t in study.get_trials() if t.state.name == "RUNNING"]
    assert len(running) == 1 and running[0].params["optim.lr"] == 0.01
    finished_before = {t.number for t in study.get_trials() if t.state.name == "COMPLETE"}

    CALLS.clear()
    result = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    trials = study_of(result).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6 and len({tuple(sorted(t.params.items())) for t in complete}) == 6
    assert trials[running[0].number].state.name == "FAIL"  # the killed one, re-run as a retry
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF) == running[0].number)
    assert retry.user_attrs[RUN_DIR] == running[0].user_attrs[RUN_DIR]
    assert {c["run_dir"] for c in CALLS if c["resume"]} == {running[0].user_attrs[RUN_DIR]}
    assert len(CALLS) == 6 - len(finished_before)  # nothing finished was trained again


def test_parallel_worker_processes(space, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.2")
    result = run_search(settings(space, tmp_path, n_jobs=2), train_fn=fake_train, echo=lambda _: None)
    trials = [t for t in study_of(result).get_trials() if t.state.name == "COMPLETE"]
    assert len(trials) == 6 and len({tuple(sorted(t.params.items())) for t in trials}) == 6  # no point twice
    workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in trials}
    assert str(os.getpid()) not in workers  # trained in worker processes (both, unless one started late)
    threads = {(Path(t.user_attrs["run_dir"]) / "threads.txt").read_text() for t in trials}
    assert threads == {str(max(1, usable_cpus() // 2))}  # torch threads split between the processes


def test_two_searches_started_at_once_on_a_new_study_both_open_it(space, tmp_path, monkeypatch):
    """Two terminals (or a cron job) start one study at once: both made the new SQLite database's tables,
    and one stopped ('table alembic_version already exists'); both took the study for a new one."""
    from deepshield.tuning.study import open_study, plan_search

    plans = [plan_search(settings(space, tmp_path), echo=lambda _: None) for _ in range(2)]
    made = optuna.storages.RDBStorage.__init__
    together = threading.Barrier(2, timeout=1)

    def made_together(self, *args, **kwargs):
        # Without the lock both searches make the database at this moment; with it the barrier times out,
        # the other search waiting for the first to have opened the study.
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        made(self, *args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", made_together)
    lines: list[str] = []
    failures: list[Exception] = []

    def search(plan) -> None:
        try:
            open_study(plan, echo=lines.append)
        except DeepShieldError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=search, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(line.split(" in ")[0] for line in lines) == [
        "study 'space' (new)",
        "study 'space' (resumed: 0 trials done)",
    ]


def test_workers_that_pick_a_grid_point_at_once_take_different_points(space, tmp_path, monkeypatch):
    """Two workers with the same random draws read the free points at the same moment: with the
    claim lock the second reads after the first has written, so the points differ."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="race", storage=open_storage(url))
    read = GridSearchSampler.pick_free_point
    readers = threading.Barrier(2, timeout=2)

    def slow_read(self, study):
        free = read(self, study)
        # Without the lock both workers get here holding the same pick; with it the barrier times
        # out, the lock having kept the other worker out.
        with contextlib.suppress(threading.BrokenBarrierError):
            readers.wait()
        return free

    monkeypatch.setattr(GridSearchSampler, "pick_free_point", slow_read)
    grid_space = load_space(space)
    points: list[int] = []

    def worker() -> None:
        sampler = make_sampler("grid", grid_space, seed=7, n_trials=None, storage_url=url)
        study = optuna.load_study(study_name="race", storage=open_storage(url), sampler=sampler)
        trial = study.ask()
        points.append(sampler.grid_id(trial))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(points) == 2 and points[0] != points[1]


def test_an_engine_that_cannot_start_leaves_no_study_behind(space, tmp_path, monkeypatch):
    from deepshield.engines.local import LocalEngine
    from deepshield.tuning import study as study_module

    class Unreachable(LocalEngine):
        def node_count(self) -> int:
            raise DeepShieldError("cannot reach the Ray cluster at 127.0.0.1:1: Connection refused")

    monkeypatch.setattr(study_module, "make_engine", lambda *args, **kwargs: Unreachable())
    with pytest.raises(DeepShieldError, match="cannot reach the Ray cluster"):
        run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    assert not (tmp_path / "out" / "study.db").exists()  # with its report and MLflow run, made before


def stop_attrs(study: optuna.Study) -> dict:
    """The searches' stop marks on a study (trials.stop_requested), by attribute."""
    from deepshield.tuning.trials import STOP_REQUESTED

    return {key: value for key, value in study.user_attrs.items() if key.startswith(STOP_REQUESTED)}


def test_no_worker_starts_a_trial_once_the_search_is_stopped(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"

    def stopped_meanwhile(config, **kwargs):
        # As the driver marks the study on Ctrl-C, for a worker that its interrupt did not reach (a Ray
        # task whose cancellation was lost ran the rest of the grid).
        name = optuna.get_all_study_names(storage)[0]
        study = optuna.load_study(study_name=name, storage=storage)
        ((mark, _),) = stop_attrs(study).items()
        study.set_user_attr(mark, True)
        return fake_train(config, **kwargs)

    first = run_search(settings(space, tmp_path), train_fn=stopped_meanwhile, echo=lambda _: None)
    assert len(study_of(first).get_trials()) == 1  # the trial it was on ends; no other starts
    again = run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)  # its own mark
    assert len(study_of(again).get_trials()) == 6 and sorted(stop_attrs(study_of(again)).values()) == [False, True]


def test_ctrl_c_in_one_search_does_not_stop_another_on_the_same_study(space, tmp_path, monkeypatch):
    # Two terminals (or machines) run one study, as Optuna allows: Ctrl-C in one marked the whole study
    # stopped, and the other ended after its trial, its report saying the search was done.
    from deepshield.engines.local import LocalEngine
    from deepshield.tuning import study as study_module

    class CtrlC(LocalEngine):  # as LocalEngine.run_workers answers Ctrl-C while its workers run
        def run_workers(self, fn, count, echo, *, on_interrupt=None, **kwargs):
            assert on_interrupt is not None
            on_interrupt()
            raise KeyboardInterrupt

    others = []

    def another_search_interrupted_meanwhile(config, **kwargs):
        if not others:
            others.append("interrupted")
            with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
                patched.setattr(study_module, "make_engine", lambda *args, **kwargs: CtrlC())
                run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
        return fake_train(config, **kwargs)

    result = run_search(settings(space, tmp_path), train_fn=another_search_interrupted_meanwhile, echo=lambda _: None)
    complete = [t for t in study_of(result).get_trials() if t.state.name == "COMPLETE"]
    assert others == ["interrupted"] and len(complete) == 6
    assert sorted(stop_attrs(study_of(result)).values()) == [False, True]  # the other search's mark, and its own


def test_a_trials_own_threads_are_not_overwritten_by_the_workers_share(tmp_path):
    # With --n-jobs > 1 each worker's share of the CPUs replaced threads set by --trial-set or searched:
    # the study recorded one value and training used another.
    from deepshield.tuning.objective import TrialContext, trial_config
    from deepshield.tuning.selector import parse_selector
    from deepshield.tuning.space import parse_assignments

    (tmp_path / "budget.yaml").write_text("optim.lr: [1e-4, 1e-3]\nbudget:\n  optim.epochs: 1\n")
    context = TrialContext(
        base_config=load_config(),
        space=load_space(tmp_path / "budget.yaml", parse_assignments(["threads=1"])),
        selector=parse_selector("max.val_auc"),
        out_dir=tmp_path,
        study_name="s",
        target=2,
        threads=8,
    )
    assert trial_config(context, {"optim.lr": 1e-3}, tmp_path / "t", 0).threads == 1
    (tmp_path / "searched.yaml").write_text("threads: [1, 2]\nbudget:\n  optim.epochs: 1\n")
    context.space = load_space(tmp_path / "searched.yaml")
    assert trial_config(context, {"threads": 1}, tmp_path / "t", 0).threads == 1
    context.space = load_space(tmp_path / "budget.yaml")
    assert trial_config(context, {"optim.lr": 1e-3}, tmp_path / "t", 0).threads == 8  # else the worker's share


def test_the_searchs_mlflow_run_ends_when_its_results_cannot_be_logged(space, tmp_path, mlflow_store):
    # An artifact store the driver cannot write (missing credentials, a read-only mount) left it RUNNING.
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{mlflow_store(tmp_path / 'mlruns.db')}"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # no artifact can be written below a file
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment(load_config().tracking.experiment, artifact_location=(blocker / "artifacts").as_uri())
    search = SearchSettings(space=space, out=tmp_path / "out", tracking_uri=uri, prewarm=False, pruner="none", trials=1)
    result = run_search(search, train_fn=fake_train, echo=lambda _: None)
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


def test_a_server_databases_trial_whose_machine_died_is_run_again_on_resume(tmp_path):
    # Optuna fails trials whose heartbeat stopped only inside optimize, which the workers no longer call
    # once done and running trials reach the target: a dead machine's last trial stayed RUNNING for good.
    import datetime

    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from deepshield.tuning.trials import RUN_DIR, WORKER

    url = f"sqlite+pysqlite:///{tmp_path / 'study.db'}"  # not a file database: heartbeats, as a server's
    space = tmp_path / "space.yaml"
    space.write_text(
        "optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\noptim.batch_size: [8, 16]\nbudget:\n  optim.epochs: 1\n"
    )

    def search(trials: int):
        return run_search(
            settings(space, tmp_path, sampler="random", trials=trials, storage=url, study="s"),
            train_fn=fake_train,
            echo=lambda _: None,
        )

    search(2)
    storage = open_storage(url)
    study = optuna.load_study(study_name="s", storage=storage)
    lost = study.ask(
        {"optim.lr": FloatDistribution(1e-4, 1e-2, log=True), "optim.batch_size": CategoricalDistribution([8, 16])}
    )
    lost.set_user_attr(WORKER, "a-machine-that-died:4242")
    lost.set_user_attr(RUN_DIR, str(tmp_path / "out" / "trials" / "s" / "trial_0002"))
    storage.record_heartbeat(lost._trial_id)
    with storage.engine.begin() as connection:
        hours_ago = (datetime.datetime.now() - datetime.timedelta(hours=2)).isoformat(" ")
        connection.exec_driver_sql("UPDATE trial_heartbeats SET heartbeat = ?", (hours_ago,))
    result = search(3)
    assert result.counts["done"] == 3 and result.counts["running"] == 0


def test_the_data_root_a_search_reads_travels_with_its_trials(tmp_path, monkeypatch):
    # Read from $DEEPSHIELD_DATA_ROOT inside each trial: on a Ray cluster whose workers were started without
    # it, relative data paths were read from their working directory and every trial failed.
    from deepshield.tuning.study import _load_base_config

    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(tmp_path / "data"))
    base = _load_base_config(SearchSettings(space=tmp_path / "space.yaml"))
    assert base.data.root == (tmp_path / "data").resolve()
    monkeypatch.delenv("DEEPSHIELD_DATA_ROOT")
    assert _load_base_config(SearchSettings(space=tmp_path / "space.yaml")).data.root is None


@pytest.mark.parametrize(
    "storage, said",
    [
        ("garbage://x", "garbage:// is no database SQLAlchemy knows"),
        # Without its driver here (psycopg); where it is installed, nothing listens on port 1.
        ("postgresql://u@127.0.0.1:1/db", "driver is not installed here|Optuna storage .* cannot be opened"),
        ("not a url", "is not a database URL"),
    ],
)
def test_a_storage_that_cannot_be_used_is_one_line_and_leaves_no_search_folder(space, tmp_path, capsys, storage, said):
    # A traceback (NoSuchModuleError, ImportError), with an empty --out folder left behind.
    from deepshield.cli.main import main

    out = tmp_path / "out"
    code = main(["tune", "--space", str(space), "--storage", storage, "--out", str(out), "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("deepshield: error: ") and err.count("\n") == 1, err
    assert re.search(said, err), err
    assert not out.exists()


def test_a_storage_that_cannot_be_opened_is_refused_before_the_search_folder_is_made(space, tmp_path):
    (tmp_path / "a-file").write_text("")
    storage = f"sqlite:///{tmp_path / 'a-file' / 'study.db'}"
    with pytest.raises(DeepShieldError, match=r"the Optuna storage sqlite:///.* cannot be opened"):
        run_search(settings(space, tmp_path, storage=storage), train_fn=fake_train, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_tracking_store_that_cannot_be_used_is_refused_before_the_study_is_made(space, tmp_path, capsys):
    # An MLflow traceback from the parent run, with the new study left in <out>/study.db; train refuses it.
    from deepshield.cli.main import main

    out = tmp_path / "out"
    code = main(["tune", "--space", str(space), "--out", str(out), "--tracking-uri", "garbage://x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("deepshield: error: the MLflow store garbage://x cannot be used (")
    assert err.rstrip().endswith("give another --tracking-uri, or --no-tracking")
    assert not out.exists()


def test_run_dir_is_refused_in_set_as_in_the_space_file(space, tmp_path):
    # Accepted and ignored: the trials went under --out, not where --set run_dir said.
    with pytest.raises(
        DeepShieldError, match=r"run_dir is set by the search itself .* name the search folder with --out"
    ):
        run_search(
            settings(space, tmp_path, overrides=[f"run_dir={tmp_path / 'x'}"]), train_fn=fake_train, echo=lambda _: None
        )
    assert not (tmp_path / "out").exists() and not (tmp_path / "x").exists()


def test_a_report_written_removes_the_temporary_files_killed_writers_left(space, tmp_path):
    # A tune killed while it wrote its report left <file>.<its pid>.part beside it for good.
    from tests.conftest import left_by_a_killed_writer

    out = tmp_path / "out"
    names = ("results.csv", "best.yaml", "report.md", "plots/optimization_history.png")
    left = left_by_a_killed_writer(*(out / name for name in names))
    run_search(settings(space, tmp_path), train_fn=fake_train, echo=lambda _: None)
    assert [path for path in left if path.exists()] == []


def test_the_clis_notes_are_on_stderr_named_by_the_command(space, tmp_path, capsys):
    # "note: min.val_auc picks the lowest ..." was printed unnamed on stdout, where every other command
    # says "deepshield <command>: warning: ..." on stderr.
    from deepshield.cli.main import main

    args = ["tune", "--space", str(space), "--select", "min.val_auc", "--storage", "garbage://x"]
    code = main([*args, "--out", str(tmp_path / "out"), "--no-tracking"])
    printed = capsys.readouterr()
    assert code == 2 and "note:" not in printed.out
    assert printed.err.startswith("deepshield tune: note: min.val_auc picks the lowest val_auc"), printed.err


@pytest.mark.parametrize(("values", "said"), [([], "0 completed trials"), ([0.5], "1 completed trial")])
def test_skipped_importances_say_how_many_trials_completed(tmp_path, values, said):
    # "parameter importances skipped: 1 completed trial(s), at least 2 are needed".
    from deepshield.tuning.report import importance_plot
    from deepshield.tuning.space import parse_space

    study = optuna.create_study(direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2)
    for value in values:
        study.add_trial(
            optuna.trial.create_trial(params={"optim.lr": 1e-3}, distributions={"optim.lr": lr}, value=value)
        )
    space = parse_space({"optim.lr": {"low": 1e-4, "high": 1e-2}})
    assert importance_plot(study, space, tmp_path / "importances.png") == (
        None,
        f"parameter importances skipped: {said}, at least 2 are needed",
    )
