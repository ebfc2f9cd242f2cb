"""The analysis API: faces found, cropped with the bundle's policy, scored in one batch."""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

from deepshield.errors import DeepShieldError, UnsupportedMediaError
from deepshield.faces.detector import FaceDetector, why_no_face
from deepshield.inference.cautions import doubt_clause, face_cautions
from deepshield.inference.frame_faces import MAX_FACES_PER_FRAME, FrameFaces, find_faces
from deepshield.inference.heatmap import cam_to_heatmap
from deepshield.inference.results import (
    AnalysedSpan,
    FaceResult,
    ImageResult,
    ScoringTerms,
    TimelinePoint,
    TrackPoint,
    TrackResult,
    Verdict,
    VideoResult,
    VideoSummary,
    headline,
    scope,
)
from deepshield.inference.runtime import OnnxClassifier, bundle_dir, is_shipped
from deepshield.inference.verdict import (
    SEVERITY,
    CombinedVerdict,
    ScoreRule,
    VerdictDriver,
    against_its_rule,
    combine,
    suspicion,
)
from deepshield.inference.video_rule import VideoRule
from deepshield.media.frames import media_kind
from deepshield.media.images import DecodedImage, ImageLimits, decode_image
from deepshield.media.metadata import MediaMetadata, image_metadata, video_metadata
from deepshield.media.provenance import TrustAnchors
from deepshield.media.sniff import HEADER_BYTES, MediaKind, sniff_media_kind, sniff_path
from deepshield.media.units import megapixels
from deepshield.media.video import (
    DEFAULT_VIDEO_FRAMES,
    WHOLE_VIDEO,
    VideoLimits,
    VideoSpan,
    reduced_read_reason,
    sample_frames,
)
from deepshield.models.card import InconclusiveBand, ModelCard, VerdictLabel
from deepshield.plural import plural

ProgressCallback = Callable[[float, str], None]
# Side of the small face copies kept for every timeline point (the page shows one on hover).
POINT_THUMBNAIL_SIDE = 96


