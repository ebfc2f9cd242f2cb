"""Metrics, bootstrap intervals, calibration helpers and video rules, checked against hand-computed values."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from PIL import Image

from deepshield.errors import DeepShieldError
from deepshield.evaluation.calibration import (
    expected_calibration_error,
    fit_inconclusive_band,
    fit_platt,
    fit_temperature,
    fit_threshold,
    reliability,
)
from deepshield.evaluation.metrics import (
    METRIC_NAMES,
    MetricsError,
    PairedDifference,
    binary_log_loss,
    bootstrap_intervals,
    confusion_counts,
    detection_metrics,
    equal_error_rate,
    paired_auc_resamples,
    roc_curve_points,
    weighted_metrics,
)
from deepshield.evaluation.plots import paired_differences_plot
from deepshield.evaluation.shown import fraction_text
from deepshield.inference.video_rule import VIDEO_RULE, VideoRule
from deepshield.models.card import Calibration, sigmoid


def test_hand_computed_small_set():
    # Sorted by score: 0.9 fake, 0.6 real, 0.4 fake, 0.1 real.
    m = detection_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], threshold=0.5)
    assert m.count == 4 and m.positives == 2
    assert m.auc == pytest.approx(0.75)  # 3 of 4 (fake, real) pairs ordered right
    assert m.ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # recall 1/2 at precision 1, then 1 at 2/3
    assert m.eer == pytest.approx(0.5)
    assert m.log_loss == pytest.approx(-(math.log(0.9) + math.log(0.4)) / 2)
    # At 0.5: 0.9 and 0.6 called fake -> tp 1, fp 1, fn 1, tn 1.
    assert (m.accuracy, m.balanced_accuracy, m.precision, m.recall, m.f1) == pytest.approx((0.5, 0.5, 0.5, 0.5, 0.5))
    assert confusion_counts([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], 0.5) == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}


def test_auc_ap_and_eer_with_ties():
    labels = [0, 0, 1, 1, 1]
    scores = [0.2, 0.5, 0.5, 0.5, 0.8]
    m = detection_metrics(labels, scores)
    # Pairs: each 0.5 fake beats 0.2 and ties 0.5 (half credit) -> 1.5; 0.8 beats both -> 2. (1.5 + 1.5 + 2) / 6.
    assert m.auc == pytest.approx(5 / 6)
    # At 0.8: precision 1, recall 1/3; at 0.5: precision 3/4, recall 1.
    assert m.ap == pytest.approx(1 / 3 + 2 / 3 * 3 / 4)
    # ROC points (0, 0), (0, 1/3), (1/2, 1): the FNR = FPR crossing lies 4/7 of the way along the second segment.
    assert m.eer == pytest.approx(2 / 7)
    assert equal_error_rate(np.array(labels), np.array(scores)) == pytest.approx(2 / 7)


def test_threshold_metrics_on_an_imbalanced_set():
    m = detection_metrics([0, 0, 0, 1], [0.7, 0.2, 0.1, 0.9], threshold=0.5)
    assert m.recall == pytest.approx(1.0)
    assert m.balanced_accuracy == pytest.approx((1 + 2 / 3) / 2)
    assert m.accuracy == pytest.approx(0.75)
    assert m.precision == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.auc == pytest.approx(1.0) and m.eer == pytest.approx(0.0)
    assert detection_metrics([0, 1], [0.9, 0.95], threshold=0.99).precision == 0.0  # nothing called fake


def test_perfectly_wrong_and_constant_scores():
    assert detection_metrics([0, 1], [0.9, 0.1]).auc == 0.0
    flat = detection_metrics([0, 0, 1, 1], [0.5] * 4)
    assert flat.auc == pytest.approx(0.5) and flat.eer == pytest.approx(0.5) and flat.ap == pytest.approx(0.5)


def test_agrees_with_scikit_learn_on_random_sets():
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score, roc_curve

    rng = np.random.default_rng(3)
    for n in (6, 40, 500):
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        scores = np.round(rng.random(n), 1)  # many ties
        m = detection_metrics(labels, scores)
        assert m.auc == pytest.approx(roc_auc_score(labels, scores))
        assert m.ap == pytest.approx(average_precision_score(labels, scores))
        assert m.log_loss == pytest.approx(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7)))
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
        ours_fpr, ours_tpr, _ = roc_curve_points(labels, scores)
        np.testing.assert_allclose(ours_fpr, fpr)
        np.testing.assert_allclose(ours_tpr, tpr)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([], [], "no samples"),
        ([1, 1, 1], [0.2, 0.4, 0.9], "both classes: all 3 samples are fake"),
        ([0, 0], [0.2, 0.4], "both classes: all 2 samples are real"),
        ([0, 1], [0.2], "equal-length"),
        ([0, 2], [0.2, 0.3], "0 (real) or 1 (fake)"),
        ([0, 1], [0.2, float("nan")], "NaN"),
        ([0, 1], [0.2, 1.3], "probabilities in [0, 1]"),
    ],
)
def test_bad_inputs_get_a_clear_message(labels, scores, message):
    with pytest.raises(
        MetricsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")
    ):
        detection_metrics(labels, scores)
    assert issubclass(MetricsError, DeepShieldError)  # the CLI shows it as a message, not a traceback


def test_weighted_metrics_equal_metrics_of_the_repeated_set():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    scores = np.round(rng.random(8), 1)
    weights = np.array([[2, 0, 1, 3, 1, 0, 1, 2]])
    weighted = weighted_metrics(labels, scores, weights, 0.5)
    repeated = detection_metrics(np.repeat(labels, weights[0]), np.repeat(scores, weights[0]), 0.5)
    for name in METRIC_NAMES:
        assert weighted[name][0] == pytest.approx(getattr(repeated, name)), name
    assert np.isnan(
        weighted_metrics(labels, scores, np.array([[1, 1, 1, 0, 0, 0, 1, 0]]), 0.5)["auc"][0]
    )  # no fake left


def test_bootstrap_contains_the_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 60)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    point = detection_metrics(labels, scores)
    first = bootstrap_intervals(labels, scores, resamples=400, seed=7)
    again = bootstrap_intervals(labels, scores, resamples=400, seed=7)
    other = bootstrap_intervals(labels, scores, resamples=400, seed=8)
    assert first == again
    assert first.intervals["auc"] != other.intervals["auc"]
    for name in METRIC_NAMES:
        interval = first.intervals[name]
        assert interval.low <= getattr(point, name) <= interval.high, name
        assert interval.low < interval.high, name
    assert first.resamples == 400 and first.clusters == 120


def test_bootstrap_resamples_files_not_faces():
    """10 faces per file, all alike within a file: intervals over files are much wider than over faces."""
    rng = np.random.default_rng(2)
    file_labels = np.repeat([0, 1], 10)
    file_scores = np.clip(rng.normal(0.4 + 0.2 * file_labels, 0.15), 0, 1)
    labels = np.repeat(file_labels, 10)
    scores = np.repeat(file_scores, 10) + rng.normal(0, 0.005, 200).clip(-0.01, 0.01)
    files = np.repeat(np.arange(20), 10)
    by_file = bootstrap_intervals(labels, scores, files, resamples=300, seed=0).intervals["auc"]
    by_face = bootstrap_intervals(labels, scores, None, resamples=300, seed=0).intervals["auc"]
    assert (by_file.high - by_file.low) > 2 * (by_face.high - by_face.low)
    with pytest.raises(MetricsError, match="both real and fake"):
        bootstrap_intervals([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], clusters=[0, 0, 1, 1], resamples=10)


def test_a_paired_bootstrap_sees_a_gain_that_two_intervals_side_by_side_call_a_tie():
    """B ranks every fake a little higher than A does: on 25 + 25 files the two AUC intervals overlap,
    but on every resample of the same files B is at least as good, so the paired interval is above zero."""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 25)
    a = np.clip(rng.normal(0.45 + 0.1 * labels, 0.15), 0, 1)
    b = np.clip(a + 0.05 * labels, 0, 1)
    auc_a, auc_b = detection_metrics(labels, a).auc, detection_metrics(labels, b).auc
    alone_b = bootstrap_intervals(labels, b, resamples=500, seed=0).intervals["auc"]
    assert auc_b > auc_a > alone_b.low  # side by side: a tie
    difference, resampled = paired_auc_resamples(labels, a, b, resamples=500, seed=0)
    paired = PairedDifference.from_resamples(difference, resampled)
    assert paired.difference == pytest.approx(auc_b - auc_a)
    assert resampled.shape == (500,) and resampled.min() >= 0
    assert paired.b_ahead and paired.low > 0 and paired.share_b_ahead > 0.95
    assert paired.high - paired.low < (alone_b.high - alone_b.low) / 2

    swapped = PairedDifference.from_resamples(*paired_auc_resamples(labels, b, a, resamples=500, seed=0))
    assert swapped.difference == pytest.approx(-paired.difference) and swapped.high < 0 and not swapped.b_ahead
    same = PairedDifference.from_resamples(*paired_auc_resamples(labels, a, a, resamples=200))
    assert (same.difference, same.low, same.high, same.share_b_ahead, same.share_equal) == (0, 0, 0, 0, 1)
    assert not same.b_ahead


def test_two_models_level_on_every_resample_are_said_equal_not_ahead_by_rounding():
    """Two models that both separate the classes have an AUC of 1 on every resample, but summed in another
    order: B read ahead in 9% of the resamples (by 2e-16) and never level, the rest behind or equal unsaid."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(7, int), np.ones(9, int)]
    fakes = 0.6 + rng.random(9) * 0.4
    a = np.r_[rng.random(7) * 0.4, fakes]
    b = np.r_[np.round(rng.random(7) * 0.4, 1), fakes]  # the reals tied otherwise
    paired = PairedDifference.from_resamples(*paired_auc_resamples(labels, a, b, resamples=2000))
    assert (paired.difference, paired.low, paired.high, paired.share_b_ahead, paired.share_equal) == (0, 0, 0, 0, 1)
    assert paired.shares_text() == "0% of resamples, equal in 100%"
    apart = PairedDifference.from_resamples(0.01, np.linspace(-0.05, 0.07, 300))
    assert apart.share_equal == 0 and apart.shares_text() == "58% of resamples"


