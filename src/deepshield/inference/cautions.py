"""Why a face's score deserves extra care: conditions under which real faces were measured to be flagged
more often than usual (README, "Limits"). Said beside the score, never part of it or of the verdict."""

from __future__ import annotations

from collections.abc import Sequence

# The shipped 1.2.2 flagged real faces more often the smaller they were: of 561 real dev-eval photos, each
# face scaled to a width and set into a 1080p frame, 6.4% at 70 px, 3.4% at 90 px, 1.3% at 120 px, 0.7% at
# 160 px and 0.4% at 240 px (bench/bench_small_faces.py).
SMALL_FACE_PX = 100


def face_cautions(widths_px: Sequence[float], turned_deg: int) -> list[str]:
    """For one face (one width) or one person of a video (the widths it was seen at, their median judged)."""
    cautions = []
    ordered = sorted(widths_px)
    width = ordered[len(ordered) // 2] if ordered else 0.0
    if ordered and width < SMALL_FACE_PX:
        cautions.append(
            f"small face ({width:.0f} px wide): real faces were flagged far more often the smaller they were "
            "(6.4% at 70 px and 3.4% at 90 px wide, under 1% from 160 px)"
        )
    if turned_deg:
        cautions.append(
            f"read after turning the picture {turned_deg}°: real photos read turned were flagged two to three times "
            "as often as upright ones"
        )
    return cautions
