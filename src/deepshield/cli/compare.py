"""`deepshield compare`: does a new bundle beat the shipped one (or another) on real labelled media?
Both score the same files' faces, and their AUC differences are resampled together (paired)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from deepshield.cli.args import (
    bundle_folder,
    check_output_file,
    check_tracking_store,
    given_path,
    log_to_mlflow,
    model_argument,
    non_negative_int,
    progress_argument,
    tracking_arguments,
)
from deepshield.cli.columns import aligned
from deepshield.cli.evaluate import add_face_arguments, raw_face_settings, refuse_face_options
from deepshield.errors import DeepShieldError, say

if TYPE_CHECKING:
    from deepshield.tracking.tracker import Tracker
    from deepshield.training.compare import Comparison, ScoredBundle

EXIT_NOT_AHEAD = 1  # with --fail-unless-ahead


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare model bundles on the same labelled media, paired (is the new one better?)",
        description=(
            "Score a candidate bundle and a baseline (default: the shipped model) on the same faces of the "
            "same labelled sets, then give each set's face and file AUC for both, the candidate's minus the "
            "baseline's with a 95% paired bootstrap interval over files, and the real files each flags and "
            "the fakes each catches at its own threshold (by either score, for a bundle with a synthetic-face "
            "score, as scan flags them). The candidate is ahead when the interval of the "
            "pooled difference (the mean over sets of the face-AUC differences) lies above zero, behind when "
            "below, else tied: differences inside it are not evidence. Sets: anything `deepshield evaluate` "
            "reads (folders real/ and fake/, DFDC, FaceForensics++, a CSV, a prepared dataset)."
        ),
        epilog="example: deepshield compare runs/new/bundle --on labelled/swaps labelled/edits --fail-unless-ahead",
    )
    parser.add_argument(
        "candidates",
        nargs="+",
        type=bundle_folder,
        metavar="CANDIDATE",
        help="model bundle folder(s) ('default': the shipped model)",
    )
    parser.add_argument(
        "--on",
        nargs="+",
        action="extend",  # `--on a --on b` compared on b alone, as a repeated option of nargs="+" keeps its last
        type=given_path,
        required=True,
        metavar="SET",
        dest="sets",
        help="labelled sets to compare on",
    )
    model_argument(parser, "--against", "baseline bundle (default: the shipped model)")
    add_face_arguments(
        parser,
        "prepared datasets: which split to compare on (default all; a model's own training data is no held-out "
        "figure: --split test)",
    )
    parser.add_argument(
        "--caught-with-reals",
        nargs="+",
        action="extend",
        type=non_negative_int,
        default=[],
        metavar="K",
        help="also the fake files each catches with at most K of a set's real files flagged: models compared "
        "at equal false alarms, where verdicts are made",
    )
    parser.add_argument(
        "--cache-dir",
        type=given_path,
        default=Path(".cache/deepshield"),
        help="where the sets' faces are kept once found (default .cache/deepshield)",
    )
    parser.add_argument("--out", type=given_path, metavar="JSON", help="also write every figure here")
    parser.add_argument(
        "--plot", type=given_path, metavar="PNG", help="also draw the paired AUC differences (a .png file)"
    )
    parser.add_argument(
        "--fail-unless-ahead",
        action="store_true",
        help=f"exit {EXIT_NOT_AHEAD} unless every candidate is ahead (a gate before shipping)",
    )
    progress_argument(parser)
    tracking_arguments(parser, "each comparison (a run per candidate)", "deepshield-compare")
    parser.set_defaults(run=run)


def set_options(args: argparse.Namespace) -> tuple[int, int]:
    """The frames per video and smallest face for the raw sets. Refused, as evaluate refuses them: options
    that no set given can use (--frames or --min-face-size with only prepared sets, whose faces were found
    when they were prepared; --split with none)."""
    from deepshield.evaluation.scoring import SPLIT_NEEDS_PREPARED, is_prepared_dataset

    prepared = [path for path in args.sets if is_prepared_dataset(path)]
    if len(prepared) == len(args.sets):
        refuse_face_options(prepared[0], args)
    if not prepared and args.split != "all":
        raise DeepShieldError(SPLIT_NEEDS_PREPARED)
    return raw_face_settings(args)


def run(args: argparse.Namespace) -> int:
    from deepshield.data.layout import write_output_text
    from deepshield.inference.runtime import bundle_dir
    from deepshield.training.compare import compare, score_bundles

    # The figure is drawn as PNG whatever the name: 'x.txt' got PNG bytes (facebank pack's --out is refused so).
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise DeepShieldError(f"--plot {args.plot}: the figure is a PNG file: name it .png")
    for path, flag in ((args.out, "--out"), (args.plot, "--plot")):
        if path is not None:
            check_output_file(path, flag)  # before the scoring
    frames, min_face_size = set_options(args)
    check_tracking_store(args)  # before the scoring, which a store it cannot log to refused after
    baseline, *candidates = score_bundles(
        [bundle_dir(bundle) for bundle in (args.against, *args.candidates)],
        args.sets,
        args.cache_dir,
        frames,
        min_face_size,
        args.split,
        progress=not args.no_progress,
    )
    from deepshield.evaluation.recalibrate import training_folders_in

    for scored in (baseline, *candidates):  # figures on a model's own training faces are no held-out figures
        for result in scored.results:

            def warn(message: str, on: str = f"{scored.label} on {result.benchmark.name}") -> None:
                say(f"deepshield compare: warning: {on}: {message}")

            if trained := training_folders_in(scored.card, [record.path for record in result.benchmark.files], warn):
                say(
                    f"deepshield compare: warning: {scored.label} was trained on files of {result.benchmark.name} "
                    f"({', '.join(trained)}): its figures there are not held out"
                )
    comparisons = [compare(baseline, candidate, args.caught_with_reals) for candidate in candidates]
    sys.stdout.write("\n".join(describe(comparison) for comparison in comparisons))
    if args.out:
        write_output_text(args.out, json.dumps([record(c) for c in comparisons], indent=1) + "\n")
    if args.plot:
        from deepshield.evaluation.plots import paired_differences_plot

        panels = [
            "bench_auc",
            *(f"bench_{r.benchmark.name}_{level}_auc" for r in baseline.results for level in ("face", "file")),
        ]
        rows = {f"{c.candidate.label} ({c.candidate.bundle})": c.differences for c in comparisons}
        sys.stdout.write(f"figure: {paired_differences_plot(rows, panels, baseline.label, args.plot)}\n")
    if args.tracking_uri:
        for comparison in comparisons:
            name = f"compare {comparison.candidate.label} against {comparison.baseline.label}"
            log_to_mlflow(args, name, functools.partial(log_comparison, comparison=comparison, args=args))
    if args.fail_unless_ahead and any(c.standing != "ahead" for c in comparisons):
        return EXIT_NOT_AHEAD
    return 0


def _auc(metrics: dict[str, float], key: str) -> str:
    from deepshield.evaluation.shown import fraction_text

    return fraction_text(metrics[key]) if key in metrics else "-"


def describe(comparison: Comparison) -> str:
    """The comparison as people read it: a row per set and level, the pooled row, then each set's
    operating figures at both bundles' own thresholds (and a caution where a set has few files)."""
    import numpy as np

    from deepshield.evaluation.metrics import few_files_caution
    from deepshield.evaluation.scoring import CLEAN, describe_counts

    base, cand = comparison.baseline, comparison.candidate
    lines = [
        f"{cand.label} ({cand.bundle}) against {base.label} ({base.bundle}), paired over the same files:",
        "",
    ]
    table = [("SET", "LEVEL", "BASELINE", "CANDIDATE", "DIFFERENCE [95%]", "CANDIDATE AHEAD IN")]
    keys = [
        (r.benchmark.name, level, f"bench_{r.benchmark.name}_{level}_auc")
        for r in base.results
        for level in ("face", "file")
    ]
    keys.append(("all sets (bench_auc)", "face", "bench_auc"))
    for name, level, key in keys:
        d = comparison.differences.get(key)
        table.append(
            (
                name,
                f"{level}s",
                _auc(base.metrics, key),
                _auc(cand.metrics, key),
                "-" if d is None else f"{d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}]",
                "-" if d is None else d.shares_text(),
            )
        )
    lines += aligned(table)
    lines.append("")
    # The rates below are at these: unsaid, "0.0% of real files flagged" named no threshold, nor did --out.
    lines.append(
        f"thresholds (a score at or above one is flagged): baseline {_thresholds(base)}; candidate {_thresholds(cand)}"
    )
    for result in base.results:
        name = result.benchmark.name
        shares = []
        for bundle in (base, cand):
            # A two-score bundle flags a real file either score flags, as scan does (the face-swap score alone
            # was counted): said, with the synthetic-face score's own share.
            flagged = bundle.metrics.get(f"bench_{name}_fpr_either", bundle.metrics.get(f"bench_{name}_fpr"))
            caught = bundle.metrics.get(f"bench_{name}_tpr_either", bundle.metrics.get(f"bench_{name}_tpr"))
            by_synthetic = bundle.metrics.get(f"synthetic_bench_{name}_fpr")
            either = (
                "" if by_synthetic is None else f" by either score ({by_synthetic:.1%} by the synthetic-face score)"
            )
            by_swap = bundle.metrics.get(f"bench_{name}_tpr")
            caught_either = (
                ""
                if f"bench_{name}_tpr_either" not in bundle.metrics or by_swap is None
                else f" by either score ({by_swap:.1%} by the face-swap score)"
            )
            shares.append(
                f"{'-' if flagged is None else f'{flagged:.1%}'} of real files flagged{either}, "
                f"{'-' if caught is None else f'{caught:.1%}'} of fakes caught{caught_either}"
            )
        lines.append(f"{name} at each one's threshold: baseline {shares[0]}; candidate {shares[1]}")
        if np.isnan(result.scored.file_scores(CLEAN)).any():
            # Its figures count the files with a face alone: a fake whose face is not found is missed in use.
            lines.append(f"{name}: {describe_counts(result.scored)}; its figures are on the files with faces")
        # Of the intervals: a set of one class has none (it read "only 12 real and 0 fake files: a bootstrap over
        # so few files understates the uncertainty", however many reals it held).
        has_interval = any(f"bench_{name}_{level}_auc" in comparison.differences for level in ("face", "file"))
        caution = few_files_caution(
            int(base.metrics[f"bench_{name}_real_files"]), int(base.metrics[f"bench_{name}_fake_files"])
        )
        if caution and has_interval:
            lines.append(f"{name}: {caution}")
    for base_catch, cand_catch in zip(comparison.baseline_catches, comparison.candidate_catches):
        for k in base_catch.caught:
            lines.append(
                f"{base_catch.benchmark} with at most {k} of {base_catch.reals} real files flagged: fakes caught "
                f"(of {base_catch.fakes}) baseline {base_catch.caught[k]}, candidate {cand_catch.caught[k]}"
            )
        if nothing := base_catch.nothing_to_compare(" by both"):
            lines.append(nothing)
    if "bench_auc" not in comparison.differences:
        lines.append("TIED: no set has both real and fake files, so there is no AUC to compare")
    else:
        lines.append(
            {
                "ahead": "AHEAD: the pooled difference's interval lies above zero",
                "behind": "BEHIND: the pooled difference's interval lies below zero",
                "tied": "TIED: the pooled difference's interval includes zero, so these sets cannot tell them apart",
            }[comparison.standing]
        )
    return "\n".join(lines) + "\n"