@pytest.mark.parametrize(("reals", "fakes"), [(30, 7), (7, 9), (13, 3)])
def test_a_set_told_apart_without_error_has_an_auc_of_one_not_just_under(reals, fakes):
    """Summed in rates, the ROC's steps rounded: 30 reals below 7 fakes gave an AUC of 0.9999999999999999,
    printed ">0.999" (not perfect), and a perturbation that changed no file's side read "-0.000" against it."""
    labels = np.r_[np.zeros(reals, int), np.ones(fakes, int)]
    scores = np.r_[np.linspace(0.01, 0.4, reals), np.linspace(0.6, 0.99, fakes)]
    metrics = detection_metrics(labels, scores)
    assert (metrics.auc, metrics.ap) == (1.0, 1.0) and fraction_text(metrics.auc) == "1.000"
    interval = bootstrap_intervals(labels, scores, resamples=100).intervals["auc"]
    assert (interval.low, interval.high) == (1.0, 1.0)
    tied = np.r_[np.round(scores[:reals], 1), scores[reals:]]  # the same ranking of reals below fakes, in fewer steps
    assert weighted_metrics(labels, tied, np.ones((1, labels.size)), 0.5)["auc"][0] == metrics.auc


def test_paired_differences_are_drawn_green_above_zero_red_below_grey_across(tmp_path):
    labels = np.repeat([0, 1], 25)
    a = np.clip(np.random.default_rng(3).normal(0.45 + 0.1 * labels, 0.15), 0, 1)
    b = np.clip(a + 0.05 * labels, 0, 1)
    gain = PairedDifference.from_resamples(*paired_auc_resamples(labels, a, b, resamples=300, seed=0))
    loss = PairedDifference.from_resamples(*paired_auc_resamples(labels, b, a, resamples=300, seed=0))
    tie = PairedDifference.from_resamples(0.01, np.linspace(-0.05, 0.07, 300))
    assert gain.low > 0 and loss.high < 0 and tie.low < 0 < tie.high

    def colours(differences) -> set[tuple[int, int, int]]:
        path = paired_differences_plot(differences, ["x_auc", "y_auc"], "A", tmp_path / "paired.png")
        pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
        return {tuple(p) for p in pixels}

    green, red = (44, 160, 44), (214, 39, 40)  # matplotlib's C2 and C3
    drawn = colours({"gains": {"x_auc": gain}, "loses": {"x_auc": loss, "y_auc": tie}, "only y": {"y_auc": tie}})
    assert green in drawn and red in drawn
    drawn = colours({"ties": {"x_auc": tie, "y_auc": tie}})
    assert green not in drawn and red not in drawn
    with pytest.raises(ValueError, match="nothing to plot"):
        paired_differences_plot({}, ["x_auc"], "A", tmp_path / "empty.png")