_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def _naming_its_file(
    method: Callable[Concatenate[Any, _Params], _Result],
) -> Callable[Concatenate[Any, _Params], _Result]:
    """A refusal met reading a file (a path given) carries the path as a note, which a traceback shows:
    a script looping over files then says which one failed. `str(exc)`, which scan rows and the API
    show beside the file's name, stays as it was."""

    @functools.wraps(method)
    def analysed(self: Any, /, *args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        try:
            return method(self, *args, **kwargs)
        except DeepShieldError as exc:
            source = args[0] if args else kwargs.get("source", kwargs.get("path"))
            note = f"file: {source}"
            if isinstance(source, (str, Path)) and note not in getattr(exc, "__notes__", ()):
                exc.add_note(note)
            raise

    return analysed


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
        trust_anchors: TrustAnchors | Path | str | None = None,
        max_faces: int = MAX_FACES_PER_FRAME,
    ) -> None:
        if isinstance(trust_anchors, (Path, str)):  # a path was taken, then failed on the first signed file
            trust_anchors = TrustAnchors.load(trust_anchors)
        elif not isinstance(trust_anchors, (TrustAnchors, type(None))):
            raise TypeError(f"trust_anchors is a TrustAnchors or a PEM file's path, not {type(trust_anchors).__name__}")
        self.classifier = classifier
        self.faces = face_detector or FaceDetector()
        self.manipulation_rule = ScoreRule.from_calibration(classifier.card.calibration, threshold)
        synthetic = classifier.card.synthetic
        self.synthetic_rule: ScoreRule | None = None
        if synthetic is not None:
            self.synthetic_rule = ScoreRule.from_calibration(synthetic.calibration, synthetic_threshold)
        elif synthetic_threshold is not None:
            raise ValueError("a synthetic-face threshold was given, but this model has no synthetic-face score")
        # The cautions quote figures measured with the shipped model at its own thresholds: said for it alone.
        self.measured = (
            is_shipped(classifier.card)
            and self.manipulation_rule.threshold == classifier.card.calibration.threshold
            and (
                synthetic is None
                or self.synthetic_rule is None
                or self.synthetic_rule.threshold == synthetic.calibration.threshold
            )
        )
        self.image_limits = image_limits
        self.video_limits = video_limits
        self.video_rule = video_rule
        self.trust_anchors = trust_anchors  # whose Content Credentials count as trusted (metadata, not scores)
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        self.max_faces = max_faces  # analysed per image or video frame: the largest

    @classmethod
    def from_bundle(
        cls,
        bundle: Path | str | None = None,
        *,
        min_face_size: int = 20,
        threshold: float | None = None,
        image_limits: ImageLimits = ImageLimits(),
        video_limits: VideoLimits = VideoLimits(),
        video_rule: VideoRule = VideoRule(),
        synthetic_threshold: float | None = None,
        trust_anchors: TrustAnchors | Path | str | None = None,
        max_faces: int = MAX_FACES_PER_FRAME,
    ) -> Detector:
        """Load a bundle directory; None or "default" gives the model shipped with the package."""
        classifier = OnnxClassifier(bundle_dir(bundle))
        return cls(
            classifier,
            FaceDetector(min_face_size=min_face_size),
            threshold=threshold,
            image_limits=image_limits,
            video_limits=video_limits,
            video_rule=video_rule,
            synthetic_threshold=synthetic_threshold,
            trust_anchors=trust_anchors,
            max_faces=max_faces,
        )

    def close(self) -> None:
        """Free the face detector's graphs (threads and memory that garbage collection frees late or, in a
        long-lived process, never) and the classifier's session; analysing afterwards is an error.
        `with Detector.from_bundle() as d:` closes it on leaving."""
        self.faces.close()
        self.classifier.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    def scoring_terms(self) -> ScoringTerms:
        """What every image and video result says about the scores' thresholds, bands and scope (the
        server's /healthz says it too, before any result)."""
        synthetic = self.synthetic_rule
        return ScoringTerms(
            model=self.model_name,
            threshold=self.threshold,
            inconclusive=self.band,
            synthetic_threshold=None if synthetic is None else synthetic.threshold,
            synthetic_inconclusive=None if synthetic is None else synthetic.band,
            scope=scope(self.has_synthetic),
            calibrated=self.card.calibration.fitted,
        )

    @property
    def model_name(self) -> str:
        return f"{self.card.name} {self.card.version}"

    def _score_faces(
        self, found: FrameFaces, keep_pixels: bool, heatmaps: bool
    ) -> tuple[list[list[FaceResult]], list[list[NDArray[Any]]]]:
        """Every found face scored in one batch, as results grouped per frame, with each face's CAM grouped
        alike (`heatmaps`: each result carries its heatmap, made from its CAM, too)."""
        if not found.crops:
            return [[] for _ in found.faces], [[] for _ in found.faces]
        scores = self.classifier.score(found.pixels, synthetic_crops=found.synthetic_crops)
        synthetic, synthetic_logits = scores.synthetic_probabilities, scores.synthetic_logits
        results: list[FaceResult] = []
        for flat, (index, face) in enumerate((i, f) for faces in found.faces for i, f in enumerate(faces)):
            probability = float(scores.probabilities[flat])
            synthetic_probability = None if synthetic is None else float(synthetic[flat])
            verdict = self._combine(probability, synthetic_probability)
            results.append(
                FaceResult(
                    index=index,
                    box=face.box.as_list(),
                    detection_score=round(face.score, 4),
                    keypoints=[[round(float(x), 1), round(float(y), 1)] for x, y in face.keypoints],
                    turned_deg=90 * face.turns,
                    probability=probability,
                    logit=float(scores.logits[flat]),
                    label=verdict.label,
                    threshold_label="fake" if probability >= self.threshold else "real",
                    synthetic_probability=synthetic_probability,
                    synthetic_logit=None if synthetic_logits is None else float(synthetic_logits[flat]),
                    manipulation_label=verdict.manipulation_label,
                    synthetic_label=verdict.synthetic_label,
                    verdict_driver=verdict.driver,
                    cautions=face_cautions(
                        [face.box.width],
                        90 * face.turns,
                        [face.score],
                        [found.crops[flat].padding],
                        verdict.synthetic_label,
                        self.measured,
                    ),
                    crop=found.crops[flat].pixels if keep_pixels else None,
                    crop_padding=found.crops[flat].padding,
                    heatmap=self._heatmap(scores.cams[flat]) if heatmaps else None,
                )
            )
        return found.split(results), found.split(list(scores.cams))

    def _heatmap(self, cam: NDArray[Any]) -> NDArray[Any]:
        """A face's heatmap over its crop, from its CAM (FaceResult.heatmap)."""
        return cam_to_heatmap(cam, self.card.crop_policy.size, self.card.calibration)

    def _suspicion(
        self, label: VerdictLabel, driver: VerdictDriver, probability: float, synthetic: float | None
    ) -> tuple[bool, int, float]:
        """A face's or counted person's place, most suspicious first (`verdict.suspicion`)."""
        synthetic_threshold = None if self.synthetic_rule is None else self.synthetic_rule.threshold
        return suspicion(label, driver, probability, synthetic, self.threshold, synthetic_threshold)

    def _suspicious_frames(self, tracks: list[TrackResult], file_label: str) -> str | None:
        """Where a video reads no signs found though frames of a counted person scored in a score's inconclusive
        band or above, the person with the most such frames, said (numbered as the page and --html number them):
        a DFDC swap read "no signs found" with many frames in the band, not a word of them."""
        if file_label != "no_signs_found":
            return None

        def reached(point: TrackPoint) -> set[VerdictDriver]:
            scores: set[VerdictDriver] = set()
            if self.manipulation_rule.classify(point.probability) != "no_signs_found":
                scores.add("manipulation")
            synthetic, rule = point.synthetic_probability, self.synthetic_rule
            if rule is not None and synthetic is not None and rule.classify(synthetic) != "no_signs_found":
                scores.add("synthetic")
            return scores

        most, person = 0, 0
        by: set[VerdictDriver] = set()
        for position, track in enumerate(tracks):
            reaching = [reached(point) for point in track.points] if track.counted else []
            if (count := sum(1 for scores in reaching if scores)) > most:
                most, person, by = count, position, set().union(*reaching)
        if not most:
            return None
        named = " or ".join(SCORE_NAMES[score] for score in ("manipulation", "synthetic") if score in by)
        return (
            f"{most} of {tracks[person].frames_seen} frames of person {person + 1} scored in the inconclusive band "
            f"or above (by the {named} score); a person is judged on {self.video_rule.judged_on()}"
        )

    def _verdict(
        self, probability: float | None, synthetic_probability: float | None, what: str, searched: str = ""
    ) -> Verdict:
        """The file's verdict from its highest manipulation and highest synthetic score (the rule of
        `inference.verdict`: as severe as its most severe face or counted track); without a face, a reason
        saying where none was found (`searched`) and why faces may go unfound."""
        if probability is None:
            return Verdict(
                label="no_face",
                threshold_label="no_face",
                probability=None,
                headline=headline("no_face", None, self.has_synthetic),
                reason=f"no face found{searched} ({why_no_face(self.faces.min_face_size)})",
            )
        verdict = self._combine(probability, synthetic_probability)
        score, terms = against_its_rule(probability, self.manipulation_rule)
        # "highest": of all the faces or tracks, each score's own, which need not be one face's (the
        # reason gave the highest face-swap score as the most suspicious face's when a synthetic call led).
        reason = f"highest face-swap score of a {what}: {score}; {terms}"
        if self.synthetic_rule is not None and synthetic_probability is not None:
            score, terms = against_its_rule(synthetic_probability, self.synthetic_rule)
            synthetic = f"highest synthetic-face score {score}, {terms}"
            # The score that made the call comes first, as the page shows it.
            if verdict.driver == "synthetic":
                reason = f"{synthetic}, which drives the verdict; {reason}"
            else:
                reason += f"; {synthetic}; the face-swap score drives the verdict"
        return Verdict(
            label=verdict.label,
            threshold_label="fake" if probability >= self.threshold else "real",
            probability=probability,
            synthetic_probability=synthetic_probability,
            verdict_driver=verdict.driver,
            headline=headline(verdict.label, verdict.driver, self.has_synthetic),
            reason=reason,
        )

    @_naming_its_file
    def analyze_image(
        self, source: Path | str | bytes | bytearray | memoryview | NDArray[Any] | DecodedImage, heatmaps: bool = True
    ) -> ImageResult:
        """Score every face in one image (path, encoded bytes or any bytes-like object, H x W x 3 uint8 RGB
        array, or one decoded)."""
        started = time.perf_counter()
        _check_type(
            source,
            (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, DecodedImage),
            "an image is a path, bytes or an H x W x 3 uint8 RGB array",
        )
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        elif isinstance(source, os.PathLike):
            source = Path(source)
        if isinstance(source, (np.ndarray, DecodedImage)):
            decoded = source if isinstance(source, DecodedImage) else DecodedImage(source)
            shape = decoded.pixels.shape
            if len(shape) != 3 or shape[2] != 3 or min(shape[:2]) < 1 or decoded.pixels.dtype != np.uint8:
                raise ValueError(f"an image array is H x W x 3 uint8 RGB, not {decoded.pixels.dtype} {shape}")
            metadata = None
        else:
            decoded = self._load_image(source)
            metadata = image_metadata(source, self.trust_anchors)
        image = decoded.pixels
        found = find_faces([image], self.faces, self.card.crop_policy, max_faces=self.max_faces)
        scored, _ = self._score_faces(found, keep_pixels=heatmaps, heatmaps=heatmaps)
        face_results = scored[0]
        worst_synthetic = _highest(f.synthetic_probability for f in face_results)
        verdict = self._verdict(max((f.probability for f in face_results), default=None), worst_synthetic, "face")
        # The face behind the verdict: by the score that made its call (a synthetic-face call too).
        suspect = max(
            face_results,
            key=lambda f: self._suspicion(f.label, f.verdict_driver, f.probability, f.synthetic_probability),
            default=None,
        )
        if suspect is not None and (doubt := doubt_clause("face", [suspect.detection_score])):
            verdict = verdict.with_clause(doubt)
        left_out = found.left_out[0]
        if left_out:
            more = f"{left_out} more {plural(left_out, 'face was', 'faces were')} found and not analysed"
            verdict = verdict.with_clause(f"{more} (the {self.max_faces} largest of an image are)")
        if decoded.pages > 1:  # a multi-page TIFF was judged by its first page with nothing said
            verdict = verdict.with_clause(f"the file holds {decoded.pages} images: only the first was analysed")
        if decoded.scale > 1:
            verdict = verdict.with_clause(
                f"the image was read at 1/{decoded.scale} of its width and height, being above the "
                f"{megapixels(self.image_limits.max_pixels)} megapixel limit"
            )
        verdict = with_declaration(verdict, metadata)
        return ImageResult(
            width=image.shape[1],
            height=image.shape[0],
            decoded_scale=decoded.scale,
            faces=face_results,
            faces_left_out=left_out,
            verdict=verdict,
            **dict(self.scoring_terms()),
            elapsed_ms=(time.perf_counter() - started) * 1000,
            metadata=metadata,
        )

    def _load_image(self, source: Path | str | bytes) -> DecodedImage:
        try:
            return decode_image(source, self.image_limits)
        except UnsupportedMediaError:
            if _is_video(source):
                raise UnsupportedMediaError(
                    "this is a video: use Detector.analyze_video, or analyze_path, which tells images and videos apart"
                ) from None
            raise

    @_naming_its_file
    def analyze_video(
        self,
        path: Path | str,
        frames: int = DEFAULT_VIDEO_FRAMES,
        progress: ProgressCallback | None = None,
        span: VideoSpan = WHOLE_VIDEO,
    ) -> VideoResult:
        """Sample `frames` frames uniformly (from the whole video or `span` of it), score every face,
        track people, aggregate to a verdict."""
        started = time.perf_counter()
        _check_type(path, (str, os.PathLike), "a video is read from its path")
        if _is_still_image(path):  # FFmpeg would read a photo as a one-frame video
            raise UnsupportedMediaError(
                "this is a still image: use Detector.analyze_image, or analyze_path, which tells images and videos apart"
            )
        report = progress or (lambda fraction, stage: None)
        report(0.0, "decoding")
        info, sampled = sample_frames(
            path, frames, self.video_limits, on_frame=lambda f: report(0.4 * f, "decoding"), span=span
        )
        span_from, span_to = span.seconds_in(info)
        analysed = AnalysedSpan(
            start_s=span_from, end_s=span_to if math.isfinite(span_to) else None, whole=span.covers(info)
        )
        found = find_faces(
            [frame.image for frame in sampled],
            self.faces,
            self.card.crop_policy,
            on_frame=lambda position: report(0.4 + 0.3 * position / len(sampled), "detecting faces"),
            max_faces=self.max_faces,
        )
        report(0.7, "scoring faces")
        # A heatmap is shown for each person's peak frame alone: made for it from its CAM, not for every face
        # (224 x 224 floats each: 128 frames of 32 faces held 820 MB of them).
        scored, cams = self._score_faces(found, keep_pixels=True, heatmaps=False)
        report(0.95, "aggregating")
        members = [[(sampled[pos], scored[pos][face_pos]) for pos, face_pos in track.members] for track in found.tracks]
        vote = self.video_rule.aggregate([[face.probability for _, face in m] for m in members], len(sampled))
        # The synthetic score per track by the same video rule as the manipulation score.
        synthetic_vote = (
            self.video_rule.aggregate(
                [[face.synthetic_probability or 0.0 for _, face in m] for m in members], len(sampled)
            )
            if self.has_synthetic
            else None
        )
        track_results = []
        for position, (track, track_members) in enumerate(zip(found.tracks, members)):
            points = [
                TrackPoint(
                    frame_index=frame.index,
                    timestamp_s=_ms_into(frame.timestamp_s),
                    box=face.box,
                    probability=face.probability,
                    synthetic_probability=face.synthetic_probability,
                    thumbnail=cv2.resize(
                        face.crop,  # type: ignore[arg-type]  # keep_pixels=True: every face has its crop
                        (POINT_THUMBNAIL_SIDE, POINT_THUMBNAIL_SIDE),
                        interpolation=cv2.INTER_AREA,
                    ),
                )
                for frame, face in track_members
            ]
            score = vote.scores[position]
            synthetic_score = None if synthetic_vote is None else synthetic_vote.scores[position]
            verdict = self._combine(score, synthetic_score)
            # The frame shown and looked closer at is where the score behind the person's verdict peaks.
            peak = max(
                range(len(track_members)),
                key=lambda member: (
                    (track_members[member][1].synthetic_probability or 0.0)
                    if verdict.driver == "synthetic"
                    else track_members[member][1].probability
                ),
            )
            peak_frame, peak_face = track_members[peak]
            peak_at, peak_place = track.members[peak]
            not_counted_reason = vote.not_counted_reasons[position]
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
                    peak_timestamp_s=_ms_into(peak_frame.timestamp_s),
                    counted=not_counted_reason is None,
                    not_counted_reason=not_counted_reason,
                    cautions=face_cautions(
                        [face.box[2] - face.box[0] for _, face in track_members],
                        max(face.turned_deg for _, face in track_members),
                        [face.detection_score for _, face in track_members],
                        [face.crop_padding for _, face in track_members],
                        verdict.synthetic_label,
                        self.measured,
                    ),
                    crop=peak_face.crop,
                    heatmap=self._heatmap(cams[peak_at][peak_place]),
                )
            )
        timeline = [
            TimelinePoint(
                frame_index=frame.index,
                timestamp_s=_ms_into(frame.timestamp_s),
                faces=len(scored[pos]),
                max_probability=max((f.probability for f in scored[pos]), default=None),
                max_synthetic_probability=_highest(f.synthetic_probability for f in scored[pos]),
            )
            for pos, frame in enumerate(sampled)
        ]
        file_verdict = self._verdict(
            vote.score,
            None if synthetic_vote is None else synthetic_vote.score,
            "counted face track",
            " in the one sampled frame" if len(sampled) == 1 else f" in any of the {len(sampled)} sampled frames",
        )
        suspect = max(
            (pair for pair in zip(track_results, members) if pair[0].counted),
            key=lambda pair: self._suspicion(
                pair[0].label, pair[0].verdict_driver, pair[0].score, pair[0].synthetic_score
            ),
            default=None,
        )
        if suspect is not None and (doubt := doubt_clause("person", [f.detection_score for _, f in suspect[1]])):
            file_verdict = file_verdict.with_clause(doubt)
        if brief := _briefly_seen_call(track_results, file_verdict.label, sampled_frames=len(sampled)):
            file_verdict = file_verdict.with_clause(brief)
        if in_band := self._suspicious_frames(track_results, file_verdict.label):
            file_verdict = file_verdict.with_clause(in_band)
        part = analysed.part
        if part is not None:  # a part's verdict is not the file's: its reason says which part it judges
            file_verdict = file_verdict.with_clause(f"only {part} of the video was analysed")
        if info.damaged and info.frame_count > 0:
            # Undecodable packets cost frames, not the video: say how many, or a cut file reads as whole.
            first, stop = span.frames_in(info)
            if len(sampled) < (asked := min(frames, stop - first)):
                file_verdict = file_verdict.with_clause(
                    f"only {len(sampled)} of the {asked} frames sampled could be decoded: "
                    "the file may be damaged or cut short"
                )
        left_out = max(found.left_out, default=0)
        if left_out:
            file_verdict = file_verdict.with_clause(
                f"frames with more than {self.max_faces} faces had their {self.max_faces} largest analysed "
                f"(up to {left_out} more left out of a frame)"
            )
        decoded_scale = max((frame.scale for frame in sampled), default=1)
        if decoded_scale > 1:
            file_verdict = file_verdict.with_clause(
                f"the frames were read at 1/{decoded_scale} of their width and height, "
                f"{reduced_read_reason(info, self.video_limits, decoded_scale)}"
            )
        metadata = video_metadata(path, self.trust_anchors)
        file_verdict = with_declaration(file_verdict, metadata)
        report(1.0, "done")
        return VideoResult(
            video=VideoSummary(**info.__dict__, decoded_scale=decoded_scale),
            analysed=analysed,
            sampled_frames=len(sampled),
            tracks=track_results,
            timeline=timeline,
            faces_left_out=left_out,
            verdict=file_verdict,
            rule=self.video_rule.describe(),
            **dict(self.scoring_terms()),
            elapsed_ms=(time.perf_counter() - started) * 1000,
            metadata=metadata,
        )

    @_naming_its_file
    def analyze_path(
        self,
        path: Path | str,
        frames: int = DEFAULT_VIDEO_FRAMES,
        heatmaps: bool = True,
        span: VideoSpan = WHOLE_VIDEO,
    ) -> ImageResult | VideoResult:
        """Image or video, told apart by content (an animated image is a video; `frames` and `span` apply
        to videos)."""
        _check_type(path, (str, os.PathLike), "analyze_path takes a path (bytes and arrays: analyze_image)")
        path = Path(path)
        if media_kind(path) is MediaKind.VIDEO:
            return self.analyze_video(path, frames, span=span)
        return self.analyze_image(path, heatmaps=heatmaps)


