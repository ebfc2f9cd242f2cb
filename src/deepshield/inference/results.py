"""Typed analysis results. JSON-ready (pydantic); pixel arrays ride along but are excluded from JSON.

Every verdict is three-way (see `deepshield.models.card.InconclusiveBand`): `likely_manipulated` at
or above the band, `inconclusive` inside it, `no_signs_found` below it (which never means authentic);
`threshold_label` keeps the old fake/real call at the threshold alone, for compatibility.

A model with a synthetic-face score gives every face, track and file a second probability; `label`
is then the more severe of the two scores' calls and `verdict_driver` names the score that set it
(`deepshield.inference.verdict`). `probability` / `score` stay the manipulation score."""

from __future__ import annotations

from typing import Any, Literal

from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, computed_field

from deepshield.inference.cautions import CAUTION_NAMES
from deepshield.inference.verdict import VERDICT_RULE, VerdictDriver, shown_against
from deepshield.media.metadata import MediaMetadata
from deepshield.media.scaling import reduced_size
from deepshield.media.units import clock_time
from deepshield.media.video import square_pixels
from deepshield.models.card import InconclusiveBand, VerdictLabel

ThresholdLabel = Literal["fake", "real"]

SCOPE = (
    "Deepfake Shield judges face swaps and face edits only. It does not detect fully AI-generated faces, "
    "lip-sync without blending, or manipulated audio."
)
SCOPE_WITH_SYNTHETIC = (
    "Deepfake Shield judges face swaps and face edits, and whether a face was fully AI-generated (its "
    "synthetic-face score was trained on one generator's faces and may miss others). It does not detect "
    "lip-sync without blending or manipulated audio."
)
# What a "no signs found" call cannot rule out (README, "The shipped model"): the shipped 1.2.3's face-swap score has a
# face-edit file AUC of 0.58 and its verdict (`deepshield scan`) calls 374 of the 480 dev-eval face-edited photos no
# signs found; of 24 modern swaps it calls 2 likely manipulated (both through the synthetic-face score), and its
# face-swap score flags 1.
BLIND_SPOT = "the model misses many face edits and many newer face swaps"
# The intended use's limit, said where results are read, not only by `deepshield model` (the card's intended_use).
NOT_A_SOLE_BASIS = "Its scores are estimates for human review, not a sole basis for decisions about people."
HEADLINES: dict[str, str] = {
    "likely_manipulated": "Likely manipulated: signs of face swapping or face editing found",
    "inconclusive": "Inconclusive: the face-swap score lies in its uncertain band, too close to the threshold to call either way",
    "no_signs_found": f"No signs of face swapping found — this does not prove the file is authentic: {BLIND_SPOT}",
    "no_face": "No face found — nothing was checked",
}
# Where the synthetic-face score drives the verdict, or takes part in a no-signs call.
SYNTHETIC_HEADLINES: dict[str, str] = {
    # A swap that regenerates a real person's face (e4s-style) raises this score too: "a fully generated face"
    # had a reporter write "AI-generated image" of a swap.
    "likely_manipulated": "Likely AI-generated face: signs of an AI-generated face found, either wholly "
    "generated or a real face a swap tool regenerated",
    # Its band is wide (21-69% for 1.2.2): "too close to its threshold" was said of a score 30 points away.
    "inconclusive": "Inconclusive: the synthetic-face score lies in its uncertain band, where it calls neither way",
    "no_signs_found": "No signs of face swapping or AI generation found — this does not prove the file is authentic: "
    + BLIND_SPOT,
}
LABEL_FIELD = Field(
    description="likely_manipulated (at or above the inconclusive band), inconclusive (inside it) or no_signs_found (below it)"
)
THRESHOLD_LABEL_FIELD = Field(
    description="deprecated, kept for compatibility: fake / real by the face-swap score at its threshold alone, "
    "ignoring the inconclusive band and the synthetic-face score (an AI-generated face's reads real): read label",
    json_schema_extra={"deprecated": True},
)
DRIVER_FIELD: Any = Field(
    "manipulation", description="the score whose call is the label: manipulation (face swap / edit) or synthetic"
)
SYNTHETIC_FIELD = Field(
    None, description="calibrated probability that the face was fully AI-generated (None: not in this model)"
)