def test_a_paired_bootstrap_resamples_files_and_checks_its_inputs():
    labels = np.repeat([0, 1], 4)
    files = np.repeat(np.arange(4), 2)
    a, b = np.linspace(0.1, 0.8, 8), np.linspace(0.2, 0.9, 8)[::-1]
    first = paired_auc_resamples(labels, a, b, files, resamples=50, seed=1)
    again = paired_auc_resamples(labels, a, b, files, resamples=50, seed=1)
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    # Whole files are drawn: 20 files of 10 faces each, alike within a file, spread the differences far
    # wider than drawing faces one by one (a mutation to face resampling passed the lines above).
    rng = np.random.default_rng(2)
    file_labels = np.repeat([0, 1], 10)
    per_face = np.repeat(file_labels, 10)
    wobble = rng.normal(0, 0.005, 200).clip(-0.01, 0.01)
    one = np.repeat(np.clip(rng.normal(0.4 + 0.2 * file_labels, 0.15), 0.02, 0.98), 10) + wobble
    other = np.repeat(np.clip(rng.normal(0.4 + 0.2 * file_labels, 0.15), 0.02, 0.98), 10) - wobble
    by_file = paired_auc_resamples(per_face, one, other, np.repeat(np.arange(20), 10), resamples=300, seed=0)[1]
    by_face = paired_auc_resamples(per_face, one, other, None, resamples=300, seed=0)[1]
    assert np.std(by_file) > 2 * np.std(by_face)
    with pytest.raises(MetricsError, match="equal-length"):
        paired_auc_resamples(labels, a, b[:5])
    with pytest.raises(MetricsError, match="both real and fake"):
        paired_auc_resamples(labels, a, b, clusters=np.arange(8) // 5)
    with pytest.raises(MetricsError, match="at least one resample"):
        paired_auc_resamples(labels, a, b, resamples=0)


def test_log_loss_and_empty_log_loss():
    assert binary_log_loss(np.array([1, 0]), np.array([1.0, 0.0])) == pytest.approx(
        1e-7, rel=0.01
    )  # clipped, not 0 or inf
    with pytest.raises(MetricsError, match=r"^log-loss needs data: there are no samples$"):
        binary_log_loss(np.array([]), np.array([]))


def test_reliability_bins_and_ece():
    labels = [0, 0, 1, 1, 1, 0]
    probabilities = [0.05, 0.15, 0.85, 0.95, 0.92, 0.91]
    rel = reliability(labels, probabilities, bins=10)
    assert rel.counts.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 1, 3]
    assert rel.fraction_fake[9] == pytest.approx(2 / 3)
    assert rel.mean_predicted[9] == pytest.approx((0.95 + 0.92 + 0.91) / 3)
    expected = (0.05 + 0.15 + 0.15 + 3 * abs(2 / 3 - (0.95 + 0.92 + 0.91) / 3)) / 6
    assert expected_calibration_error(labels, probabilities) == pytest.approx(expected)
    assert reliability([1], [1.0]).counts[-1] == 1  # 1.0 falls in the last bin
    # A score on an edge is in the bin it starts: 0.3 and 0.7 fell below (linspace's 0.30000000000000004).
    edge_bins = [int(np.flatnonzero(reliability([0], [v]).counts)[0]) for v in (0.2, 0.3, 0.4, 0.6, 0.7, 0.8)]
    assert edge_bins == [2, 3, 4, 6, 7, 8]
    assert reliability([1, 0], [0.3, 0.35]).ece == pytest.approx(abs(0.5 - 0.325))  # one bin, not two


