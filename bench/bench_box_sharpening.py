"""Where a large frame's faces are boxed, and what that does to their scores: real photos set into large
frames, analysed as `scan` does with the shipped detector (a face the whole image and a tile both find
takes the tile's box: `detector.sharpened`) and with the baseline in the same run (the whole image's
box kept), against the same photo analysed alone.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_box_sharpening.py \\
        [--dirs real-faces/ffhq] [--limit 150] [--sizes 4032x3024 1920x1080] [--widths 120 380]

Each photo whose detector finds exactly one face alone is scaled so that its face is a width drawn
uniformly from `--widths` and pasted at a random place into a grey frame of each size. In the frame, the
detection nearest the photo's own box (scaled and moved with it) is that face. Per frame size and rule it
prints the box's error (mean absolute corner offset from the photo's own box, as a share of the face's
width) and how far the face's score moved from the photo's own (absolute difference of the calibrated
logits, log(p / (1 - p)): the network's logit over the card's temperature), each a mean with a 95%
bootstrap interval over photos; the two rules see the same frames.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from deepshield.errors import exit_status
from deepshield.faces import detector as detector_module
from deepshield.inference.analysis import Detector
from deepshield.inference.results import FaceResult
from deepshield.inference.runtime import bundle_dir
from deepshield.media.images import load_image

sys.path.insert(0, str(Path(__file__).parent))
from bench_small_faces import real_photos

RULES = ("sharpened (shipped)", "whole-image box (baseline)")


def logit(probability: float) -> float:
    """The calibrated logit: the network's own divided by the card's temperature."""
    p = min(max(probability, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def mean_interval(values: np.ndarray, rng: np.random.Generator, draws: int = 2000) -> str:
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return f"{values.mean():.3f} [{low:.3f}, {high:.3f}]"


def nearest(faces: list[FaceResult], expected: np.ndarray) -> FaceResult | None:
    return min(faces, key=lambda face: float(np.abs(np.array(face.box) - expected).max()), default=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", nargs="+", default=["real-faces/ffhq"], help="relative to DEEPSHIELD_DATA_ROOT")
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--sizes", nargs="+", default=["4032x3024", "1920x1080"], help="frame WIDTHxHEIGHT")
    parser.add_argument("--widths", nargs=2, type=float, default=[120.0, 380.0], metavar=("MIN", "MAX"))
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the shipped model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load = os.getloadavg()[0]  # before this run adds its own

    detector = Detector.from_bundle(bundle_dir(args.model))
    shipped_sharpened = detector_module.sharpened
    rng = np.random.default_rng(args.seed)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
    # per frame size and rule: box errors and logit changes, photo by photo
    errors: dict[tuple[int, int], dict[str, list[float]]] = {size: {rule: [] for rule in RULES} for size in sizes}
    moves: dict[tuple[int, int], dict[str, list[float]]] = {size: {rule: [] for rule in RULES} for size in sizes}
    photos = real_photos(args.dirs, args.limit)
    for done, path in enumerate(photos, 1):
        photo = load_image(path)
        alone = detector.analyze_image(photo, heatmaps=False)
        if len(alone.faces) != 1:
            continue
        box = np.array(alone.faces[0].box)
        side = float(max(box[2] - box[0], box[3] - box[1]))
        for width, height in sizes:
            target = rng.uniform(*args.widths)
            scale = target / side
            scaled = cv2.resize(
                photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            )
            if scaled.shape[0] > height or scaled.shape[1] > width:
                continue
            x = int(rng.integers(0, width - scaled.shape[1] + 1))
            y = int(rng.integers(0, height - scaled.shape[0] + 1))
            frame = np.full((height, width, 3), 128, np.uint8)
            frame[y : y + scaled.shape[0], x : x + scaled.shape[1]] = scaled
            expected = box * scale + np.array([x, y, x, y])
            found = {}
            for rule in RULES:
                detector_module.sharpened = shipped_sharpened if rule == RULES[0] else (lambda face, _tiles: face)
                found[rule] = nearest(detector.analyze_image(frame, heatmaps=False).faces, expected)
            detector_module.sharpened = shipped_sharpened
            if any(face is None for face in found.values()):
                continue
            for rule, face in found.items():
                assert face is not None
                errors[(width, height)][rule].append(float(np.abs(np.array(face.box) - expected).mean()) / target)
                moves[(width, height)][rule].append(abs(logit(face.probability) - logit(alone.faces[0].probability)))
        print(f"\r{done}/{len(photos)} photos", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    report_rng = np.random.default_rng(args.seed)
    print(
        f"faces {args.widths[0]:.0f}-{args.widths[1]:.0f} px wide, real photos of {', '.join(args.dirs)}; "
        f"load average at start {load:.2f}"
    )
    print(f"{'frame':>10}  {'rule':<28} {'faces':>5}  {'box error (share of width)':<28} |logit change| vs alone")
    for width, height in sizes:
        for rule in RULES:
            error, move = np.array(errors[(width, height)][rule]), np.array(moves[(width, height)][rule])
            if not len(error):
                continue
            print(
                f"{width}x{height:<5} {rule:<28} {len(error):>5}  {mean_interval(error, report_rng):<28} "
                f"{mean_interval(move, report_rng)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_box_sharpening"))
