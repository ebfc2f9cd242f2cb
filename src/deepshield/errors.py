"""The errors a user can meet. Each carries a message meant to be shown as-is."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeGuard

from deepshield.one_line import one_line

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
EXIT_READER_GONE = 141  # 128 + SIGPIPE: what a shell reports of a command whose reader left (`| head`)
# Writes the storage refuses whatever is written (a full disk, a quota, `ulimit -f`, a file system remounted
# read-only): each ended a command in a traceback, many lines above what went wrong. (Not EIO: a damaged file
# gives it on a read, and the other files go on.)
_STORAGE_ERRORS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS))


def say(line: str) -> None:
    """One line on stderr, as an operator reads it: control characters in it (a file name's newline or
    carriage return, an ANSI escape that clears the screen or makes a link) written escaped, as Python writes
    them (\\n, \\x1b), so no name can forge a line of its own or drive the terminal."""
    print(one_line(line), file=sys.stderr)


class _CurrentStderrHandler(logging.StreamHandler):
    """Logs to whatever sys.stderr is when a record is written, not when logging was set up: callers that
    swap stderr (test runners, embedding applications) never get writes to a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _OneLineFormatter(logging.Formatter):
    """A log record's message on its line, whatever it quotes: control characters in it (a file name's newline,
    an ANSI escape) escaped as `say` writes them. A traceback after it keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return one_line(super().formatMessage(record))


def log_to_stderr(level: int) -> None:
    """The process's log records from `level` up on stderr, one line each as `LEVEL logger: message`: the
    commands' logging, and their worker processes' (FileJob.worker_init)."""
    handler = _CurrentStderrHandler()
    handler.setFormatter(_OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class DeepShieldError(Exception):
    """Base class: anything the product refuses on purpose, with a message for the user."""


class MissingFileError(DeepShieldError):
    """No file at the path given, or a symbolic link to nothing. Not an OSError: the product's own
    handlers of OSError would take it for a read that failed."""


class UnsupportedMediaError(DeepShieldError):
    """The bytes are not an image or video type we read."""


class CorruptMediaError(DeepShieldError):
    """The file claims a supported type but cannot be decoded."""


class MediaTooLargeError(DeepShieldError):
    """The file exceeds a byte, pixel or duration limit."""


class VideoSpanError(DeepShieldError):
    """The part of a video asked for is malformed or not in the video."""


class TrustAnchorsError(DeepShieldError):
    """A file of trust anchors for Content Credentials cannot be read or holds no certificate."""


class BundleError(DeepShieldError):
    """A model bundle is missing, incomplete or inconsistent with its model card."""


def storage_failed(error: BaseException) -> TypeGuard[OSError]:
    """The error is the storage's refusal (a full disk, say), not the work's: every write after it fails
    alike, and the same work succeeds once there is room."""
    return isinstance(error, OSError) and error.errno in _STORAGE_ERRORS


def stop_as_on_ctrl_c(signum: int, frame: object) -> None:
    """A signal handler (SIGTERM's) that stops the work as Ctrl-C does, through its clean-up."""
    raise KeyboardInterrupt


class OutputError(DeepShieldError):
    """Standard output cannot be written: closed (`>&-`), a full disk (`> /dev/full`), an I/O error."""


class _GuardedStdout:
    """Standard output whose failed writes (other than a reader that left) end the command with one
    line naming standard output, where a traceback showed instead; everything else is the stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def writelines(self, lines) -> None:
        self._guarded(self._stream.writelines, lines)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write standard output: {exc.strerror or exc}") from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _ClosedStdout:
    """What standard output is when the command was started without one (`>&-`): Python leaves None."""

    def write(self, text: str) -> int:
        if not text:
            return 0
        raise OSError(errno.EBADF, "it is closed")

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(errno.EBADF, "it is closed")


def _keep_standard_descriptors() -> None:
    """A closed file descriptor 0 or 1 would be the next file opened (an --out), where native code that
    writes to fd 1 would then write: each is held on /dev/null instead. sys.stdin and sys.stdout stay None."""
    for fd in (0, 1):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def exit_status(run: Callable[[], int | None], program: str) -> int:
    """Run an entry point (the CLI, a bench, a script) to its exit status: a refusal (DeepShieldError),
    Ctrl-C, standard output that cannot be written or storage that fails (a full disk: the file named
    when the error names one) ends it with one line on stderr, not a traceback."""
    _keep_standard_descriptors()
    original = sys.stdout
    sys.stdout = _GuardedStdout(original if original is not None else _ClosedStdout())
    try:
        try:
            status = run() or 0
        except SystemExit:  # argparse's --help and --version: their text is still to be flushed
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at exit, where a failure is a line of "Exception ignored" and status 120
        return status
    except DeepShieldError as exc:
        if isinstance(exc, OutputError):
            _discard_stdout(original)
        say(f"{program}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        say(f"{program}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of standard output went away (`| head`): a traceback said so
        _discard_stdout(original)
        return EXIT_READER_GONE
    except OSError as exc:
        if not storage_failed(exc):
            raise
        where = "" if exc.filename is None else f"{os.fsdecode(exc.filename)}: "
        say(f"{program}: error: {where}{exc.strerror}")
        return EXIT_USAGE
    finally:
        sys.stdout = original


def _discard_stdout(stream) -> None:
    """Python flushes standard output at exit, which would fail again (a line of "Exception ignored"
    and status 120): what is left of it goes nowhere from here."""
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor (a test's)
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