def test_a_score_that_is_not_a_number_is_no_rate_on_a_two_class_set():
    # The NaN check sent a two-class set down the one-class path: "true_negative_rate" 1.0, which was the
    # accuracy over all faces with the NaN real counted right.
    from deepshield.evaluation.summary import EvaluationSettings, metric_block

    labels, scores = np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, np.nan, 0.7, 0.8, 0.9])
    block = metric_block(labels, scores, np.arange(6), EvaluationSettings(bootstrap=0), "faces")
    assert block.error and block.metrics is None
    assert block.true_negative_rate is None and block.detection_rate is None and block.confusion is None
    reals = metric_block(labels[:3], np.full(3, 0.2), np.arange(3), EvaluationSettings(bootstrap=0), "faces")
    assert reals.true_negative_rate is not None and reals.true_negative_rate.value == 1.0  # one class: its rate
    one_class_nan = metric_block(labels[:3], scores[:3], np.arange(3), EvaluationSettings(bootstrap=0), "faces")
    assert one_class_nan.error and one_class_nan.true_negative_rate is None  # the NaN real was counted right


def test_fit_temperature_undoes_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 2000)
    labels = (rng.random(2000) < sigmoid(true_logits)).astype(int)
    overconfident = 4 * true_logits
    temperature = fit_temperature(labels, overconfident)
    assert temperature == pytest.approx(4, rel=0.15)
    assert binary_log_loss(labels, sigmoid(overconfident / temperature)) < binary_log_loss(
        labels, sigmoid(overconfident)
    )


