"""`deepshield calibrate`: temperature and threshold refitted on a labelled set, written as a new bundle version."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from deepshield.cli.main import EXIT_OK, EXIT_USAGE, main
from deepshield.errors import EXIT_INTERRUPTED, BundleError, DeepShieldError
from deepshield.evaluation.metrics import MetricsError, binary_log_loss
from deepshield.evaluation.recalibrate import (
    Method,
    at_calibration,
    calibrated_version,
    recalibrate,
    write_calibrated_bundle,
)
from deepshield.evaluation.scoring import CLEAN, FACE_COLUMNS, FileRecord, ScoredSet
from deepshield.faces.crop import CropPolicy
from deepshield.inference.runtime import DEFAULT_BUNDLE, OnnxClassifier, read_card
from deepshield.inference.video_rule import VideoRule
from deepshield.models.card import Calibration, InconclusiveBand, ModelCard, sigmoid
from tests.conftest import absolute_paths_in, module_edited
from tests.test_evaluation_report import folder_dataset, stop_cropping  # noqa: F401 - the shared tiny dataset fixture


def overconfident_set(n_files: int = 300, faces_per_file: int = 3, seed: int = 0) -> ScoredSet:
    """Files whose faces' logits are 4x what their true probabilities call for (an overconfident model)."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 1.5, n_files)
    labels = (rng.random(n_files) < sigmoid(true_logit)).astype(int)
    files = [
        FileRecord(
            i,
            f"f{i}.mp4",
            int(labels[i]),
            "toy",
            "none" if labels[i] == 0 else "toy-swap",
            f"g{i}",
            "video",
            faces_per_file,
        )
        for i in range(n_files)
    ]
    file_id = np.repeat(np.arange(n_files), faces_per_file)
    logits = 4 * (true_logit[file_id] + rng.normal(0, 0.3, file_id.size))
    columns = {name: np.zeros(file_id.size, np.int64) for name in FACE_COLUMNS}
    columns.update(
        file_id=file_id, frame_pos=np.tile(np.arange(faces_per_file), n_files), logit=logits.astype(np.float32)
    )
    columns["frame_index"] = columns["frame_pos"] * 10
    return ScoredSet(files=files, conditions=["clean"], faces=columns, temperature=1.0, mode="media")


def with_synthetic_logits(scored: ScoredSet, seed: int = 6) -> ScoredSet:
    """`scored` with a synthetic-face logit per face that ranks its fakes above its reals, noisily."""
    rng = np.random.default_rng(seed)
    labels = scored.labels_of_faces()
    scored.faces["synthetic_logit"] = (np.where(labels == 1, 2.0, -2.0) + rng.normal(0, 1.5, labels.size)).astype(
        np.float32
    )
    scored.synthetic_temperature = 1.0
    return scored


def toy_card(**calibration) -> ModelCard:
    return ModelCard(
        name="toy",
        version="1.2.0",
        architecture="tiny",
        input_size=64,
        crop_policy=CropPolicy(size=64),
        calibration=Calibration(**calibration),
    )


def test_calibrated_version():
    when = date(2025, 1, 2)
    assert calibrated_version("1.2.0", when) == "1.2.0+cal.20250102"
    assert calibrated_version("1.2.0+cal.20240101", when) == "1.2.0+cal.20250102"
    assert calibrated_version("", when) == "0.0.0+cal.20250102"
    # A trained bundle's run and epoch are kept (they were dropped: two epochs became one name and version).
    assert calibrated_version("0.0.0+66cda29b0787.ep1", when) == "0.0.0+66cda29b0787.ep1.cal.20250102"
    assert calibrated_version("0.0.0+66cda29b0787.ep1.cal.20240101", when) == "0.0.0+66cda29b0787.ep1.cal.20250102"


def test_calibrate_help_names_the_version_it_gives(capsys):
    # Its help and description said "a '+cal.<date>' local part", the format before a trained bundle's run and
    # epoch were kept in front of it.
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "'+cal.<date>'" not in shown
    assert "0.0.0+<run id>.ep<epoch>.cal.<date>" in shown


def test_recalibration_lowers_log_loss_on_an_overconfident_set():
    scored = overconfident_set()
    card = toy_card()
    result = recalibrate(scored, card, described_as="toy set", when=date(2025, 1, 2))
    assert result.temperature_after == pytest.approx(4, rel=0.3)
    assert result.after["face"]["log_loss"] < result.before["face"]["log_loss"] - 0.1
    assert result.after["file"]["log_loss"] < result.before["file"]["log_loss"]
    assert result.after["face"]["ece"] < result.before["face"]["ece"]
    assert result.after["face"]["auc"] == pytest.approx(result.before["face"]["auc"])  # a temperature never reorders
    labels = scored.labels_of_faces()
    assert result.after["face"]["log_loss"] == pytest.approx(
        binary_log_loss(labels, sigmoid(scored.faces["logit"] / result.temperature_after)), rel=1e-4
    )
    new = result.card
    assert new.version == "1.2.0+cal.20250102" and new.name == card.name and new.crop_policy == card.crop_policy
    assert (
        new.calibration.temperature == result.temperature_after and new.calibration.threshold == result.threshold_after
    )
    assert (
        "toy set" in new.calibration.fitted_on
        and "300 files" in new.calibration.fitted_on
        and "balanced accuracy" in new.calibration.fitted_on
    )
    assert new.metrics["calibration_before_face_log_loss"] > new.metrics["calibration_after_face_log_loss"]
    band = new.calibration.inconclusive  # refitted on the same file scores around the new threshold
    assert band is not None and band.low <= new.calibration.threshold <= band.high and band.high - band.low > 0
    assert "balanced accuracy is within 0.02" in band.fitted_on and "300 scores" in band.fitted_on


def test_a_temperature_fitted_at_the_top_of_its_range_is_said_and_recorded():
    # Inverted logits: the log-loss falls still as the scale flattens, and the fit stops at 20, its bound.
    scored = overconfident_set()
    scored.faces["logit"] = -scored.faces["logit"]
    result = recalibrate(scored, toy_card(), described_as="toy set", when=date(2025, 1, 2))
    assert result.temperature_after == pytest.approx(20, rel=1e-3)
    assert result.scale_note is not None and "stopped at the top of its range (20)" in result.scale_note
    assert result.scale_note in result.card.calibration.fitted_on
    assert recalibrate(overconfident_set(), toy_card(), when=date(2025, 1, 2)).scale_note is None


def test_target_fpr_bounds_false_positives_over_files():
    scored = overconfident_set(seed=1)
    result = recalibrate(scored, toy_card(), Method(target_fpr=0.05))
    assert result.after["file"]["false_positive_rate"] <= 0.05
    assert "false-positive rate <= 0.05" in result.card.calibration.fitted_on
    looser = recalibrate(scored, toy_card(), Method(target_fpr=0.3))
    assert looser.threshold_after < result.threshold_after
    assert looser.after["file"]["recall"] >= result.after["file"]["recall"]


