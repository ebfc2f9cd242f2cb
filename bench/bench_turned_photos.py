"""Photos (and videos) turned a quarter or upside down without an orientation tag: the shipped model's
scores on real photos read as they are (the baseline: what `scan` did before it searched the turns)
against reads with the turn search (`FaceDetector.detect_frames(..., turns=True)`, what `scan` does
now), in the same run.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_turned_photos.py \\
        [--dirs dev-eval/modern-swaps/real dev-eval/face-edits/real] [--limit 60] [--model BUNDLE]
        [--videos dev-eval/dfdc-sample --frames 32]

With --videos, each video of those folders (real or fake, as their metadata.json says) is also read
turned, and its file score (the video rule over its tracks) printed per turn, both ways (DFDC
folders: labels from metadata.json).

Every photo is turned by 0, 90, 180 and 270 degrees (np.rot90, lossless) and read both ways, through the
product's own detect -> crop -> score step (`find_faces`, `OnnxClassifier.score`). Per turn it prints the
mean of each photo's highest face probability, the share of photos at or above the bundle's threshold
(all photos are real, so that share is false alarms), the photos without a face, the photos read
turned, and the detection time per photo (median and 95th percentile). Targets: with the search, each
turn's flagged share within 2 points of the upright photos', and upright photos' detection time within
10% of the baseline's (they rarely need the search).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepshield.errors import exit_status
from deepshield.inference.frame_faces import find_faces
from deepshield.inference.runtime import OnnxClassifier, bundle_dir
from deepshield.inference.video_rule import VideoRule
from deepshield.media.images import load_image
from deepshield.media.suffixes import IMAGE_SUFFIXES
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.training.config import DATA_DIR_ENV, DataConfig

TURN_DEGREES = (0, 90, 180, 270)


@dataclass
class Reads:
    """One way of reading the photos turned by one angle."""

    probabilities: list[float] = field(default_factory=list)  # each photo's highest face probability
    without_face: int = 0
    read_turned: int = 0
    detect_ms: list[float] = field(default_factory=list)


def photos(root: Path, dirs: list[str], limit: int) -> list[Path]:
    chosen: list[Path] = []
    for folder in dirs:
        files = sorted(p for p in (root / folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        step = max(1, len(files) // limit) if limit else 1  # spread over the folder, not its first names
        chosen += files[::step][:limit] if limit else files
    return chosen


def file_score(
    frames: list[np.ndarray], classifier: OnnxClassifier, faces, turns: bool
) -> tuple[float | None, bool, float]:
    """The file's score by the video rule (a photo: its highest face probability), whether it was read
    turned, and the detection time in ms."""
    started = time.perf_counter()
    found = find_faces(frames, faces, classifier.card.crop_policy, turns=turns)
    elapsed = 1000 * (time.perf_counter() - started)
    if not found.crops:
        return None, False, elapsed
    probabilities = found.split(list(classifier.score(found.pixels).probabilities))
    tracks = [[probabilities[frame][face] for frame, face in track.members] for track in found.tracks]
    turned = any(face.turns for frame in found.faces for face in frame)
    return VideoRule().aggregate(tracks, len(frames)).score, turned, elapsed


def read(image: np.ndarray, classifier: OnnxClassifier, faces, turns: bool, into: Reads) -> None:
    score, turned, elapsed = file_score([image], classifier, faces, turns)
    into.detect_ms.append(elapsed)
    if score is None:
        into.without_face += 1
        return
    into.read_turned += turned
    into.probabilities.append(score)


def videos(root: Path, dirs: list[str], classifier: OnnxClassifier, faces, frames: int) -> None:
    """Each video's file score per turn, read as it is and with the search."""
    from deepshield.data.sources import SourceItem, read_dfdc
    from deepshield.media.frames import read_frames

    print("\n| video (label) | turned by | as it is (baseline) | with the turn search | read turned |")
    print("|---|---|---|---|---|")
    for folder in dirs:
        for item in read_dfdc(root / folder, folder):
            if not isinstance(item, SourceItem) or not item.path.is_file():
                continue
            _, sampled, _ = read_frames(item.path, frames)
            for degrees in TURN_DEGREES:
                turned = [np.ascontiguousarray(np.rot90(image, degrees // 90)) for _, image in sampled]
                plain, _, _ = file_score(turned, classifier, faces, False)
                searched, was_turned, _ = file_score(turned, classifier, faces, True)
                print(
                    f"| {item.path.name} ({item.label}) | {degrees} | {plain if plain is None else f'{plain:.3f}'} | "
                    f"{searched if searched is None else f'{searched:.3f}'} | {'yes' if was_turned else 'no'} |"
                )


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, 100 * share)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dirs", nargs="+", default=["dev-eval/modern-swaps/real", "dev-eval/face-edits/real"])
    parser.add_argument("--limit", type=int, default=60, help="photos per folder (0: all)")
    parser.add_argument("--model", default=None, help="bundle folder (default: the shipped model)")
    parser.add_argument("--videos", nargs="*", default=[], help="labelled video folders (e.g. dev-eval/dfdc-sample)")
    parser.add_argument("--frames", type=int, default=DEFAULT_VIDEO_FRAMES, help="frames sampled per video")
    args = parser.parse_args()
    root = DataConfig().data_root() or Path()
    if not all((root / d).is_dir() for d in args.dirs):
        print(f"set {DATA_DIR_ENV} to the folder holding {args.dirs}", file=sys.stderr)
        return 2

    from deepshield.faces.detector import FaceDetector

    classifier, faces = OnnxClassifier(bundle_dir(args.model)), FaceDetector()
    threshold = classifier.card.calibration.threshold
    paths = photos(root, args.dirs, args.limit)
    results = {(degrees, turns): Reads() for degrees in TURN_DEGREES for turns in (False, True)}
    started = time.perf_counter()
    for count, path in enumerate(paths, 1):
        image = load_image(path)
        for degrees in TURN_DEGREES:
            turned = np.ascontiguousarray(np.rot90(image, degrees // 90))
            for turns in (False, True):  # alternating, so that load on the machine falls on both alike
                read(turned, classifier, faces, turns, results[degrees, turns])
        if count % 10 == 0 or count == len(paths):
            print(f"{count}/{len(paths)} photos, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    print(f"{classifier.card.name} {classifier.card.version}, threshold {threshold:.3f}; {len(paths)} real photos")
    print(f"from {', '.join(args.dirs)}; load average {os.getloadavg()[0]:.2f}\n")
    print("| turned by | read | mean highest probability | flagged | no face | read turned | detection ms p50 / p95 |")
    print("|---|---|---|---|---|---|---|")
    flagged: dict[tuple[int, bool], float] = {}
    for (degrees, turns), reads in results.items():
        probabilities = np.array(reads.probabilities)
        flagged[degrees, turns] = float((probabilities >= threshold).mean()) if len(probabilities) else float("nan")
        print(
            f"| {degrees} | {'with the turn search' if turns else 'as it is (baseline)'} | "
            f"{probabilities.mean():.3f} | {flagged[degrees, turns]:.1%} | {reads.without_face} | {reads.read_turned} | "
            f"{statistics.median(reads.detect_ms):.1f} / {percentile(reads.detect_ms, 0.95):.1f} |"
        )
    upright = flagged[0, True]
    worst = max(abs(flagged[d, True] - upright) for d in TURN_DEGREES)
    cost = statistics.median(results[0, True].detect_ms) / statistics.median(results[0, False].detect_ms)
    print(
        f"\nflagged share, turned against upright, with the search: at most {100 * worst:.1f} points apart "
        f"(target <= 2: {'met' if 100 * worst <= 2 else 'missed'})"
    )
    print(
        f"upright photos' detection time with the search: {cost:.2f} x the baseline's median "
        f"(target <= 1.10: {'met' if cost <= 1.10 else 'missed'})"
    )
    if args.videos:
        videos(root, args.videos, classifier, faces, args.frames)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_turned_photos"))