def test_fit_temperature_pays_the_full_cost_of_confidently_wrong_faces():
    # 5000 confident faces, 5 of them wrong at logit 60. Fitted on the reported log-loss (probabilities
    # clipped at 1e-7, a wrong face's cost capped at 16) the temperature was 0.53: the model made sharper
    # still, where the unclipped log-loss's optimum (found here by brute force) is 1.9.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5000).astype(float)
    logits = np.where(labels == 1, 1, -1) * rng.normal(12, 4, 5000)
    wrong = rng.choice(5000, 5, replace=False)
    logits[wrong] = np.where(labels[wrong] == 1, -60.0, 60.0)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    losses = [np.mean(np.logaddexp(0, logits / t) - labels * logits / t) for t in grid]
    assert fit_temperature(labels, logits) == pytest.approx(grid[int(np.argmin(losses))], rel=0.01)
    assert fit_temperature(labels, logits) > 1


def test_fit_platt_undoes_overconfidence_and_a_shift():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 2, 4000)
    labels = (rng.random(4000) < sigmoid(true_logits)).astype(int)
    shifted = 4 * true_logits + 3  # overconfident and every face scored 3 logits too high
    temperature, offset = fit_platt(labels, shifted)
    assert temperature == pytest.approx(4, rel=0.15) and offset == pytest.approx(3, abs=0.5)
    alone = fit_temperature(labels, shifted)
    assert (
        binary_log_loss(labels, sigmoid((shifted - offset) / temperature))
        < binary_log_loss(labels, sigmoid(shifted / alone)) - 0.03
    )  # a temperature alone cannot undo the shift (measured: 0.456 against 0.500)


@pytest.mark.parametrize("temperature", [1.0, None])
def test_fit_platt_finds_the_offset_of_a_set_of_few_fakes_beyond_its_top_logit(temperature):
    """The offset was searched within the logits' range: on a set of 200 reals and 10 fakes (a score that
    barely tells them apart) it stopped at the top logit, the mean probability 6.7% (the temperature kept) where
    4.8% of the set is fake."""
    rng = np.random.default_rng(1)
    logits = np.r_[rng.normal(0, 1, 200), rng.normal(0.5, 1, 10)]
    labels = np.r_[np.zeros(200, int), np.ones(10, int)]
    fitted, offset = fit_platt(labels, logits, temperature)
    assert offset > logits.max()
    # The log-loss optimum: the mean probability is the share of fakes, and no nearby offset does better.
    assert sigmoid((logits - offset) / fitted).mean() == pytest.approx(10 / 210, abs=1e-3)
    loss = binary_log_loss(labels, sigmoid((logits - offset) / fitted))
    assert all(
        loss <= binary_log_loss(labels, sigmoid((logits - b) / fitted)) + 1e-9 for b in (offset - 0.1, offset + 0.1)
    )
    with pytest.raises(MetricsError, match="needs real and fake"):
        fit_platt(np.ones(3, int), np.array([0.1, 0.2, 0.3]), temperature)


