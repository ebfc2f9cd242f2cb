"""One home for the native libraries' log settings: MediaPipe, TensorFlow Lite, absl and glog write
their own lines straight to file descriptor 2 (not through Python's logging), on every command, in
the server's log and in worker processes. Everything that starts them goes through here."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# Read by glog / TensorFlow when they start: only errors and worse. Engines pass these to workers.
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}


def quiet_environment() -> None:
    """Set QUIET_ENV in this process (values already set by the user win)."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null while native graphs start and run once.

    Some of their lines ignore QUIET_ENV ("INFO: Created TensorFlow Lite XNNPACK delegate",
    "All log messages before absl::InitializeLog()", the feedback-manager warnings of the first
    inference). Kept to start-up: while it lasts, anything else written to stderr is lost too."""
    quiet_environment()
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a detached process): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
