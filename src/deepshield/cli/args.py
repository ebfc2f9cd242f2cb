"""Argument types shared by the commands: a bad value is a usage error (exit 2) with a clear message."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from deepshield.engines import ENGINES
from deepshield.media.units import parse_clock_time
from deepshield.strict import check_version

if TYPE_CHECKING:
    from deepshield.tracking.tracker import Tracker


def given_path(text: str) -> Path:
    """A file or folder named on the command line. An empty one is refused: Path("") is the current
    folder, so `deepshield scan "$UNSET"` scanned it, and `prepare --out ""` wrote into it."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no file or folder (an unset shell variable?)")
    return Path(text)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


WATCH_SECONDS = (0.1, 86_400.0)  # a look a tenth of a second to a day apart


def watch_interval(text: str) -> float:
    """Seconds between a watch's looks: 1e10 ended a whole scan in an OverflowError, 1e-300 looked without rest."""
    low, high = WATCH_SECONDS
    value = float(text)
    if not low <= value <= high:  # nan fails the comparison
        raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g} seconds")
    return value


def positive_seconds(text: str) -> float:
    """A time limit in seconds: finite and above 0 (`tune --timeout nan` never timed out, and ran trials for good)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError("must be a finite number of seconds above 0")
    return value


def int_up_to(maximum: int):
    """An argument type: an integer from 1 to `maximum`."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}")
        return value

    return parse


def int_from(low: int, high: int, name: str, note: str = "") -> Callable[[str], int]:
    """An argument type: an integer from `low` to `high`, named `name` in argparse's "invalid ... value"."""

    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}{note}")
        return value

    parse.__name__ = name
    return parse


# A TCP port to listen on, 0 for any free one: 70000 ended `serve` in bind()'s OverflowError traceback.
port_number = int_from(0, 65535, "port_number", " (0: any free one)")


def bundle_folder(text: str) -> str:
    """A model bundle named on the command line: its folder, or "default" (the shipped one). An empty one is
    refused: read as the current folder, `--model "$UNSET"` loaded a bundle there or failed naming "."."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no bundle folder (an unset shell variable?)")
    return text


def model_argument(
    parser: argparse.ArgumentParser,
    flag: str = "--model",
    help: str = "model bundle folder (default: the shipped model)",
) -> None:
    parser.add_argument(flag, type=bundle_folder, default=None, metavar="BUNDLE", help=help)


# A JPEG quality for packed face crops: below 50 their blocking would be a cue of its own.
jpeg_quality = int_from(50, 100, "jpeg_quality")


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or a positive integer")
    return value


def video_time(text: str) -> float:
    """A time in a video: seconds, m:ss or h:mm:ss."""
    try:
        return parse_clock_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def bundle_name(text: str) -> str:
    """A model bundle's name, as its card and every verdict carry it: soup --name '' wrote a card of no name
    ("bundle written to s:  0.0.0"), export --name '' took the run's name unsaid."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a bundle needs a name")
    return text


def bundle_version(text: str) -> str:
    """A model bundle's version (deepshield.strict.check_version)."""
    try:
        return check_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is {exc}") from None


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def trust_anchors_argument(parser: argparse.ArgumentParser) -> None:
    """--trust-anchors PEM: the commands that read Content Credentials (scan, inspect)."""
    parser.add_argument(
        "--trust-anchors",
        type=given_path,
        metavar="PEM",
        help="root certificates (e.g. the C2PA trust list) whose Content Credentials signers count as trusted",
    )


def ffpp_compression_argument(parser: argparse.ArgumentParser) -> None:
    """--ffpp-compression (prepare, evaluate, calibrate): FaceForensics++ levels to read, every one by default."""
    parser.add_argument(
        "--ffpp-compression",
        action="append",
        metavar="LEVEL",
        help="FaceForensics++ level to read, e.g. c23 (repeatable; default: every level found)",
    )


def progress_argument(parser: argparse.ArgumentParser) -> None:
    """--no-progress: the bars are drawn only where stderr is a terminal; this keeps them off one too
    (a terminal session piped to a log)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (drawn on a terminal only)")


def assignments_argument(parser: argparse.ArgumentParser, flag: str, dest: str, help: str) -> None:
    """A repeatable dotted `KEY=VALUE` option (config overrides of train and tune), collected in a list."""
    parser.add_argument(flag, dest=dest, action="append", default=[], metavar="KEY=VALUE", help=help)


def config_arguments(parser: argparse.ArgumentParser, set_help: str) -> None:
    """--config, --set and --data-dir: a training configuration as `config_overrides` reads it (train, facebank)."""
    parser.add_argument("--config", type=given_path, help="TOML or YAML configuration (default: training/default.toml)")
    assignments_argument(parser, "--set", "overrides", set_help)
    parser.add_argument(
        "--data-dir",
        type=given_path,
        help="folder that relative data paths are read from (default: $DEEPSHIELD_DATA_ROOT)",
    )


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The --set assignments, with --data-dir as data.root."""
    return list(args.overrides) + ([f"data.root={args.data_dir.resolve()}"] if args.data_dir else [])