def with_declaration(verdict: Verdict, metadata: MediaMetadata | None) -> Verdict:
    """The verdict, saying where the file declares it was made with generative AI: its headline said "no
    signs of ... AI generation" beside a valid signature saying so, and only the page told the two apart."""
    declared = None if metadata is None else metadata.declared_source
    if declared is None or not declared.generative_ai:
        return verdict
    return verdict.with_clause(
        f'the file declares "{declared.meaning}" {declared.place()}: a claim read from it, not scored'
    )


def _check_type(source: object, accepted: tuple[type, ...], what: str) -> None:
    """A clear TypeError for an argument of the wrong kind (pathlib's said "expected str, bytes or
    os.PathLike object, not JpegImageFile" for a PIL image), and a ValueError for an empty path (read as
    the current folder, it was "not a regular file: a folder")."""
    if not isinstance(source, accepted):
        raise TypeError(f"{what}, not {type(source).__module__}.{type(source).__qualname__}")
    if isinstance(source, str) and not source:
        raise ValueError("an empty path names no file")


SCORE_NAMES: dict[VerdictDriver, str] = {"manipulation": "face-swap", "synthetic": "synthetic-face"}


def _briefly_seen_call(
    tracks: list[TrackResult], file_label: VerdictLabel | Literal["no_face"], sampled_frames: int
) -> str | None:
    """A face that does not count (seen too briefly) and whose own call is more severe than the file's, said:
    a swapped face in 2 of 8 frames beside a real one always there was "no signs found", not a word of it."""
    if file_label == "no_face":  # no track at all
        return None
    graver = [t for t in tracks if not t.counted and SEVERITY[t.label] > SEVERITY[file_label]]
    if not graver:
        return None
    worst = max(graver, key=lambda t: (SEVERITY[t.label], t.score))
    likely = "likely AI-generated" if worst.verdict_driver == "synthetic" else "likely manipulated"
    call = {"likely_manipulated": likely, "inconclusive": "inconclusive"}[worst.label]
    return (
        f"a face seen in only {worst.frames_seen} of {sampled_frames} sampled frames, too few to count, was "
        f"called {call} on its own (by its {SCORE_NAMES[worst.verdict_driver]} score): sample more frames to judge it"
    )


def _ms_into(seconds: float) -> float:
    """A frame's time in whole milliseconds, rounded up: a player seeking to it shows that frame. Rounded
    to the nearest, 3.10320 s (frame 93) read 3.103 s, inside frame 92."""
    return math.ceil(seconds * 1000 - 1e-6) / 1000


def _highest(values: Iterable[float | None]) -> float | None:
    """The highest of scores that are all None (a model without that score) or all numbers."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _is_still_image(path: Path | str) -> bool:
    """False also for a file that cannot be read: decoding it says what is wrong."""
    try:
        return media_kind(Path(path)) is MediaKind.IMAGE
    except DeepShieldError:
        return False


def _is_video(source: Path | str | bytes) -> bool:
    try:
        return (
            sniff_media_kind(source[:HEADER_BYTES]) if isinstance(source, bytes) else sniff_path(Path(source))
        ) is MediaKind.VIDEO
    except (DeepShieldError, OSError):
        return False
