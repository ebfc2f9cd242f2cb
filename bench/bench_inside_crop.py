"""The synthetic-face score of a face read from its padded crop (the baseline: `crop_face`, as before) and
from its crop within the picture (`crop_inside`, what the product reads for a padded face), in the same
run, on the same detections: generated photos the head never trained or calibrated on (its card's holdout),
whole and cut to their centre, and real photos.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_inside_crop.py [--model BUNDLE] \\
        [--cuts 0.6 0.5] [--real-dirs dev-eval/face-edits/real dev-eval/modern-swaps/real \\
         real-faces/portraits:1000 real-faces/utkface:1000:2000] [--limit N]

Per set and framing it prints the faces at or above the synthetic threshold read each way, with 95% Wilson
intervals, and those above 70%. One face per photo (its largest, by the shipped detector); photos without a
face are left out. A real folder may name the files it reads as FOLDER:START[:STOP] (a head trained with
`synthetic.limit_per_folder` 1000 loaded the first 1,000).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from bench_small_faces import wilson  # this folder is on the path when the script runs
from deepshield.errors import DeepShieldError, exit_status
from deepshield.evaluation.perturb import Cut
from deepshield.faces.crop import crop_face, crop_inside
from deepshield.faces.detector import FaceDetector
from deepshield.inference.runtime import OnnxClassifier, bundle_dir
from deepshield.media.images import load_image
from deepshield.training.config import DATA_DIR_ENV, DataConfig
from deepshield.training.facebank import list_images
from deepshield.training.synthetic import generated_split


def folder_files(data: DataConfig, spec: str) -> list[Path]:
    folder, *bounds = spec.split(":")
    start = int(bounds[0]) if bounds else 0
    stop = int(bounds[1]) if len(bounds) > 1 else None
    return list_images([data.locate(Path(folder), "real folder")])[start:stop]


def synthetic_probabilities(
    classifier: OnnxClassifier, detector: FaceDetector, path: Path, cut: Cut | None
) -> tuple[float, float] | None:
    """(padded crop's, inside crop's) calibrated synthetic score of the photo's largest face; None without one."""
    try:
        image = load_image(path)
    except DeepShieldError:
        return None
    if cut is not None:
        image = cut.apply(image)
    faces = detector.detect(image)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.box.area)
    policy = classifier.card.crop_policy
    crops = np.stack(
        [
            crop_face(image, face.box, face.keypoints, policy).pixels,
            crop_inside(image, face.box, face.keypoints, policy).pixels,
        ]
    )
    padded, inside = classifier.score(crops).synthetic_probabilities
    return float(padded), float(inside)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, default=None, help="bundle with a synthetic-face score (default: shipped)"
    )
    parser.add_argument("--cuts", type=float, nargs="+", default=[0.6, 0.5], help="shares of each side kept")
    parser.add_argument(
        "--real-dirs",
        nargs="+",
        default=[
            "dev-eval/face-edits/real",
            "dev-eval/modern-swaps/real",
            "real-faces/portraits:1000",
            "real-faces/utkface:1000:2000",
        ],
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N files of each set (a quick check of the script)"
    )
    args = parser.parse_args()
    if not os.environ.get(DATA_DIR_ENV):
        raise SystemExit(f"set {DATA_DIR_ENV} (e.g. ../shared/data)")
    classifier = OnnxClassifier(bundle_dir(args.model))
    calibration = classifier.card.synthetic.calibration if classifier.card.synthetic else None
    if calibration is None:
        raise SystemExit("the bundle has no synthetic-face score")
    detector = FaceDetector(min_face_size=20)
    data = DataConfig()
    sets = [("generated holdout", generated_split(classifier.card)[2], [None, *(Cut(c) for c in args.cuts)])]
    sets += [(spec, folder_files(data, spec), [None]) for spec in args.real_dirs]
    sets = [(name, files[: args.limit], framings) for name, files, framings in sets]
    print(
        f"{classifier.card.name} {classifier.card.version}, threshold {calibration.threshold:.3f}; load {os.getloadavg()[0]:.2f}"
    )
    print(
        "| set | framing | faces | padded crop: at or above the threshold | inside crop: at or above | above 70% (padded / inside) |"
    )
    print("|---|---|---|---|---|---|")
    for name, files, framings in sets:
        for cut in framings:
            read = [r for r in (synthetic_probabilities(classifier, detector, p, cut) for p in files) if r is not None]
            scores = np.array(read).reshape(-1, 2)
            n = len(scores)
            cells = []
            for column in (0, 1):
                hits = int((scores[:, column] >= calibration.threshold).sum())
                low, high = wilson(hits, n)
                cells.append(f"{hits} ({hits / max(n, 1):.1%} [{low:.1%}, {high:.1%}])")
            above = [int((scores[:, column] >= 0.7).sum()) for column in (0, 1)]
            framing = "whole" if cut is None else cut.name
            print(f"| {name} | {framing} | {n} | {cells[0]} | {cells[1]} | {above[0]} / {above[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_inside_crop"))
