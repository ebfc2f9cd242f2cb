"""The analysis API: faces found, cropped with the bundle's policy, scored in one batch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from deepshield.errors import DeepShieldError, UnsupportedMediaError
from deepshield.faces.crop import crop_face
from deepshield.faces.detector import Face, FaceDetector
from deepshield.inference.heatmap import cam_to_heatmap
from deepshield.inference.results import (
    FaceResult,
    ImageResult,
    TimelinePoint,
    TrackPoint,
    TrackResult,
    Verdict,
    VideoResult,
    VideoSummary,
    headline,
    scope,
)
from deepshield.inference.runtime import OnnxClassifier, bundle_dir
from deepshield.inference.tracking import associate
from deepshield.inference.verdict import CombinedVerdict, ScoreRule, combine
from deepshield.media.images import ImageLimits, load_image
from deepshield.media.sniff import HEADER_BYTES, MediaKind, sniff_media_kind, sniff_path
from deepshield.media.video import VideoLimits, sample_frames
from deepshield.models.card import InconclusiveBand, ModelCard

VIDEO_RULE = (
    "track score = mean of the top half of its frame probabilities; tracks seen in fewer than "
    "min(3, frames sampled) frames do not count unless no track does; verdict = the highest track score"
)
ProgressCallback = Callable[[float, str], None]
# Side of the small face copies kept for every timeline point (the page shows one on hover).
POINT_THUMBNAIL_SIDE = 96


VIDEO_RULE_KINDS = ("topk-mean", "mean", "max")


@dataclass(frozen=True)
class TrackVote:
    scores: list[float]  # per track
    counted: list[bool]  # per track: takes part in the verdict
    score: float | None  # the file's score


@dataclass(frozen=True)
class VideoRule:
    """How a track's frame probabilities become one score. `kind`: "topk-mean" (the default: mean of
    the top `top_fraction`), "mean" (all frames) or "max" (the single most suspicious frame)."""

    top_fraction: float = 0.5
    min_track_frames: int = 3
    kind: str = "topk-mean"

    def __post_init__(self) -> None:
        if self.kind not in VIDEO_RULE_KINDS:
            raise ValueError(f"video rule kind must be one of {', '.join(VIDEO_RULE_KINDS)}, got {self.kind!r}")
        if not 0 < self.top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")

    def track_score(self, probabilities: list[float]) -> float:
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
        scores = [self.track_score(list(probabilities)) for probabilities in tracks]
        longest = max((len(probabilities) for probabilities in tracks), default=0)
        counted = [self.not_counted_reason(len(probabilities), frames, longest) is None for probabilities in tracks]
        score = max((s for s, c in zip(scores, counted) if c), default=None)
        return TrackVote(scores, counted, score)

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


class Detector:
    """Deepfake detector over images and videos. Thread-safe; load once, call many times."""

    def __init__(
        self,
        classifier: OnnxClassifier,
        face_detector: FaceDetector | None = None,
        threshold: float | None = None,
        image_limits: ImageLimits = ImageLimits(),
        video_limits: VideoLimits = VideoLimits(),
        video_rule: VideoRule = VideoRule(),
        synthetic_threshold: float | None = None,
    ) -> None:
        self.classifier = classifier
        self.faces = face_detector or FaceDetector()
        calibration = classifier.card.calibration
        # Another threshold keeps the band's distances below and above it.
        self.manipulation_rule = ScoreRule(calibration.threshold, calibration.band).moved(threshold)
        synthetic = classifier.card.synthetic
        self.synthetic_rule: ScoreRule | None = None
        if synthetic is not None:
            self.synthetic_rule = ScoreRule(synthetic.calibration.threshold, synthetic.calibration.band).moved(
                synthetic_threshold
            )
        elif synthetic_threshold is not None:
            raise ValueError("a synthetic-face threshold was given, but this model has no synthetic-face score")
        self.image_limits = image_limits
        self.video_limits = video_limits
        self.video_rule = video_rule

    @classmethod
    def from_bundle(
        cls, bundle: Path | str | None = None, *, min_face_size: int = 20, threshold: float | None = None, **kwargs: Any
    ) -> Detector:
        """Load a bundle directory; None or "default" gives the model shipped with the package."""
        return cls(
            OnnxClassifier(bundle_dir(bundle)), FaceDetector(min_face_size=min_face_size), threshold=threshold, **kwargs
        )

    @property
    def card(self) -> ModelCard:
        return self.classifier.card

    @property
    def threshold(self) -> float:
        return self.manipulation_rule.threshold

    @property
    def band(self) -> InconclusiveBand:
        return self.manipulation_rule.band

    @property
    def has_synthetic(self) -> bool:
        return self.synthetic_rule is not None

    def _combine(self, probability: float, synthetic_probability: float | None) -> CombinedVerdict:
        return combine(probability, self.manipulation_rule, synthetic_probability, self.synthetic_rule)

    def _rule_fields(self) -> dict[str, Any]:
        """What every image and video result says about the scores' thresholds, bands and scope."""
        synthetic = self.synthetic_rule
        return {
            "model": self.model_name,
            "threshold": self.threshold,
            "inconclusive": self.band,
            "synthetic_threshold": None if synthetic is None else synthetic.threshold,
            "synthetic_inconclusive": None if synthetic is None else synthetic.band,
            "scope": scope(self.has_synthetic),
        }

    @property
    def model_name(self) -> str:
        return f"{self.card.name} {self.card.version}"

    def _score_faces(
        self, images: list[NDArray[Any]], faces_per_image: list[list[Face]], keep_pixels: bool
    ) -> list[list[FaceResult]]:
        policy = self.card.crop_policy
        crops = [
            crop_face(image, face.box, face.keypoints, policy)
            for image, faces in zip(images, faces_per_image)
            for face in faces
        ]
        if not crops:
            return [[] for _ in images]
        scores = self.classifier.score(np.stack([c.pixels for c in crops]))
        temperature = self.card.calibration.temperature
        results: list[list[FaceResult]] = []
        flat = 0
        synthetic = scores.synthetic_probabilities
        for faces in faces_per_image:
            row = []
            for index, face in enumerate(faces):
                probability = float(scores.probabilities[flat])
                synthetic_probability = None if synthetic is None else float(synthetic[flat])
                verdict = self._combine(probability, synthetic_probability)
                row.append(
                    FaceResult(
                        index=index,
                        box=face.box.as_list(),
                        detection_score=round(face.score, 4),
                        keypoints=[[round(float(x), 1), round(float(y), 1)] for x, y in face.keypoints],
                        probability=probability,
                        logit=float(scores.logits[flat]),
                        label=verdict.label,
                        threshold_label="fake" if probability >= self.threshold else "real",
                        synthetic_probability=synthetic_probability,
                        synthetic_logit=None
                        if scores.synthetic_logits is None
                        else float(scores.synthetic_logits[flat]),
                        manipulation_label=verdict.manipulation_label,
                        synthetic_label=verdict.synthetic_label,
                        verdict_driver=verdict.driver,
                        crop=crops[flat].pixels if keep_pixels else None,
                        heatmap=cam_to_heatmap(scores.cams[flat], policy.size, temperature) if keep_pixels else None,
                    )
                )
                flat += 1
            results.append(row)
        return results

    def _verdict(self, probability: float | None, synthetic_probability: float | None, what: str) -> Verdict:
        """The file's verdict from its highest manipulation and highest synthetic score (the rule of
        `inference.verdict`: as severe as its most severe face or counted track)."""
        if probability is None:
            return Verdict(
                label="no_face",
                threshold_label="no_face",
                probability=None,
                headline=headline("no_face", None, self.has_synthetic),
                reason="no face found",
            )
        verdict = self._combine(probability, synthetic_probability)
        band = self.band
        reason = (
            f"most suspicious {what}: {probability:.1%}; inconclusive from {band.low:.1%} to {band.high:.1%} "
            f"(threshold {self.threshold:.1%})"
        )
        if self.synthetic_rule is not None and synthetic_probability is not None:
            rule = self.synthetic_rule
            reason += (
                f"; synthetic-face score {synthetic_probability:.1%}, inconclusive from {rule.band.low:.1%} to "
                f"{rule.band.high:.1%} (threshold {rule.threshold:.1%}); the {verdict.driver} score drives the verdict"
            )
        return Verdict(
            label=verdict.label,
            threshold_label="fake" if probability >= self.threshold else "real",
            probability=probability,
            synthetic_probability=synthetic_probability,
            verdict_driver=verdict.driver,
            headline=headline(verdict.label, verdict.driver, self.has_synthetic),
            reason=reason,
        )

    def analyze_image(self, source: Path | str | bytes | NDArray[Any], heatmaps: bool = True) -> ImageResult:
        """Score every face in one image (path, encoded bytes, or H x W x 3 uint8 RGB array)."""
        started = time.perf_counter()
        image = source if isinstance(source, np.ndarray) else self._load_image(source)
        faces = self.faces.detect(image)
        face_results = self._score_faces([image], [faces], keep_pixels=heatmaps)[0]
        worst = max((f.probability for f in face_results), default=None)
        worst_synthetic = _highest(f.synthetic_probability for f in face_results)
        return ImageResult(
            width=image.shape[1],
            height=image.shape[0],
            faces=face_results,
            verdict=self._verdict(worst, worst_synthetic, "face"),
            **self._rule_fields(),
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    def _load_image(self, source: Path | str | bytes) -> NDArray[Any]:
        try:
            return load_image(source, self.image_limits)
        except UnsupportedMediaError:
            if _is_video(source):
                raise UnsupportedMediaError(
                    "this is a video: use Detector.analyze_video, or analyze_path, which tells images and videos apart"
                ) from None
            raise

    def analyze_video(
        self, path: Path | str, frames: int = 32, progress: ProgressCallback | None = None
    ) -> VideoResult:
        """Sample `frames` frames uniformly, score every face, track people, aggregate to a verdict."""
        started = time.perf_counter()
        report = progress or (lambda fraction, stage: None)
        report(0.0, "decoding")
        info, sampled = sample_frames(path, frames, self.video_limits, on_frame=lambda f: report(0.4 * f, "decoding"))
        faces_per_frame = []
        for position, frame in enumerate(sampled):
            report(0.4 + 0.3 * position / len(sampled), "detecting faces")
            faces_per_frame.append(self.faces.detect(frame.image))
        report(0.7, "scoring faces")
        scored = self._score_faces([f.image for f in sampled], faces_per_frame, keep_pixels=True)
        report(0.95, "aggregating")
        tracks = associate([[face.box for face in faces] for faces in faces_per_frame])
        longest = max((len(track.members) for track in tracks), default=0)
        track_results = []
        for track in tracks:
            members = [(sampled[pos], scored[pos][face_pos]) for pos, face_pos in track.members]
            points = [
                TrackPoint(
                    frame_index=frame.index,
                    timestamp_s=round(frame.timestamp_s, 3),
                    box=face.box,
                    probability=face.probability,
                    synthetic_probability=face.synthetic_probability,
                    thumbnail=cv2.resize(
                        face.crop,  # type: ignore[arg-type]  # keep_pixels=True: every face has its crop
                        (POINT_THUMBNAIL_SIDE, POINT_THUMBNAIL_SIDE),
                        interpolation=cv2.INTER_AREA,
                    ),
                )
                for frame, face in members
            ]
            score = self.video_rule.track_score([p.probability for p in points])
            # The synthetic score per track by the same video rule as the manipulation score.
            synthetic_score = (
                self.video_rule.track_score([p.synthetic_probability or 0.0 for p in points])
                if self.has_synthetic
                else None
            )
            verdict = self._combine(score, synthetic_score)
            peak_frame, peak_face = max(members, key=lambda member: member[1].probability)
            not_counted_reason = self.video_rule.not_counted_reason(len(points), len(sampled), longest)
            track_results.append(
                TrackResult(
                    track_id=track.track_id,
                    points=points,
                    score=score,
                    label=verdict.label,
                    threshold_label="fake" if score >= self.threshold else "real",
                    synthetic_score=synthetic_score,
                    manipulation_label=verdict.manipulation_label,
                    synthetic_label=verdict.synthetic_label,
                    verdict_driver=verdict.driver,
                    frames_seen=len(points),
                    first_seen_s=points[0].timestamp_s,
                    last_seen_s=points[-1].timestamp_s,
                    peak_frame_index=peak_frame.index,
                    peak_timestamp_s=round(peak_frame.timestamp_s, 3),
                    counted=not_counted_reason is None,
                    not_counted_reason=not_counted_reason,
                    crop=peak_face.crop,
                    heatmap=peak_face.heatmap,
                )
            )
        voting = [t for t in track_results if t.counted]
        timeline = [
            TimelinePoint(
                frame_index=frame.index,
                timestamp_s=round(frame.timestamp_s, 3),
                faces=len(scored[pos]),
                max_probability=max((f.probability for f in scored[pos]), default=None),
                max_synthetic_probability=_highest(f.synthetic_probability for f in scored[pos]),
            )
            for pos, frame in enumerate(sampled)
        ]
        report(1.0, "done")
        return VideoResult(
            video=VideoSummary(**info.__dict__),
            sampled_frames=len(sampled),
            tracks=track_results,
            timeline=timeline,
            verdict=self._verdict(
                max((t.score for t in voting), default=None), _highest(t.synthetic_score for t in voting), "face track"
            ),
            rule=self.video_rule.describe(),
            **self._rule_fields(),
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    def analyze_path(self, path: Path | str, frames: int = 32, heatmaps: bool = False) -> ImageResult | VideoResult:
        """Image or video, told apart by content."""
        path = Path(path)
        if sniff_path(path) is MediaKind.VIDEO:
            return self.analyze_video(path, frames)
        return self.analyze_image(path, heatmaps=heatmaps)


def _highest(values: Iterable[float | None]) -> float | None:
    """The highest of scores that are all None (a model without that score) or all numbers."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _is_video(source: Path | str | bytes) -> bool:
    try:
        return (
            sniff_media_kind(source[:HEADER_BYTES]) if isinstance(source, bytes) else sniff_path(Path(source))
        ) is MediaKind.VIDEO
    except (DeepShieldError, OSError):
        return False
