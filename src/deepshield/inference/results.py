"""Typed analysis results. JSON-ready (pydantic); pixel arrays ride along but are excluded from JSON.

Every verdict is three-way (see `deepshield.models.card.InconclusiveBand`): `likely_manipulated` at
or above the band, `inconclusive` inside it, `no_signs_found` below it (which never means authentic);
`threshold_label` keeps the old fake/real call at the threshold alone, for compatibility."""

from __future__ import annotations

from typing import Any, Literal

from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from deepshield.models.card import InconclusiveBand, VerdictLabel

ThresholdLabel = Literal["fake", "real"]

SCOPE = (
    "Deepfake Shield judges face swaps and face edits only. It does not detect fully AI-generated faces, "
    "lip-sync without blending, or manipulated audio."
)
HEADLINES: dict[str, str] = {
    "likely_manipulated": "Likely manipulated: signs of face swapping or face editing found",
    "inconclusive": "Inconclusive: the score is too close to the threshold to call either way",
    "no_signs_found": "No signs of face swapping found — this does not prove the file is authentic",
    "no_face": "No face found — nothing was checked",
}
LABEL_FIELD = Field(description="likely_manipulated (at or above the inconclusive band), inconclusive (inside it) or no_signs_found (below it)")
THRESHOLD_LABEL_FIELD = Field(description="fake / real at the threshold alone: the old label, kept for compatibility")


class FaceResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: int
    box: list[float] = Field(description="x0, y0, x1, y1 in image pixels")
    detection_score: float
    keypoints: list[list[float]] = Field(description="eyes, nose tip, mouth centre, ear tragions (subject's right first)")
    probability: float = Field(description="calibrated probability that the face was manipulated")
    logit: float
    label: VerdictLabel = LABEL_FIELD
    threshold_label: ThresholdLabel = THRESHOLD_LABEL_FIELD
    crop: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # size x size x 3 uint8, what the model saw
    heatmap: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # size x size float32 in [0, 1], over the crop


class Verdict(BaseModel):
    label: VerdictLabel | Literal["no_face"] = LABEL_FIELD
    threshold_label: ThresholdLabel | Literal["no_face"] = THRESHOLD_LABEL_FIELD
    probability: float | None = Field(None, description="score of the most suspicious face or counted track")
    headline: str = Field(description="the verdict in words, for people (never claims authenticity)")
    reason: str


class ImageResult(BaseModel):
    kind: Literal["image"] = "image"
    width: int
    height: int
    faces: list[FaceResult]
    verdict: Verdict
    model: str
    threshold: float
    inconclusive: InconclusiveBand = Field(description="the band of probabilities called inconclusive")
    scope: str = Field(SCOPE, description="what the model judges and what it does not")
    elapsed_ms: float


class TrackPoint(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    frame_index: int
    timestamp_s: float
    box: list[float]
    probability: float
    thumbnail: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # small uint8 RGB copy of the face crop


class TrackResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    track_id: int
    points: list[TrackPoint]
    score: float = Field(description="aggregate of the track's frame probabilities (see VideoResult.rule)")
    label: VerdictLabel = LABEL_FIELD
    threshold_label: ThresholdLabel = THRESHOLD_LABEL_FIELD
    frames_seen: int = Field(description="sampled frames in which this face was found")
    first_seen_s: float = Field(description="timestamp of the first sampled frame with this face")
    last_seen_s: float
    peak_frame_index: int = Field(description="the frame where this face looks most manipulated: the thumbnail and heatmap are from it")
    peak_timestamp_s: float
    counted: bool = Field(description="whether the track takes part in the verdict")
    not_counted_reason: str | None = Field(None, description="why it does not, when it does not")
    crop: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # the peak frame's face crop
    heatmap: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # its heatmap


class TimelinePoint(BaseModel):
    frame_index: int
    timestamp_s: float
    faces: int
    max_probability: float | None


class VideoSummary(BaseModel):
    width: int
    height: int
    fps: float
    frame_count: int
    duration_s: float
    rotation: int
    codec: str


class VideoResult(BaseModel):
    kind: Literal["video"] = "video"
    video: VideoSummary
    sampled_frames: int
    tracks: list[TrackResult]
    timeline: list[TimelinePoint]
    verdict: Verdict
    rule: str
    model: str
    threshold: float
    inconclusive: InconclusiveBand = Field(description="the band of probabilities called inconclusive")
    scope: str = Field(SCOPE, description="what the model judges and what it does not")
    elapsed_ms: float
