"""One home for what a deepshield process keeps off its stderr: the native libraries' own log lines
(MediaPipe, TensorFlow Lite, absl and glog write straight to file descriptor 2, not through Python's
logging) and Pillow's warnings about a file it reads anyway. The commands, the server and worker
processes quiet themselves (`quiet_process`); the Python API changes nothing of its host's for good."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator

# Read by glog / TensorFlow when they start: only errors and worse. Engines pass these to workers.
QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"}
# Pillow warns of what it reads past (corrupt EXIF tags, an invalid APNG chunk, a picture above its own
# bomb guard, which our pixel limits supersede): the file is read all the same, and a scan's table or a
# server's log is no place for it.
_PILLOW_MODULES = r"(PIL|pillow_heif)(\.|$)"


def quiet_environment() -> None:
    """Set QUIET_ENV in this process (values already set by the user win)."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)


def quiet_process() -> None:
    """What a deepshield command, server or worker process sets once, at its start: QUIET_ENV, and
    Pillow's warnings ignored. Not done on import: a library leaves its host's filters alone."""
    quiet_environment()
    warnings.filterwarnings("ignore", module=_PILLOW_MODULES)


class _StderrSilence:
    """Descriptor 2 pointed at /dev/null, and QUIET_ENV set where unset, from the first thread in to the
    last one out: each saving and restoring descriptor 2 on its own, two detectors built at once left
    it at /dev/null for good. The environment is restored too, so a host process and its children keep
    their own log levels (the native libraries read them as they load, inside the silence)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved_stderr: int | None = None
        self._saved_env: dict[str, str | None] = {}

    def enter(self) -> None:
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                return
            self._saved_env = {name: os.environ.get(name) for name in QUIET_ENV}
            quiet_environment()
            sys.stderr.flush()
            try:
                self._saved_stderr = os.dup(2)
            except OSError:  # no descriptor 2 (a detached process): nothing to silence
                return
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)

    def leave(self) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth > 0:
                return
            if self._saved_stderr is not None:
                os.dup2(self._saved_stderr, 2)
                os.close(self._saved_stderr)
                self._saved_stderr = None
            for name, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


_STDERR_SILENCE = _StderrSilence()


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Silence file descriptor 2 while native graphs start and run once.

    Some of their lines ignore QUIET_ENV ("INFO: Created TensorFlow Lite XNNPACK delegate",
    "All log messages before absl::InitializeLog()", the feedback-manager warnings of the first
    inference). Kept to start-up: while it lasts, anything else written to stderr is lost too."""
    _STDERR_SILENCE.enter()
    try:
        yield
    finally:
        _STDERR_SILENCE.leave()
