"""Reading large media at a fraction of its width and height: one choice of scale for photos and video frames."""

from __future__ import annotations

import math
from collections.abc import Callable

# The fractions a large photo (a JPEG's DCT scaling offers exactly these) or video frame is read at.
REDUCED_SCALES = (2, 4, 8)


def reduced_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) read at 1/scale, rounded up as a JPEG decoder does."""
    return math.ceil(size[0] / scale), math.ceil(size[1] / scale)


def first_scale(size: tuple[int, int], scales: tuple[int, ...], fits: Callable[[tuple[int, int]], bool]) -> int | None:
    """The first of `scales` at which media of `size`, read at 1/scale, `fits` (None: at none)."""
    return next((scale for scale in scales if fits(reduced_size(size, scale))), None)
