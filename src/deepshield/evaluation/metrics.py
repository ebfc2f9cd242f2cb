"""Binary detection metrics on (label, probability) pairs; label 1 = fake.

Definitions (the ones the tests check by hand):

* AUC: area under the ROC curve with one point per distinct score, so tied scores count half
  (the Mann-Whitney statistic).
* AP: average precision, sum over distinct scores (descending) of (recall gain) x precision there
  (scikit-learn's definition: no interpolation).
* EER: the rate where the false-positive and false-negative rates meet, linearly interpolated
  between the two ROC points around the crossing.
* log-loss: mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7].
* At `threshold` (a score >= threshold is called fake): accuracy, balanced accuracy (mean of the
  true-positive and true-negative rates), precision (0 when nothing is called fake), recall, F1.

`bootstrap_intervals` gives percentile confidence intervals by resampling *clusters* (files),
stratified by class: faces of one video are correlated, so resampling faces would make intervals
far too narrow. It evaluates all metrics for many resamples at once, as weighted metrics over a
fixed sort order, so 1000 resamples of a few thousand faces take well under a second.
"""

from __future__ import annotations

import re

import numpy as np
from pydantic import BaseModel

from deepshield.errors import DeepShieldError

METRIC_NAMES = ("auc", "ap", "eer", "log_loss", "balanced_accuracy", "accuracy", "precision", "recall", "f1")
LOG_LOSS_EPS = 1e-7


class MetricsError(DeepShieldError):
    """Metrics cannot be computed on these inputs (empty, one class, mismatched, not probabilities)."""


class DetectionMetrics(BaseModel):
    count: int
    positives: int
    auc: float
    ap: float
    eer: float
    log_loss: float
    balanced_accuracy: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    threshold: float


class Interval(BaseModel):
    low: float
    high: float


class BootstrapResult(BaseModel):
    intervals: dict[str, Interval]
    resamples: int
    confidence: float
    seed: int
    clusters: int
    unit: str = "file"


def metric_key(name: str) -> str:
    """A set's name as it appears in metric names: lower case, runs of other characters as one "_"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "set"


def check_inputs(labels, probabilities, what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """Labels as int64 0/1 and probabilities as float64 in [0, 1]; MetricsError with a message otherwise."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.shape != probabilities.shape or labels.ndim != 1:
        raise MetricsError(
            f"labels {labels.shape} and probabilities {probabilities.shape} must be equal-length vectors"
        )
    if labels.size == 0:
        raise MetricsError(f"metrics need data: there are no {what}")
    if not np.isin(labels, (0, 1)).all():
        raise MetricsError(
            f"labels must be 0 (real) or 1 (fake), got {sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}"
        )
    if not np.isfinite(probabilities).all():
        raise MetricsError(
            f"{int((~np.isfinite(probabilities)).sum())} of {probabilities.size} scores are NaN or infinite"
        )
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise MetricsError(
            f"scores must be probabilities in [0, 1], got [{probabilities.min():.4g}, {probabilities.max():.4g}]"
        )
    labels = labels.astype(np.int64)
    if len(np.unique(labels)) < 2:
        raise MetricsError(f"metrics need both classes: all {labels.size} {what} are {'fake' if labels[0] else 'real'}")
    return labels, probabilities


