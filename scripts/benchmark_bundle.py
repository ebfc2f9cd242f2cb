"""Score model bundles on benchmarks with the metrics training logs (bench_*), for comparing a new
bundle with the shipped one on equal terms before shipping it.

    export DEEPSHIELD_DATA_ROOT=../shared/data
    .venv/bin/python scripts/benchmark_bundle.py src/deepshield/models/default runs/default/bundle \\
        --benchmarks dev-eval/dfdc-sample dev-eval/modern-swaps dev-eval/face-edits --out docs/study/bundles.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepshield.inference.runtime import OnnxClassifier
from deepshield.training.benchmarks import benchmark_metrics, load_benchmark, score_benchmarks
from deepshield.training.config import DataConfig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--benchmarks", nargs="+", type=Path, required=True, help="relative to DEEPSHIELD_DATA_ROOT")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/deepshield"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    data = DataConfig()
    results = {}
    for bundle in args.bundles:
        classifier = OnnxClassifier(bundle)
        card = classifier.card
        benchmarks = [
            load_benchmark(data.locate(p, "benchmark"), card.crop_policy, args.cache_dir, [], args.frames)
            for p in args.benchmarks
        ]
        scored = score_benchmarks(
            benchmarks,
            lambda crops, classifier=classifier: classifier.score(crops).logits,
            card.calibration.temperature,
        )
        metrics = benchmark_metrics(scored, card.calibration.threshold)
        results[f"{card.name} {card.version}"] = {
            "bundle": str(bundle),
            "threshold": card.calibration.threshold,
        } | metrics
        shown = {k: round(v, 3) for k, v in metrics.items() if not k.endswith(("_lo", "_hi"))}
        print(f"{card.name} {card.version}: {shown}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
