"""The verdict rule for a face, track or file with two scores, in one place.

Each score (manipulation: face swap or edit; synthetic: a fully AI-generated face) is called
three-way by its own threshold and inconclusive band. The verdict is the more severe of the two
calls (likely_manipulated > inconclusive > no_signs_found); the score with that call drives it.
When both calls are equally severe, the score whose calibrated probability is further above its
threshold drives (manipulation when that ties too). A model without a synthetic score: the
manipulation score alone, as before. See README "Verdicts"."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from deepshield.models.card import VERDICT_RULE, Calibration, InconclusiveBand, VerdictLabel

__all__ = [
    "VERDICT_RULE",
    "CombinedVerdict",
    "ScoreRule",
    "VerdictDriver",
    "combine",
    "shown_probability",
    "suspicion",
]
VerdictDriver = Literal["manipulation", "synthetic"]
SEVERITY: dict[VerdictLabel, int] = {"no_signs_found": 0, "inconclusive": 1, "likely_manipulated": 2}


@dataclass(frozen=True)
class ScoreRule:
    """One score's threshold and inconclusive band (the band holds the threshold)."""

    threshold: float
    band: InconclusiveBand

    @classmethod
    def from_calibration(cls, calibration: Calibration, threshold: float | None = None) -> ScoreRule:
        """The rule of a card's calibration, at its threshold or another (the band then keeps its distances
        below and above it), with the band reaching down to even odds (InconclusiveBand.from_even_odds)."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:  # nan fails too
            raise ValueError(f"a threshold is a probability from 0 to 1, got {threshold}")
        chosen = calibration.threshold if threshold is None else threshold
        return cls(chosen, calibration.band.moved(calibration.threshold, chosen).from_even_odds())

    def classify(self, probability: float) -> VerdictLabel:
        return self.band.classify(probability)

    @classmethod
    def at_threshold(cls, threshold: float) -> ScoreRule:
        """A rule without an inconclusive band: a score at or above the threshold is flagged, as the figures
        of real files flagged count them."""
        return cls(threshold, InconclusiveBand(low=threshold, high=threshold, fitted_on="none: the threshold alone"))


@dataclass(frozen=True)
class CombinedVerdict:
    label: VerdictLabel
    driver: VerdictDriver
    manipulation_label: VerdictLabel
    synthetic_label: VerdictLabel | None


def combine(
    manipulation: float, manipulation_rule: ScoreRule, synthetic: float | None, synthetic_rule: ScoreRule | None
) -> CombinedVerdict:
    """The verdict of one face, track or file from its manipulation and (optional) synthetic score."""
    manipulation_label = manipulation_rule.classify(manipulation)
    if synthetic is None or synthetic_rule is None:
        return CombinedVerdict(manipulation_label, "manipulation", manipulation_label, None)
    synthetic_label = synthetic_rule.classify(synthetic)
    by_severity = SEVERITY[synthetic_label] - SEVERITY[manipulation_label]
    by_margin = (synthetic - synthetic_rule.threshold) - (manipulation - manipulation_rule.threshold)
    synthetic_drives = by_severity > 0 or (by_severity == 0 and by_margin > 0)
    label = synthetic_label if synthetic_drives else manipulation_label
    driver: VerdictDriver = "synthetic" if synthetic_drives else "manipulation"
    return CombinedVerdict(label, driver, manipulation_label, synthetic_label)


def suspicion(
    label: VerdictLabel,
    driver: VerdictDriver,
    probability: float,
    synthetic: float | None,
    threshold: float,
    synthetic_threshold: float | None,
    counted: bool = True,
) -> tuple[bool, int, float]:
    """A face's or person's place when listed most suspicious first (largest first), so that the one behind
    a file's verdict leads: counted towards the verdict before not, then the severity of its call, then how
    far the score that made the call lies above its threshold. The page orders its cards the same way
    (mostSuspiciousFirst in format.js)."""
    if driver == "synthetic" and synthetic is not None and synthetic_threshold is not None:
        margin = synthetic - synthetic_threshold
    else:
        margin = probability - threshold
    return counted, SEVERITY[label], margin


def shown_probability(probability: float, decimals: int = 1) -> str:
    """A probability as people read it, to a tenth of a percent (or `decimals` places), but never "0.0%"
    or "100.0%": no estimate from a model can claim that, so those read "<0.1%" and ">99.9%" (as the web
    page shows them)."""
    shown = f"{probability:.{decimals}%}"
    zero, one = f"{0:.{decimals}%}", f"{1:.{decimals}%}"
    least = f"{10**-decimals:.{decimals}f}%"
    return {zero: f"<{least}", one: f">{100 - 10**-decimals:.{decimals}f}%"}.get(shown, shown)


def shown_against(probability: float, threshold: float, band: InconclusiveBand) -> str:
    """shown_probability to the places (1 to 4) that keep the number shown on the score's side of the
    threshold and band edges it is judged by, as the page's scorePct: 49.996% read "50.0%" beside a band
    from 50.0%, called below it. (A score on an edge reads on its side at one place: "50.0%".)"""
    edges = (band.low, band.high, threshold)
    decimals = 1
    while decimals < 4 and any(
        (probability >= edge) != (float(f"{probability * 100:.{decimals}f}") / 100 >= edge) for edge in edges
    ):
        decimals += 1
    return shown_probability(probability, decimals)


def against_its_rule(probability: float, rule: ScoreRule) -> tuple[str, str]:
    """A score and the terms it is judged by, as a verdict's reason shows them ("57.41%", "inconclusive
    from 50.00% to 57.42% (threshold 55.58%)"): to the places that tell the score from each edge."""
    places = _decimals_apart(probability, (rule.band.low, rule.band.high, rule.threshold))
    terms = (
        f"inconclusive from {rule.band.low:.{places}%} to {rule.band.high:.{places}%} "
        f"(threshold {rule.threshold:.{places}%})"
    )
    return shown_probability(probability, places), terms


def _decimals_apart(probability: float, edges: Iterable[float]) -> int:
    """The fewest places of a percent (1 to 4) at which a score reads unlike each threshold and band edge
    it is shown beside: at one, 57.41% and an edge of 57.42% both read 57.4%, and two reasons alike to
    the letter gave different calls."""
    edges = list(edges)
    for decimals in range(1, 4):
        if all(f"{probability:.{decimals}%}" != f"{edge:.{decimals}%}" for edge in edges):
            return decimals
    return 4