def headline(label: str, driver: VerdictDriver | None, has_synthetic: bool) -> str:
    """The verdict in words: a synthetic-driven call says so; no signs found names both scores
    when both were checked."""
    if label != "no_face" and (driver == "synthetic" or (label == "no_signs_found" and has_synthetic)):
        return SYNTHETIC_HEADLINES[label]
    return HEADLINES[label]


# Read from a timestamp where frames were reached by seeking (a long video, a part of one): at a varying
# frame rate the number is near, not exact (a frame counted 17th from the start read 6). timestamp_s is exact.
FRAME_INDEX_FIELD: Any = Field(
    description="the frame's number in the video, from 0: counted from the start, or, where the frames were "
    "reached by seeking, read from its timestamp at the video's average frame rate (near, not exact, when the "
    "rate varies; timestamp_s is exact)"
)
CAUTIONS_FIELD: Any = Field(
    default_factory=list,
    description=f"why its score deserves extra care ({CAUTION_NAMES}), each saying what was measured under that "
    "condition; never part of the score or the verdict",
)


def scope(has_synthetic: bool) -> str:
    return SCOPE_WITH_SYNTHETIC if has_synthetic else SCOPE


class FaceResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: int = Field(
        description="the face's number among the image's analysed faces, from 0, in reading order: rows top to "
        "bottom, left to right within a row (a face joins a row when its centre lies less than half a face "
        "height below the centre of the row's first face)"
    )
    box: list[float] = Field(
        description="x0, y0, x1, y1 in the pixels read (an image's `width` x `height`: upright, at 1/`decoded_scale` "
        "of the file's own size)"
    )
    detection_score: float
    keypoints: list[list[float]] = Field(
        description="eyes, nose tip, mouth centre, ear tragions (subject's right first)"
    )
    turned_deg: int = Field(
        0,
        description="degrees counter-clockwise the face was turned to be read upright (a sideways or upside-down photo)",
    )
    probability: float = Field(
        description="the face-swap score: calibrated probability that the face was swapped or edited "
        "(synthetic_probability is the other score)"
    )
    logit: float = Field(description="the face-swap score's logit (synthetic_logit: the other score's)")
    label: VerdictLabel = LABEL_FIELD
    threshold_label: ThresholdLabel = THRESHOLD_LABEL_FIELD
    synthetic_probability: float | None = SYNTHETIC_FIELD
    synthetic_logit: float | None = Field(
        None, description="the synthetic-face score's logit (None: not in this model)"
    )
    manipulation_label: VerdictLabel = Field(description="the face-swap score's own call")
    synthetic_label: VerdictLabel | None = Field(None, description="the synthetic-face score's own call")
    verdict_driver: VerdictDriver = DRIVER_FIELD
    cautions: list[str] = CAUTIONS_FIELD
    crop: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # size x size x 3 uint8, what the model saw
    crop_padding: float = Field(0.0, exclude=True, repr=False)  # share of the crop past the picture's edge
    # size x size float32 in [0, 1], over `crop` pixel for pixel: the CAM's cells (7 x 7 for the shipped model), each
    # through the face-swap calibration, smoothed to the crop's size (inference.heatmap.cam_to_heatmap)
    heatmap: NDArray[Any] | None = Field(None, exclude=True, repr=False)


class Verdict(BaseModel):
    label: VerdictLabel | Literal["no_face"] = LABEL_FIELD
    threshold_label: ThresholdLabel | Literal["no_face"] = THRESHOLD_LABEL_FIELD
    probability: float | None = Field(
        None, description="highest manipulation (face-swap) score of the faces or counted tracks"
    )
    synthetic_probability: float | None = Field(
        None, description="highest synthetic-face score of the faces or counted tracks"
    )
    verdict_driver: VerdictDriver | None = Field(None, description="the score whose call is the label (None: no face)")
    headline: str = Field(description="the verdict in words, for people (never claims authenticity)")
    reason: str

    def with_clause(self, clause: str) -> Verdict:
        """The same verdict, its reason ending with one more thing the reader should know."""
        return self.model_copy(update={"reason": f"{self.reason}; {clause}"})