def test_a_target_false_positive_rate_no_threshold_meets_is_refused():
    """Real files the model is sure are fake (saturated at 1.0): the threshold stopped at 1.0, flagged 20% of
    the real files, and the card claimed a false-positive rate of at most 5%."""
    scored = overconfident_set(200, seed=2)
    sure = [f.file_id for f in scored.files if f.label == 0][:20]
    scored.faces["logit"][np.isin(scored.faces["file_id"], sure)] = 60.0
    reals = sum(f.label == 0 for f in scored.files)
    with pytest.raises(
        DeepShieldError,
        match=rf"no threshold flags at most 0.05 of each source's real files: at 1.0000 it flags toy 20 of {reals} ",
    ):
        recalibrate(scored, toy_card(), Method(target_fpr=0.05, keep_temperature=True))
    fitted = recalibrate(scored, toy_card(), Method(target_fpr=0.2, keep_temperature=True))  # one it meets
    assert fitted.after["file"]["false_positive_rate"] <= 0.2


def test_target_fpr_holds_in_every_source_and_keep_temperature_moves_only_the_threshold():
    scored = overconfident_set(600, seed=3)
    small = [f for f in scored.files if f.label == 0][:40]
    for record in small:
        record.source = "small"  # a small source of real files the model scores high
    scored.faces["logit"][np.isin(scored.faces["file_id"], [f.file_id for f in small])] += 6.0
    card = toy_card(temperature=2.0, threshold=0.5)
    result = recalibrate(scored, card, Method(target_fpr=0.05, keep_temperature=True))
    assert result.temperature_after == 2.0 and "temperature kept" in result.card.calibration.fitted_on
    assert "each source" in result.card.calibration.fitted_on
    scores = scored.file_scores(CLEAN, VideoRule(), 2.0)
    for source in ("toy", "small"):
        real = [f.file_id for f in scored.files if f.source == source and f.label == 0]
        assert (scores[real] >= result.threshold_after).mean() <= 0.05, source
    pooled_real = scores[[f.file_id for f in scored.files if f.label == 0]]
    pooled_threshold = np.quantile(pooled_real, 0.95)
    small_scores = scores[[f.file_id for f in small]]
    assert (small_scores >= pooled_threshold).mean() > 0.15  # a pooled 5% would flag over three times that here
    assert result.after["face"]["auc"] == pytest.approx(result.before["face"]["auc"])
    assert result.after["face"]["log_loss"] == pytest.approx(result.before["face"]["log_loss"])


def test_each_source_held_out_is_fitted_on_the_others():
    scored = overconfident_set(600, seed=2)
    for record in scored.files[::2]:
        record.source = "Other Set"
    shipped = toy_card(temperature=1.0, threshold=0.5)
    result = recalibrate(scored, shipped, Method(target_fpr=0.05))
    assert [c.source for c in result.held_out] == ["Other Set", "toy"]
    for check in result.held_out:
        assert check.real_files + check.fake_files == 300
        assert check.fit.temperature == pytest.approx(4, rel=0.35)  # fitted without the held-out half
        assert check.after["ece"] < check.before["ece"] - 0.05  # the overconfidence fitted away carries over
        assert check.after["flagged"] <= 0.1 < check.before["flagged"]  # 5% on the fitting half, near it here
        assert check.after["caught"] < check.before["caught"]  # the price of the stricter threshold
    metrics = result.card.metrics
    assert metrics["calibration_heldout_other_set_after_flagged"] == round(result.held_out[0].after["flagged"], 4)
    assert "calibration_heldout_toy_before_ece" in metrics
    assert recalibrate(overconfident_set(), shipped).held_out == []  # one source: nothing to hold out


def test_verdicts_changed_are_counted_with_the_bands_verdicts_use():
    # A band starting above even odds (0.7): verdicts use it from 0.5 on (ScoreRule.from_calibration), so a
    # file at 0.6 is inconclusive, not "no signs found", before and after. Counted with the stored bands,
    # files that keep their verdict were counted as changed (8 of 400 against 3 with the shipped card).
    from deepshield.inference.verdict import ScoreRule

    scored = overconfident_set(600, faces_per_file=1, seed=4)
    card = toy_card(temperature=1.0, threshold=0.8, inconclusive=InconclusiveBand(low=0.7, high=0.9, fitted_on="toy"))
    result = recalibrate(scored, card, Method())
    before = scored.file_scores(CLEAN, VideoRule(), 1.0)
    after = scored.file_scores(CLEAN, VideoRule(), result.temperature_after)
    old_rule, new_rule = ScoreRule.from_calibration(card.calibration), ScoreRule.from_calibration(result.calibration)
    used = sum(old_rule.classify(b) != new_rule.classify(a) for b, a in zip(before, after, strict=True))
    stored = sum(
        card.calibration.band.classify(b) != result.calibration.band.classify(a)
        for b, a in zip(before, after, strict=True)
    )
    assert result.verdicts_changed == used != stored


