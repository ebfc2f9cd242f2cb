"""Exclusive write access to what one command writes (a dataset being prepared or balanced, a training run,
a scan's --out) for as long as it writes it: a second command on the same folder or file is refused at once
instead of mixing its files or rows with the first's. The lock is the kernel's (flock), so a killed process
holds it no longer."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from deepshield.errors import DeepShieldError

LOCK_NAME = ".lock"
# What flock raises on a file system that keeps no locks (NFS without its lock service, some FUSE mounts).
_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS})
# The lock files this process has warned of (_flock): a lock taken again and again (tune's grid claims, at
# every trial) warned each time.
_warned: set[Path] = set()

log = logging.getLogger(__name__)


def process_running(pid: int) -> bool:
    """A process of that pid runs on this machine (another user's too): what a killed writer's or worker's
    leftovers are told by. A number no pid can be is taken as running (not ours to clear)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: someone else's
        return True
    return pid > 0


@contextlib.contextmanager
def folder_lock(root: Path, what: str) -> Iterator[None]:
    """Hold `root`'s lock (made with the folder when missing); `what` names the folder in the refusal."""
    made = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    with _held(root / LOCK_NAME, root, what):
        try:
            yield
        finally:
            # A folder made for work that stopped before writing anything (a source missing, a cluster
            # unreachable) is not left behind holding only its lock.
            if made and [entry.name for entry in root.iterdir()] == [LOCK_NAME]:
                (root / LOCK_NAME).unlink()
                root.rmdir()


@contextlib.contextmanager
def file_lock(path: Path, what: str, named: Path | None = None) -> Iterator[bool]:
    """Hold the lock of the file `path` itself, made when missing (and removed again when it is still empty at
    the end: nothing was written); `what` names it in the refusal, after `named` (default: `path`). Gives
    whether it made the file."""
    made = not path.exists()
    with _held(path, named or path, what):
        # The file it made, by its identity: one saved in its place meanwhile (an editor's, empty) is the user's.
        own = _identity(path) if made else None
        try:
            yield made
        finally:
            if own is not None and _identity(path) == own and path.stat().st_size == 0:
                path.unlink()


@contextlib.contextmanager
def _held(lock_file: Path, named: Path, what: str) -> Iterator[None]:
    def refused(handle: IO[str]) -> bool:
        holder = _holder(handle)
        raise DeepShieldError(
            f"{named}: another deepshield process is writing {what}"
            + (f" (pid {holder})" if holder is not None else "")
            + "; wait for it to finish"
        )

    with _locked(lock_file, refused):
        yield


@contextlib.contextmanager
def waited_lock(lock_file: Path | None, waiting: Callable[[int | None], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (made when missing) across processes, waiting for whoever holds
    it (released by the kernel if the holder dies); None: no lock. `waiting` is told the holder's pid (None:
    not known) before a wait."""
    if lock_file is None:
        yield
        return
    import fcntl

    def wait(handle: IO[str]) -> bool:
        if waiting is not None:
            waiting(_holder(handle))
        return _flock(handle, lock_file, fcntl.LOCK_EX)

    with _locked(lock_file, wait):
        yield


@contextlib.contextmanager
def _locked(lock_file: Path, busy: Callable[[IO[str]], bool]) -> Iterator[None]:
    """Hold the flock of the file named `lock_file` (made when missing); `busy(handle)`, where another process
    holds it: raises, or waits for it and gives whether it is locked (False: the file system keeps no locks).
    A lock file is removed by its last holder (file_lock's, a bundle's once in place): one opened before its
    removal and locked after it is a file no longer named, which the next process to come does not see, its
    own new file locked at once, two processes then writing 'under the lock'. Such a file is let go and
    the one named now taken instead."""
    import fcntl

    while True:
        with open(lock_file, "a") as handle:
            try:
                locked = _flock(handle, lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                locked = busy(handle)
            if locked and not _still_named(handle, lock_file):
                # Its folder too may have gone with it (folder_lock's, made for work that wrote nothing).
                lock_file.parent.mkdir(parents=True, exist_ok=True)
                continue
            try:
                yield
            finally:
                if locked:
                    fcntl.flock(handle, fcntl.LOCK_UN)
            return


def _still_named(handle: IO[str], lock_file: Path) -> bool:
    """Whether `lock_file` still names the file open as `handle` (not removed, nor replaced, since it was opened)."""
    opened = os.fstat(handle.fileno())
    return _identity(lock_file) == (opened.st_dev, opened.st_ino)


def _identity(path: Path) -> tuple[int, int] | None:
    """The file `path` names, as the file system tells files apart (None: no such file)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return None
    return named.st_dev, named.st_ino


def _flock(handle: IO[str], lock_file: Path, operation: int) -> bool:
    """flock(handle, operation); False, with a warning (once a lock file), where the file system keeps no locks:
    the work goes on unguarded against a second process, as before it was locked, rather than stopping at an
    OSError."""
    import fcntl

    try:
        fcntl.flock(handle, operation)
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise
        if lock_file not in _warned:  # once a file: what it says holds for every later try
            _warned.add(lock_file)
            log.warning(
                "%s: this file system keeps no locks (%s): going on without guarding against a second process",
                lock_file,
                exc.strerror or exc,
            )
        return False
    return True


def logged_wait(logger: logging.Logger, what: str) -> Callable[[int | None], None]:
    """A waited_lock's `waiting`: a warning that `what` is being built by another process, which is waited for."""

    def waiting(holder: int | None) -> None:
        by = f" (pid {holder})" if holder is not None else ""
        logger.warning("%s is being built by another process%s: waiting for it", what, by)

    return waiting


def _holder(handle: IO[str]) -> int | None:
    """The process holding the flock on `handle`'s file, as Linux lists it in /proc/locks; None elsewhere."""
    info = os.fstat(handle.fileno())
    where = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4321 fd:01:1234567 0 EOF"; a waiter's line has "->" after the number.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where and fields[4].isdigit():
            return int(fields[4])
    return None