def test_fit_threshold_target_fpr_and_balanced():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9])
    t = fit_threshold(labels, scores, target_fpr=0.0)
    assert t == pytest.approx(0.8)  # the lowest score flagging no real (0.7 is real)
    assert fit_threshold(labels, scores, target_fpr=0.25) == pytest.approx(0.4)
    assert fit_threshold(labels, scores) == pytest.approx(0.4)  # every fake, one real of four: balanced accuracy 7/8
    top_real = fit_threshold(np.array([0, 1]), np.array([0.9, 0.2]), target_fpr=0.0)
    assert top_real == np.nextafter(0.9, 1)  # just above every score when a real holds the top score
    with pytest.raises(MetricsError, match=r"^a threshold for a target false-positive rate needs real samples$"):
        fit_threshold(np.array([1, 1]), np.array([0.2, 0.3]), target_fpr=0.05)
    # Reals alone (as fit_threshold_each fits each source): just above the top real, not 0.5 (the balanced
    # threshold's extra candidate, which answered for any reals under it).
    assert fit_threshold(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), target_fpr=0.0) == np.nextafter(0.4, 1)
    # A target that allows a whole number of reals allows that many: 1 of 50 at 2% (1 - 49/50 is 0.0200...02,
    # and the one real allowed was refused).
    reals = np.arange(50) / 100  # 0.00 ... 0.49
    assert fit_threshold(np.zeros(50), reals, target_fpr=0.02) == 0.49
    assert fit_threshold(np.zeros(20), reals[:20], target_fpr=0.05) == 0.19


@pytest.mark.parametrize("score", [0.3, 0.7])
def test_a_set_whose_files_all_score_the_same_gets_a_threshold_flagging_none(score):
    # Every threshold balances at 0.5 there: the lowest of the tie (0.3, or 0.5 under 0.7) flagged every file.
    labels, scores = np.array([0, 1, 0, 1]), np.full(4, score)
    threshold = fit_threshold(labels, scores)
    assert threshold == np.nextafter(score, 1) and not (scores >= threshold).any()
    band = fit_inconclusive_band(labels, scores, threshold)
    assert band.low <= score < band.high  # read inconclusive, not "no signs found"
    assert fit_threshold(labels, np.ones(4)) == 1.0  # no threshold on the scale lies above it


def test_inconclusive_band_holds_the_thresholds_nearly_as_good():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.9])

    # Balanced accuracy per threshold: 0.1: .5, 0.2: .625, 0.3: .75, 0.4: .875, 0.6: .75, 0.7: .625, 0.8: .75, 0.9: .625
    def edges(tolerance):
        band = fit_inconclusive_band(labels, scores, 0.4, tolerance, max_half_width=1)
        return band.low, band.high

    # A threshold t in (c[i-1], c[i]] scores as c[i] does: the band starts just above the failing candidate.
    assert edges(0.02) == pytest.approx((0.3, 0.4))  # no other candidate comes within 2 points
    assert edges(0.125) == pytest.approx((0.2, 0.6))  # contiguous: 0.7 falls short, so 0.8 is not reached
    assert edges(0.25) == pytest.approx((0.1, 0.9))
    assert edges(0.02)[0] > 0.3 and edges(0.99) == (0.0, 1.0)
    # Above the highest score no threshold flags anything, and the top could not reach there: a threshold
    # over every score (a false-positive target of 0 with a real scored highest) got the band [0.9, 0.9].
    above = fit_inconclusive_band([0, 0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.9, 0.5, 0.6, 0.85], 0.9000000000000001)
    assert (above.low, above.high) == pytest.approx((0.9, 1.0))
    assert fit_inconclusive_band([1, 1, 0, 0], [0.0, 0.05, 0.2, 0.4], 0.5).high == pytest.approx(0.6)
    capped = fit_inconclusive_band(labels, scores, 0.4, 0.25)  # the default cap: 0.1 either side
    assert (capped.low, capped.high) == pytest.approx((0.3, 0.5)) and "capped at threshold +- 0.1" in capped.fitted_on
    assert (
        "within 0.125 of the threshold's (0.875) on 8 scores (4 real, 4 fake)"
        in fit_inconclusive_band(labels, scores, 0.4, 0.125).fitted_on
    )
    with pytest.raises(MetricsError, match=r"^an inconclusive band needs real and fake samples$"):
        fit_inconclusive_band(np.array([1, 1]), np.array([0.2, 0.3]), 0.25)


