"""`deepshield train` and `deepshield export`: train a detector from real faces, write a bundle."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from deepshield.cli.args import (
    bundle_name,
    bundle_version,
    check_output_folder,
    config_arguments,
    config_overrides,
    given_path,
    progress_argument,
    training_tracking_arguments,
)
from deepshield.errors import say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a detector (fakes synthesised from real faces)",
        description=(
            "Train with the configuration file (default: the packaged training/default.toml, which trained 1.0.0, "
            "the first of the shipped model's steps: docs/shipped-model.md gives the others), tracked in MLflow; "
            "exports a bundle at the end."
        ),
    )
    config_arguments(parser, "override a config value, e.g. optim.lr=1e-3 (repeatable)")
    parser.add_argument("--params", type=given_path, help="YAML/TOML/JSON of dotted keys, e.g. a search's best.yaml")
    parser.add_argument(
        "--run-dir",
        type=given_path,
        help="where checkpoints, plots and the bundle go (default: the configuration's run_dir, runs/default in the packaged one)",
    )
    training_tracking_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    progress_argument(parser)
    parser.set_defaults(run=run_train)

    export = subparsers.add_parser(
        "export",
        help="export a training checkpoint as a model bundle",
        description=(
            "Write model.onnx + model_card.json from a checkpoint, calibrated as its run's export settings say: on "
            "its validation split by default, with the benchmarks' real media where export.threshold_fpr or "
            "export.calibrate_on = 'benchmarks' name them."
        ),
    )
    export.add_argument(
        "checkpoint",
        type=given_path,
        help="a best.pt written by training (the chosen epoch), or any of its epoch_NNN.pt",
    )
    export.add_argument("--out", type=given_path, required=True, help="bundle folder to write")
    export.add_argument(
        "--force",
        action="store_true",
        help="replace --out if it holds a bundle (any other folder or file is kept, refused)",
    )
    export.add_argument(
        "--name", type=bundle_name, help="bundle name (default: the configuration's, else the run's name)"
    )
    export.add_argument(
        "--version",
        type=bundle_version,
        help="bundle version (default: the configuration's, else 0.0.0+<run id>.ep<epoch>)",
    )
    export.set_defaults(run=run_export)


def run_train(args: argparse.Namespace) -> int:
    from deepshield.errors import DeepShieldError
    from deepshield.tracking.tracker import sqlite_file
    from deepshield.training.checkpoint import LAST
    from deepshield.training.config import load_config, resume_command
    from deepshield.training.records import direction_warning, parse_selector
    from deepshield.training.trainer import Trainer

    overrides = config_overrides(args)
    # As JSON strings: a value read as JSON otherwise (--run-dir 2024 was the number 2024, --tracking-uri null None).
    if args.run_dir:
        overrides.append(f"run_dir={json.dumps(str(args.run_dir))}")
    if args.tracking_uri:
        overrides.append(f"tracking.uri={json.dumps(args.tracking_uri)}")
    if args.no_tracking:
        overrides.append("tracking.enabled=false")
    config = load_config(args.config, overrides, args.params)
    # As tune says it of --select: min.val_auc exported the run's worst epoch without a word.
    if (note := direction_warning(parse_selector(config.export.select))) is not None:
        say(f"deepshield train: {note} (export.select)")
    check_output_folder(Path(config.run_dir), "run_dir")  # before the face bank and the first steps
    checkpoints = Path(config.run_dir) / "checkpoints"
    if checkpoints.exists() and not checkpoints.is_dir():  # a traceback once the data had loaded (minutes)
        raise DeepShieldError(
            f"{checkpoints} is a file, where the run keeps its checkpoints: move it, or train into another --run-dir"
        )
    check_output_folder(checkpoints, "run_dir's checkpoints folder")
    database = sqlite_file(str(config.tracking.uri))
    if config.tracking.enabled and database is not None:  # a folder it cannot write, named as the others are
        check_output_folder(database.parent, "tracking.uri's folder")
    earlier = Path(config.run_dir) / "checkpoints" / LAST
    if earlier.exists() and not args.resume:
        raise DeepShieldError(
            f"{config.run_dir} holds a run already ({earlier}): continue it with --resume, or train into "
            "another --run-dir (a new run here would mix its checkpoints with the old run's)"
        )
    command = "deepshield " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else ""
    try:
        result = Trainer(config, command=command, progress=not args.no_progress).run(resume=args.resume)
    except KeyboardInterrupt:
        if earlier.exists():  # written once the data is loaded: a stop before it leaves nothing to resume
            rerun = resume_command(command) or "this command with --resume"
            say(f"deepshield train: the run is kept in {earlier}; resume it with: {rerun}")
        raise
    if result.stopped_early:  # a finished run's trainer has said where its bundle went
        print(f"stopped at step {result.progress.global_step} (max_steps); continue with --resume")
    if config.tracking.enabled and result.progress.run_id:
        from deepshield.tracking import where_to_look

        print(where_to_look(str(config.tracking.uri), result.progress.run_id))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from deepshield.models.card import check_bundle_folder
    from deepshield.training.export import export_checkpoint

    check_bundle_folder(args.out, args.force)
    check_output_folder(args.out, "--out")
    card = export_checkpoint(args.checkpoint, args.out, args.name, args.version)
    print(
        f"bundle written to {args.out}: {card.name} {card.version}, threshold {card.calibration.threshold:.3f}, temperature {card.calibration.temperature:.3f}"
    )
    return 0
