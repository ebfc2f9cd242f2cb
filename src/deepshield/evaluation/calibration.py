"""Temperature scaling, threshold and inconclusive-band choice, fitted on held-out scores; reliability of probabilities."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from deepshield.evaluation.metrics import MetricsError
from deepshield.models.card import DEFAULT_BAND_HALF_WIDTH, InconclusiveBand

TEMPERATURE_BOUNDS = (0.05, 20.0)


def _fit_inputs(labels: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, np.float64)
    logits = np.asarray(logits, np.float64)
    if labels.size == 0 or labels.shape != logits.shape:
        raise MetricsError(
            f"temperature fitting needs equal-length, non-empty labels and logits (got {labels.shape}, {logits.shape})"
        )
    return labels, logits


def _logit_log_loss(labels: np.ndarray, scaled_logits: np.ndarray) -> float:
    """The log-loss of sigmoid(scaled_logits), computed from the logits, unclipped: the reported log-loss
    clips probabilities at 1e-7, which caps a confidently wrong face's cost at 16, so a fit on it could
    sharpen the scale past its optimum (T = 0.53 for 1.9 where 5 faces of 5000 are wrong at logit 60)."""
    return float(np.mean(np.logaddexp(0.0, scaled_logits) - labels * scaled_logits))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The T > 0 minimising the log-loss of sigmoid(logit / T) (Guo et al., 2017), searched in [0.05, 20]."""
    labels, logits = _fit_inputs(labels, logits)
    low, high = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    result = minimize_scalar(
        lambda log_t: _logit_log_loss(labels, logits / np.exp(log_t)), bounds=(low, high), method="bounded"
    )
    return float(np.exp(result.x))


def temperature_at_edge(temperature: float) -> str | None:
    """A note where a fitted temperature stopped at an end of its search range, its log-loss falling still
    beyond it (the scale is then the range's, not the set's optimum); None inside the range."""
    low, high = TEMPERATURE_BOUNDS
    if temperature >= high * (1 - 1e-3):
        return (
            f"the temperature fit stopped at the top of its range ({high:g}): the scores barely tell this set's "
            "real faces from its fakes, and flatter probabilities still would fit it better"
        )
    if temperature <= low * (1 + 1e-3):
        return (
            f"the temperature fit stopped at the bottom of its range ({low:g}): this set's faces are told apart "
            "(nearly) without error, and sharper probabilities still would fit it better; a larger, harder set "
            "gives a truer scale"
        )
    return None


def fit_platt(labels: np.ndarray, logits: np.ndarray, temperature: float | None = None) -> tuple[float, float]:
    """(T, b) minimising the log-loss of sigmoid((logit - b) / T) (Platt scaling, with T in [0.05, 20]), or
    with `temperature` given, the offset b alone at that T: where a score ranks well but is shifted (real
    photos all scored high, generated ones higher), an offset lowers the first without a temperature
    flattening the second."""
    labels, logits = _fit_inputs(labels, logits)
    share = float(labels.mean())
    if not 0 < share < 1:
        raise MetricsError("Platt scaling needs real and fake samples")
    # At the optimum the mean probability is the share of fakes, so the offset lies within the logits' range
    # shifted by -T x logit(share): confined to the range itself, a set of few fakes had its offset stopped
    # at the top logit (mean probability 14% where 9% were fake).
    shift = -math.log(share / (1 - share))

    def offsets(at: float) -> tuple[float, float]:
        return float(logits.min()) + at * shift, float(logits.max()) + at * shift

    if temperature is not None:
        result = minimize_scalar(
            lambda b: _logit_log_loss(labels, (logits - b) / temperature), bounds=offsets(temperature), method="bounded"
        )
        return temperature, float(result.x)

    def loss(params: np.ndarray) -> float:
        return _logit_log_loss(labels, (logits - params[1]) / np.exp(params[0]))

    ends = offsets(TEMPERATURE_BOUNDS[0]) + offsets(TEMPERATURE_BOUNDS[1])
    bounds = [tuple(np.log(TEMPERATURE_BOUNDS)), (min(ends), max(ends))]
    start = np.array([np.log(fit_temperature(labels, logits)), 0.0])  # from temperature scaling alone
    result = minimize(loss, start, method="L-BFGS-B", bounds=bounds)
    return float(np.exp(result.x[0])), float(result.x[1])


