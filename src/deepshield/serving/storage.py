"""Where a server keeps uploads (and, with a state folder, its job ledger), and what it cleans on start.

Each server holds an exclusive lock (flock, released by the kernel however the process ends) on its
folder. Stateless (no state_dir): uploads go to a fresh private temp folder, and temp folders of
servers that died without cleaning up (their lock is free) are removed at start. With a state_dir:
uploads go to <state_dir>/uploads and jobs to <state_dir>/jobs.sqlite3; one server per state_dir.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

from deepshield.errors import DeepShieldError
from deepshield.plural import numbered

log = logging.getLogger("deepshield.serving")

TEMP_PREFIX = "deepshield-serve-"
LEDGER_NAME = "jobs.sqlite3"
# An unlocked temp folder is removed only once untouched this long: a server from before the lock
# existed holds none, and its folder changes with every upload it takes.
STALE_AFTER_S = 600.0


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on path (a file or folder), None when another process holds it."""
    fd = os.open(path, os.O_RDONLY | (os.O_CREAT if not path.exists() else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def remove_dead_servers_folders(parent: Path, now: float | None = None) -> int:
    """Remove temp upload folders whose server is gone (nobody holds their lock, untouched for
    STALE_AFTER_S). Returns how many."""
    now = time.time() if now is None else now
    removed = 0
    for folder in parent.glob(TEMP_PREFIX + "*"):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or now - info.st_mtime < STALE_AFTER_S:
            continue
        fd = _try_lock(folder)
        if fd is None:
            continue  # a live server's
        try:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    if removed:
        log.info("removed %s left by servers that did not shut down", numbered(removed, "upload folder"))
    return removed


def _unusable(kind: str, folder: Path, exc: OSError) -> DeepShieldError:
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != folder else ""
    return DeepShieldError(f"the {kind} folder {folder} cannot be used: {exc.strerror or exc}{where}")


class Storage:
    def __init__(self, state_dir: Path | None, tmp_dir: Path | None) -> None:
        self.state_dir = state_dir
        self._tmp_parent = Path(tmp_dir or tempfile.gettempdir())
        self._lock_fd: int | None = None
        self._upload_dir: Path | None = None
        if state_dir is not None:
            try:
                state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:  # a file in the way, a folder of another user's
                raise DeepShieldError(f"the state folder {state_dir} cannot be made: {exc.strerror or exc}") from None
            # mkdir's mode is not applied to a folder that exists: one made 755 by hand let other users read
            # the jobs' file names and face crops.
            try:
                state_dir.chmod(0o700)
            except OSError as exc:  # another user's folder: not private to this server
                raise DeepShieldError(f"the state folder {state_dir} cannot be made private: {exc.strerror}") from None
            # A lock file or uploads folder left by a server run as another user (root, before a service
            # user was given the folder), a read-only mount: a PermissionError traceback before.
            try:
                self._lock_fd = _try_lock(state_dir / "server.lock")
            except OSError as exc:
                raise _unusable("state", state_dir, exc) from None
            if self._lock_fd is None:
                raise DeepShieldError(f"another server is using the state folder {state_dir}")
        else:
            self.sweep()
        try:
            # Made now, so that a folder that cannot be made stops the start in one line.
            log.info("uploads go to %s", self.upload_dir)
        except OSError as exc:
            self.close()  # the state folder's lock released: this Storage is not made
            raise _unusable("state" if state_dir is not None else "temp", state_dir or self._tmp_parent, exc) from None

    def sweep(self) -> None:
        """Stateless mode: remove what dead servers left in the temp folder (at start, then periodically)."""
        if self.state_dir is None:
            remove_dead_servers_folders(self._tmp_parent)

    @property
    def ledger_path(self) -> Path | None:
        return None if self.state_dir is None else self.state_dir / LEDGER_NAME

    @property
    def upload_dir(self) -> Path:
        if self._upload_dir is not None and self._upload_dir.is_dir():
            return self._upload_dir
        if self.state_dir is not None:
            self._upload_dir = self.state_dir / "uploads"
            self._upload_dir.mkdir(mode=0o700, exist_ok=True)
        else:
            # mkdtemp: a fresh folder readable by this user only; file names inside are chosen by us.
            self._upload_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self._tmp_parent))
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            self._lock_fd = _try_lock(self._upload_dir)
        return self._upload_dir

    def close(self) -> None:
        """Stateless: the upload folder goes. With a state folder, it stays for the next start."""
        if self.state_dir is None and self._upload_dir is not None:
            shutil.rmtree(self._upload_dir, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
