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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from deepshield.errors import DeepShieldError
from deepshield.evaluation.metrics import PairedDifference
from deepshield.evaluation.scoring import CLEAN
from deepshield.inference.runtime import OnnxClassifier
from deepshield.inference.verdict import ScoreRule, combine
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.models.card import ModelCard
from deepshield.training.benchmarks import (
    Benchmark,
    BenchmarkScores,
    CatchesAtEqualFalseAlarms,
    benchmark_metrics,
    benchmark_name,
    catches_at_equal_false_alarms,
    check_benchmark_layout,
    load_benchmark,
    paired_comparison,
)

Standing = Literal["ahead", "behind", "tied"]


@dataclass
class ScoredBundle:
    """One bundle's calibrated face logits on every labelled set, with its threshold's figures; for a
    two-score bundle, its synthetic-face score's calibrated logits on the same faces too."""

    bundle: Path
    card: ModelCard
    results: list[BenchmarkScores]
    synthetic_results: list[BenchmarkScores] | None = None
    metrics: dict[str, float] = field(init=False)  # every bench_* figure at the bundle's own threshold

    def __post_init__(self) -> None:
        self.metrics = benchmark_metrics(self.results, self.card.calibration.threshold)
        if self.synthetic_results is not None:
            self.metrics |= self._flagged_by_either_score(self.synthetic_results)

    def _flagged_by_either_score(self, synthetic_results: list[BenchmarkScores]) -> dict[str, float]:
        """bench_<set>_fpr_either and bench_fpr_either: the real files flagged as the product flags them, by the
        verdict rule (`combine`), at or above either score's threshold (counted by the face-swap score alone, a
        real file the synthetic-face score flagged was missed, which scan flags); bench_<set>_tpr_either: the
        fakes caught so (a fake only that score caught read as missed, its false alarms counted and not its
        catches); synthetic_bench_<set>_fpr: that score's alone, as the card names it. bench_<set>_fpr and
        _tpr stay the face-swap score's, as training's."""
        assert self.card.synthetic is not None, "a synthetic score's results come with its card's block"
        manipulation_rule = ScoreRule.at_threshold(self.card.calibration.threshold)
        synthetic_rule = ScoreRule.at_threshold(self.card.synthetic.calibration.threshold)
        metrics: dict[str, float] = {}
        pooled: list[bool] = []

        def flagged(manipulation: np.ndarray, synthetic: np.ndarray) -> list[bool]:
            return [
                combine(float(m), manipulation_rule, float(s), synthetic_rule).label == "likely_manipulated"
                for m, s in zip(manipulation, synthetic, strict=True)
            ]

        for result, synthetic in zip(self.results, synthetic_results, strict=True):
            manipulation_scores, synthetic_scores = (r.scored.file_scores(CLEAN) for r in (result, synthetic))
            labels = np.array([f.label for f in result.scored.files])
            real = (labels == 0) & ~np.isnan(manipulation_scores)
            fake = (labels == 1) & ~np.isnan(manipulation_scores)
            flags = flagged(manipulation_scores[real], synthetic_scores[real])
            caught = flagged(manipulation_scores[fake], synthetic_scores[fake])
            name = result.benchmark.name
            if caught:
                metrics[f"bench_{name}_tpr_either"] = float(np.mean(caught))
            if flags:
                metrics[f"bench_{name}_fpr_either"] = float(np.mean(flags))
                metrics[f"synthetic_bench_{name}_fpr"] = float(
                    np.mean(synthetic_scores[real] >= synthetic_rule.threshold)
                )
            pooled += flags
        return metrics | ({"bench_fpr_either": float(np.mean(pooled))} if pooled else {})

    @property
    def label(self) -> str:
        return f"{self.card.name} {self.card.version}"

    def logits(self) -> dict[str, np.ndarray]:
        """Per set, its faces' calibrated logits (in the sets' face order, the same for every bundle)."""
        return {r.benchmark.name: r.scored.faces["logit"] for r in self.results}


def _scored(classifier: OnnxClassifier, benchmark: Benchmark) -> tuple[BenchmarkScores, BenchmarkScores | None]:
    """The benchmark's faces by the bundle's calibrated logits (scored at temperature 1, their probabilities):
    the face-swap score's, and the synthetic-face score's (reading its own crops, as scan does) or None."""
    card = classifier.card
    scores = classifier.score(benchmark.crops, synthetic_crops=benchmark.synthetic_crops)
    manipulation = BenchmarkScores(benchmark, benchmark.scored(card.calibration.scaled(scores.logits), 1.0))
    if card.synthetic is None or scores.synthetic_logits is None:
        return manipulation, None
    synthetic_logits = card.synthetic.calibration.scaled(scores.synthetic_logits)
    return manipulation, BenchmarkScores(benchmark, benchmark.scored(synthetic_logits, 1.0))


def score_bundles(
    bundles: list[Path],
    datasets: list[Path],
    cache_dir: Path,
    frames: int = DEFAULT_VIDEO_FRAMES,
    min_face_size: int = 20,
    split: str = "all",
    progress: bool = True,
) -> list[ScoredBundle]:
    """Each bundle on every labelled set (anything `deepshield evaluate` reads; `split`: the prepared sets'
    split). Refuses two sets of one name (their figures would share keys) and a bundle that finds other
    faces than the first; every bundle is loaded before any set's faces are found (a mistyped candidate
    was refused after the baseline had scored every set)."""
    names = [benchmark_name(path) for path in datasets]
    if len(set(names)) < len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise DeepShieldError(f"two labelled sets are both named {', '.join(twice)}: give each its own folder name")
    for path in datasets:  # every set's layout told before the first is scored
        check_benchmark_layout(path)
    classifiers = [OnnxClassifier(bundle) for bundle in bundles]
    scored: list[ScoredBundle] = []
    reference: list[Benchmark] = []
    for bundle, classifier in zip(bundles, classifiers):
        card = classifier.card
        benchmarks = [
            load_benchmark(path, card.crop_policy, cache_dir, [], frames, min_face_size, split, progress=progress)
            for path in datasets
        ]
        reference = reference or benchmarks
        if [len(b.rows) for b in benchmarks] != [len(b.rows) for b in reference]:
            raise DeepShieldError(f"{bundle} finds other faces than {bundles[0]} (another detector setting?)")
        manipulation, synthetic = zip(*(_scored(classifier, benchmark) for benchmark in benchmarks), strict=True)
        two_scores = card.synthetic is not None
        scored.append(ScoredBundle(bundle, card, list(manipulation), list(synthetic) if two_scores else None))
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