def test_keep_verdicts_refits_the_probabilities_and_keeps_every_verdict(capsys, folder_dataset, tiny_bundle, tmp_path):  # noqa: F811
    scored = overconfident_set(600, faces_per_file=1, seed=4)  # one face a file: its score is the face's
    for record in scored.files[::2]:
        record.source = "other"
    band = InconclusiveBand(low=0.7, high=0.9, fitted_on="toy band")
    card = toy_card(temperature=1.0, threshold=0.8, inconclusive=band)
    result = recalibrate(scored, card, Method(keep_verdicts=True))
    new = result.calibration
    assert result.temperature_after == pytest.approx(4, rel=0.3)
    to_logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    # The band kept is the one verdicts use: from even odds (0.5, logit 0), not the stored 0.7.
    for old, refit in ((0.8, new.threshold), (0.5, new.band.low), (0.9, new.band.high)):
        assert to_logit(refit) * result.temperature_after == pytest.approx(to_logit(old), abs=1e-9)  # same logit
    assert new.threshold < 0.7  # the 0.8 of an overconfident model is a much lower honest probability
    assert "kept at the same logits" in new.band.fitted_on and "verdicts unchanged" in new.fitted_on
    before = scored.file_scores(CLEAN, VideoRule(), 1.0)
    after = scored.file_scores(CLEAN, VideoRule(), result.temperature_after)
    assert [band.from_even_odds().classify(b) for b in before] == [new.band.classify(a) for a in after]
    assert result.verdicts_changed == 0 and result.card.metrics["calibration_verdicts_changed"] == 0
    assert result.after["face"]["ece"] < result.before["face"]["ece"] - 0.05
    assert [c.source for c in result.held_out] == ["other", "toy"]
    for check in result.held_out:  # fitted on the other half: the same files flagged and caught, honest probabilities
        assert check.after["flagged"] == check.before["flagged"] and check.after["caught"] == check.before["caught"]
        assert check.after["ece"] < check.before["ece"] - 0.05
    with pytest.raises(DeepShieldError, match="keeps the threshold"):
        Method(target_fpr=0.05, keep_verdicts=True)

    assert recalibrate(scored, card, Method(keep_verdicts=True), version="1.2.2").card.version == "1.2.2"
    # never its source's version: two bundles of one name and version that score differently
    with pytest.raises(DeepShieldError, match=r"would carry its source's version 1\.2\.0 "):
        recalibrate(scored, card, Method(keep_verdicts=True), version="1.2.0")
    same_day = card.model_copy(update={"version": "1.2.0+cal.20250102"})
    with pytest.raises(DeepShieldError, match=r"its source's version 1\.2\.0\+cal\.20250102 \(calibrated again"):
        recalibrate(scored, same_day, Method(keep_verdicts=True), when=date(2025, 1, 2))

    out = tmp_path / "cal"
    args = ["calibrate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--keep-verdicts"]
    assert main([*args, "--target-fpr", "0.05"]) == EXIT_USAGE
    assert "cannot be combined" in capsys.readouterr().err and not out.exists()
    # The source's own version is refused before the slow scoring (it was refused after it, the work lost).
    source_version = OnnxClassifier(tiny_bundle).card.version
    assert main([*args, "--version", source_version]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "would carry its source's version" in err and "files:" not in err and not out.exists()
    assert main([*args, "--version", "9.9.9", "--frames", "2", "--no-progress"]) == EXIT_OK
    assert "verdicts changed: 0 of" in capsys.readouterr().out
    old, refit = OnnxClassifier(tiny_bundle).card.calibration, OnnxClassifier(out).card
    assert refit.version == "9.9.9"
    assert to_logit(refit.calibration.threshold) * refit.calibration.temperature == pytest.approx(
        to_logit(old.threshold) * old.temperature, rel=1e-6
    )


def test_fit_offset_lowers_a_shifted_score_with_the_verdicts_kept():
    """Real files scored well below the fakes but all high (a synthetic-face score on sharp real photos):
    Platt scaling brings them down; a temperature alone cannot without flattening the fakes."""
    scored = overconfident_set(600, faces_per_file=1, seed=7)
    scored.faces["logit"] = (scored.faces["logit"] + 6.0).astype(np.float32)  # every face 6 logits too high
    for record in scored.files[::2]:
        record.source = "other"
    card = toy_card(temperature=1.0, threshold=0.99, inconclusive=InconclusiveBand(low=0.9, high=0.995, fitted_on="x"))
    platt = recalibrate(scored, card, Method(keep_verdicts=True, fit_offset=True))
    alone = recalibrate(scored, card, Method(keep_verdicts=True))
    assert platt.calibration.offset == pytest.approx(6, abs=1.5) and alone.calibration.offset == 0
    assert platt.after["face"]["log_loss"] < alone.after["face"]["log_loss"] - 0.05
    assert platt.after["face"]["ece"] < alone.after["face"]["ece"]
    assert platt.verdicts_changed == 0 and "Platt scaling" in platt.calibration.fitted_on
    assert "(logit - offset) / temperature" in platt.card.outputs["logit"]  # the card says how to apply it
    real = [f.file_id for f in scored.files if f.label == 0]
    before = scored.file_scores(CLEAN, VideoRule(), 1.0)[real]
    after = replace(scored, offset=platt.calibration.offset).file_scores(
        CLEAN, VideoRule(), platt.calibration.temperature
    )[real]
    assert (before > 0.7).mean() > 0.5 and (after > 0.7).mean() < 0.2  # real files no longer read as likely fakes
    for check in platt.held_out:
        assert check.after["flagged"] == check.before["flagged"] and check.after["ece"] < check.before["ece"]
    again = recalibrate(scored, platt.card, Method(keep_verdicts=True), version="again")  # a kept offset stays
    assert again.calibration.offset == platt.calibration.offset
    assert again.temperature_after == pytest.approx(platt.temperature_after, rel=0.05)
    shifted_only = recalibrate(scored, card, Method(keep_verdicts=True, keep_temperature=True, fit_offset=True))
    assert shifted_only.temperature_after == 1.0 and shifted_only.calibration.offset == pytest.approx(6, abs=1.5)
    assert shifted_only.verdicts_changed == 0 and "temperature kept, offset" in shifted_only.calibration.fitted_on
    with pytest.raises(DeepShieldError, match="nothing to refit"):
        Method(keep_verdicts=True, keep_temperature=True)


def test_keep_verdicts_refuses_an_offset_that_would_move_verdicts():
    # Every face 6 logits too LOW: the fitted offset moves even odds down, the kept band's low edge lands
    # above 0.5, and verdicts take a band down to even odds: 134 of 600 files moved from no signs found to
    # inconclusive while the card said "the verdicts unchanged".
    scored = overconfident_set(600, faces_per_file=1, seed=7)
    scored.faces["logit"] = (scored.faces["logit"] - 6.0).astype(np.float32)
    card = toy_card(temperature=1.0, threshold=0.3, inconclusive=InconclusiveBand(low=0.1, high=0.4, fitted_on="x"))
    with pytest.raises(DeepShieldError, match=r"--keep-verdicts cannot keep every verdict here: \d+ of 600 files"):
        recalibrate(scored, card, Method(keep_verdicts=True, fit_offset=True))
    assert recalibrate(scored, card, Method(keep_verdicts=True)).verdicts_changed == 0  # a temperature alone can


@pytest.mark.parametrize("score", ["manipulation", "synthetic"])
def test_every_rate_measured_at_the_old_threshold_leaves_the_card(score):
    from deepshield.evaluation.recalibrate import measured_at_calibration

    at_threshold = {
        "manipulation": ["real_fpr_validation", "bench_fpr", "bench_modern_swaps_fpr", "bench_face_edits_face_fpr",
                         "bench_modern_swaps_tpr", "val_recall", "val_balanced_accuracy", "val_log_loss"],
        "synthetic": ["synthetic_real_fpr", "synthetic_jpeg_real_fpr", "synthetic_bench_dfdc_sample_fpr",
                      "synthetic_holdout_tpr"],
    }  # fmt: skip
    either = ["bench_modern_swaps_fpr_either", "bench_fpr_either"]  # the product's flags: by either score
    kept = ["val_auc", "val_eer", "bench_modern_swaps_file_auc", "bench_dfdc_sample_tpr_at_2pct_fpr",
            "calibration_after_file_ece", "synthetic_holdout_auc", "synthetic_calibration_after_file_recall"]  # fmt: skip
    other = "synthetic" if score == "manipulation" else "manipulation"
    assert all(measured_at_calibration(key, score) for key in at_threshold[score] + either)
    assert not any(measured_at_calibration(key, score) for key in kept + at_threshold[other])


def test_calibrate_cli_holds_out_a_source_of_real_files_alone(capsys, folder_dataset, tiny_bundle, tmp_path):  # noqa: F811
    """A source of one class is held out with the rate it has (real files flagged), not a 'nan of 0'."""
    listing = tmp_path / "two-sources.csv"
    rows = [
        ("fake/swap/edited.jpg", "fake", "mixed"),
        ("fake/swap/dark.png", "fake", "mixed"),
        ("real/astronaut.jpg", "real", "mixed"),
        ("real/mirror.png", "real", "photos"),
    ]
    listing.write_text("path,label,source\n" + "".join(f"{folder_dataset / p},{y},{s}\n" for p, y, s in rows))
    out = tmp_path / "cal"
    args = ["calibrate", str(listing), "--model", str(tiny_bundle), "--out", str(out), "--keep-verdicts"]
    assert main([*args, "--no-progress"]) == EXIT_OK
    held_out = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  photos:")]
    assert len(held_out) == 1 and "real files flagged" in held_out[0] and "(of 1)" in held_out[0]
    assert "fakes caught" not in held_out[0] and "nan" not in held_out[0]


def test_one_class_set_is_refused():
    scored = overconfident_set(20)
    for f in scored.files:
        f.label = 1
    with pytest.raises(MetricsError, match=r"^metrics need both classes: all 60 faces are fake$"):
        recalibrate(scored, toy_card())


def test_calibrate_refuses_one_class_before_cropping(capsys, folder_dataset, tiny_bundle, tmp_path, monkeypatch):  # noqa: F811
    """Own photos alone (the README's calibrate example without its fake/ folder) scored every file, then
    stopped on 'metrics need both classes': now refused before the first face is looked for."""
    import deepshield.evaluation.scoring as scoring

    listing = tmp_path / "reals.csv"
    listing.write_text(
        "path,label\n" + "".join(f"{folder_dataset / 'real' / n},real\n" for n in ("astronaut.jpg", "mirror.png"))
    )
    monkeypatch.setattr(scoring, "crop_media", lambda *a, **k: pytest.fail("cropped before the refusal"))
    args = ["calibrate", str(listing), "--model", str(tiny_bundle), "--out", str(tmp_path / "cal"), "--no-progress"]
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "calibrate needs real and fake files: all 2 found in" in err and "are real" in err
    assert not (tmp_path / "cal").exists()


def test_a_prepared_split_of_one_class_is_refused(capsys, folder_dataset, tiny_bundle, tmp_path, monkeypatch):  # noqa: F811
    """A small dataset's test split held reals alone: calibrate read every crop, then stopped on 'metrics need
    both classes', saying nothing of what to do."""
    import deepshield.data.manifest as manifest

    listing = tmp_path / "reals.csv"
    listing.write_text(
        "path,label\n" + "".join(f"{folder_dataset / 'real' / n},real\n" for n in ("astronaut.jpg", "mirror.png"))
    )
    dataset = tmp_path / "faces"
    assert main(["prepare", str(listing), "--out", str(dataset), "--no-progress", "--split", "0.5,0.5"]) == EXIT_OK
    monkeypatch.setattr(manifest, "load_crop", lambda *a, **k: pytest.fail("read a crop before the refusal"))
    capsys.readouterr()
    args = ["calibrate", str(dataset), "--split", "train", "--model", str(tiny_bundle), "--out", str(tmp_path / "cal")]
    assert main([*args, "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"calibrate needs real and fake files: all 1 found in {dataset} (split train) are real" in err, err
    assert "another --split, or fake files added to the dataset" in err and "metrics need" not in err
    assert not (tmp_path / "cal").exists()
    # Of a val or test split, `dataset balance` (which makes fakes in train alone) is no way out: said as
    # dataset stats says it.
    args[args.index("train")] = "val"
    assert main([*args, "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "dataset balance" not in err, err
    assert "another --split, or add fake files of more people or videos, or prepare again with another" in err, err


def test_calibrate_cli_writes_a_loadable_bundle(capsys, folder_dataset, tiny_bundle, tmp_path):  # noqa: F811
    out = tmp_path / "tiny-cal"
    before_card = json.loads((tiny_bundle / "model_card.json").read_text())
    code = main(
        [
            "calibrate",
            str(folder_dataset),
            "--model",
            str(tiny_bundle),
            "--out",
            str(out),
            "--target-fpr",
            "0.0",
            "--frames",
            "2",
            "--no-progress",
        ]
    )
    assert code == EXIT_OK
    printed = capsys.readouterr().out
    assert "in-sample" in printed
    fitted = OnnxClassifier(out).card.calibration
    band = fitted.inconclusive
    # what it says it fitted is what the new card holds (temperature 1 and threshold 0.5: the tiny bundle's)
    assert (
        f"face-swap score: temperature 1 -> {fitted.temperature:.4g}; offset 0 -> 0; "
        f"threshold 0.5000 -> {fitted.threshold:.4f}\n" in printed
    )
    assert "\nverdicts changed: 3 of 5 files\n" in printed
    assert (
        f"inconclusive band {band.low:.4f} to {band.high:.4f} (thresholds whose balanced accuracy is within 0.02"
        in printed
    )
    classifier = OnnxClassifier(out)  # loads: checksum, card and graph all consistent
    card = classifier.card
    assert card.calibration.temperature != before_card["calibration"]["temperature"]
    assert card.calibration.threshold != before_card["calibration"]["threshold"]
    # named as a card names paths: an absolute one named this machine's folder in the card and its README
    assert card.version.startswith("0.0.1+cal.") and card.calibration.fitted_on.startswith(f"{folder_dataset.name}:")
    assert absolute_paths_in(out) == []
    assert (out / "model.onnx").read_bytes() == (tiny_bundle / "model.onnx").read_bytes()
    assert json.loads((tiny_bundle / "model_card.json").read_text()) == before_card  # the source bundle is untouched
    # Its in-sample figures before and after, per face and per file; the threshold fitted for no real flagged
    # flags none of them, and a temperature (monotone) leaves each AUC as it was.
    figures = ["auc", "balanced_accuracy", "ece", "eer", "false_positive_rate", "log_loss", "recall"]
    assert {k for k in card.metrics if k.startswith("calibration_") and k != "calibration_verdicts_changed"} == {
        f"calibration_{when}_{level}_{figure}"
        for when in ("before", "after")
        for level in ("face", "file")
        for figure in figures
    }
    assert card.metrics["calibration_after_file_false_positive_rate"] == 0.0
    for level in ("face", "file"):
        assert card.metrics[f"calibration_after_{level}_auc"] == card.metrics[f"calibration_before_{level}_auc"], level
    readme = (out / "README.md").read_text()  # its own, not the source's (which describes the source's figures)
    assert readme.startswith(f"# {card.name} {card.version}\n") and "recalibrated by `deepshield calibrate`" in readme
    assert f"threshold {card.calibration.threshold:.4f}" in readme

    # The new bundle evaluates with its own threshold and temperature.
    report = tmp_path / "rep"
    assert (
        main(
            [
                "evaluate",
                str(folder_dataset),
                "--model",
                str(out),
                "--out",
                str(report),
                "--frames",
                "2",
                "--bootstrap",
                "0",
                "--no-progress",
            ]
        )
        == EXIT_OK
    )
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["settings"]["threshold"] == pytest.approx(card.calibration.threshold)
    assert metrics["file"]["confusion"]["fp"] == 0  # fitted for no false positive on this very set


def test_a_recalibrated_card_keeps_its_aucs_and_drops_rates_at_the_old_threshold(
    capsys,
    folder_dataset,  # noqa: F811
    tiny_bundle,
    tmp_path,
):
    from tests.conftest import bundle_with_record

    source = bundle_with_record(tiny_bundle, tmp_path / "recorded")
    out = tmp_path / "cal"
    args = [
        "calibrate",
        str(folder_dataset),
        "--model",
        str(source),
        "--out",
        str(out),
        "--frames",
        "2",
        "--no-progress",
    ]
    assert main(args) == EXIT_OK
    metrics = OnnxClassifier(out).card.metrics
    assert metrics["bench_modern_swaps_file_auc"] == 0.604  # the ranking, and so the AUC, is the network's
    assert not any(k.startswith("real_fpr_") for k in metrics)  # flagged at a threshold no longer used
    (swaps, _dfdc) = OnnxClassifier(out).card.record().benchmarks
    assert swaps.real_flagged is None
    err = capsys.readouterr().err
    assert "warning: only" in err and "a calibration fitted on so few is unreliable" in err


def _recorded_on(
    bundle: Path, folder: Path, benchmarks: list[str], metrics: dict[str, float], threshold: float
) -> Path:
    """A copy of `bundle` whose card names `benchmarks` (as training does), records `metrics` and applies
    `threshold`."""
    import shutil

    copy = Path(shutil.copytree(bundle, folder))
    card = json.loads((copy / "model_card.json").read_text())
    card["training"] = {"benchmarks": benchmarks}
    card["metrics"] = metrics
    card["calibration"]["threshold"] = threshold
    (copy / "model_card.json").write_text(json.dumps(card))
    return copy


def _product_scores(bundle: Path, folder: Path, frames: int) -> dict[str, list[float]]:
    """The file scores the product gives the labelled folder's files that have a face, by label."""
    from deepshield.inference.analysis import Detector

    detector = Detector.from_bundle(bundle)
    scores: dict[str, list[float]] = {"real": [], "fake": []}
    for path in sorted(folder.rglob("*.*")):
        try:
            verdict = detector.analyze_path(path, frames=frames).verdict
        except DeepShieldError:
            continue  # the broken file: scored by neither
        if verdict.probability is not None:
            scores["real" if "real" in path.parts else "fake"].append(verdict.probability)
    return scores


def test_a_recalibrated_card_measures_its_rates_again_on_the_sets_it_holds(
    capsys,
    folder_dataset,  # noqa: F811
    tiny_bundle,
    tmp_path,
    monkeypatch,
):
    """--keep-verdicts carried every rate over: the shipped 1.2.3 said 1 of 22 modern-swaps real files
    flagged by each score, 0 of 534 face-edits ones by the synthetic-face score, where the product flagged
    0 of 22 and 3 of 534 (and its own held-out figures said 0.0056). The rates on a set the calibration holds
    are the product's at the new thresholds; the refitted score's others leave the card."""
    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(folder_dataset.parent))  # the card names it as training did
    key = folder_dataset.name
    planted = 0.25  # no share of its 2 real files with a face, nor of its 3 fakes
    reals = sorted(_product_scores(tiny_bundle, folder_dataset, frames=2)["real"])
    assert len(reals) == 2 and reals[0] < reals[1]
    source = _recorded_on(
        tiny_bundle,
        tmp_path / "recorded",
        [folder_dataset.name, "dev-eval/never-scored"],
        {
            "val_auc": 0.93,
            "val_recall": 0.5,
            "val_log_loss": 0.3,
            "real_fpr_validation": 0.009,
            f"real_fpr_{key}": planted,
            f"bench_{key}_fpr": planted,
            f"bench_{key}_face_fpr": planted,
            f"bench_{key}_tpr": planted,
            f"bench_{key}_file_auc": 0.6,
            f"bench_{key}_tpr_at_2pct_fpr": 0.5,
            "real_fpr_never_scored": 0.03,
            "bench_never_scored_fpr": 0.03,
            "bench_fpr": 0.1,
        },
        threshold=(reals[0] + reals[1]) / 2,  # one real file flagged of two
    )
    out = tmp_path / "cal"
    args = ["calibrate", str(folder_dataset), "--model", str(source), "--out", str(out), "--keep-verdicts"]
    assert main([*args, "--frames", "2", "--no-progress", "--version", "9.9.9"]) == EXIT_OK
    printed = capsys.readouterr().out
    card = OnnxClassifier(out).card
    metrics = card.metrics

    # What the product says of the same files with the new bundle: a file is flagged at or above the threshold.
    scores = _product_scores(out, folder_dataset, frames=2)
    flagged = {label: np.mean(np.array(values) >= card.calibration.threshold) for label, values in scores.items()}
    assert len(scores["real"]) == 2 and len(scores["fake"]) == 3 and flagged["real"] == 0.5
    assert metrics[f"real_fpr_{key}"] == metrics[f"bench_{key}_fpr"] == round(flagged["real"], 4) != planted
    assert metrics[f"bench_{key}_tpr"] == round(flagged["fake"], 4) != planted
    assert metrics[f"bench_{key}_face_fpr"] != planted  # real faces flagged, measured again too
    (figures,) = card.record().benchmarks  # the set it has no AUC on is not in the record
    assert figures.labelled_set == folder_dataset.name and figures.real_flagged == round(flagged["real"], 4)
    # Not measured here, at a threshold no longer applied: removed, whatever --keep-verdicts kept of the verdicts.
    for gone in ("real_fpr_never_scored", "bench_never_scored_fpr", "bench_fpr", "real_fpr_validation"):
        assert gone not in metrics, gone
    assert "val_recall" not in metrics and "val_log_loss" not in metrics  # at the old threshold and scale
    # Rankings and rates at a fixed share of false alarms hold.
    assert metrics["val_auc"] == 0.93 and metrics[f"bench_{key}_file_auc"] == 0.6
    assert metrics[f"bench_{key}_tpr_at_2pct_fpr"] == 0.5
    assert f"measured again at the new thresholds on: {folder_dataset.name}" in printed
    # Each group with its own reason: the data root was blamed for figures calibrate can never measure.
    on_sets, of_training = (line for line in printed.splitlines() if "not carried over" in line)
    assert "real_fpr_never_scored" in on_sets and "bench_fpr" in on_sets and "val_recall" not in on_sets
    assert "not found here, under $DEEPSHIELD_DATA_ROOT or the working folder: dev-eval/never-scored" in on_sets
    assert "which calibrate cannot measure" in of_training and "real_fpr_validation" in of_training
    assert "val_recall" in of_training and "never_scored" not in of_training
    readme = (out / "README.md").read_text()
    assert f"where it holds them) on {folder_dataset.name}: measured again on the calibration set" in readme


def test_rates_calibrate_never_measures_are_not_said_to_need_their_set(tmp_path, monkeypatch):
    # Grouped by the set's name inside the rate's, a rate by either score was told "calibrate on them too to
    # measure these again", and the pooled one was called the training run's.
    from types import SimpleNamespace

    from deepshield.evaluation.recalibrate import CalibrationResult
    from deepshield.models.card import TrainingInfo

    (tmp_path / "dev-eval" / "swaps").mkdir(parents=True)
    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(tmp_path))
    card = toy_card().model_copy(update={"training": TrainingInfo(benchmarks=["dev-eval/swaps"])})
    removed = ["bench_swaps_fpr", "bench_swaps_fpr_either", "bench_fpr_either", "real_fpr_validation"]
    on_sets, never = CalibrationResult.removed_by_reason(SimpleNamespace(rates_removed=removed), card)
    assert on_sets.endswith("measure these again): bench_swaps_fpr") and "not found" not in on_sets
    assert never.endswith("bench_swaps_fpr_either, bench_fpr_either, real_fpr_validation")


def test_rates_are_measured_again_by_both_scores_and_the_refitted_ones_removed():
    from deepshield.evaluation.recalibrate import HeldBenchmark
    from deepshield.models.card import SyntheticScoreInfo, TrainingInfo, card_outputs

    scored = with_synthetic_logits(overconfident_set(400, seed=5))
    stale = {
        "real_fpr_toy": 0.77,
        "bench_toy_fpr": 0.77,
        "bench_toy_tpr": 0.77,
        "synthetic_bench_toy_fpr": 0.77,
        "real_fpr_other": 0.03,
        "synthetic_bench_other_fpr": 0.03,
        "synthetic_real_fpr": 0.004,
        "synthetic_holdout_tpr": 0.85,
        "synthetic_holdout_auc": 0.99,
        "real_fpr_validation": 0.009,
    }
    card = toy_card(temperature=3.0, threshold=0.4).model_copy(
        update={
            "synthetic": SyntheticScoreInfo(calibration=Calibration(temperature=1.0, threshold=0.5), pooling="all"),
            "outputs": card_outputs(synthetic=True),
            "training": TrainingInfo(benchmarks=["sets/toy", "sets/other"]),
            "metrics": stale,
        }
    )
    real = np.array([f.label == 0 for f in scored.files])
    toy = HeldBenchmark("sets/toy", real, ~real)  # every file of the set, real and fake

    def flagged(view: ScoredSet, calibration: Calibration, chosen: np.ndarray) -> float:
        at = replace(view, offset=calibration.offset)
        scores = at.file_scores(CLEAN, VideoRule(), calibration.temperature)
        return round(float((scores[chosen] >= calibration.threshold).mean()), 4)

    for method in (Method(keep_verdicts=True, keep_temperature=True, fit_offset=True), Method(target_fpr=0.05)):
        result = recalibrate(scored, card, method, score="synthetic", benchmarks=[toy])
        new, metrics = result.card, result.card.metrics
        synthetic_view = scored.synthetic_view()
        assert metrics["synthetic_bench_toy_fpr"] == flagged(synthetic_view, new.synthetic.calibration, real)
        # the face-swap score's threshold did not move: measured again on the set held, kept on the others
        assert metrics["real_fpr_toy"] == metrics["bench_toy_fpr"] == flagged(scored, card.calibration, real)
        assert metrics["bench_toy_tpr"] == flagged(scored, card.calibration, ~real)
        assert metrics["real_fpr_other"] == 0.03 and metrics["real_fpr_validation"] == 0.009
        # the synthetic-face score's rates it could not measure: removed, with the verdicts kept or not
        for gone in ("synthetic_bench_other_fpr", "synthetic_real_fpr", "synthetic_holdout_tpr"):
            assert gone not in metrics, (method, gone)
        assert metrics["synthetic_holdout_auc"] == 0.99
        assert result.rates_measured_on == ["sets/toy"]
        assert set(result.rates_removed) == {"synthetic_bench_other_fpr", "synthetic_real_fpr", "synthetic_holdout_tpr"}
        record = new.record()
        assert record.synthetic_real_flagged is None  # not claimed at a threshold it was not measured at

    result = recalibrate(scored, card, Method(target_fpr=0.05))  # the face-swap score, no set held
    metrics = result.card.metrics
    assert not any(k in metrics for k in ("real_fpr_toy", "bench_toy_fpr", "bench_toy_tpr", "real_fpr_validation"))
    assert metrics["synthetic_bench_other_fpr"] == 0.03 and metrics["synthetic_real_fpr"] == 0.004
    assert result.rates_measured_on == []


def test_calibrate_refuses_to_overwrite(capsys, folder_dataset, tiny_bundle, tmp_path):  # noqa: F811
    assert (
        main(["calibrate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(tiny_bundle)]) == EXIT_USAGE
    )
    assert "refusing to overwrite" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    assert (
        main(
            [
                "calibrate",
                str(folder_dataset),
                "--model",
                str(tiny_bundle),
                "--out",
                str(taken),
                "--frames",
                "1",
                "--no-progress",
            ]
        )
        == EXIT_USAGE
    )
    assert (
        capsys.readouterr().err
        == f"deepshield: error: {taken} is not a model bundle (it has no model_card.json) and --force replaces only a "
        "bundle: give another folder, or empty this one yourself\n"
    )
    assert (taken / "something").read_text() == "x"


def test_calibrate_refuses_a_new_bundle_inside_the_one_calibrated(capsys, folder_dataset, tmp_path):  # noqa: F811
    # The copy of the bundle took in the new one's lock and part folder: a second model.onnx in cal.part/.
    source = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, source)
    inside = source / "cal"
    assert main(["calibrate", str(folder_dataset), "--model", str(source), "--out", str(inside)]) == EXIT_USAGE
    assert f"--out {inside} is inside the bundle being calibrated ({source})" in capsys.readouterr().err
    assert sorted(p.name for p in source.iterdir()) == sorted(p.name for p in DEFAULT_BUNDLE.iterdir())
    with pytest.raises(BundleError, match="is inside the bundle being calibrated"):
        write_calibrated_bundle(source, inside, read_card(source))
    assert not inside.exists()


def test_the_synthetic_score_is_refitted_alone(capsys, folder_dataset, tiny_bundle, tmp_path):  # noqa: F811
    """--score synthetic: the synthetic logits set the synthetic calibration; the face-swap one is kept."""
    from deepshield.models.card import SyntheticScoreInfo, card_outputs

    scored = with_synthetic_logits(overconfident_set(400, seed=5))
    card = toy_card(temperature=3.0, threshold=0.4).model_copy(
        update={
            "synthetic": SyntheticScoreInfo(calibration=Calibration(temperature=1.0, threshold=0.5), pooling="all"),
            "outputs": card_outputs(synthetic=True),
        }
    )
    result = recalibrate(scored, card, Method(target_fpr=0.02, keep_temperature=True), score="synthetic")
    new = result.card
    assert new.calibration == card.calibration  # the face-swap score's calibration is untouched
    assert new.synthetic.calibration == result.calibration and result.calibration.threshold > 0.5
    synthetic_files = scored.synthetic_view().file_scores(CLEAN, VideoRule(), 1.0)
    real = [f.file_id for f in scored.files if f.label == 0]
    assert (synthetic_files[real] >= result.calibration.threshold).mean() <= 0.02
    assert (synthetic_files[real] >= 0.5).mean() > 0.05  # the old threshold flagged more than twice the target
    assert "synthetic_calibration_after_file_false_positive_rate" in new.metrics
    assert not any(k.startswith("calibration_") for k in new.metrics)

    # Of a two-score bundle, the verdicts counted as changed are the refitted score's calls, and said so.
    from tests.test_synthetic_score import export_two_output_bundle

    _net, two = export_two_output_bundle(tmp_path / "two")
    command = ["calibrate", str(folder_dataset), "--model", str(two), "--frames", "2", "--no-progress"]
    assert main([*command, "--out", str(tmp_path / "two-cal"), "--score", "synthetic"]) == EXIT_OK
    said = capsys.readouterr().out
    # Named as everywhere else ("by the synthetic score's", "by the manipulation score's" were the option's words).
    assert "files (by the synthetic-face score's call alone; the face-swap score's call may hold a verdict)" in said
    assert "\nsynthetic-face score: temperature " in "\n" + said
    assert main([*command, "--out", str(tmp_path / "two-cal-swap")]) == EXIT_OK
    said = capsys.readouterr().out
    assert "files (by the face-swap score's call alone; the synthetic-face score's call may hold a verdict)" in said

    # A bundle without the score says so and writes nothing.
    out = tmp_path / "cal"
    args = ["calibrate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--score", "synthetic"]
    assert main(args) == EXIT_USAGE
    assert "no synthetic-face score" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (Calibration(temperature=0.75), Calibration(temperature=4.4, offset=0.3)),
        (Calibration(temperature=1.016), Calibration(temperature=7.47)),
        (Calibration(temperature=4.397), Calibration(temperature=0.6, offset=-1.0)),
    ],
)
def test_a_boundary_kept_at_its_logit_keeps_a_score_fitted_exactly_at_it_on_its_upper_side(old, new):
    """Thresholds are fitted at a sample's own score; re-expressed at a new scale through the logit, the
    round trip's rounding put about one such sample in nine below its own threshold (and, with the
    logit's own rounding and the new scale's left out, a few in 50,000 on some CPUs)."""
    logits = np.clip(np.random.default_rng(0).normal(0, 3, 20000), -12, 12)
    boundaries = np.array([at_calibration(p, old, new) for p in old.probability(logits)])
    assert (new.probability(logits) >= boundaries).all()
    # a score just below stays below, where a 1e-6 step in the logit moves the probability at all
    unsaturated = new.probability(logits) < 1 - 1e-6
    assert (new.probability(logits - 1e-6) < boundaries)[unsaturated].all()


@pytest.mark.parametrize(
    "new",
    [Calibration(temperature=20, offset=0.135), Calibration(temperature=1.5, offset=0.3), Calibration(offset=-0.5)],
)
def test_a_threshold_fitted_above_every_real_keeps_them_below_at_a_new_scale(new):
    # fit_threshold puts a threshold allowing no false alarm one ulp above the top real; re-expressed at the
    # logit, lowered by its rounding, it fell under that real: a bundle calibrated on real media flagged a
    # real file its card said it did not (0 of 10 flagged, then 1 of 10, for every scale tried).
    from deepshield.evaluation.calibration import fit_threshold
    from deepshield.evaluation.recalibrate import kept_below

    old = Calibration(temperature=1.0)
    for seed in range(20):
        logits = np.random.default_rng(seed).normal(0, 2, 20)
        labels = np.r_[np.zeros(10, int), np.ones(10, int)]
        threshold = fit_threshold(labels, old.probability(logits), target_fpr=0.0)
        real_new = new.probability(logits[:10])
        moved = at_calibration(threshold, old, new)
        kept = kept_below(moved, [real_new[old.probability(logits[:10]) < threshold]])
        assert (real_new >= kept).sum() == 0 and kept >= moved
        assert kept - moved <= 4 * np.spacing(max(kept, 1e-300)) or (real_new >= moved).any()


def test_keep_verdicts_keeps_a_threshold_above_every_real_file():
    from deepshield.evaluation.calibration import fit_threshold

    scored = overconfident_set(200, faces_per_file=1, seed=7)
    before = scored.file_scores(CLEAN, VideoRule(), 1.0)
    labels = np.array([f.label for f in scored.files])
    threshold = fit_threshold(labels, before, target_fpr=0.0)  # just above the top real file
    card = toy_card(temperature=1.0, threshold=threshold)
    result = recalibrate(scored, card, Method(keep_verdicts=True))  # refused: "1 of 200 files would change"
    assert result.verdicts_changed == 0
    after = scored.file_scores(CLEAN, VideoRule(), result.temperature_after)
    assert not (after[labels == 0] >= result.calibration.threshold).any()


def test_the_catch_rate_at_a_false_alarm_rate_reads_the_top_of_the_reals():
    from deepshield.evaluation.calibration import caught_at_fpr

    reals = np.arange(100) / 100  # 0.00 ... 0.99
    fakes = np.array([0.995, 0.985, 0.975, 0.5])
    labels = np.r_[np.zeros(100), np.ones(4)]
    scores = np.r_[reals, fakes]
    # At most 2 reals flagged (0.98, 0.99): the threshold just above 0.97, three fakes at or above it. (It
    # read 0.5: 1 - 98/100 is a rounding error above 0.02, so the second real allowed was refused.)
    assert caught_at_fpr(labels, scores, 0.02) == 0.75
    assert caught_at_fpr(labels, scores, 0.01) == 0.5  # one real flagged (0.99): two fakes above 0.98
    assert caught_at_fpr(labels, scores, 0.0) == 0.25  # no real flagged: only the fake above them all
    assert caught_at_fpr(labels, scores, 0.05) == 0.75
    # the same ranking under any monotone rescaling (a calibration) gives the same figure
    assert caught_at_fpr(labels, scores**3, 0.02) == 0.75


def test_the_catch_count_at_equal_false_alarms_counts_files():
    from deepshield.evaluation.calibration import caught_with_reals_flagged

    reals = np.arange(22) / 22  # 22 real files, as many as the modern swaps' real inputs
    fakes = np.array([0.999, 0.97, 0.93, 0.5, 0.1])
    labels = np.r_[np.zeros(22), np.ones(5)]
    scores = np.r_[reals, fakes]
    # no real flagged: the threshold lies above 21/22 = 0.955, so two fakes; one real flagged: 20/22 = 0.909
    assert [caught_with_reals_flagged(labels, scores, k) for k in (0, 1, 2, 11)] == [2, 3, 3, 4]
    tied = np.r_[np.full(22, 0.5), fakes]  # every real tied: any threshold flags all 22 or none
    assert caught_with_reals_flagged(labels, tied, 1) == 3
    with pytest.raises(MetricsError, match=r"^a catch count at equal false alarms needs real and fake samples$"):
        caught_with_reals_flagged(np.zeros(3), np.arange(3.0), 0)


def test_reals_saturated_at_one_leave_no_fake_caught_at_a_low_false_alarm_rate():
    from deepshield.evaluation.calibration import caught_at_fpr, caught_with_reals_flagged

    # One real of ten scored 1.0 (a saturated sigmoid): every threshold on the scale flags it, 10% of the reals,
    # so none keeps to 2% and none of the fakes is caught there. It read 1 of 3, the fake at 1.0 counted
    # caught at fit_threshold's 1.0, which flags that real too.
    labels = np.r_[np.zeros(10), np.ones(3)]
    scores = np.r_[np.full(9, 0.1), 1.0, 1.0, 0.9, 0.2]
    assert caught_at_fpr(labels, scores, 0.02) == 0.0
    assert caught_with_reals_flagged(labels, scores, 0) == 0
    assert caught_with_reals_flagged(labels, scores, 1) == 3  # one real allowed: the saturated one may be flagged
    assert caught_at_fpr(labels, scores, 0.1) == 1.0


def test_a_resume_across_a_change_of_the_code_reading_the_faces_finds_them_again(tmp_path: Path, monkeypatch):
    # A calibrate or evaluate --resume across a change of how pixels are read (colour profiles applied) kept the
    # faces of the files done read the old way beside the rest read the new.
    import deepshield.media.images as images
    from deepshield.evaluation.scoring import CropJob

    records = [FileRecord(0, "a.png", 0, "here", "", "a")]
    before = CropJob(CropPolicy()).journal_key(records)
    with module_edited(monkeypatch, tmp_path, images):
        assert CropJob(CropPolicy()).journal_key(records) != before


def test_an_interrupted_resumable_calibration_finds_only_the_rest(folder_dataset, tiny_bundle, tmp_path, monkeypatch):  # noqa: F811
    def calibrate(out: Path, *extra: str) -> int:
        args = ["calibrate", str(folder_dataset), "--model", str(tiny_bundle), "--out", str(out), "--frames", "2"]
        return main([*args, "--no-progress", *extra])

    assert calibrate(tmp_path / "plain") == EXIT_OK
    stops = stop_cropping(monkeypatch)  # three files done, then Ctrl-C
    cropped = stops.cropped
    out = tmp_path / "resumed"
    journal = tmp_path / "resumed.faces-in-progress"  # beside the bundle, which is not made until the end
    assert calibrate(out, "--resume") == EXIT_INTERRUPTED
    assert not out.exists() and len(list(journal.glob("[0-9]*.npz"))) == 3
    stops.interrupt, first_three = False, list(cropped)
    assert calibrate(out, "--resume") == EXIT_OK
    # the folder's other four files only
    assert first_three == ["dark.png", "drift.mp4", "edited.jpg"]
    assert sorted(cropped[3:]) == ["astronaut.jpg", "blank.png", "broken.jpg", "mirror.png"]
    assert not journal.exists()
    fitted = [
        json.loads((folder / "model_card.json").read_text())["calibration"] for folder in (out, tmp_path / "plain")
    ]
    assert fitted[0] == fitted[1]  # as an uninterrupted calibration fits


def test_a_set_holding_the_models_training_data_is_named_as_such(tmp_path, monkeypatch):
    # calibrate fitted on the model's own training faces without a word (a synthetic threshold moved 0.597 -> 0.373)
    from deepshield.evaluation.recalibrate import training_folders_in
    from deepshield.models.card import TrainingInfo

    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(tmp_path))
    warnings: list[str] = []
    card = toy_card().model_copy(update={"training": TrainingInfo(data=["real-faces/ffhq", "real-faces/utk"])})
    inside, outside = tmp_path / "real-faces" / "ffhq" / "1.png", tmp_path / "dev-eval" / "real" / "1.png"
    assert training_folders_in(card, [str(inside), str(outside)], warnings.append) == ["real-faces/ffhq"]
    assert training_folders_in(card, [str(outside)], warnings.append) == []
    assert warnings == []


def test_a_synthetic_heads_validation_faces_are_not_its_training_data(tmp_path, monkeypatch):
    # The README calibrates the synthetic-face score on its head's validation split of the generated faces;
    # the folder as a whole was named the model's training data (the shipped card said so of its own set).
    import deepshield.training.synthetic
    from deepshield.evaluation.recalibrate import training_folders_in
    from deepshield.models.card import SyntheticScoreInfo, card_outputs

    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(tmp_path))
    folder = tmp_path / "synthetic-faces" / "gen"
    trained, validation = folder / "1.png", folder / "2.png"
    split = ([trained], [validation], [folder / "3.png"])
    monkeypatch.setattr(deepshield.training.synthetic, "generated_split", lambda card: split)
    card = toy_card().model_copy(
        update={
            "outputs": card_outputs(True),
            "synthetic": SyntheticScoreInfo(
                pooling="all", data=["generated: synthetic-faces/gen", "real: real-faces/x"]
            ),
        }
    )
    warnings: list[str] = []
    assert training_folders_in(card, [str(validation)], warnings.append) == []
    assert training_folders_in(card, [str(trained), str(validation)], warnings.append) == ["synthetic-faces/gen"]
    assert warnings == []


