"""Why a face's score deserves extra care: conditions under which real faces were measured to be flagged
more often than usual (README, "Limits"). Said beside the score, never part of it or of the verdict."""

from __future__ import annotations

from collections.abc import Sequence

# Real faces about 70 px wide set into 1080p frames were flagged twice as often as the same portraits at
# 90 px and more (10 against 4-5 of about 230).
SMALL_FACE_PX = 90


def face_cautions(widths_px: Sequence[float], turned_deg: int) -> list[str]:
    """For one face (one width) or one person of a video (the widths it was seen at, their median judged)."""
    cautions = []
    ordered = sorted(widths_px)
    width = ordered[len(ordered) // 2] if ordered else 0.0
    if ordered and width < SMALL_FACE_PX:
        cautions.append(
            f"small face ({width:.0f} px wide): real faces this small were flagged about twice as often as faces "
            f"of {SMALL_FACE_PX} px and more"
        )
    if turned_deg:
        cautions.append(
            f"read after turning the picture {turned_deg}°: real photos read turned were flagged two to three times "
            "as often as upright ones"
        )
    return cautions
