"""`deepshield tune`: hyperparameter search (Optuna), every trial a nested MLflow run."""

from __future__ import annotations

import argparse

from deepshield.cli.args import (
    assignments_argument,
    check_engine_arguments,
    check_output_folder,
    config_arguments,
    config_overrides,
    engine_arguments,
    given_path,
    non_negative_int,
    positive_seconds,
    progress_argument,
    training_tracking_arguments,
)

EPILOG = """\
space file (YAML/TOML): dotted training-config keys ->
  a list (categorical / grid), {low, high, log: true} (float), {low, high, step} (int, or float with a step),
  and an optional `budget:` mapping of per-trial overrides (e.g. optim.epochs: 2) not used by --train-best.

examples:
  deepshield tune --config train.yaml --space space.yaml --sampler grid
  deepshield tune --config train.yaml --space space.yaml --sampler tpe --trials 20 --pruner median \\
      --trial-set optim.epochs=2 --trial-set data.limit_per_folder=200 --n-jobs 2 --train-best
  deepshield tune --config train.yaml --space space.yaml --trials 40 --n-jobs 8 --engine ray \\
      --ray-address auto --storage postgresql://optuna@db/optuna --tracking-uri http://mlflow:5000

run the same command again to resume a killed or interrupted search (--trials is the study's total).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="search hyperparameters (grid / random / TPE, pruning, MLflow-tracked)",
        description="Search training hyperparameters: each trial trains with the project's trainer on a small\n"
        "budget in its own run directory, selected on a metric it logs (the synthetic validation split's, or\n"
        "a benchmark's on real labelled media); resumable from its study.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_arguments(parser, "override the config for the trials and --train-best (not run_dir: see --out)")
    parser.add_argument("--space", type=given_path, required=True, help="search-space file (YAML or TOML)")
    parser.add_argument(
        "--sampler",
        choices=("auto", "grid", "random", "tpe"),
        default="auto",
        help="default: grid when every parameter is a list or a range with a step, else tpe",
    )
    parser.add_argument(
        "--trials", type=int, help="total trials of the study (default: the whole grid; 10 for random/tpe)"
    )
    parser.add_argument(
        "--timeout", type=positive_seconds, metavar="S", help="start no trial after S seconds (running ones finish)"
    )
    parser.add_argument(
        "--select",
        default="max.val_auc",
        metavar="max.METRIC|min.METRIC",
        help="winner: val_auc, val_ap, val_balanced_accuracy (max) or val_loss, val_log_loss, val_eer (min) on the "
        "synthetic validation split, or with data.benchmarks a benchmark metric such as max.bench_auc or "
        "max.bench_<set>_file_auc (choose on real media where you can); default max.val_auc",
    )
    parser.add_argument(
        "--storage", help="Optuna storage URL (default: sqlite:///<out>/study.db), e.g. postgresql://user@host/db"
    )
    parser.add_argument("--study", help="study name (default: the space file's name)")
    parser.add_argument(
        "--pruner",
        choices=("median", "halving", "none"),
        default="median",
        help="stop bad trials early from their per-epoch validation metric (default median; none: every trial runs its budget)",
    )
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="trials in parallel, one process each (torch threads split between them; default 1); with --engine ray, one Ray task each",
    )
    parser.add_argument(
        "--out",
        type=given_path,
        help="search folder: trials/, plots/, results.csv, best.yaml (default: runs/tune/<study>)",
    )
    assignments_argument(
        parser,
        "--trial-set",
        "trial_overrides",
        "per-trial budget override (not used by --train-best), e.g. optim.epochs=2",
    )
    training_tracking_arguments(parser)
    parser.add_argument("--seed", type=non_negative_int, default=0, help="sampler seed (default 0)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="run the config's own values of the searched keys as the first trial (random/tpe), for comparison",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every checkpoint of finished trials (default: only best.pt)",
    )
    parser.add_argument(
        "--train-best",
        action="store_true",
        help="then train the winner at full budget (no per-trial budget) into <out>/best/bundle",
    )
    progress_argument(parser)
    engine_arguments(parser)  # --engine ray: the --n-jobs workers run as Ray tasks sharing the study's storage
    parser.set_defaults(run=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    from deepshield.tuning.study import SearchSettings, run_search

    check_engine_arguments(args)
    if args.out is not None:
        check_output_folder(args.out, "--out")  # a file there was a traceback from the study's database

    settings = SearchSettings(
        space=args.space,
        config=args.config,
        overrides=config_overrides(args),
        trial_overrides=args.trial_overrides,
        sampler=args.sampler,
        trials=args.trials,
        timeout=args.timeout,
        select=args.select,
        storage=args.storage,
        study=args.study,
        pruner=args.pruner,
        n_jobs=args.n_jobs,
        out=args.out,
        tracking_uri=args.tracking_uri,
        tracking=False if args.no_tracking else None,
        train_best=args.train_best,
        baseline=args.baseline,
        keep_checkpoints=args.keep_checkpoints,
        seed=args.seed,
        engine=args.engine,
        ray_address=args.ray_address,
        progress=not args.no_progress,
    )
    result = run_search(settings, echo=_echo)
    if result.parent_run_id:
        from deepshield.tracking import where_to_look
        from deepshield.training.config import load_config

        print(
            where_to_look(
                args.tracking_uri or str(load_config(args.config, args.overrides).tracking.uri), result.parent_run_id
            )
        )
    return 0 if result.report.best is not None else 1


def _echo(line: str) -> None:
    """The search's lines on stdout; its notes and warnings on stderr, named by the command as every other
    command's are (they were printed unnamed among the progress and the table)."""
    from deepshield.errors import say

    if line.startswith(("note: ", "warning: ")):
        say(f"deepshield tune: {line}")
    else:
        print(line, flush=True)