def _prepared_by_hand(folder: Path, files: dict[Path, str]) -> Path:
    """A dataset folder whose manifest lists one crop of each file in its split (no crop on disk: the check
    reads the listing alone)."""
    from deepshield.data.manifest import CropRecord, write_manifest

    folder.mkdir(parents=True)
    write_manifest(
        folder / "manifest.csv",
        [
            CropRecord(
                f"crops/{i}/0.png",
                "real",
                split,
                str(i),
                "src",
                "none",
                str(path),
                0,
                0,
                0.9,
                (0, 0, 9, 9),
                ((1.0, 1.0),) * 6,
            )
            for i, (path, split) in enumerate(files.items())
        ],
    )
    return folder


def test_a_prepared_dataset_holds_the_files_its_train_split_was_cut_from(tmp_path, monkeypatch):
    # Its entry ("prepared dataset <folder>") was matched as a folder, but scored records name the source
    # files the crops were cut from: its train split, or the raw media it was prepared from, went unwarned.
    from deepshield.evaluation.recalibrate import training_folders_in
    from deepshield.models.card import TrainingInfo

    media = tmp_path / "media"
    media.mkdir()
    trained, held_out = media / "trained.png", media / "held_out.png"
    trained.write_bytes(b"a face trained on")
    held_out.write_bytes(b"a face kept for the test")
    _prepared_by_hand(tmp_path / "ds", {trained: "train", held_out: "test"})
    monkeypatch.chdir(tmp_path)  # a relative entry is read from the working folder, as training read it
    card = toy_card().model_copy(update={"training": TrainingInfo(data=["prepared dataset ds"])})
    warnings: list[str] = []
    assert training_folders_in(card, [str(trained), str(held_out)], warnings.append) == ["prepared dataset ds"]
    assert training_folders_in(card, [str(held_out)], warnings.append) == []  # its test split is held out
    copy = tmp_path / "elsewhere" / "copy.png"  # the same bytes under another name, as training refuses them
    copy.parent.mkdir()
    copy.write_bytes(trained.read_bytes())
    assert training_folders_in(card, [str(copy)], warnings.append) == ["prepared dataset ds"]
    assert warnings == []
    # A dataset no longer here is said to be unchecked, not taken for one the set shares nothing with.
    card = toy_card().model_copy(update={"training": TrainingInfo(data=["prepared dataset gone"])})
    assert training_folders_in(card, [str(trained)], warnings.append) == []
    assert len(warnings) == 1 and "could not be checked: prepared dataset gone not found" in warnings[0]


def test_calibrate_says_when_its_set_holds_the_models_training_data(
    capsys,
    folder_dataset,  # noqa: F811
    tiny_bundle,
    tmp_path,
    monkeypatch,
):
    import shutil

    trained = Path(shutil.copytree(tiny_bundle, tmp_path / "trained"))
    card = json.loads((trained / "model_card.json").read_text())
    card["training"]["data"] = [folder_dataset.name]
    (trained / "model_card.json").write_text(json.dumps(card))
    monkeypatch.setenv("DEEPSHIELD_DATA_ROOT", str(folder_dataset.parent))
    out = tmp_path / "cal"
    args = ["calibrate", str(folder_dataset), "--model", str(trained), "--out", str(out), "--keep-verdicts"]
    assert main([*args, "--frames", "2", "--no-progress", "--version", "9.9.9"]) == EXIT_OK
    assert f"the set holds files of the model's own training data ({folder_dataset.name})" in capsys.readouterr().err
    fitted_on = OnnxClassifier(out).card.calibration.fitted_on
    assert f"which holds files of the model's training data ({folder_dataset.name})" in fitted_on