def engine_arguments(parser: argparse.ArgumentParser, workers_help: str | None = None) -> None:
    """--engine / --ray-address (and --workers when `workers_help` is given), shared by scan, prepare, evaluate,
    calibrate and tune."""
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where the work runs: this machine (default) or a Ray cluster (pip install 'deepfake-shield[ray]')",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        default=None,
        help="Ray cluster to join with --engine ray: auto (the cluster this machine joined with `ray start`) or HOST:6379 (default: $RAY_ADDRESS, "
        "else a cluster started here with `ray start`, else a private local Ray instance)",
    )
    if workers_help is not None:
        parser.add_argument("--workers", type=positive_int, default=None, help=workers_help)


def check_engine_arguments(args: argparse.Namespace) -> None:
    from deepshield.errors import DeepShieldError

    if args.ray_address and args.engine != "ray":
        raise DeepShieldError("--ray-address needs --engine ray")


def check_output_file(path: Path, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written (a folder, an unwritable place), so
    that a long run is not lost at its end. The file is not emptied; one made to try is removed."""
    from deepshield.errors import DeepShieldError

    if path.is_dir():
        raise DeepShieldError(f"{flag} {path} is a folder: name a file")
    _refuse_a_file_above(path, flag)
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise DeepShieldError(f"{flag} {path} cannot be written: {exc.strerror or exc}") from None
    if not existed:
        # Through a dangling link, the file made is where it points: removing the link itself left that empty
        # file, and no link. (realpath: a link loop does not raise.)
        (Path(os.path.realpath(path)) if path.is_symlink() else path).unlink()


def _refuse_a_file_above(path: Path, flag: str) -> None:
    """A path under a file can never be made: say which file is in the way."""
    from deepshield.errors import DeepShieldError

    for above in path.parents:
        if above.exists():
            if not above.is_dir():
                raise DeepShieldError(f"{flag} {path} cannot be written: {above} is a file, not a folder")
            return


def check_output_folder(path: Path, flag: str) -> None:
    """Refuse, before any work, an output folder that is a file, cannot be made or cannot be written in
    (a read-only mount), so that a long run is not lost at its end. Nothing is left by the check: the
    folders it made to try are removed, its parents' too (train's check of run_dir/checkpoints left run_dir
    behind, empty, when a later check refused the run)."""
    from deepshield.errors import DeepShieldError

    if path.exists() and not path.is_dir():
        raise DeepShieldError(f"{flag} {path} is a file: name a folder")
    _refuse_a_file_above(path, flag)
    made = [folder for folder in (path, *path.parents) if not folder.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise DeepShieldError(f"{flag} {path} cannot be written: {exc.strerror or exc}") from None
    for folder in made:  # deepest first; one something else wrote in meanwhile stays, with those above it
        try:
            folder.rmdir()
        except OSError:
            break


def tracking_arguments(parser: argparse.ArgumentParser, what: str, experiment: str) -> None:
    """--tracking-uri and --experiment, for a command that can log `what` to MLflow."""
    parser.add_argument(
        "--tracking-uri", default=None, metavar="URI", help=f"log {what} to MLflow here (e.g. sqlite:///mlruns.db)"
    )
    parser.add_argument(
        "--experiment",
        type=experiment_name,
        default=experiment,
        help=f"MLflow experiment name (default {experiment})",
    )


def experiment_name(text: str) -> str:
    """An MLflow experiment's name: an empty one was refused by MLflow only once the work was done."""
    if not text:
        raise argparse.ArgumentTypeError("an MLflow experiment needs a name")
    return text


def training_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri or --no-tracking (train, tune), the configuration's tracking section by default: both
    given, the URI was taken and nothing logged to it, unsaid."""
    either = parser.add_mutually_exclusive_group()
    either.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: the configuration's tracking.uri, sqlite:///mlruns.db in the packaged one)",
    )
    either.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def check_tracking_store(args: argparse.Namespace) -> None:
    """--tracking-uri's store, opened before the work: one that cannot be used was refused only after the
    whole evaluation (its report written, exit 2 all the same). These commands log only when asked, so the
    advice is to leave --tracking-uri out (they have no --no-tracking)."""
    if args.tracking_uri:
        from deepshield.tracking.tracker import TRACKING_OPTIONAL, check_store

        check_store(args.tracking_uri, args.experiment, TRACKING_OPTIONAL)


def log_to_mlflow(args: argparse.Namespace, run_name: str, log: Callable[[Tracker], None]) -> None:
    """One MLflow run that `log` fills (marked FAILED if it raises, KILLED if stopped), then where to look at it."""
    from deepshield.tracking import open_tracker, where_to_look
    from deepshield.tracking.tracker import TRACKING_OPTIONAL

    tracker = open_tracker(
        True,
        args.tracking_uri,
        args.experiment,
        TRACKING_OPTIONAL,
        run_name=run_name,
        tags={"deepshield.command": args.command},
    )
    try:
        log(tracker)
    except BaseException as exc:  # Ctrl-C during a slow upload of the report left the run RUNNING for good
        tracker.finish("FAILED" if isinstance(exc, Exception) else "KILLED")
        raise
    tracker.finish()
    run_id = tracker.run_id
    assert run_id is not None, "open_tracker(True, ...) starts an MLflow run"
    if tracker.failed:  # said when it failed; the results are written all the same
        print(f"MLflow run {run_id} ({args.tracking_uri}) holds only part of what was logged")
        return
    print(f"logged to MLflow run {run_id} ({args.tracking_uri})")
    print(where_to_look(args.tracking_uri, run_id))
