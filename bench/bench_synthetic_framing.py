"""The synthetic-face score on faces framed whole and cut close: generated photos its head never trained
or calibrated on (the holdout of its card's split) and real photos it never loaded, each analysed as
`scan` does (`Detector.analyze_image`) whole and cut to its centre (the `cut` perturbation: the face's
crop runs past the picture's edge into black padding), by a bundle and a baseline bundle in the same run.

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_synthetic_framing.py \\
        --model runs/synthetic-1.3.0/bundle --baseline src/deepshield/models/default [--cuts 0.6 0.5] \\
        [--real-dirs real-faces/portraits real-faces/utkface] [--real-skip 1000] [--real-limit 200]

Per bundle and framing it prints: generated faces called likely AI-generated (the product's call) and real
faces called so (false alarms), each with a 95% Wilson interval, the synthetic score's face AUC with a
95% bootstrap interval, and the median share of the crops that is padding. One face per photo (its
largest); a photo whose face is not found under a framing is left out of that framing's row and counted.
The holdout is the `--model` card's (both bundles must have trained on the same split for it to be a
holdout of both: the script says so when their splits differ). Real photos are the folders' files after
the first `--real-skip` (a head trained with `synthetic.limit_per_folder` 1000 loaded only those).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench_small_faces import wilson  # this folder is on the path when the script runs
from deepshield.errors import exit_status
from deepshield.evaluation.metrics import bootstrap_intervals, detection_metrics
from deepshield.evaluation.perturb import Cut
from deepshield.inference.analysis import Detector
from deepshield.inference.runtime import bundle_dir, read_card
from deepshield.media.images import load_image
from deepshield.training.config import DATA_DIR_ENV, DataConfig
from deepshield.training.facebank import list_images
from deepshield.training.synthetic import generated_split

LIKELY = "likely_manipulated"


@dataclass
class Row:
    generated_called: int = 0
    generated: int = 0
    real_called: int = 0
    real: int = 0
    lost: int = 0
    scores: list[tuple[int, float]] | None = None
    padding: list[float] | None = None


def score(detector: Detector, images: list[tuple[int, np.ndarray]], cut: Cut | None) -> Row:
    row = Row(scores=[], padding=[])
    for label, image in images:
        faces = detector.analyze_image(image if cut is None else cut.apply(image), heatmaps=False).faces
        if not faces:
            row.lost += 1
            continue
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        called = face.synthetic_label == LIKELY
        if label:
            row.generated += 1
            row.generated_called += called
        else:
            row.real += 1
            row.real_called += called
        row.scores.append((label, face.synthetic_probability or 0.0))
        row.padding.append(face.crop_padding)
    return row


def share(hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    return f"{hits}/{n} {hits / max(n, 1):.1%} [{low:.1%}, {high:.1%}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the bundle measured (its card gives the holdout)")
    parser.add_argument("--baseline", type=Path, default=None, help="the bundle to compare (default: the shipped one)")
    parser.add_argument("--cuts", type=float, nargs="+", default=[0.6, 0.5], help="shares of each side kept")
    parser.add_argument("--real-dirs", nargs="+", default=["real-faces/portraits", "real-faces/utkface"])
    parser.add_argument("--real-skip", type=int, default=1000, help="files of each real folder left out first")
    parser.add_argument("--real-limit", type=int, default=200, help="real files per folder after those")
    parser.add_argument("--generated-limit", type=int, default=None, help="holdout files at most")
    args = parser.parse_args()
    if not os.environ.get(DATA_DIR_ENV):
        raise SystemExit(f"set {DATA_DIR_ENV} (e.g. ../shared/data)")
    model, baseline = bundle_dir(args.model), bundle_dir(args.baseline)
    _, _, holdout = generated_split(read_card(model))
    if generated_split(read_card(baseline))[2] != holdout:
        print("note: the baseline's head was trained on another split: the holdout is the model's only", flush=True)
    data = DataConfig()
    reals = [
        path
        for folder in args.real_dirs
        for path in list_images([data.locate(Path(folder), "real folder")])[
            args.real_skip : args.real_skip + args.real_limit
        ]
    ]
    images = [(1, load_image(p)) for p in holdout[: args.generated_limit]] + [(0, load_image(p)) for p in reals]
    print(
        f"{len(images) - len(reals)} holdout generated photos, {len(reals)} real photos; load {os.getloadavg()[0]:.2f}"
    )
    framings: list[Cut | None] = [None, *(Cut(c) for c in args.cuts)]
    print(
        "| bundle | framing | generated called likely | real called likely | synthetic AUC | median padding | no face |"
    )
    print("|---|---|---|---|---|---|---|")
    # Resolved: the shipped bundle named by a relative path is the baseline itself, not a second bundle.
    for path in (baseline, model) if baseline.resolve() != model.resolve() else (model,):
        card = read_card(path)
        with Detector.from_bundle(path) as detector:
            for cut in framings:
                row = score(detector, images, cut)
                labels = np.array([label for label, _ in row.scores])
                values = np.array([value for _, value in row.scores])
                auc = bootstrap_intervals(labels, values, resamples=1000).intervals["auc"]
                value = detection_metrics(labels, values).auc
                print(
                    f"| {card.version} | {'whole' if cut is None else cut.name} | "
                    f"{share(row.generated_called, row.generated)} | {share(row.real_called, row.real)} | "
                    f"{value:.3f} [{auc.low:.3f}, {auc.high:.3f}] | {statistics.median(row.padding):.1%} | "
                    f"{row.lost} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_synthetic_framing"))
