"""Real faces flagged by size: each real photo's face scaled to a given width and set into a 1080p frame,
then analysed as `scan` does (`Detector.analyze_image`). The baseline is the largest width, in the same
run. This is the measurement behind the small-face caution (`deepshield.inference.cautions`).

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_small_faces.py \\
        [--dirs dev-eval/face-edits/real dev-eval/modern-swaps/real] [--widths 70 90 120] [--limit 250]

Over the photos whose face is found at every width, it prints per width the share at or above the
bundle's threshold (all are real, so that share is false alarms) with a 95% Wilson interval, the ratio to
the baseline's share, and the photos flagged only at that width or only at the baseline (the paired
difference behind the ratio). Each photo's face is found once at full size; the photo is scaled so that the box is
`width` px wide and pasted in the middle of a mid-grey 1920x1080 frame.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from deepshield.errors import exit_status
from deepshield.inference.analysis import Detector
from deepshield.inference.runtime import bundle_dir
from deepshield.media.images import load_image
from deepshield.media.suffixes import IMAGE_SUFFIXES
from deepshield.training.config import DATA_DIR_ENV, DataConfig

FRAME_W, FRAME_H = 1920, 1080


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)  # rounding can push an end past 0 or 1


def real_photos(folders: list[str], limit: int) -> list[Path]:
    """The images of dev-eval folders (relative to DEEPSHIELD_DATA_ROOT), sorted, at most `limit`."""
    if not os.environ.get(DATA_DIR_ENV):
        raise SystemExit(f"set {DATA_DIR_ENV} (e.g. ../shared/data)")
    data = DataConfig()
    return sorted(
        p
        for folder in folders
        for p in data.locate(Path(folder), "folder").iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES
    )[:limit]


def in_frame(image: np.ndarray, scale: float) -> np.ndarray | None:
    """The photo scaled by `scale`, pasted in the middle of a grey 1080p frame (None if it would not fit)."""
    h, w = image.shape[:2]
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    if sw > FRAME_W or sh > FRAME_H:
        return None
    frame = np.full((FRAME_H, FRAME_W, 3), 128, np.uint8)
    x, y = (FRAME_W - sw) // 2, (FRAME_H - sh) // 2
    frame[y : y + sh, x : x + sw] = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    return frame


def width_row(width: int, calls: list[dict[int, bool]], base: int) -> str:
    """One width's line of the table: its flagged share and how it compares with the baseline's."""
    n = len(calls)
    flagged = sum(c[width] for c in calls)
    base_flagged = sum(c[base] for c in calls)
    low, high = wilson(flagged, n)
    # With none flagged at the baseline there is no ratio (it printed "nanx"): the photos flagged say it.
    ratio = f"{flagged / base_flagged:.2f}x" if base_flagged else "no ratio: none flagged at the baseline"
    only_here = sum(c[width] and not c[base] for c in calls)
    only_base = sum(c[base] and not c[width] for c in calls)
    return (
        f"{width:5d}  {flagged:7d}  {flagged / n:6.1%} [{low:.1%}, {high:.1%}]  {ratio} (+{only_here} / -{only_base})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", nargs="+", default=["dev-eval/face-edits/real", "dev-eval/modern-swaps/real"])
    parser.add_argument(
        "--widths", nargs="+", type=int, default=[70, 90, 120], help="face widths (px); the last is the baseline"
    )
    parser.add_argument("--limit", type=int, default=250, help="photos at most")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]  # before this run adds its own
    files = real_photos(args.dirs, args.limit)
    detector = Detector.from_bundle(bundle_dir(args.model))
    threshold = detector.threshold
    # Each photo counts only when its face is found at every width, so every share is over the same photos
    # (counted per width, 54, 54 and 57 photos made the 70 px share's ratio a comparison of other photos).
    calls: list[dict[int, bool]] = []
    missed = 0
    for number, path in enumerate(files, start=1):
        image = load_image(path)
        faces = detector.analyze_image(image, heatmaps=False).faces
        if len(faces) != 1:
            continue  # no face, or several: the scaled photo's face would not be one known face
        x0, _, x1, _ = faces[0].box
        flagged_at: dict[int, bool] = {}
        for width in args.widths:
            frame = in_frame(image, width / max(1.0, x1 - x0))
            scored = [] if frame is None else detector.analyze_image(frame, heatmaps=False).faces
            if scored:
                flagged_at[width] = max(face.probability for face in scored) >= threshold
        if len(flagged_at) == len(args.widths):
            calls.append(flagged_at)
        else:
            missed += 1
        if number % 50 == 0:
            print(f"{number} of {len(files)} photos", file=sys.stderr, flush=True)
    print(
        f"{len(files)} real photos, threshold {threshold:.4f} ({detector.model_name}); load average at start {load:.2f}"
    )
    print(f"{len(calls)} photos whose face was found at every width ({missed} others left out: missed at some width)")
    if not calls:
        return 0  # no share to give
    print("width  flagged  share [95%]            vs baseline (photos flagged only here / only at the baseline)")
    for width in args.widths:
        print(width_row(width, calls, args.widths[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_small_faces"))
