"""Typed analysis results. JSON-ready (pydantic); pixel arrays ride along but are excluded from JSON."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

Label = Literal["fake", "real"]


class FaceResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: int
    box: list[float] = Field(description="x0, y0, x1, y1 in image pixels")
    detection_score: float
    keypoints: list[list[float]] = Field(description="eyes, nose tip, mouth centre, ear tragions (subject's right first)")
    probability: float = Field(description="calibrated probability that the face was manipulated")
    logit: float
    label: Label
    crop: np.ndarray | None = Field(None, exclude=True, repr=False)  # size x size x 3 uint8, what the model saw
    heatmap: np.ndarray | None = Field(None, exclude=True, repr=False)  # size x size float32 in [0, 1], over the crop


class Verdict(BaseModel):
    label: Literal["fake", "real", "no_face"]
    probability: float | None = Field(None, description="score of the most suspicious face or track")
    reason: str


class ImageResult(BaseModel):
    kind: Literal["image"] = "image"
    width: int
    height: int
    faces: list[FaceResult]
    verdict: Verdict
    model: str
    threshold: float
    elapsed_ms: float


class TrackPoint(BaseModel):
    frame_index: int
    timestamp_s: float
    box: list[float]
    probability: float


class TrackResult(BaseModel):
    track_id: int
    points: list[TrackPoint]
    score: float = Field(description="aggregate of the track's frame probabilities (see VideoResult.rule)")
    label: Label
    counted: bool = Field(description="whether the track was long enough to take part in the verdict")


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
    elapsed_ms: float