def test_inconclusive_band_on_separated_and_overlapping_classes():
    # Separated classes: every threshold in the gap is perfect, so the whole gap is inconclusive.
    separated = fit_inconclusive_band(
        np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.7, 0.8]), 0.7, tolerance=0.0, max_half_width=1
    )
    assert (separated.low, separated.high) == pytest.approx((0.2, 0.7))
    # Overlapping classes (normal logits 2 apart): the band holds the threshold and grows with the tolerance.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 2000)
    probabilities = sigmoid(np.concatenate([rng.normal(-1, 1, 2000), rng.normal(1, 1, 2000)]))
    threshold = fit_threshold(labels, probabilities)
    bands = [
        fit_inconclusive_band(labels, probabilities, threshold, tolerance, max_half_width=1)
        for tolerance in (0.005, 0.02, 0.05)
    ]
    assert all(band.low <= threshold <= band.high for band in bands)
    assert 0 < bands[0].high - bands[0].low < bands[1].high - bands[1].low < bands[2].high - bands[2].low < 0.6


def test_video_rule_kinds():
    values = [0.1, 0.2, 0.9, 0.6]
    assert VideoRule().track_score(values) == pytest.approx((0.9 + 0.6) / 2)
    assert VideoRule(kind="topk-mean").track_score(values) == pytest.approx(0.75)
    assert VideoRule(kind="mean").track_score(values) == pytest.approx(0.45)
    assert VideoRule(kind="max").track_score(values) == pytest.approx(0.9)
    assert VideoRule().describe() == VIDEO_RULE and VideoRule(kind="topk-mean").describe() == VIDEO_RULE
    assert "highest of its frame probabilities" in VideoRule(kind="max").describe()
    with pytest.raises(ValueError, match="video rule kind"):
        VideoRule(kind="median")


def test_probabilities_of_logits_beyond_exps_range_are_right_without_a_warning():
    # A logit of -60 at temperature 0.05 is -1200 scaled: exp(1200) overflowed with numpy's warning printed.
    logits = np.array([-60.0, -1.0, 0.0, 1.0, 60.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probabilities = Calibration(temperature=0.05).probability(logits)
        direct = sigmoid(np.array([-800.0, 800.0]))
    assert probabilities[[0, 2, 4]].tolist() == [0.0, 0.5, 1.0]
    assert probabilities[1] == pytest.approx(1 / (1 + math.exp(20)))
    assert probabilities[3] == pytest.approx(1 / (1 + math.exp(-20)))
    assert direct.tolist() == [0.0, 1.0]


def test_no_bootstrap_gives_no_caution_of_its_intervals():
    # --bootstrap 0 still said "a bootstrap over so few files understates the uncertainty", of no interval.
    from deepshield.evaluation.summary import EvaluationSettings, metric_block

    labels, scores = np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    for which in (slice(None), slice(0, 3)):  # both classes; one class (its rate)
        none = metric_block(labels[which], scores[which], np.arange(6)[which], EvaluationSettings(bootstrap=0), "x")
        assert none.caution is None
        some = metric_block(labels[which], scores[which], np.arange(6)[which], EvaluationSettings(bootstrap=20), "x")
        assert some.caution and "understates" in some.caution