class ScoringTerms(BaseModel):
    """What every image and video result says about the model, the scores' thresholds and bands, and scope."""

    model: str
    # Named: beside synthetic_threshold, "threshold" alone did not say whose it was.
    threshold: float = Field(description="the face-swap score's threshold")
    inconclusive: InconclusiveBand = Field(
        description="the band of face-swap probabilities called inconclusive (synthetic_inconclusive: the other score's)"
    )
    synthetic_threshold: float | None = Field(
        None, description="the synthetic-face score's threshold (None: not in this model)"
    )
    synthetic_inconclusive: InconclusiveBand | None = Field(
        None, description="the synthetic-face score's inconclusive band"
    )
    verdict_rule: str = Field(VERDICT_RULE, description="how the two scores make one verdict")
    scope: str = Field(SCOPE, description="what the model judges and what it does not")
    calibrated: bool = Field(
        True,
        description="whether the face-swap score was calibrated; false (a soup's): the default temperature 1, so a "
        "score is no probability, and the default threshold 50% unless one was given",
    )

    def shown_score(self, probability: float, synthetic: bool = False) -> str:
        """A face-swap (or synthetic-face) score as tables and reports show it beside these terms (shown_against)."""
        if synthetic and self.synthetic_threshold is not None and self.synthetic_inconclusive is not None:
            return shown_against(probability, self.synthetic_threshold, self.synthetic_inconclusive)
        return shown_against(probability, self.threshold, self.inconclusive)


class ImageResult(ScoringTerms):
    kind: Literal["image"] = "image"
    width: int  # of the pixels read (see decoded_scale)
    height: int
    decoded_scale: int = Field(
        1,
        description="1: read at full size; 2, 4 or 8: a JPEG or HEIC above the pixel limit, read at 1/N of its "
        "width and height",
    )
    faces: list[FaceResult]
    faces_left_out: int = Field(
        0, description="faces found beyond the most analysed per image (its largest faces are analysed)"
    )
    verdict: Verdict
    elapsed_ms: float
    metadata: MediaMetadata | None = Field(
        None, description="the file's own metadata, for the reader (not scored); None for pixels"
    )


