"""The video rule: how the per-frame scores of a video's face tracks become track scores and one file score.

`Detector`, `evaluate`, `calibrate` and the training benchmarks all call `VideoRule.aggregate`, so a
video is judged the same way wherever it is scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

VIDEO_RULE = (
    "track score = mean of the top half of its frame probabilities; tracks seen in fewer than "
    "min(3, frames sampled) frames do not count unless no track does; verdict = the highest track score"
)
VideoRuleKind = Literal["topk-mean", "mean", "max"]
VIDEO_RULE_KINDS: tuple[VideoRuleKind, ...] = get_args(VideoRuleKind)


@dataclass(frozen=True)
class TrackVote:
    """The rule applied to one file's tracks."""

    scores: list[float]  # per track
    not_counted_reasons: list[str | None]  # per track: None when it takes part in the verdict
    score: float | None  # the file's score: the highest counted track score (None without tracks)

    @property
    def counted(self) -> list[bool]:
        return [reason is None for reason in self.not_counted_reasons]


@dataclass(frozen=True)
class VideoRule:
    """How a track's frame probabilities become one score. `kind`: "topk-mean" (the default: mean of
    the top `top_fraction`), "mean" (all frames) or "max" (the single most suspicious frame)."""

    top_fraction: float = 0.5
    min_track_frames: int = 3
    kind: VideoRuleKind = "topk-mean"

    def __post_init__(self) -> None:
        if self.kind not in VIDEO_RULE_KINDS:
            raise ValueError(f"video rule kind must be one of {', '.join(VIDEO_RULE_KINDS)}, got {self.kind!r}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")

    def track_score(self, probabilities: Sequence[float]) -> float:
        if self.kind == "mean":
            return float(np.mean(probabilities))
        if self.kind == "max":
            return float(np.max(probabilities))
        ordered = sorted(probabilities, reverse=True)
        k = max(1, math.ceil(len(ordered) * self.top_fraction))
        return float(np.mean(ordered[:k]))

    def not_counted_reason(self, frames_seen: int, sampled: int, longest: int) -> str | None:
        """Why a track seen in `frames_seen` of `sampled` frames does not count towards the verdict
        (the longest track of the file being seen in `longest`), or None when it counts."""
        needed = min(self.min_track_frames, max(1, sampled))
        if frames_seen >= needed or longest < needed:
            return None
        return f"seen in {frames_seen} of {sampled} sampled frames: faces seen in fewer than {needed} do not count while a longer-seen face exists"

    def aggregate(self, tracks: Sequence[Sequence[float]], frames: int) -> TrackVote:
        """The video rule, in one place: each track's score, whether it counts (`not_counted_reason`),
        and the file's score (the highest counted track score; None without tracks)."""
        scores = [self.track_score(probabilities) for probabilities in tracks]
        longest = max((len(probabilities) for probabilities in tracks), default=0)
        reasons = [self.not_counted_reason(len(probabilities), frames, longest) for probabilities in tracks]
        score = max((s for s, reason in zip(scores, reasons) if reason is None), default=None)
        return TrackVote(scores, reasons, score)

    def judged_on(self) -> str:
        """What a person's score is made of, in words for a verdict's reason."""
        if self.kind == "mean":
            return "the mean of all their frames"
        if self.kind == "max":
            return "their most suspicious frame"
        share = "half" if self.top_fraction == 0.5 else f"{self.top_fraction:.0%}"
        return f"the mean of their most suspicious {share} of frames"

    def describe(self) -> str:
        """The rule in words (VIDEO_RULE for the default rule)."""
        if self == VideoRule():
            return VIDEO_RULE
        how = {
            "topk-mean": f"mean of the top {self.top_fraction:.0%} of its frame probabilities",
            "mean": "mean of all its frame probabilities",
            "max": "highest of its frame probabilities",
        }[self.kind]
        return (
            f"track score = {how}; tracks seen in fewer than min({self.min_track_frames}, frames sampled) frames "
            "do not count unless no track does; verdict = the highest track score"
        )
