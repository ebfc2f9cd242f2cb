"""The errors a user can meet. Each carries a message meant to be shown as-is."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
EXIT_READER_GONE = 141  # 128 + SIGPIPE: what a shell reports of a command whose reader left (`| head`)


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


def stop_as_on_ctrl_c(signum: int, frame: object) -> None:
    """A signal handler (SIGTERM's) that stops the work as Ctrl-C does, through its clean-up."""
    raise KeyboardInterrupt


def exit_status(run: Callable[[], int | None], program: str) -> int:
    """Run an entry point (the CLI, a bench, a script) to its exit status: a refusal (DeepShieldError)
    or Ctrl-C ends it with one line on stderr, not a traceback."""
    try:
        return run() or 0
    except DeepShieldError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of standard output went away (`| head`): a traceback said so
        # Python flushes standard output at exit, which would fail again: it goes nowhere from here.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE
