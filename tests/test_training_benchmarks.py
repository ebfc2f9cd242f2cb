"""Benchmarks during training: real labelled media scored every epoch with the product's pipeline,
logged, used to pick the exported epoch and to rank search trials; never overlapping the training data."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from skimage import data as skdata

from deepshield.errors import DeepShieldError
from deepshield.evaluation.calibration import fit_inconclusive_band, fit_temperature
from deepshield.evaluation.metrics import MetricsError, binary_log_loss
from deepshield.evaluation.scoring import FaceRow, FileRecord
from deepshield.inference.runtime import OnnxClassifier
from deepshield.media.codecs import h264_roundtrip
from deepshield.models.card import sigmoid
from deepshield.training.augment import degrade
from deepshield.training.benchmarks import (
    Benchmark,
    BenchmarkOverlapError,
    BenchmarkScores,
    benchmark_metrics,
    benchmark_name,
    catches_at_equal_false_alarms,
    paired_comparison,
)
from deepshield.training.checkpoint import BEST, load_checkpoint
from deepshield.training.config import AugmentConfig
from deepshield.training.export import RealMediaScale, fit_calibration
from deepshield.training.records import direction_warning, parse_selector
from deepshield.training.trainer import Trainer
from tests.face_data import write_benchmark, write_real_faces
from tests.test_training import tiny_config


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory) -> Path:
    return write_real_faces(tmp_path_factory.mktemp("faces") / "real", 8)


@pytest.fixture(scope="module")
def benchmark_dir(tmp_path_factory) -> Path:
    return write_benchmark(tmp_path_factory.mktemp("bench") / "Tiny Bench")


def test_benchmarks_are_logged_every_epoch_and_select_the_exported_epoch(
    real_dir, benchmark_dir, tmp_path, mlflow_store
):
    name = benchmark_name(benchmark_dir)
    assert name == "tiny_bench"
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "m.db"), tmp_path / "cache",
        **{"data.benchmarks": f'["{benchmark_dir}"]', "data.benchmark_frames": "2", "export.select": "min.val_loss", "optim.epochs": "3"},
    )  # fmt: skip
    result = Trainer(config, command="pytest").run()
    history = result.progress.history
    keys = (
        f"bench_{name}_face_auc",
        f"bench_{name}_file_auc",
        f"bench_{name}_ap",
        f"bench_{name}_fpr",
        f"bench_{name}_tpr",
        f"bench_{name}_tpr_at_2pct_fpr",
        "bench_auc",
        "bench_tpr_at_2pct_fpr",
        "bench_face_auc",
        "bench_fpr",
    )
    for record in history:
        for key in keys:
            assert key in record and 0.0 <= record[key] <= 1.0, (key, record)
        assert (
            record[f"bench_{name}_real_files"] == record[f"bench_{name}_fake_files"] == 2
        )  # what the intervals resample
        assert (
            record[f"bench_{name}_face_auc_lo"]
            <= record[f"bench_{name}_face_auc"]
            <= record[f"bench_{name}_face_auc_hi"]
        )
        assert record["bench_auc"] == pytest.approx(
            record[f"bench_{name}_face_auc"]
        )  # one benchmark: the mean is its AUC
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    for key in ("bench_auc", f"bench_{name}_file_auc", "val_auc"):
        assert [m.step for m in client.get_metric_history(result.progress.run_id, key)] == [1, 2, 3]
    # The exported epoch is the one export.select names, not the best synthetic AUC.
    value, epoch = parse_selector("min.val_loss").best_epoch(history)
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / BEST)
    assert best["epoch"] == epoch == result.progress.best_epoch and result.progress.best_value == pytest.approx(value)
    card = OnnxClassifier(result.bundle_dir).card
    assert card.training.epochs == epoch + 1 and card.training.selected_by == "min.val_loss"
    assert card.training.benchmarks == [str(benchmark_dir)]
    assert card.metrics["bench_auc"] == pytest.approx(history[epoch]["bench_auc"], abs=1e-4)
    (figures,) = card.record().benchmarks  # its files are counted, so the record says they are few
    assert (figures.real_files, figures.fake_files) == (2, 2) and figures.caution.startswith("only 2 real and 2 fake")
    # Named after the run, not like the shipped model.
    assert card.name == "run" and card.version == f"0.0.0+{result.progress.run_id[:12]}.ep{card.training.epochs}"


def test_a_threshold_for_a_false_positive_rate_on_real_media(real_dir, benchmark_dir, tmp_path, mlflow_store):
    root = real_dir.parent.parent  # data paths relative to the data root: the card holds no machine folder
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "t.db"), tmp_path / "cache",
        **{"data.root": str(root), "data.real_dirs": f'["{real_dir.relative_to(root)}"]', "data.benchmarks": f'["{benchmark_dir.relative_to(root)}"]',
           "data.benchmark_frames": "1", "export.threshold_fpr": "0.05", "optim.epochs": "1"},
    )  # fmt: skip
    card = OnnxClassifier(Trainer(config).run().bundle_dir).card
    text = card.model_dump_json()
    assert str(root) not in text and str(tmp_path) not in text
    # 5% of two real benchmark files or a few validation faces: none may be flagged.
    assert card.metrics["real_fpr_validation"] <= 0.05 and card.metrics["real_fpr_tiny_bench"] == 0.0
    assert "5% of each set of real media" in card.calibration.fitted_on


def test_a_benchmark_that_shares_a_file_with_the_training_data_is_refused(
    real_dir, benchmark_dir, tmp_path, mlflow_store
):
    leaky = tmp_path / "leaky"
    shutil.copytree(benchmark_dir, leaky)
    shutil.copy(next(real_dir.glob("*.png")), leaky / "real" / "copied.png")  # same content, other path
    config = tiny_config(
        real_dir,
        tmp_path / "run",
        mlflow_store(tmp_path / "o.db"),
        tmp_path / "cache",
        **{"data.benchmarks": f'["{leaky}"]'},
    )
    with pytest.raises(
        BenchmarkOverlapError, match=r"shares 1 file with the training data \(.*copied.png.*never be trained on"
    ):
        Trainer(config).run()
    same_folder = tiny_config(
        real_dir,
        tmp_path / "run2",
        mlflow_store(tmp_path / "o.db"),
        tmp_path / "cache",
        **{"data.benchmarks": f'["{real_dir.parent}"]'},
    )
    with pytest.raises(DeepShieldError, match="shares 8 file"):
        Trainer(same_folder).run()


def test_a_benchmark_of_a_layout_not_told_is_refused_before_the_face_bank_in_trains_words(
    real_dir, benchmark_dir, tiny_bundle, tmp_path, capsys, mlflow_store
):
    # "name it with --format", which train does not have, said after the face bank had been built.
    from deepshield.cli.main import main

    (tmp_path / "unlabelled").mkdir()
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "m.db"), tmp_path / "cache",
        **{"data.benchmarks": f'["{tmp_path / "unlabelled"}"]', "tracking.enabled": "false"},
    )  # fmt: skip
    with pytest.raises(DeepShieldError, match="cannot tell the dataset layout") as refused:
        Trainer(config).run()
    assert str(refused.value).endswith(
        "list its files in a CSV (path,label[,group]) and name that, or name a dataset prepared by `deepshield prepare`"
    )
    assert "--format" not in str(refused.value) and not (tmp_path / "cache").exists()
    # compare (no --format either) refuses it before any set is scored, in the same words
    code = main(["compare", str(tiny_bundle), "--against", str(tiny_bundle), "--on", str(benchmark_dir), str(tmp_path / "unlabelled"),
                 "--cache-dir", str(tmp_path / "c")])  # fmt: skip
    assert code == 2 and "name a dataset prepared by `deepshield prepare`" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_benchmark_another_process_is_cutting_is_waited_for_and_read(benchmark_dir, tmp_path, monkeypatch):
    # Two trainings cutting one benchmark at once wrote one temporary file: the second to rename it ended in
    # FileNotFoundError. Now the second waits for the first's cache, says so, and reads it.
    import threading
    import time

    import deepshield.training.benchmarks as benchmarks
    from deepshield.faces.crop import CropPolicy

    def load() -> Benchmark:
        return benchmarks.load_benchmark(benchmark_dir, CropPolicy(size=48), tmp_path / "cache", [], frames=2)

    save = Benchmark.save
    told = threading.Event()
    warn = benchmarks.log.warning
    monkeypatch.setattr(benchmarks.log, "warning", lambda *args: told.set() or warn(*args))
    other: dict[str, object] = {}

    def load_other() -> None:
        try:
            other["benchmark"] = load()
        except Exception as exc:  # noqa: BLE001 - the test reports it
            other["error"] = exc

    second = threading.Thread(target=load_other)

    def another_load_meanwhile(self, path):
        if not second.is_alive() and not other:  # the faces are cut: the other training starts now
            second.start()
            deadline = time.monotonic() + 60
            while second.is_alive() and not told.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)  # until it waits for this one, or (as before) has cut and saved its own
        save(self, path)

    monkeypatch.setattr(Benchmark, "save", another_load_meanwhile)
    first = load()
    second.join(timeout=60)
    assert "error" not in other, other.get("error")
    assert told.is_set()
    assert np.array_equal(other["benchmark"].crops, first.crops) and len(first.rows) > 0
    assert len(list((tmp_path / "cache").glob("benchmark-*.npz"))) == 1


def test_a_run_whose_epochs_give_no_value_to_choose_by_says_so(real_dir, benchmark_dir, tmp_path, mlflow_store):
    # A benchmark of real files only has no AUC: no epoch was chosen, and the run ended "FINISHED", exit 0,
    # with no bundle and no word.
    import shutil

    only_real = tmp_path / "only real"
    shutil.copytree(benchmark_dir / "real", only_real / "real")
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "n.db"), tmp_path / "cache",
        **{"data.benchmarks": f'["{only_real}"]', "export.select": "max.bench_auc", "optim.epochs": "1"},
    )  # fmt: skip
    with pytest.raises(DeepShieldError, match=r"no epoch had a value for export.select 'max.bench_auc'.* no bundle"):
        Trainer(config).run()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'n.db'}")
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]


def test_a_benchmark_metric_selector_needs_benchmarks(real_dir, tmp_path, mlflow_store):
    with pytest.raises(DeepShieldError, match=r"needs benchmarks: set data.benchmarks"):
        tiny_config(
            real_dir,
            tmp_path / "run",
            mlflow_store(tmp_path / "s.db"),
            tmp_path / "cache",
            **{"export.select": "max.bench_auc"},
        )
    assert parse_selector("max.bench_modern_swaps_file_auc_lo").direction == "maximize"
    assert parse_selector("min.bench_fpr").direction == "minimize"
    # The fakes caught at 2% false alarms, though its name ends in _fpr, is better higher (it was read as
    # a false-alarm rate: "higher is worse ... did you mean min.", and a study so told kept the worst trial);
    # a set's fakes caught at the epoch's threshold was no metric at all.
    for metric in ("bench_tpr_at_2pct_fpr", "bench_modern_swaps_tpr_at_2pct_fpr", "bench_modern_swaps_tpr"):
        assert parse_selector(f"max.{metric}").direction == "maximize"
        assert direction_warning(parse_selector(f"max.{metric}")) is None
    assert direction_warning(parse_selector("max.bench_modern_swaps_face_fpr")) == (
        "note: max.bench_modern_swaps_face_fpr picks the highest bench_modern_swaps_face_fpr, but higher is worse "
        "for it; did you mean min.bench_modern_swaps_face_fpr?"
    )
    with pytest.raises(DeepShieldError, match="unknown metric"):
        parse_selector("max.bench_auroc")


def test_codec_augmentation_is_deterministic_keeps_shape_and_changes_pixels():
    face = cv2.resize(skdata.astronaut()[60:220, 160:300], (63, 63))  # odd sides: padded for yuv420p, cut back
    once, again = h264_roundtrip(face, 35, (2, -1)), h264_roundtrip(face, 35, (2, -1))
    assert once.shape == face.shape and once.dtype == np.uint8
    assert np.array_equal(once, again)
    assert np.abs(once.astype(int) - face).mean() > 1.0
    assert (
        np.abs(h264_roundtrip(face, 45, (2, -1)).astype(int) - face).mean()
        > np.abs(h264_roundtrip(face, 18, (2, -1)).astype(int) - face).mean()
    )
    config = AugmentConfig(codec_probability=1.0, jpeg_probability=0.0)
    a = degrade(face, np.random.default_rng([3, 1]), config)
    b = degrade(face, np.random.default_rng([3, 1]), config)
    assert np.array_equal(a, b) and a.shape == face.shape and a.dtype == np.uint8
    # The codec alone, every other degradation off: its draw is applied, not only drawn.
    codec_only = AugmentConfig(
        codec_probability=1.0, jpeg_probability=0, rescale_probability=0, blur_probability=0, noise_probability=0,
        colour_probability=0, flip_probability=0, jitter_shift=0, jitter_scale=0, jitter_rotation_deg=0,
    )  # fmt: skip
    coded = degrade(face, np.random.default_rng([3, 1]), codec_only)
    untouched = degrade(face, np.random.default_rng([3, 1]), codec_only.model_copy(update={"codec_probability": 0.0}))
    assert np.array_equal(untouched, face) and np.abs(coded.astype(int) - face).mean() > 1.0


def test_tune_ranks_trials_by_a_benchmark_metric(tmp_path):
    """A search selecting on bench_auc picks the trial best on the benchmark, not on the synthetic split."""
    from deepshield.tuning.objective import TrainingOutcome
    from deepshield.tuning.study import SearchSettings, run_search

    def scripted(config, *, epoch_callback, parent_run_id, run_tags, resume, command=""):
        from types import SimpleNamespace

        lr = config.optim.lr
        progress = SimpleNamespace(epoch=0, history=[], run_id=None)
        while progress.epoch < config.optim.epochs:
            # synthetic AUC rises with lr; the benchmark prefers the smallest lr
            progress.history.append(
                {"epoch": progress.epoch, "train_loss": 0.5, "val_auc": 0.5 + 10 * lr, "bench_auc": 0.9 - 10 * lr}
            )
            progress.epoch += 1
            epoch_callback(progress)
        return TrainingOutcome(progress.history, None)

    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: [1e-3, 1e-2, 3e-2]\nbudget:\n  optim.epochs: 2\n")
    common = {"space": space, "tracking": False, "prewarm": False, "pruner": "none"}
    with_benchmark = ['data.benchmarks=["dev-eval/modern-swaps"]']  # a benchmark selector needs a benchmark configured
    by_bench = run_search(
        SearchSettings(out=tmp_path / "a", select="max.bench_auc", overrides=with_benchmark, **common),
        train_fn=scripted,
        echo=lambda _: None,
    )
    by_val = run_search(
        SearchSettings(out=tmp_path / "b", select="max.val_auc", **common), train_fn=scripted, echo=lambda _: None
    )
    assert by_bench.report.best.params == {"optim.lr": 1e-3} and by_bench.report.best.value == pytest.approx(0.89)
    assert by_val.report.best.params == {"optim.lr": 3e-2}


def _image_benchmark(name: str, labels: list[int]) -> Benchmark:
    """A benchmark of images with one face each (no crops: the tests give the logits)."""
    files = [FileRecord(i, f"{i}.png", label, name, "", str(i), "image", 1) for i, label in enumerate(labels)]
    rows = [FaceRow(0, i, 0, 0, 0, 0, 1.0, 0, 0, 10, 10) for i in range(len(labels))]
    return Benchmark(name, files, rows, np.zeros((len(labels), 8, 8, 3), np.uint8))


def test_real_files_only_keeps_the_real_files_faces_and_crops():
    benchmark = _image_benchmark("swaps", [0, 1, 0, 1, 1])
    benchmark.crops[:] = np.arange(5, dtype=np.uint8)[:, None, None, None]  # each crop says its file
    real = benchmark.real_files_only()
    assert [f.file_id for f in real.files] == [0, 2] and [r.file_id for r in real.rows] == [0, 2]
    assert real.crops[:, 0, 0, 0].tolist() == [0, 2] and real.name == "swaps"
    assert len(benchmark.files) == 5  # the original is left whole


def test_two_models_are_compared_on_the_same_files_paired():
    rng = np.random.default_rng(0)
    benchmarks = [_image_benchmark("edits", [0] * 20 + [1] * 20), _image_benchmark("swaps", [0] * 15 + [1] * 15)]
    reference, candidate = [], []
    for b in benchmarks:
        labels = np.array([f.label for f in b.files])
        logits = rng.normal(labels * 0.6, 1.0)
        reference.append(BenchmarkScores(b, b.scored(logits, 1.0)))
        candidate.append(BenchmarkScores(b, b.scored(logits + 0.8 * labels, 1.0)))  # every fake higher
    compared = paired_comparison(reference, candidate, resamples=300)
    assert set(compared) == {f"bench_{n}_{level}_auc" for n in ("edits", "swaps") for level in ("face", "file")} | {
        "bench_auc"
    }
    for key in ("bench_edits_face_auc", "bench_swaps_file_auc", "bench_auc"):
        assert compared[key].difference > 0 and compared[key].b_ahead, key
    mean_of_sets = np.mean([compared[f"bench_{n}_face_auc"].difference for n in ("edits", "swaps")])
    assert compared["bench_auc"].difference == pytest.approx(mean_of_sets)
    logged = [benchmark_metrics(side, threshold=0.5)["bench_auc"] for side in (reference, candidate)]
    assert compared["bench_auc"].difference == pytest.approx(logged[1] - logged[0])  # the figure training logs
    at_threshold = benchmark_metrics(reference, threshold=0.5)
    for b, side in zip(benchmarks, reference, strict=True):
        labels = np.array([f.label for f in b.files])
        probabilities = side.scored.probabilities()
        assert at_threshold[f"bench_{b.name}_tpr"] == pytest.approx(np.mean(probabilities[labels == 1] >= 0.5))
        assert at_threshold[f"bench_{b.name}_fpr"] == pytest.approx(np.mean(probabilities[labels == 0] >= 0.5))
    back = paired_comparison(candidate, reference, resamples=300)
    assert back["bench_auc"].difference == pytest.approx(-mean_of_sets) and back["bench_auc"].high < 0

    other = _image_benchmark("edits", [0] * 20 + [1] * 20)
    other.rows = other.rows[1:] + other.rows[:1]  # the same files, the faces in another order
    shifted = [BenchmarkScores(other, other.scored(np.zeros(40), 1.0)), candidate[1]]
    with pytest.raises(DeepShieldError, match="other faces"):
        paired_comparison(reference, shifted)
    unscored = np.where(np.arange(40) == 3, np.nan, 0.0)  # a model that leaves one face without a score
    with pytest.raises(MetricsError, match="NaN"):
        paired_comparison(
            reference, [BenchmarkScores(benchmarks[0], benchmarks[0].scored(unscored, 1.0)), candidate[1]]
        )


def test_a_benchmarks_intervals_are_resampled_enough_for_three_decimals():
    from deepshield.evaluation.metrics import bootstrap_intervals

    # 22 real and 24 fake files, as the modern swaps, ranked about as the shipped model ranks them (AUC ~0.63)
    swaps = _image_benchmark("swaps", [0] * 22 + [1] * 24)
    labels = np.array([f.label for f in swaps.files])
    logits = np.random.default_rng(3).normal(labels * 0.5, 1.0)
    logged = benchmark_metrics([BenchmarkScores(swaps, swaps.scored(logits, 1.0))], threshold=0.5)
    # the interval a very long bootstrap converges to; with 300 resamples the logged ends were 0.02 off it
    converged = bootstrap_intervals(labels, sigmoid(logits), resamples=40_000, seed=1).intervals["auc"]
    assert logged["bench_swaps_file_auc_lo"] == pytest.approx(converged.low, abs=0.01)
    assert logged["bench_swaps_file_auc_hi"] == pytest.approx(converged.high, abs=0.01)


def test_catches_at_equal_false_alarms_are_counted_per_set_below_its_reals():
    edits = _image_benchmark("edits", [0] * 6 + [1] * 4)
    only_fakes = _image_benchmark("generated", [1] * 3)  # no reals: no false alarm to hold, left out
    logits = np.array([-3.0, -2, -1, 0, 1, 2, 2.5, 1.5, 0.5, -5])  # reals' top two at 1 and 2
    results = [
        BenchmarkScores(edits, edits.scored(logits, 1.0)),
        BenchmarkScores(only_fakes, only_fakes.scored(np.zeros(3), 1.0)),
    ]
    (catches,) = catches_at_equal_false_alarms(results, [0, 1, 2, 6, 9])
    assert (catches.benchmark, catches.reals, catches.fakes) == ("edits", 6, 4)
    # none flagged: above 2 (2.5); one: above 1 (1.5 too); two: above 0 (0.5 too); 6 and 9 are not below 6 reals
    assert catches.caught == {0: 1, 1: 2, 2: 3}
    # 6 and 9 were dropped without a word (benchmark_bundle.py printed nothing for them): said as compare says it
    assert catches.beyond_reals == (6, 9)
    assert catches.nothing_to_compare() == (
        "edits with at most 6 or 9 of 6 real files flagged: every real file may be, and every fake caught: "
        "nothing to compare"
    )


def test_benchmark_bundle_says_a_k_at_or_above_a_sets_reals_compares_nothing(monkeypatch, capsys, tmp_path):
    from tests.script_support import load_script

    script = load_script("benchmark_bundle")
    edits = _image_benchmark("edits", [0] * 2 + [1] * 2)

    from types import SimpleNamespace

    logits = np.array([-1.0, 1.0, 2.0, -2.0])
    scored = SimpleNamespace(  # the one bundle score_bundles gives: its label, card and calibrated logits
        label="b 1",
        bundle="b",
        results=[BenchmarkScores(edits, edits.scored(logits, 1.0))],
        card=SimpleNamespace(calibration=SimpleNamespace(threshold=0.5)),
        logits=lambda: {"edits": logits},
    )
    monkeypatch.setattr(script, "score_bundles", lambda *args: [scored])
    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(tmp_path))
    (tmp_path / "x").mkdir()
    monkeypatch.setattr(
        "sys.argv", ["benchmark_bundle", "b", "--benchmarks", "x", "--caught-with-reals", "1", "2", "5"]
    )
    assert script.main() == 0
    printed = capsys.readouterr().out
    assert "edits: fakes caught (of 2) with at most 1 of 2 reals flagged: 1" in printed
    assert (
        "edits with at most 2 or 5 of 2 real files flagged: every real file may be, and every fake caught: " in printed
    )


def test_a_real_media_threshold_keeps_a_band_near_it():
    """A threshold set on real media far above the validation optimum: the balanced-accuracy band around
    it would reach down to scores real faces commonly get; capped, it stays within 0.1 of the threshold."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(500), np.ones(500)]
    logits = np.r_[rng.normal(-2, 1, 500), rng.normal(2, 1, 500)]
    bench_reals = {"bench": [(np.zeros(1, np.int64), np.array([logit]), 1) for logit in rng.normal(2.5, 1, 40)]}
    fitted = fit_calibration(labels, logits, bench_reals, target_fpr=0.05)
    assert fitted.real_fpr["bench"] <= 0.05 and fitted.threshold > 0.95
    uncapped = fit_inconclusive_band(labels, sigmoid(logits / fitted.temperature), fitted.threshold, max_half_width=1)
    assert uncapped.low < fitted.threshold - 0.3  # what the band was before the cap
    band = fitted.band
    assert fitted.threshold - 0.1 - 1e-9 <= band.low <= fitted.threshold <= band.high <= fitted.threshold + 0.1 + 1e-9
    assert "capped at threshold +- 0.1" in band.fitted_on
    # A target under a whole percent is said as given: 0.005 read "at most 0%".
    for target, said in ((0.005, "0.5%"), (0.0001, "0.01%"), (0.01, "1%")):
        assert (
            f"at most {said} of each set" in fit_calibration(labels, logits, bench_reals, target_fpr=target).fitted_on
        )


def test_a_real_media_target_that_no_threshold_meets_is_said_in_the_card_and_the_log():
    # Real files scored at the top of the scale: no threshold below 1 flags at most 5% of them. Training's
    # export wrote a card claiming the target with 4 of 20 flagged; calibrate refuses such a fit.
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200), np.ones(200)]
    logits = np.r_[rng.normal(-2, 1, 200), rng.normal(2, 1, 200)]
    saturated = np.r_[np.full(4, 60.0), rng.normal(-2, 1, 16)]
    bench_reals = {"talking-heads": [(np.zeros(1, np.int64), np.array([logit]), 1) for logit in saturated]}
    fitted = fit_calibration(labels, logits, bench_reals, target_fpr=0.05)
    assert fitted.real_fpr["talking-heads"] == 0.2
    assert fitted.fitted_on.endswith(
        f"; the target is missed: at {fitted.threshold:.4f} it flags talking-heads 4 of 20 (20.0%)"
    )
    # Said by the export that writes it on a card (each epoch's fit said it again).
    assert fitted.warnings == [f"no threshold flags at most 5% of each set of real media: {fitted.fitted_on}"]
    kept = fit_calibration(labels, logits, {"talking-heads": bench_reals["talking-heads"][4:]}, target_fpr=0.05)
    assert "missed" not in kept.fitted_on and not kept.warnings


def test_a_probability_scale_on_real_media_keeps_the_validation_cut():
    """export.calibrate_on = 'benchmarks': a model sure of its own blends (validation) ranks real media
    noisily; the temperature fitted on the real media is larger, the threshold and band cut the same logits."""
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(300), np.ones(300)]
    logits = np.r_[rng.normal(-3, 1.5, 300), rng.normal(3, 1.5, 300)]
    bench_labels = np.r_[np.zeros(80), np.ones(80)]
    bench_logits = np.r_[rng.normal(-2, 3, 80), rng.normal(2, 3, 80)]
    reals = {"bench": [(np.zeros(1, np.int64), np.array([x]), 1) for x in bench_logits[:80]]}
    media = RealMediaScale(bench_labels, bench_logits, "160 bench faces")
    validation = fit_calibration(labels, logits, reals, target_fpr=0.05)
    fitted = fit_calibration(labels, logits, reals, target_fpr=0.05, real_media=media)
    assert fitted.temperature == pytest.approx(fit_temperature(bench_labels, bench_logits))
    assert fitted.temperature > 2 * validation.temperature and fitted.offset == 0
    assert fitted.scale.logit(fitted.threshold) == pytest.approx(validation.scale.logit(validation.threshold))
    assert fitted.scale.logit(fitted.band.low) == pytest.approx(validation.scale.logit(validation.band.low))
    assert fitted.real_fpr == pytest.approx(validation.real_fpr)  # images: the same files flagged
    # Calibrated where it is read: the real media's log-loss falls.
    before = binary_log_loss(bench_labels, validation.scale.probability(bench_logits))
    assert binary_log_loss(bench_labels, fitted.scale.probability(bench_logits)) < before - 0.2
    assert "probabilities on real media: temperature" in fitted.fitted_on and "160 bench faces" in fitted.fitted_on


def test_export_fits_the_temperature_on_the_benchmarks_faces(real_dir, benchmark_dir, tmp_path, mlflow_store):
    config = tiny_config(
        real_dir, tmp_path / "run", mlflow_store(tmp_path / "c.db"), tmp_path / "cache",
        **{"data.benchmarks": f'["{benchmark_dir}"]', "data.benchmark_frames": "1", "export.threshold_fpr": "0.05",
           "export.calibrate_on": "benchmarks", "optim.epochs": "1"},
    )  # fmt: skip
    result = Trainer(config).run()
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / BEST)
    bench_labels, bench_logits = best["benchmark_faces"]["tiny_bench"]
    assert set(bench_labels.tolist()) == {0, 1}
    calibration = OnnxClassifier(result.bundle_dir).card.calibration
    assert calibration.temperature == pytest.approx(fit_temperature(bench_labels, bench_logits), rel=1e-6)
    validation = fit_calibration(best["val_labels"], best["val_logits"], best["benchmark_reals"], 0.05)
    assert calibration.logit(calibration.threshold) == pytest.approx(validation.scale.logit(validation.threshold))
    assert f"log-loss on {bench_labels.size} faces of tiny_bench" in calibration.fitted_on


def test_a_scale_on_benchmarks_needs_benchmarks(real_dir, tmp_path, mlflow_store):
    for key, extra in (("export.calibrate_on", {}), ("synthetic.calibrate_on", {"synthetic.mode": "joint"})):
        with pytest.raises(DeepShieldError, match=f"{key} = 'benchmarks' needs data.benchmarks"):
            tiny_config(
                real_dir,
                tmp_path / "run",
                mlflow_store(tmp_path / "c.db"),
                tmp_path / "cache",
                **{key: "benchmarks"},
                **extra,
            )