def _roc_points(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative weighted true and false positives at each distinct score, highest score first.

    weights: B x N (one row per resample). Returns (tp, fp) as B x (U + 1) with a leading 0 column,
    and the totals (positives, negatives) as B-vectors."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    w = weights[:, order]
    y = labels[order].astype(np.float64)
    tp = np.cumsum(np.add.reduceat(w * y, starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(w * (1 - y), starts, axis=1), axis=1)
    zero = np.zeros((weights.shape[0], 1))
    tp = np.hstack([zero, tp])
    fp = np.hstack([zero, fp])
    return tp, fp, tp[:, -1], fp[:, -1]


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray, empty: float = 0.0) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, empty, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def weighted_metrics(
    labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Every metric of METRIC_NAMES for each row of `weights` (B x N, non-negative); B-vectors out.

    A row whose weights leave one class empty gives NaN. With all weights 1 this is exactly
    `detection_metrics` (the tests check it)."""
    labels = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    tp, fp, positives, negatives = _roc_points(labels, p, weights)
    valid = (positives > 0) & (negatives > 0)
    pos = positives[:, None]
    neg = negatives[:, None]
    tpr = _safe_divide(tp, pos)
    fpr = _safe_divide(fp, neg)
    # Summed in counts (whole numbers and halves, exact) and divided once: summed in rates, the rounding of each
    # step left a set told apart without error at 0.9999999999999999, printed ">0.999" where it is 1.
    auc = _safe_divide(np.sum(np.diff(fp, axis=1) * (tp[:, 1:] + tp[:, :-1]), axis=1) / 2, positives * negatives)
    precision_curve = _safe_divide(tp[:, 1:], tp[:, 1:] + fp[:, 1:], empty=1.0)
    ap = _safe_divide(np.sum(np.diff(tp, axis=1) * precision_curve, axis=1), positives)
    gap = (1 - tpr) - fpr  # non-increasing from 1 (nothing flagged) to -1 (everything flagged)
    k = np.argmax(gap <= 0, axis=1)
    rows = np.arange(len(k))
    before = np.maximum(k - 1, 0)
    g0, g1 = gap[rows, before], gap[rows, k]
    f0, f1 = fpr[rows, before], fpr[rows, k]
    t = _safe_divide(g0, g0 - g1)
    eer = np.where(g1 == 0, f1, f0 + t * (f1 - f0))

    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    losses = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    total = weights.sum(axis=1)
    log_loss = _safe_divide(weights @ losses, total)
    called = (p >= threshold).astype(np.float64)
    truth = labels.astype(np.float64)
    tp_t = weights @ (called * truth)
    fp_t = weights @ (called * (1 - truth))
    fn_t = weights @ ((1 - called) * truth)
    tn_t = weights @ ((1 - called) * (1 - truth))
    recall = _safe_divide(tp_t, tp_t + fn_t)
    specificity = _safe_divide(tn_t, tn_t + fp_t)
    precision = _safe_divide(tp_t, tp_t + fp_t)
    out = {
        "auc": auc,
        "ap": ap,
        "eer": eer,
        "log_loss": log_loss,
        "balanced_accuracy": (recall + specificity) / 2,
        "accuracy": _safe_divide(tp_t + tn_t, total),
        "precision": precision,
        "recall": recall,
        "f1": _safe_divide(2 * precision * recall, precision + recall),
    }
    return {name: np.where(valid, values, np.nan) for name, values in out.items()}


def roc_curve_points(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, highest first, after a leading (0, 0)."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    tp, fp, positives, negatives = _roc_points(labels, scores, np.ones((1, labels.size)))
    if positives[0] == 0 or negatives[0] == 0:
        raise MetricsError("a ROC curve needs both classes")
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    return fp[0] / negatives[0], tp[0] / positives[0], thresholds


def pr_curve_points(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at each distinct score, highest first, starting at (0, 1)."""
    labels = np.asarray(labels, dtype=np.int64)
    tp, fp, positives, _ = _roc_points(labels, np.asarray(scores, dtype=np.float64), np.ones((1, labels.size)))
    if positives[0] == 0:
        raise MetricsError("a precision-recall curve needs fakes")
    precision = np.r_[1.0, tp[0, 1:] / (tp[0, 1:] + fp[0, 1:])]
    return tp[0] / positives[0], precision


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> float:
    """The rate where false-positive and false-negative rates meet (interpolated on the ROC)."""
    fpr, tpr, _ = roc_curve_points(labels, scores)
    gap = (1 - tpr) - fpr
    k = int(np.argmax(gap <= 0))  # >= 1: the curve starts at gap 1 and ends at gap -1
    if gap[k] == 0:
        return float(fpr[k])
    t = gap[k - 1] / (gap[k - 1] - gap[k])
    return float(fpr[k - 1] + t * (fpr[k] - fpr[k - 1]))


def binary_log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.size == 0:
        raise MetricsError("log-loss needs data: there are no samples")
    p = np.clip(probabilities, eps, 1 - eps)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def confusion_counts(labels, probabilities, threshold: float) -> dict[str, int]:
    """tn, fp, fn, tp at `threshold` (rows: truth, columns: called)."""
    labels = np.asarray(labels, dtype=np.int64)
    called = np.asarray(probabilities, dtype=np.float64) >= threshold
    truth = labels == 1
    return {
        "tn": int(np.sum(~called & ~truth)),
        "fp": int(np.sum(called & ~truth)),
        "fn": int(np.sum(~called & truth)),
        "tp": int(np.sum(called & truth)),
    }


def detection_metrics(labels, probabilities, threshold: float = 0.5) -> DetectionMetrics:
    """All metrics of one (label, probability) set. MetricsError (a DeepShieldError) with a message
    for empty input, one class only, mismatched lengths, labels other than 0/1 or non-probabilities."""
    labels, probabilities = check_inputs(labels, probabilities)
    values = weighted_metrics(labels, probabilities, np.ones((1, labels.size)), threshold)
    return DetectionMetrics(
        count=len(labels),
        positives=int(labels.sum()),
        threshold=threshold,
        **{name: float(values[name][0]) for name in METRIC_NAMES},
    )


def bootstrap_weights(
    clusters: np.ndarray, cluster_labels: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """resamples x C multiplicities: each class's clusters drawn with replacement, as many as it has."""
    counts = np.zeros((resamples, len(cluster_labels)))
    for value in (0, 1):
        members = np.flatnonzero(cluster_labels == value)
        if members.size:
            counts[:, members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size), size=resamples)
    return counts


def bootstrap_intervals(
    labels,
    probabilities,
    clusters=None,
    threshold: float = 0.5,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    max_cells: int = 5_000_000,
) -> BootstrapResult:
    """Percentile intervals of every metric, resampling clusters (default: each sample its own).

    Clusters are drawn with replacement within each class (every file has one label), so each
    resample keeps the set's numbers of real and fake files and every metric stays defined."""
    labels, probabilities = check_inputs(labels, probabilities)
    _check_resamples(resamples)
    _check_confidence(confidence)
    inverse, cluster_labels = _cluster_layout(labels, clusters)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, max_cells // max(1, labels.size)))
    collected: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        weights = bootstrap_weights(inverse, cluster_labels, size, rng)[:, inverse]
        for name, values in weighted_metrics(labels, probabilities, weights, threshold).items():
            collected[name].append(values)
        done += size
    tail = (1 - confidence) / 2 * 100
    intervals = {}
    for name in METRIC_NAMES:
        values = np.concatenate(collected[name])
        low, high = np.nanpercentile(values, [tail, 100 - tail])
        intervals[name] = Interval(low=float(low), high=float(high))
    return BootstrapResult(
        intervals=intervals, resamples=resamples, confidence=confidence, seed=seed, clusters=len(cluster_labels)
    )


# The bootstrap resamples files: with a handful of one class it cannot vary more than those files do, so
# its interval shrinks (to a point when the classes are separated) however uncertain the figure is.
FEW_FILES = 10


def files_per_class(labels: np.ndarray, clusters: np.ndarray) -> tuple[int, int]:
    """(real, fake) files: the distinct clusters of each label."""
    return len(np.unique(clusters[labels == 0])), len(np.unique(clusters[labels == 1]))


# For a card that does not record how many files a figure came from (those before 1.2.2's successors):
# an interval that is a single point is the sign few_files_caution would have given.
POINT_INTERVAL_CAUTION = (
    "its interval is a single point, as a bootstrap over very few files gives (the card does not say how many)"
)


def few_files_caution(real_files: int, fake_files: int) -> str | None:
    """A warning when either class has fewer than FEW_FILES files; None otherwise."""
    if min(real_files, fake_files) >= FEW_FILES:
        return None
    return (
        f"only {real_files} real and {fake_files} fake files: a bootstrap over so few files understates the "
        "uncertainty (an interval can shrink to a point)"
    )


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise MetricsError("bootstrap needs at least one resample")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise MetricsError(f"confidence must be in (0, 1), got {confidence}")


def _cluster_layout(labels: np.ndarray, clusters) -> tuple[np.ndarray, np.ndarray]:
    """(each sample's cluster index, each cluster's label); a cluster must hold one class."""
    clusters = np.arange(labels.size) if clusters is None else np.asarray(clusters)
    if clusters.shape != labels.shape:
        raise MetricsError(f"clusters {clusters.shape} must match labels {labels.shape}")
    keys, inverse = np.unique(clusters, return_inverse=True)
    cluster_labels = np.zeros(len(keys), dtype=np.int64)
    np.maximum.at(cluster_labels, inverse, labels)
    mixed = np.zeros(len(keys), dtype=np.int64)
    np.maximum.at(mixed, inverse, 1 - labels)
    if np.any(cluster_labels + mixed > 1):
        raise MetricsError("a bootstrap cluster (file) holds both real and fake samples")
    return inverse, cluster_labels


class PairedDifference(BaseModel):
    """Model B's AUC minus model A's on the same samples, with a paired bootstrap interval."""

    difference: float
    low: float
    high: float
    share_b_ahead: float  # share of resamples where B's AUC is above A's
    resamples: int
    confidence: float
    share_equal: float = 0.0  # share of resamples where the two AUCs are equal (e.g. both 1.0)

    @classmethod
    def from_resamples(cls, difference: float, resampled: np.ndarray, confidence: float = 0.95) -> PairedDifference:
        """Percentile interval of resampled differences (e.g. a mean over benchmarks of per-set resamples)."""
        _check_resamples(len(resampled))
        _check_confidence(confidence)
        tail = (1 - confidence) / 2 * 100
        low, high = np.nanpercentile(resampled, [tail, 100 - tail])
        return cls(
            difference=difference,
            low=float(low),
            high=float(high),
            share_b_ahead=float(np.nanmean(resampled > 0)),
            share_equal=float(np.nanmean(resampled == 0)),
            resamples=len(resampled),
            confidence=confidence,
        )

    def shares_text(self) -> str:
        """ "40% of resamples", or with resamples where the AUCs are equal, "0% of resamples, equal in 100%":
        without it, two models level throughout read as B never ahead, as if always behind."""
        if not self.share_equal:
            return f"{self.share_b_ahead:.0%} of resamples"
        equal = f"{self.share_equal:.0%}" if self.share_equal >= 0.005 else "<1%"
        return f"{self.share_b_ahead:.0%} of resamples, equal in {equal}"

    @property
    def b_ahead(self) -> bool:
        """The whole interval above zero: B ranks these samples better, beyond resampling noise."""
        return self.low > 0


def paired_auc_resamples(
    labels, scores_a, scores_b, clusters=None, resamples: int = 1000, seed: int = 0
) -> tuple[float, np.ndarray]:
    """AUC(B) - AUC(A) on the samples as given, and on each of `resamples` cluster resamples that both
    models are scored on together (stratified by class, as `bootstrap_intervals`).

    Pairing is what makes two models on a few dozen files comparable: what the drawn files share (an easy
    draw, a hard draw) moves both AUCs alike and cancels in the difference, so where the models err on
    the same files its interval is narrower than two independent intervals would give."""
    labels, scores_a = check_inputs(labels, scores_a)
    _, scores_b = check_inputs(labels, scores_b)
    _check_resamples(resamples)
    inverse, cluster_labels = _cluster_layout(labels, clusters)
    weights = bootstrap_weights(inverse, cluster_labels, resamples, np.random.default_rng(seed))[:, inverse]
    ones = np.ones((1, labels.size))
    difference = (
        weighted_metrics(labels, scores_b, ones, 0.5)["auc"] - weighted_metrics(labels, scores_a, ones, 0.5)["auc"]
    )
    resampled = (
        weighted_metrics(labels, scores_b, weights, 0.5)["auc"]
        - weighted_metrics(labels, scores_a, weights, 0.5)["auc"]
    )
    return float(difference[0]), resampled