def _rates(real: np.ndarray, fake: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True- and false-positive rates of "fake at or above t" for every candidate threshold t."""

    def share_at_or_above(scores: np.ndarray) -> np.ndarray:
        if scores.size == 0:
            return np.zeros(candidates.size)
        return 1.0 - np.searchsorted(np.sort(scores), candidates, side="left") / scores.size

    return share_at_or_above(fake), share_at_or_above(real)


def _split(labels, probabilities) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, np.float64)
    return probabilities, probabilities[labels == 0], probabilities[labels == 1]


def fit_threshold(labels: np.ndarray, probabilities: np.ndarray, target_fpr: float | None = None) -> float:
    """Best balanced accuracy, or the lowest threshold whose false-positive rate is <= target_fpr: the
    lowest score that flags no more reals than the target allows, else just above the top real (1.0 at
    most). A set whose scores are all one value tells nothing apart, every threshold balancing at 0.5: the
    threshold is then just above that score (1.0 at most), flagging none of it, not the lowest of the tie,
    which flagged every file."""
    probabilities, real, fake = _split(labels, probabilities)
    if target_fpr is not None and real.size == 0:
        raise MetricsError("a threshold for a target false-positive rate needs real samples")
    if target_fpr is None and (real.size == 0 or fake.size == 0):
        raise MetricsError("a balanced-accuracy threshold needs real and fake samples")
    if target_fpr is not None:
        # Reals counted, not taken as shares: 1 - i/n lands a rounding error above k/n (1 - 49/50 > 0.02), which
        # refused the last real the target allows. The candidates are the scores alone: the balanced
        # threshold's extra candidate, 0.5, answered for reals alone that all scored under it.
        allowed = math.floor(target_fpr * real.size + 1e-9)
        candidates = np.unique(probabilities)
        flagged = real.size - np.searchsorted(np.sort(real), candidates, side="left")
        within = np.flatnonzero(flagged <= allowed)
        return float(candidates[within[0]]) if within.size else float(min(1.0, np.nextafter(real.max(), np.inf)))
    if probabilities.min() == probabilities.max():
        return float(min(1.0, np.nextafter(probabilities.max(), np.inf)))
    candidates = np.unique(np.concatenate([probabilities, [0.5]]))
    tpr, fpr = _rates(real, fake, candidates)
    return float(candidates[int(np.argmax((tpr + 1 - fpr) / 2))])


def _catch_threshold(labels: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """fit_threshold's for `target_fpr`, or infinity (nothing flagged) where no threshold on the scale keeps
    to it: reals saturated at 1.0 flag at fit_threshold's 1.0 too, and fakes at 1.0 were counted caught
    beside more reals than the target allows (a catch rate at 2% of the reals read above zero with 10% of
    them flagged), where the one threshold that keeps to the target flags nothing."""
    threshold = fit_threshold(labels, scores, target_fpr)
    _, real, _ = _split(labels, scores)
    flagged = int((real >= threshold).sum())
    return threshold if flagged <= math.floor(target_fpr * real.size + 1e-9) else math.inf


def caught_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The share of fakes at or above the lowest threshold that flags at most `fpr` of the reals: where a
    detector's verdicts are made (few real files flagged), which a whole-curve AUC does not show. None
    caught where no threshold does (reals saturated at 1.0 beyond the target)."""
    threshold = _catch_threshold(labels, scores, fpr)
    _, _, fake = _split(labels, scores)
    if fake.size == 0:
        raise MetricsError("a catch rate needs fake samples")
    return float((fake >= threshold).mean())


def caught_with_reals_flagged(labels: np.ndarray, scores: np.ndarray, reals_flagged: int) -> int:
    """How many fakes score at or above the lowest threshold that flags at most `reals_flagged` real
    samples: two models compared at equal false alarms, counted in files (a share of a few dozen reals
    would round). Ties count as flagged, so tied reals can leave fewer flagged than allowed; more reals than
    allowed saturated at 1.0 leave none caught."""
    _, real, fake = _split(labels, scores)
    if real.size == 0 or fake.size == 0:
        raise MetricsError("a catch count at equal false alarms needs real and fake samples")
    threshold = _catch_threshold(labels, scores, reals_flagged / real.size)
    return int((fake >= threshold).sum())


def fit_threshold_each(real_score_sets: Iterable[np.ndarray], target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate is <= target_fpr in every one of these sets of real
    scores (one per source): pooled, a large set's rate could hide a small one's far above the target."""
    return max(fit_threshold(np.zeros(scores.size), scores, target_fpr) for scores in real_score_sets)


def sets_over_target(real_score_sets: Mapping[str, np.ndarray], threshold: float, target_fpr: float) -> str | None:
    """The sets of real scores of which `threshold` flags more than `target_fpr` allows (counted as
    fit_threshold counts), in words (`dfdc 3 of 15 (20.0%)`); None when every set keeps to it. Reals scored
    at the top of the scale (saturated probabilities) leave no threshold below 1 that keeps to it."""
    missed = [
        f"{name} {flagged} of {scores.size} ({flagged / scores.size:.1%})"
        for name, scores in real_score_sets.items()
        if scores.size and (flagged := int((scores >= threshold).sum())) > math.floor(target_fpr * scores.size + 1e-9)
    ]
    return ", ".join(missed) or None


# How much balanced accuracy a threshold inside the inconclusive band may give up against the fitted
# threshold: 2 points. See README "Verdicts" for why this defines the band.
BAND_TOLERANCE = 0.02


def fit_inconclusive_band(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    tolerance: float = BAND_TOLERANCE,
    max_half_width: float = DEFAULT_BAND_HALF_WIDTH,
) -> InconclusiveBand:
    """The scores whose side would change under some other threshold that classifies this labelled set
    about as well: the widest interval of thresholds around `threshold` whose balanced accuracy is at
    most `tolerance` below the balanced accuracy at `threshold`, capped at `max_half_width` either side.

    The data does not settle on which side of the threshold a score inside it lies: such a score is
    inconclusive. The band always contains the threshold; it is wide where balanced accuracy is flat
    around the threshold (overlapping classes with a flat optimum, or a gap without data between them).
    Uncapped it can span most of the scale: where the classes barely overlap (the synthetic-face score:
    0.38 to 0.96 in its shipped run), or around a threshold set for a false-positive rate on real media
    far from this set's optimum (0.12 to 0.96 around 0.93 in a fine-tune; 0.02 to 0.99 around 0.90
    for the shipped model on dev-eval), where a real photo at 0.2 would read inconclusive. Capped, it
    marks the scores near the threshold, as it should."""
    probabilities, real, fake = _split(labels, probabilities)
    if real.size == 0 or fake.size == 0:
        raise MetricsError("an inconclusive band needs real and fake samples")
    if not 0 <= tolerance < 1:
        raise MetricsError(f"band tolerance must be in [0, 1), got {tolerance}")
    # 1.0 too: above the highest score every threshold flags nothing, and the band's top could not reach there.
    candidates = np.unique(np.concatenate([probabilities, [threshold, 1.0]]))
    tpr, fpr = _rates(real, fake, candidates)
    balanced = (tpr + 1 - fpr) / 2
    at = int(np.searchsorted(candidates, threshold))
    good = balanced >= balanced[at] - tolerance - 1e-12
    low = high = at
    while low > 0 and good[low - 1]:
        low -= 1
    while high < candidates.size - 1 and good[high + 1]:
        high += 1
    how = (
        f"thresholds whose balanced accuracy is within {tolerance:g} of the threshold's ({balanced[at]:.3f}) "
        f"on {probabilities.size} scores ({real.size} real, {fake.size} fake), capped at threshold +- {max_half_width:g}"
    )
    # Balanced accuracy is constant on (c[i-1], c[i]]: the acceptable thresholds reach down to just above
    # the first failing candidate below, and up to the last acceptable one.
    lowest = float(np.nextafter(candidates[low - 1], np.inf)) if low > 0 else 0.0
    return InconclusiveBand(
        low=max(min(lowest, threshold), threshold - max_half_width),
        high=min(float(candidates[high]), threshold + max_half_width),
        fitted_on=how,
    )


@dataclass(frozen=True)
class Reliability:
    """Equal-width probability bins: mean predicted probability vs observed fraction of fakes."""

    edges: np.ndarray  # bins + 1
    mean_predicted: np.ndarray  # bins, NaN where empty
    fraction_fake: np.ndarray  # bins, NaN where empty
    counts: np.ndarray  # bins

    @property
    def ece(self) -> float:
        """Expected calibration error: count-weighted mean |fraction fake - mean predicted|."""
        filled = self.counts > 0
        if not filled.any():
            return float("nan")
        gaps = np.abs(self.fraction_fake[filled] - self.mean_predicted[filled])
        return float(np.sum(gaps * self.counts[filled]) / self.counts.sum())


def reliability(labels, probabilities, bins: int = 10) -> Reliability:
    labels = np.asarray(labels, np.float64)
    probabilities = np.asarray(probabilities, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # [k/bins, (k+1)/bins) by the bin's number: linspace's edges 0.30000000000000004 and 0.7000000000000001
    # put 0.3 and 0.7 in the bins below theirs, while 0.2 and 0.8 went above.
    index = np.clip(np.floor(probabilities * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.int64)
    sum_p = np.bincount(index, weights=probabilities, minlength=bins)
    sum_y = np.bincount(index, weights=labels, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(counts > 0, sum_p / counts, np.nan)
        fraction_fake = np.where(counts > 0, sum_y / counts, np.nan)
    return Reliability(edges, mean_predicted, fraction_fake, counts)


def expected_calibration_error(labels, probabilities, bins: int = 10) -> float:
    return reliability(labels, probabilities, bins).ece