def test_a_file_sets_cached_faces_are_cut_again_when_a_listed_photo_changes(tmp_path, astronaut):
    # Keyed by the CSV alone, a listed photo replaced kept its old faces in compare's and training's cache.
    from deepshield.faces.crop import CropPolicy
    from deepshield.training.benchmarks import _listing_key

    photo = tmp_path / "photos" / "a.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), astronaut)
    listing = tmp_path / "set.csv"
    listing.write_text(f"path,label\n{photo},real\n")
    before = _listing_key(listing, CropPolicy(), 32, 20)
    cv2.imwrite(str(photo), np.roll(astronaut, 150, axis=1)[:400])
    assert _listing_key(listing, CropPolicy(), 32, 20) != before


def test_synthetic_crops_follow_their_faces_through_joins_and_subsets():
    """A benchmark keeps only its padded faces' inside crops, by row; its real files alone renumber them, and
    a benchmark whose padded faces are all fakes keeps none for its reals (it crashed at its first epoch)."""
    from deepshield.evaluation.scoring import FaceRow, FileRecord
    from deepshield.faces.crop import SyntheticCrops
    from deepshield.training.benchmarks import Benchmark

    one = SyntheticCrops.of([(1, np.full((4, 4, 3), 1, np.uint8))])
    two = SyntheticCrops.of([(0, np.full((4, 4, 3), 2, np.uint8))])
    joined = SyntheticCrops.joined([(0, one), (2, None), (3, two)])
    assert joined.rows.tolist() == [1, 3] and joined.pixels[:, 0, 0, 0].tolist() == [1, 2]
    assert SyntheticCrops.joined([(0, None)]) is None and SyntheticCrops.of([]) is None
    files = [FileRecord(0, "real.png", 0, "s", "none", "r"), FileRecord(1, "fake.png", 1, "s", "swap", "f")]
    rows = [FaceRow(0, file_id, 0, 0, 0, 0, 0.9, 0.0, 0.0, 1.0, 1.0) for file_id in (0, 1, 0, 1)]
    crops = np.zeros((4, 4, 4, 3), np.uint8)
    benchmark = Benchmark("b", files, rows, crops, joined)
    reals = benchmark.real_files_only()
    assert len(reals.rows) == 2 and reals.synthetic_crops is None  # the padded faces (rows 1 and 3) were fakes
    reals = Benchmark("b", files, rows, crops, SyntheticCrops.of([(2, np.ones((4, 4, 3), np.uint8))])).real_files_only()
    assert reals.synthetic_crops.rows.tolist() == [1]  # row 2 of all is the second real face


def test_a_temperature_fitted_at_the_end_of_its_range_is_said_and_recorded():
    # Separated without error, the log-loss falls still as the scale sharpens: the fit stops at 0.05, its bound.
    labels = np.r_[np.zeros(50), np.ones(50)]
    logits = np.r_[np.full(50, -1.0), np.full(50, 1.0)]
    fitted = fit_calibration(labels, logits, {}, target_fpr=None)
    assert fitted.temperature == pytest.approx(0.05, rel=1e-3)
    assert "stopped at the bottom of its range (0.05)" in fitted.fitted_on
    # Said by the export that writes it on a card (each epoch's fit said it again), naming the split.
    (warning,) = fitted.warnings
    assert warning.endswith("truer scale (validation split (100 faces: real + synthesised fakes, identity-disjoint))")
    rng = np.random.default_rng(0)
    usual = fit_calibration(labels, np.r_[rng.normal(-2, 1, 50), rng.normal(2, 1, 50)], {}, target_fpr=None)
    assert "range" not in usual.fitted_on and not usual.warnings
