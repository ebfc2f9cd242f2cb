"""Why a face's score deserves extra care: conditions under which real faces were measured to be flagged
more often than usual (README, "Limits"). Said beside the score, never part of it or of the verdict."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# The shipped 1.2.2 flagged real faces more often the smaller they were: of 561 real dev-eval photos, each
# face scaled to a width and set into a 1080p frame, 6.4% at 70 px, 3.4% at 90 px, 1.3% at 120 px, 0.7% at
# 160 px and 0.4% at 240 px (bench/bench_small_faces.py).
SMALL_FACE_PX = 100
# Under this detector confidence a "face" is often not one, or barely one (an eye close-up, a pattern, a
# hand): on the dev-eval photos 20 of 539 real faces fall under it against 3 of 475 edited ones, and the
# real file the shipped model scores highest is such a detection. In the dev-eval videos every person's
# median is 0.78 or more; a hand tracked over 3 of 64 frames of a DFDC video had 0.53.
UNCERTAIN_DETECTION = 0.7
# The synthetic-face score (1.2.2) reads a crop's black padding as a real photo's, so it reads a padded face
# cut within its picture (faces.crop.crop_inside), where the face fills more of the crop than in training:
# of 150 generated photos (bench/bench_synthetic_framing.py) it caught 124 framed whole, 113 cut to their
# centre's 0.6 (35% padding; 18 read padded) and 20 of 100 cut to 0.5, so its "no signs" on a tightly
# framed face is weaker. Real photos cut close to the face (the dev-eval face edits: all of 149 at 10% or
# more) get the caution; FFHQ portraits and generated photos rarely (3% and 0%).
TIGHT_FRAMING = 0.10


def median(values: Sequence[float]) -> float:
    """The median (of an even count, the mean of the middle two); 0 of none."""
    return float(statistics.median(values)) if values else 0.0


def uncertain_detection(detection_scores: Sequence[float]) -> float | None:
    """The (median) detector confidence of a face or person when it is under UNCERTAIN_DETECTION; else None."""
    confidence = median(detection_scores)
    return confidence if detection_scores and confidence < UNCERTAIN_DETECTION else None


def doubt_clause(who: str, detection_scores: Sequence[float]) -> str | None:
    """The verdict's clause when its most suspicious `who` ("face", "person") is an uncertain detection."""
    confidence = uncertain_detection(detection_scores)
    if confidence is None:
        return None
    return f"the most suspicious {who} is an uncertain detection {_uncertain_words(confidence)}"


@dataclass(frozen=True)
class Seen:
    """What a face, or a person of a video (the faces they were seen with), was read with."""

    widths_px: Sequence[float]
    turned_deg: int
    detection_scores: Sequence[float]
    paddings: Sequence[float]
    synthetic_call: str | None  # the synthetic-face score's own call; None: a model without it
    # Whether the model is the one the cautions' figures were measured on (the shipped one, at its own
    # thresholds): another's rates are its own, and quoting the shipped model's read as this model's.
    measured: bool = False

    def figures(self, measured: str) -> str:
        """The measured figures of a caution, for the model they were measured on; else where they come from."""
        return measured if self.measured else "measured with the shipped model, not this one"


# Each caution's sentence after the words that name it (Caution.starts).


def _small(seen: Seen) -> str | None:
    width = median(seen.widths_px)
    if not seen.widths_px or width >= SMALL_FACE_PX:
        return None
    return (
        f"({width:.0f} px wide): real faces were flagged far more often the smaller they were "
        f"({seen.figures('6.4% at 70 px and 3.4% at 90 px wide, under 1% from 160 px')})"
    )


def _uncertain(seen: Seen) -> str | None:
    confidence = uncertain_detection(seen.detection_scores)
    return None if confidence is None else _uncertain_words(confidence)


def _uncertain_words(confidence: float) -> str:
    return f"(detector confidence {confidence:.0%}): check that it is a face"


def _tight(seen: Seen) -> str | None:
    # Unless that score flagged the face anyway: then its miss is not at stake.
    if seen.synthetic_call in (None, "likely_manipulated") or not seen.paddings:
        return None
    share = median(seen.paddings)
    if share < TIGHT_FRAMING:
        return None
    return (
        f"({share:.0%} of the face's crop lies past the picture's edge): the synthetic-face score "
        "misses generated faces framed so more often "
        f"({seen.figures('of 150, 113 caught cut close to the face and 20 of 100 cut closer, 124 framed whole')})"
    )


def _turned(seen: Seen) -> str | None:
    if not seen.turned_deg:
        return None
    return (
        f"the picture {seen.turned_deg}°: real photos read turned were flagged more often than upright ones "
        f"({seen.figures('two to three times as often')})"
    )


@dataclass(frozen=True)
class Caution:
    """One condition: `named` in a few words, as a legend lists it; `starts`, the words its sentence begins
    with, by which a table names it; `rest`, the sentence after them for what was seen (None where it does
    not apply)."""

    named: str
    starts: str
    rest: Callable[[Seen], str | None]

    def sentence(self, seen: Seen) -> str | None:
        rest = self.rest(seen)
        return None if rest is None else f"{self.starts} {rest}"


# Every caution, in the order they are said. Legends name them from here (CAUTION_NAMES): scan's listed
# "a small face, an uncertain detection, a picture read turned", missing the tightly framed one.
CAUTIONS: tuple[Caution, ...] = (
    Caution("a small face", "small face", _small),
    Caution("an uncertain detection", "uncertain detection", _uncertain),
    Caution("a tightly framed face", "tightly framed", _tight),
    Caution("a picture read turned", "read after turning", _turned),
)
CAUTION_NAMES = ", ".join(caution.named for caution in CAUTIONS)


def caution_words(sentences: str | None) -> list[str]:
    """The few words naming each caution of a row's "; "-joined sentences (its CSV cell), in their order."""
    said = [] if not sentences else sentences.split("; ")
    return [caution.starts for caution in CAUTIONS if any(line.startswith(caution.starts) for line in said)]


def face_cautions(
    widths_px: Sequence[float],
    turned_deg: int,
    detection_scores: Sequence[float],
    paddings: Sequence[float] = (),
    synthetic_call: str | None = None,
    measured: bool = False,
) -> list[str]:
    """For one face (one width, one detector confidence, one crop's padding) or one person of a video (those
    it was seen with, their medians judged). `synthetic_call`: the synthetic-face score's own call, None for a
    model without it (a tightly framed face is cautioned unless that score flagged it anyway). `measured`:
    the model is the one the figures were measured on (Seen.measured)."""
    seen = Seen(widths_px, turned_deg, detection_scores, paddings, synthetic_call, measured)
    return [sentence for caution in CAUTIONS if (sentence := caution.sentence(seen)) is not None]
