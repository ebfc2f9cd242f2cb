"""Score model bundles on benchmarks with the metrics training logs (bench_*), for comparing a new
bundle with the shipped one on equal terms before shipping it (the study's form of `deepshield compare`,
which scores them the same way: `deepshield.training.compare.score_bundles`); with --ensembles K, also every
combination of up to K of them, each face's calibrated logits averaged (each bundle scores its own
crops; the faces are the same, found once per benchmark). Every bundle or ensemble after the first is
also compared with the first on the same files (a paired bootstrap of the AUC differences,
`paired_comparison`): the test for "beats the shipped model" that two overlapping intervals cannot give.
With --caught-with-reals K ..., each also gets its fake files caught per set with at most K of the set's
real files flagged: two models compared at equal false alarms, where verdicts are made. With --plot PNG
the paired differences are drawn too, a row per later bundle (named by --labels), a panel per AUC.

    export DEEPSHIELD_DATA_ROOT=../shared/data
    .venv/bin/python scripts/benchmark_bundle.py src/deepshield/models/default runs/default/bundle \\
        --benchmarks dev-eval/dfdc-sample dev-eval/modern-swaps dev-eval/face-edits --out docs/study/bundles.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from deepshield.errors import exit_status
from deepshield.evaluation.metrics import PairedDifference
from deepshield.evaluation.plots import paired_differences_plot
from deepshield.training.benchmarks import (
    Benchmark,
    BenchmarkScores,
    benchmark_metrics,
    catches_at_equal_false_alarms,
    paired_comparison,
)
from deepshield.training.compare import score_bundles
from deepshield.training.config import DataConfig

SHOWN = (
    "dfdc_sample_face_auc",
    "modern_swaps_face_auc",
    "modern_swaps_file_auc",
    "face_edits_file_auc",
    "auc",
    "modern_swaps_tpr_at_2pct_fpr",
    "face_edits_tpr_at_2pct_fpr",
    "tpr_at_2pct_fpr",
)
PLOTTED = tuple(key for key in SHOWN if key.endswith("auc"))  # --plot's panels: the paired AUC differences


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--benchmarks", nargs="+", type=Path, required=True, help="relative to DEEPSHIELD_DATA_ROOT")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/deepshield"))
    parser.add_argument("--ensembles", type=int, default=1, metavar="K", help="also combinations of 2..K bundles")
    parser.add_argument(
        "--caught-with-reals",
        nargs="+",
        type=int,
        default=[],
        metavar="K",
        help="also the fake files caught with at most K of a set's real files flagged (each K below its reals)",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="also each later bundle's AUC differences to the first's, as a figure"
    )
    parser.add_argument("--labels", nargs="+", help="the bundles' names in the figure, one each (default: their paths)")
    args = parser.parse_args()
    if args.labels and len(args.labels) != len(args.bundles):
        parser.error(f"--labels: {len(args.labels)} names for {len(args.bundles)} bundles")
    names = args.labels or [str(bundle) for bundle in args.bundles]
    data = DataConfig()
    bundles = score_bundles(
        args.bundles, [data.locate(p, "benchmark") for p in args.benchmarks], args.cache_dir, args.frames
    )
    reference: list[Benchmark] = [r.benchmark for r in bundles[0].results]  # the faces every bundle scores
    # per bundle: its label, and per benchmark its faces' (logit - offset) / temperature (the calibrated logit)
    labels = [f"{b.label} ({b.bundle})" for b in bundles]
    scored = {label: b.logits() for label, b in zip(labels, bundles)}
    thresholds = {label: b.card.calibration.threshold for label, b in zip(labels, bundles)}
    short = dict(zip(labels, names))  # per bundle label: its name in the figure
    report = {}
    first: list[BenchmarkScores] = []
    plotted: dict[str, dict[str, PairedDifference]] = {}
    for size in range(1, max(1, args.ensembles) + 1):
        for members in itertools.combinations(scored, size):
            logits = {b.name: np.mean([scored[m][b.name] for m in members], axis=0) for b in reference}
            # the false-positive figures at the bundle's own threshold; an ensemble has none: 0.5
            threshold = thresholds[members[0]] if size == 1 else 0.5
            results = [BenchmarkScores(b, b.scored(logits[b.name], 1.0)) for b in reference]
            metrics = benchmark_metrics(results, threshold)
            name = " + ".join(members)
            report[name] = {"members": list(members), "threshold": threshold} | metrics
            shown = " ".join(f"{k}={metrics.get('bench_' + k, float('nan')):.3f}" for k in SHOWN)
            print(f"{name}: {shown}", flush=True)
            if args.caught_with_reals:
                catches = catches_at_equal_false_alarms(results, args.caught_with_reals)
                report[name]["caught_with_reals_flagged"] = [asdict(c) for c in catches]
                for c in catches:
                    if c.caught:
                        print(
                            f"    {c.benchmark}: fakes caught (of {c.fakes}) with at most {'/'.join(map(str, c.caught))} "
                            f"of {c.reals} reals flagged: {'/'.join(map(str, c.caught.values()))}",
                            flush=True,
                        )
                    if nothing := c.nothing_to_compare():
                        print(f"    {nothing}", flush=True)
            if not first:
                first = results
                continue
            against_first = paired_comparison(first, results)
            report[name]["minus_first"] = {key: d.model_dump() for key, d in against_first.items()}
            plotted[" + ".join(short[m] for m in members)] = {
                key: d for key in PLOTTED if (d := against_first.get("bench_" + key))
            }
            for key in SHOWN:
                if (d := against_first.get("bench_" + key)) is not None:
                    print(
                        f"    {key} minus the first's: {d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}], "
                        f"ahead in {d.shares_text()}",
                        flush=True,
                    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.plot and plotted:
        print(f"figure: {paired_differences_plot(plotted, list(PLOTTED), short[next(iter(scored))], args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "benchmark_bundle"))