class TrackPoint(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    frame_index: int = FRAME_INDEX_FIELD
    timestamp_s: float
    box: list[float]
    probability: float = Field(description="the face's face-swap score in this frame")
    synthetic_probability: float | None = SYNTHETIC_FIELD
    thumbnail: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # small uint8 RGB copy of the face crop


class TrackResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    track_id: int
    points: list[TrackPoint]
    score: float = Field(
        description="the face-swap score: aggregate of the track's frame probabilities (see VideoResult.rule)"
    )
    label: VerdictLabel = LABEL_FIELD
    threshold_label: ThresholdLabel = THRESHOLD_LABEL_FIELD
    synthetic_score: float | None = Field(
        None, description="the same rule over the frames' synthetic-face probabilities"
    )
    manipulation_label: VerdictLabel = Field(description="the face-swap score's own call")
    synthetic_label: VerdictLabel | None = Field(None, description="the synthetic-face score's own call")
    verdict_driver: VerdictDriver = DRIVER_FIELD
    frames_seen: int = Field(description="sampled frames in which this face was found")
    first_seen_s: float = Field(description="timestamp of the first sampled frame with this face")
    last_seen_s: float
    peak_frame_index: int = Field(
        description="the frame where the score behind this person's verdict (verdict_driver) is highest: the "
        "thumbnail and heatmap are from it"
    )
    peak_timestamp_s: float
    counted: bool = Field(description="whether the track takes part in the verdict")
    not_counted_reason: str | None = Field(None, description="why it does not, when it does not")
    cautions: list[str] = CAUTIONS_FIELD
    crop: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # the peak frame's face crop
    heatmap: NDArray[Any] | None = Field(None, exclude=True, repr=False)  # its heatmap


class TimelinePoint(BaseModel):
    frame_index: int = FRAME_INDEX_FIELD
    timestamp_s: float
    faces: int
    max_probability: float | None = Field(description="the highest face-swap score of the frame's faces")
    max_synthetic_probability: float | None = Field(
        None, description="the highest synthetic-face score of the frame's faces (None: not in this model)"
    )


class VideoSummary(BaseModel):
    width: int = Field(description="a frame's width as stored (before rotation and pixel_aspect)")
    height: int = Field(description="a frame's height as stored")
    fps: float = Field(
        description="frames per second: the stream's stated rate, or, where a varying rate does not fit its counted "
        "frames over its duration, their average"
    )
    frame_count: int = Field(
        description="the stream's frames, as the container says or counted from its packets (Matroska, WebM, "
        "MPEG-TS); estimated from duration x fps only for a file that cannot be read to its end or holds more "
        "frames than the frame limit (then frame_count_estimated)"
    )
    frame_count_estimated: bool = Field(
        False,
        description="frame_count is an estimate from duration x fps, not a count (the rate may be a guess: a "
        "varying rate's 300 frames were estimated as 1486)",
    )
    duration_s: float
    rotation: int = Field(description="degrees clockwise the frames are turned to show upright, as a player shows them")
    mirrored: bool = Field(
        False,
        description="the file's display matrix mirrors the picture left to right before turning it (a front "
        "camera's recording): frames are mirrored so, as a player shows them, before faces are found",
    )
    codec: str
    damaged: bool = Field(
        False,
        description="packets failed to decode, or the stream ended before the frames it says it has (a file cut "
        "short): frames were lost, and the verdict's reason says so where they were samples",
    )
    has_audio: bool = Field(False, description="the file carries sound: it is not analysed (faces only)")
    pixel_aspect: float = Field(
        1.0,
        description="a stored pixel's width over its height (anamorphic video); frames are stretched to square "
        "pixels before faces are found, as a player shows them",
    )
    picture_start_s: float = Field(
        0.0,
        description="when the picture's first frame shows, in seconds from the file's start (after 0 where the "
        "sound starts first): times and parts count from the file's start, frame i shows at picture_start_s + i / fps",
    )
    decoded_scale: int = Field(
        1,
        description="1: frames read at full size; 2, 4 or 8: frames above the pixel limit (8K video), or too many "
        "of their size for the frames' memory limit, read at 1/N of their width and height, which face boxes are in",
    )

    @computed_field(  # type: ignore[prop-decorator]
        description="the width of the frames as analysed, which face boxes are in: upright (turned by rotation), "
        "in square pixels (pixel_aspect) and at 1/decoded_scale"
    )
    @property
    def frame_width(self) -> int:
        return self._analysed_size()[0]

    @computed_field(  # type: ignore[prop-decorator]
        description="the height of the frames as analysed, which face boxes are in (see frame_width)"
    )
    @property
    def frame_height(self) -> int:
        return self._analysed_size()[1]

    def _analysed_size(self) -> tuple[int, int]:
        width, height = reduced_size(square_pixels(self.width, self.height, self.pixel_aspect), self.decoded_scale)
        return (height, width) if self.rotation % 180 == 90 else (width, height)


class AnalysedSpan(BaseModel):
    """The part of the video whose frames were sampled (the whole video unless a span was asked for)."""

    start_s: float
    end_s: float | None = Field(description="None: to the video's end, where the container gives no duration")
    whole: bool = Field(description="the whole video was analysed")

    @computed_field(  # type: ignore[prop-decorator]
        description="the part in words, as scan's CSV and the page's list say it: `12:30 to 14:00` "
        "(or `to the end`); None for the whole video"
    )
    @property
    def part(self) -> str | None:
        """`12:30 to 14:00` (or `to the end`) for a part; None for the whole video."""
        if self.whole:
            return None
        if self.end_s is None:
            return f"{clock_time(self.start_s)} to the end"
        # Tenths, unless both ends read alike in them (a span under a tenth read "0:20 to 0:20").
        digits = next((d for d in (1, 2) if clock_time(self.start_s, d) != clock_time(self.end_s, d)), 3)
        return f"{clock_time(self.start_s, digits)} to {clock_time(self.end_s, digits)}"


class VideoResult(ScoringTerms):
    kind: Literal["video"] = "video"
    video: VideoSummary
    analysed: AnalysedSpan
    sampled_frames: int
    tracks: list[TrackResult]
    timeline: list[TimelinePoint]
    faces_left_out: int = Field(
        0, description="the most faces found in one sampled frame beyond the most analysed per frame (the largest are)"
    )
    verdict: Verdict
    rule: str
    elapsed_ms: float
    metadata: MediaMetadata = Field(
        default_factory=MediaMetadata, description="the file's own tags, for the reader (not scored)"
    )
