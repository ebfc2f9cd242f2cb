"""`deepshield dataset`: inspect (stats) and rebalance (balance) a prepared face dataset."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from deepshield.cli.args import (
    check_output_folder,
    check_tracking_store,
    given_path,
    log_to_mlflow,
    non_negative_int,
    positive_int,
    progress_argument,
    tracking_arguments,
)
from deepshield.errors import DeepShieldError, say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="statistics and balancing of a prepared dataset",
        description="Inspect or rebalance a dataset built by `deepshield prepare`.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    stats = actions.add_parser(
        "stats",
        help="counts per label, source, method and split, with bar charts",
        description="Print counts, save bar charts to DATASET_DIR/stats/, warn about source bias.",
    )
    stats.add_argument(
        "dataset", type=given_path, metavar="DATASET_DIR", help="a dataset folder `deepshield prepare` wrote"
    )
    tracking_arguments(stats, "the counts and charts", "dataset-stats")
    stats.set_defaults(run=run_stats)

    balance = actions.add_parser(
        "balance",
        help="add real faces, down-sample, or synthesise fakes",
        description="Rebalance real and fake faces; no existing row changes split.",
    )
    balance.add_argument(
        "dataset", type=given_path, metavar="DATASET_DIR", help="a dataset folder `deepshield prepare` wrote"
    )
    how = balance.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--add-real",
        type=given_path,
        metavar="FOLDER",
        help="extract real faces from every image/video in FOLDER (same crop policy)",
    )
    how.add_argument(
        "--downsample",
        action="store_true",
        help="drop source files of the majority label, per split, group-aware (to removed.csv)",
    )
    how.add_argument(
        "--synth-fakes",
        type=positive_int,
        metavar="N",
        help="add N fakes self-blended from the train split's real faces",
    )
    balance.add_argument(
        "--workers", type=positive_int, default=None, help="worker processes for --add-real (default 1)"
    )
    balance.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="seed of --downsample and --synth-fakes (default: the dataset's)",
    )
    progress_argument(balance)
    balance.set_defaults(run=run_balance)


def run_stats(args: argparse.Namespace) -> int:
    from deepshield.cli.main import EXIT_OK
    from deepshield.data.stats import dataset_stats, format_stats, log_stats, write_stats

    stats = dataset_stats(args.dataset)
    check_tracking_store(args)  # before the charts are written
    # The counts first: a dataset this user may not write in (shared, read-only) had none, only an error.
    sys.stdout.write(format_stats(stats))
    print(file=sys.stderr)
    try:
        pngs = write_stats(stats, args.dataset)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        pngs = []
        where = "" if exc.filename is None else f"{os.fsdecode(exc.filename)}: "
        say_warnings("stats", [f"charts not saved, the dataset's folder cannot be written in ({where}{exc.strerror})"])
    else:
        say(f"charts: {', '.join(str(p) for p in pngs)}")
    say_warnings("stats", stats.warnings)
    if args.tracking_uri:
        run_name = f"stats {args.dataset.resolve().name}"
        charts = pngs[0].parent if pngs else None
        log_to_mlflow(args, run_name, lambda tracker: log_stats(tracker, stats, args.dataset, charts))
    return EXIT_OK


def run_balance(args: argparse.Namespace) -> int:
    from deepshield.cli.main import EXIT_OK
    from deepshield.data import balance
    from deepshield.data.stats import dataset_stats

    # A dataset this user may not write in (another's, shared) ended in a traceback at its lock.
    check_output_folder(args.dataset, "DATASET_DIR")
    # Given to a step that does not use it, it was passed over without a word (--add-real --seed 7 drew nothing).
    if args.add_real is not None and args.seed is not None:
        raise DeepShieldError(
            "--seed is for --downsample and --synth-fakes: --add-real splits the files it adds by the dataset's seed"
        )
    if args.add_real is None and args.workers is not None:
        raise DeepShieldError("--workers is for --add-real: --downsample and --synth-fakes run in this process")
    progress = not args.no_progress
    if args.add_real is not None:
        summary = balance.add_real(args.dataset, args.add_real, workers=args.workers or 1, progress=progress)
    elif args.downsample:
        summary = balance.downsample(args.dataset, seed=args.seed)
    else:
        summary = balance.synth_fakes(args.dataset, args.synth_fakes, seed=args.seed, progress=progress)
    # A line each: `say` escapes a newline (the notes followed a literal "\n").
    say(f"deepshield dataset balance: {summary.counts()}")
    for note in summary.notes:
        say(note)
    say_warnings("balance", dataset_stats(args.dataset).warnings)
    return EXIT_OK


def say_warnings(action: str, warnings: list[str]) -> None:
    """Each warning on its line, as the other commands say theirs (it was 'WARNING: ...' here alone)."""
    for warning in warnings:
        say(f"deepshield dataset {action}: warning: {warning}")