def _thresholds(bundle: ScoredBundle) -> str:
    synthetic = bundle.card.synthetic
    return f"{bundle.card.calibration.threshold:.4f}" + (
        "" if synthetic is None else f" (synthetic-face score {synthetic.calibration.threshold:.4f})"
    )


def _described(bundle: ScoredBundle) -> dict:
    """A bundle's entry of --out: which it is, the thresholds its rates are at, and its figures."""
    synthetic = bundle.card.synthetic
    return (
        {"bundle": str(bundle.bundle), "model": bundle.label, "threshold": bundle.card.calibration.threshold}
        | ({} if synthetic is None else {"synthetic_threshold": synthetic.calibration.threshold})
        | bundle.metrics
    )


def record(comparison: Comparison) -> dict:
    """Every figure of one comparison, for --out."""
    return {
        "baseline": _described(comparison.baseline),
        "candidate": _described(comparison.candidate),
        "standing": comparison.standing,
        "candidate_minus_baseline": {key: d.model_dump() for key, d in comparison.differences.items()},
        "caught_with_reals_flagged": {
            "baseline": [vars(c) for c in comparison.baseline_catches],
            "candidate": [vars(c) for c in comparison.candidate_catches],
        },
    }


def log_comparison(tracker: Tracker, comparison: Comparison, args: argparse.Namespace) -> None:
    """Both bundles' figures (baseline.*, candidate.*), the paired differences with their interval ends
    (minus.*), the standing as a tag, and the --out / --plot files."""
    frames, min_face_size = raw_face_settings(args)
    tracker.log_params(
        {
            "baseline": str(comparison.baseline.bundle),
            "candidate": str(comparison.candidate.bundle),
            "sets": ", ".join(map(str, args.sets)),
            "frames": frames,
            "min_face_size": min_face_size,
            "split": args.split,
        }
    )
    metrics = {f"baseline.{key}": value for key, value in comparison.baseline.metrics.items()}
    metrics |= {f"candidate.{key}": value for key, value in comparison.candidate.metrics.items()}
    for key, d in comparison.differences.items():
        metrics |= {f"minus.{key}": d.difference, f"minus.{key}_lo": d.low, f"minus.{key}_hi": d.high}
    tracker.log_metrics(metrics)
    tracker.set_tags({"deepshield.standing": comparison.standing})
    for path in (args.out, args.plot):
        if path is not None:
            tracker.log_artifact(path)
