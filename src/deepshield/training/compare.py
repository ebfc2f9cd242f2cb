"""Bundles compared on the same labelled media, paired: the test for "does this model beat the one we
ship" that two separately measured AUCs, whose intervals overlap on sets of a few dozen files, cannot give.

Every bundle scores the same faces (found once per crop policy, with the product's detection, crop
and video rule, and cached as training's benchmarks are), each face's calibrated logit; the candidate's
AUCs minus the baseline's are then resampled together over files (`paired_comparison`). A candidate is
*ahead* when the pooled difference's 95% interval (bench_auc, every set weighing the same) lies above
zero, *behind* when below, else *tied*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from deepshield.errors import DeepShieldError
from deepshield.evaluation.metrics import PairedDifference
from deepshield.inference.runtime import OnnxClassifier
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.models.card import ModelCard
from deepshield.training.benchmarks import (
    Benchmark,
    BenchmarkScores,
    CatchesAtEqualFalseAlarms,
    benchmark_metrics,
    catches_at_equal_false_alarms,
    load_benchmark,
    paired_comparison,
    refuse_shared_names,
    score_benchmarks,
)

Standing = Literal["ahead", "behind", "tied"]


@dataclass
class ScoredBundle:
    """One bundle's calibrated face logits on every labelled set, with its threshold's figures."""

    bundle: Path
    card: ModelCard
    results: list[BenchmarkScores]
    metrics: dict[str, float] = field(init=False)  # every bench_* figure at the bundle's own threshold

    def __post_init__(self) -> None:
        self.metrics = benchmark_metrics(self.results, self.card.calibration.threshold)

    @property
    def label(self) -> str:
        return f"{self.card.name} {self.card.version}"

    def logits(self) -> dict[str, np.ndarray]:
        """Per set, its faces' calibrated logits (in the sets' face order, the same for every bundle)."""
        return {r.benchmark.name: r.scored.faces["logit"] for r in self.results}


def _calibrated_logits(classifier: OnnxClassifier) -> Callable[[np.ndarray], np.ndarray]:
    """The bundle's calibrated logit of each crop: scored at temperature 1, its probability."""
    calibration = classifier.card.calibration

    def predict(crops: np.ndarray) -> np.ndarray:
        return calibration.scaled(classifier.score(crops).logits)

    return predict


def score_bundles(
    bundles: list[Path],
    datasets: list[Path],
    cache_dir: Path,
    frames: int = DEFAULT_VIDEO_FRAMES,
    min_face_size: int = 20,
    split: str = "all",
) -> list[ScoredBundle]:
    """Each bundle on every labelled set (anything `deepshield evaluate` reads; `split`: the prepared sets'
    split). Refuses two sets of one name (their figures would share keys) and a bundle that finds other
    faces than the first; every bundle is loaded before any set's faces are found (a mistyped candidate
    was refused after the baseline had scored every set)."""
    refuse_shared_names(datasets)
    classifiers = [OnnxClassifier(bundle) for bundle in bundles]
    scored: list[ScoredBundle] = []
    reference: list[Benchmark] = []
    for bundle, classifier in zip(bundles, classifiers):
        card = classifier.card
        benchmarks = [
            load_benchmark(path, card.crop_policy, cache_dir, [], frames, min_face_size, split) for path in datasets
        ]
        reference = reference or benchmarks
        if [len(b.rows) for b in benchmarks] != [len(b.rows) for b in reference]:
            raise DeepShieldError(f"{bundle} finds other faces than {bundles[0]} (another detector setting?)")
        scored.append(ScoredBundle(bundle, card, score_benchmarks(benchmarks, _calibrated_logits(classifier), 1.0)))
    return scored


@dataclass
class Comparison:
    """A candidate against the baseline: both bundles' figures, the paired differences, and (optionally)
    the fake files each catches with at most K of a set's real files flagged."""

    baseline: ScoredBundle
    candidate: ScoredBundle
    differences: dict[str, PairedDifference]
    baseline_catches: list[CatchesAtEqualFalseAlarms]
    candidate_catches: list[CatchesAtEqualFalseAlarms]

    @property
    def standing(self) -> Standing:
        pooled = self.differences.get("bench_auc")
        # An interval the bootstrap could not give (NaN: resamples of one class) decides nothing: it read "behind".
        if (
            pooled is None
            or not (math.isfinite(pooled.low) and math.isfinite(pooled.high))
            or pooled.low <= 0 <= pooled.high
        ):
            return "tied"
        return "ahead" if pooled.low > 0 else "behind"


def compare(
    baseline: ScoredBundle, candidate: ScoredBundle, caught_with_reals: list[int], resamples: int = 2000
) -> Comparison:
    return Comparison(
        baseline,
        candidate,
        paired_comparison(baseline.results, candidate.results, resamples=resamples),
        catches_at_equal_false_alarms(baseline.results, caught_with_reals),
        catches_at_equal_false_alarms(candidate.results, caught_with_reals),
    )
