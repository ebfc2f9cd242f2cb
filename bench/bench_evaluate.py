"""Benchmark `evaluate`: a bundle on the dev-eval set, with the perturbation table, as markdown for the README.

    python bench/bench_evaluate.py [BUNDLE] [--data DEV_EVAL_DIR] [--frames 32]
        [--perturb jpeg:90,70,50 resize:0.5 blur:1.5 noise:5] [--bootstrap 1000] [--out REPORT_DIR] [--limit N]

--perturb left out measures those four; --perturb with no spec measures the clean set only.

BUNDLE defaults to the shipped model (src/deepshield/models/default/). Every part of dev-eval is
scored in one run: face-edits/{real,fake} (images), dfdc-sample (DFDC videos, --frames per video) and
modern-swaps/{real,fake} (photos and videos of current swap tools, the shipped model's weakest set);
files listed in a metadata.json but absent are counted as unreadable, not scored. Nothing is tuned
here: the bundle's own threshold, temperature and the detector's video rule are used as they are.
The full report (HTML, metrics.json, scores.csv) is written to REPORT_DIR. Wall time includes
decoding, face detection and scoring for the clean set and every perturbation; the host's load
average is printed next to it (other jobs on the machine skew it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from deepshield.cli.evaluate import add_perturb_argument, files_without_face
from deepshield.cpus import usable_cpus
from deepshield.errors import exit_status
from deepshield.evaluation.perturb import parse_perturbations
from deepshield.evaluation.summary import (
    Confusion,
    EvaluationSettings,
    EvaluationSummary,
    Interval,
    ModelInfo,
    summarize,
)
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.training.config import DataConfig

REPO = Path(__file__).resolve().parents[1]
PARTS = ("face-edits", "dfdc-sample", "modern-swaps")  # every part: modern-swaps was left out
DEFAULT_PERTURB = ["jpeg:90,70,50", "resize:0.5", "blur:1.5", "noise:5"]


def ci(entry) -> str:
    """An Interval as `value (low–high)`."""
    if entry is None or entry.value is None:
        return "–"
    text = f"{entry.value:.3f}"
    if entry.low is not None:
        text += f" ({entry.low:.2f}–{entry.high:.2f})"
    return text


def num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def metrics_rows(summary: EvaluationSummary) -> list[str]:
    header = "| data | files (real / fake) | no face / missing / unreadable | file AUC (95% CI) | AP | EER | balanced acc. | recall | FPR | log-loss | face AUC |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    blocks = [(name, block.file, block.face) for name, block in sorted(summary.by_source.items())] + [
        ("all", summary.file, summary.face)
    ]
    listed = (summary.no_face_files, summary.missing_files, summary.unreadable_files)
    by_source_counts = {}
    for column, entries in enumerate(listed):
        for f in entries:
            by_source_counts.setdefault(f.source, [0, 0, 0])[column] += 1
    for name, file_block, face_block in blocks:
        m = file_block.metrics
        c = file_block.confusion or Confusion(tn=0, fp=0, fn=0, tp=0)
        reals, fakes = c.tn + c.fp, c.fn + c.tp
        left_out = " / ".join(
            map(str, by_source_counts.get(name, [0, 0, 0]) if name != "all" else [len(e) for e in listed])
        )
        if not m:
            lines.append(f"| {name} | {reals} / {fakes} | {left_out} | {file_block.error or '–'} | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {reals} / {fakes} | {left_out} | {ci(m['auc'])} | {num(m['ap'].value)} | {num(m['eer'].value)} | "
            f"{num(m['balanced_accuracy'].value)} | {num(m['recall'].value)} | {num(c.false_positive_rate)} | {num(m['log_loss'].value)} | "
            f"{num(face_block.value('auc'))} |"
        )
    return lines


def perturbation_rows(summary: EvaluationSummary) -> list[str]:
    sources = sorted(summary.by_source)
    header = (
        "| condition | file AUC, all (95% CI) | Δ | "
        + " | ".join(f"{s} file AUC" for s in sources)
        + " | face AUC | files without a face |"
    )
    lines = [header, "|" + "---|" * (4 + len(sources) + 1)]
    for row in summary.perturbations:
        auc = Interval(value=row.file_auc, low=row.file_auc_low, high=row.file_auc_high)
        delta = "–" if row.file_auc_change is None else f"{row.file_auc_change:+.3f}"
        per = " | ".join(num(row.by_source_file_auc.get(s)) for s in sources)
        lines.append(
            f"| {row.condition} | {ci(auc)} | {delta} | {per} | {num(row.face_auc)} | {files_without_face(row)} |"
        )
    return lines


def rule_rows(summary: EvaluationSummary) -> list[str]:
    lines = ["| video rule | file AUC (95% CI) | balanced acc. | log-loss |", "|---|---|---|---|"]
    for kind, block in summary.video_rules.items():
        part = block.videos_only or block.file
        m = part.metrics
        if not m:
            lines.append(f"| {kind} | {part.error or '–'} | | |")
            continue
        lines.append(f"| {kind} | {ci(m['auc'])} | {num(m['balanced_accuracy'].value)} | {num(m['log_loss'].value)} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default=None, help="model bundle (default: the shipped model)")
    parser.add_argument(
        "--data", type=Path, default=None, help="the dev-eval folder (default: $DEEPSHIELD_DATA_ROOT/dev-eval)"
    )
    parser.add_argument("--frames", type=int, default=DEFAULT_VIDEO_FRAMES)
    add_perturb_argument(parser)  # evaluate's: given twice, both are kept
    parser.set_defaults(perturb=None)  # left out: DEFAULT_PERTURB; --perturb with no spec: the clean set only
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_evaluate_report"))
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="score only the first N real and N fake files of each part (a quick check of the script)",
    )
    args = parser.parse_args()
    # Bad specs fail before the model loads.
    perturbations = parse_perturbations(DEFAULT_PERTURB if args.perturb is None else args.perturb)

    from deepshield.engines.local import LocalEngine
    from deepshield.evaluation.report import write_report
    from deepshield.evaluation.scoring import CropJob, ScoredSet, crop_media, list_items, score_cropped
    from deepshield.inference.runtime import DEFAULT_BUNDLE, OnnxClassifier

    bundle = Path(args.bundle) if args.bundle else DEFAULT_BUNDLE
    if not (bundle / "model_card.json").is_file():
        print(f"bench_evaluate: no model bundle at {bundle} (pass one as the first argument)", file=sys.stderr)
        return 2
    data = args.data or DataConfig().locate(Path("dev-eval"), "the dev-eval sets")
    parts = [data / p for p in PARTS]
    missing = [p for p in parts if not p.exists()]
    if missing:
        print(f"bench_evaluate: {', '.join(map(str, missing))} not found", file=sys.stderr)
        return 2
    classifier = OnnxClassifier(bundle)
    items, problems = [], []
    for part in parts:
        part_items, part_problems = list_items([part])
        if args.limit:
            part_items = [i for i in part_items if i.label == "real"][: args.limit] + [
                i for i in part_items if i.label == "fake"
            ][: args.limit]
        items += part_items
        problems += part_problems
    settings = EvaluationSettings(
        threshold=classifier.card.calibration.threshold,
        bootstrap=args.bootstrap,
        extra={
            "datasets": [str(p) for p in parts],
            "frames": args.frames,
            "perturbations": [p.name for p in perturbations],
        },
    )
    job = CropJob(classifier.card.crop_policy, frames=args.frames, perturbations=tuple(perturbations))
    started = time.perf_counter()
    files = []
    faces, examples = score_cropped(crop_media(items, files, job, LocalEngine()), classifier, settings.rule, examples=8)
    scored = ScoredSet(
        files,
        job.conditions,
        faces,
        classifier.card.calibration.temperature,
        "media",
        examples,
        [(str(p.path), p.reason) for p in problems],
    )
    scoring_s = time.perf_counter() - started
    started = time.perf_counter()
    card = classifier.card
    summary = summarize(
        scored,
        settings,
        ModelInfo(
            name=card.name,
            version=card.version,
            temperature=card.calibration.temperature,
            threshold=card.calibration.threshold,
        ),
    )
    page = write_report(scored, settings, summary, args.out, title=f"dev-eval: {card.name} {card.version}")
    report_s = time.perf_counter() - started

    counts = summary.counts
    print(f"\n### Evaluation on dev-eval: {card.name} {card.version}\n")
    print(
        f"Threshold {card.calibration.threshold:.3f} (model card), temperature {card.calibration.temperature:.3g}, video rule "
        f"`{settings.rule.kind}`, {args.frames} frames per video; {counts.images} images and {counts.videos} videos scored, "
        f"{counts.faces} faces. 95% intervals: {args.bootstrap} bootstrap resamples of files. No file without a face is in "
        "the file-level figures (they are counted in the third column)."
    )
    print()
    print("\n".join(metrics_rows(summary)))
    print("\nRobustness (each perturbation applied to the full frame before face detection):\n")
    print("\n".join(perturbation_rows(summary)))
    print("\nVideo rules (DFDC videos only when images are mixed in):\n")
    print("\n".join(rule_rows(summary)))
    conditions = len(scored.conditions)
    print(
        f"\nscoring {scoring_s:.0f} s for {len(items)} files x {conditions} conditions ({len(items) * conditions / scoring_s:.2f} file-conditions/s, "
        f"{scored.face_count / scoring_s:.1f} faces/s), report {report_s:.1f} s; {usable_cpus()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_evaluate"))
