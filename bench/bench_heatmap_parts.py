"""Whether a face's heatmap lands on the part of it that was edited: real faces, each edited in one part only
(the mouth, the subject's left eye or right eye), two ways: the part pasted from another of the faces
(`synthesis.blend.part_paste`, that part forced) and the face's own pixels resampled (shrunk to 0.35 and
back) inside the same kind of hand selection (`synthesis.masks.lasso_mask`). The unedited face is the
baseline, scored in the same run.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_heatmap_parts.py \\
        [--reals dev-eval/face-edits/real] [--faces 30] [--model src/deepshield/models/default]

Each face is cut as the product cuts it (its largest face, `crop_face` with the card's policy) and its
heatmap made as the product makes it (`cam_to_heatmap`). Per edit and part it prints: the face-swap
probability before and after; the median ratio of the heatmap's mean over the edited part to its mean
over the rest of the face (the face mesh's hull), edited and unedited; how often the edited part is the
hottest of the three parts (chance 1/3); and how often the heatmap's hottest point on the face lies in the
edited part, against that part's share of the face (chance). Last, the unedited real faces whose heatmap
has a cell at or above the card's threshold, or red (87.5%: where JET turns red), and whose face-swap
probability is at or above it: a warm spot on a real face is common, a reason to read the map as where
the score saw evidence, never as a finding of its own. Faces whose mesh is not found, or under 80
px wide, are skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from deepshield.errors import exit_status
from deepshield.faces.crop import crop_face, crop_validity
from deepshield.faces.detector import FaceDetector
from deepshield.faces.landmarks import FaceMesher
from deepshield.inference.heatmap import cam_to_heatmap
from deepshield.inference.runtime import OnnxClassifier, bundle_dir
from deepshield.media.images import load_image
from deepshield.synthesis import blend, masks
from deepshield.synthesis.blend import FaceSample, part_paste
from deepshield.training.config import DataConfig

PARTS = {name: masks.PASTE_PARTS[name] for name in ("mouth", "left_eye", "right_eye")}


@dataclass(frozen=True)
class Row:
    edit: str
    part: str
    before: float  # face-swap probability, unedited
    after: float
    ratio: float  # heat over the part / heat over the rest of the face, edited
    ratio_before: float  # the same on the unedited face
    hottest_part: bool  # the edited part has the highest mean heat of the three
    peak_inside: bool  # the hottest point on the face lies in the edited part
    share: float  # the edited part's share of the face


def faces(folder: Path, count: int, classifier: OnnxClassifier) -> list[FaceSample]:
    detector, mesher, policy = FaceDetector(), FaceMesher(), classifier.card.crop_policy
    found: list[FaceSample] = []
    for path in sorted(folder.iterdir()):
        try:
            image = load_image(path)
        except Exception:  # noqa: BLE001  # a file the product refuses is not a face to measure
            continue
        detected = detector.detect(image)
        if not detected:
            continue
        face = max(detected, key=lambda f: f.box.area)
        if face.box.width < 80:
            continue
        crop = crop_face(image, face.box, face.keypoints, policy, face.turns)
        landmarks = mesher.landmarks(crop.pixels)
        if landmarks is None:
            continue
        keypoints = np.asarray(face.keypoints) @ crop.matrix[:, :2].T + crop.matrix[:, 2]
        found.append(
            FaceSample(crop.pixels, keypoints, landmarks, crop_validity(image.shape, crop.matrix, policy.size))
        )
        if len(found) == count:
            break
    return found


def measure(samples: list[FaceSample], classifier: OnnxClassifier) -> list[Row]:
    size, calibration = classifier.card.crop_policy.size, classifier.card.calibration
    rng = np.random.default_rng(0)
    rows = []
    for position, target in enumerate(samples):
        face = masks.hull_mask((size, size), target.landmarks) > 0
        regions = {
            part: cv2.dilate(masks.hull_mask((size, size), target.landmarks[points]), np.ones((9, 9), np.uint8)) > 0
            for part, points in PARTS.items()
        }
        edits = []
        for part, points in PARTS.items():
            blend.PASTE_PARTS = {part: points}  # part_paste draws its part from these: this one only
            donor = samples[(position + 1 + int(rng.integers(len(samples) - 1))) % len(samples)]
            pasted = part_paste(target, donor, rng)
            edits.append(("pasted", part, pasted.image, pasted.mask))
            small = cv2.resize(target.image, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)
            resampled = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
            mask = masks.lasso_mask((size, size), target.landmarks[points], rng)
            edits.append(("resampled", part, blend._blend(resampled, target.image, mask), mask))
        scores = classifier.score(np.stack([target.image] + [image for _, _, image, _ in edits]))
        maps = [cam_to_heatmap(cam, size, calibration) for cam in scores.cams]
        unedited = maps[0]
        for (edit, part, _, mask), heat, probability in zip(edits, maps[1:], scores.probabilities[1:]):
            inside = mask > 0.5
            rest = face & ~inside
            means = {name: float(heat[region].mean()) for name, region in regions.items()}
            peak = np.unravel_index(np.argmax(np.where(face, heat, -1.0)), heat.shape)
            rows.append(
                Row(
                    edit,
                    part,
                    float(scores.probabilities[0]),
                    float(probability),
                    float(heat[inside].mean() / heat[rest].mean()),
                    float(unedited[inside].mean() / unedited[rest].mean()),
                    max(means, key=lambda name: means[name]) == part,
                    bool(inside[peak]),
                    float(inside.sum() / face.sum()),
                )
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reals", default="dev-eval/face-edits/real", help="real photos, under the data root")
    parser.add_argument("--faces", type=int, default=30)
    parser.add_argument("--model", default=None, help="bundle (default: the shipped model)")
    args = parser.parse_args()
    classifier = OnnxClassifier(bundle_dir(args.model))
    folder = DataConfig().locate(Path(args.reals), "real photos")  # a clear line where the data root is unset
    samples = faces(folder, args.faces, classifier)
    if len(samples) < 2:  # each face's part is pasted from another one
        raise SystemExit(f"{len(samples)} face(s) found in {folder}: at least 2 are needed (--faces 2 or more)")
    print(
        f"{classifier.card.name} {classifier.card.version}: {len(samples)} faces of {folder}; load {os.getloadavg()[0]:.2f}"
    )
    rows = measure(samples, classifier)
    calibration = classifier.card.calibration
    unedited = classifier.score(np.stack([sample.image for sample in samples]))
    peaks = [float(cam_to_heatmap(cam, classifier.input_size, calibration).max()) for cam in unedited.cams]
    threshold = calibration.threshold
    print(
        f"unedited faces: a cell at or above the threshold ({threshold:.1%}) "
        f"{statistics.mean(p >= threshold for p in peaks):.0%}, a red cell {statistics.mean(p >= 0.875 for p in peaks):.0%}; "
        f"the face's probability at or above it {statistics.mean(float(p) >= threshold for p in unedited.probabilities):.0%}"
    )
    print("edit       part       n    p before  p after  heat ratio (unedited)  hottest part  peak in part (chance)")
    for edit in ("pasted", "resampled"):
        for part in [*PARTS, "all"]:
            chosen = [r for r in rows if r.edit == edit and part in ("all", r.part)]
            print(
                f"{edit:10s} {part:10s} {len(chosen):4d} {statistics.mean(r.before for r in chosen):8.3f}"
                f" {statistics.mean(r.after for r in chosen):8.3f}"
                f" {statistics.median(r.ratio for r in chosen):10.2f} ({statistics.median(r.ratio_before for r in chosen):.2f})"
                f" {statistics.mean(r.hottest_part for r in chosen):12.0%}"
                f" {statistics.mean(r.peak_inside for r in chosen):12.0%} ({statistics.mean(r.share for r in chosen):.0%})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_heatmap_parts"))
