"""Photos turned a quarter or upside down without an orientation tag: the shipped model's scores on real
photos read as they are (the baseline: what `scan` did before it searched the turns) against reads with
the turn search (`FaceDetector.detect(image, turns=True)`, what `scan` does now), in the same run.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_turned_photos.py \\
        [--dirs dev-eval/modern-swaps/real dev-eval/face-edits/real] [--limit 60] [--model BUNDLE]

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

from deepshield.inference.frame_faces import find_faces
from deepshield.inference.runtime import OnnxClassifier, bundle_dir
from deepshield.media.images import load_image

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
        files = sorted(p for p in (root / folder).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
        step = max(1, len(files) // limit) if limit else 1  # spread over the folder, not its first names
        chosen += files[::step][:limit] if limit else files
    return chosen


def read(image: np.ndarray, classifier: OnnxClassifier, faces, turns: bool, into: Reads) -> None:
    started = time.perf_counter()
    found = find_faces([image], faces, classifier.card.crop_policy, turns=turns)
    into.detect_ms.append(1000 * (time.perf_counter() - started))
    if not found.crops:
        into.without_face += 1
        return
    into.read_turned += any(face.turns for face in found.faces[0])
    into.probabilities.append(float(classifier.score(found.pixels).probabilities.max()))


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, 100 * share)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dirs", nargs="+", default=["dev-eval/modern-swaps/real", "dev-eval/face-edits/real"])
    parser.add_argument("--limit", type=int, default=60, help="photos per folder (0: all)")
    parser.add_argument("--model", default=None, help="bundle folder (default: the shipped model)")
    args = parser.parse_args()
    root = Path(os.environ.get("DEEPSHIELD_DATA_ROOT", ""))
    if not all((root / d).is_dir() for d in args.dirs):
        print(f"set DEEPSHIELD_DATA_ROOT to the folder holding {args.dirs}", file=sys.stderr)
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
        f"\nflagged share, turned against upright, with the search: at most {100 * worst:.1f} points apart (target 2)"
    )
    print(f"upright photos' detection time with the search: {cost:.2f} x the baseline's median (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
