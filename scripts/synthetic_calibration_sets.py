"""Write the labelled sets on which `deepshield calibrate --score synthetic` refits a bundle's synthetic-face
score for real media: the generated faces of the head's own validation split (the faces its temperature
was fitted on; its holdout stays unseen) as label fake, and the real files of every benchmark its run
named as label real, one CSV per source (a `source` column, so that `calibrate` holds each out in turn).
The split is the trainer's (`split_generated_files` with the run's seed, fractions and limit, the parent's
blend donors kept out), read from the bundle's card.

    export DEEPSHIELD_DATA_ROOT=../shared/data
    .venv/bin/python scripts/synthetic_calibration_sets.py --out runs/synthetic-calibration [--limit N]
    cd runs/synthetic-calibration && ../../.venv/bin/deepshield calibrate generated-validation.csv \\
        dfdc-sample-real.csv modern-swaps-real.csv face-edits-real.csv --score synthetic \\
        --keep-verdicts --keep-temperature --fit-offset --out ../bundle-cal
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from deepshield.data.sources import REAL, SourceItem, read_source
from deepshield.errors import exit_status
from deepshield.inference.runtime import DEFAULT_BUNDLE, read_card
from deepshield.training.config import TrainConfig
from deepshield.training.synthetic import generated_split


def write_set(path: Path, files: list[Path], label: str, source: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "source"])
        writer.writerows([str(f.resolve()), label, source] for f in files)
    print(f"{path}: {len(files)} {label} files", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_BUNDLE, help="bundle (default: the shipped one)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSVs")
    parser.add_argument(
        "--limit", type=int, default=None, help="only the first N files of each set (a quick check of the calibration)"
    )
    args = parser.parse_args()
    card = read_card(args.model)
    _, validation, _ = generated_split(card)
    config = TrainConfig.model_validate(card.training.config)
    # Every input found and read before the first set is written: a benchmark missing from the data root
    # failed after generated-validation.csv had been written.
    sets: list[tuple[str, list[Path], str]] = [("generated-validation", validation, "fake")]
    for benchmark in config.data.benchmarks:
        folder = config.data.locate(benchmark, "benchmark")
        reals = [e.path for e in read_source(folder) if isinstance(e, SourceItem) and e.label == REAL]
        sets.append((f"{folder.name}-real", reals, "real"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, files, label in sets:
        write_set(args.out / f"{name}.csv", files[: args.limit], label, name)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "synthetic_calibration_sets"))
