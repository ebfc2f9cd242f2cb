"""Exclusive write access to a folder (a dataset being prepared or balanced, a training run) for as long
as one command writes it: a second command on the same folder is refused at once instead of mixing its
files with the first's. The lock is the kernel's (flock), so a killed process holds it no longer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from deepshield.errors import DeepShieldError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def folder_lock(root: Path, what: str) -> Iterator[None]:
    """Hold `root`'s lock (made with the folder when missing); `what` names the folder in the refusal."""
    import fcntl

    made = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DeepShieldError(
                f"{root}: another deepshield process is writing {what}; wait for it to finish"
            ) from exc
        try:
            yield
        finally:
            # A folder made for work that stopped before writing anything (a source missing, a cluster
            # unreachable) is not left behind holding only its lock.
            if made and [entry.name for entry in root.iterdir()] == [LOCK_NAME]:
                (root / LOCK_NAME).unlink()
                root.rmdir()
            fcntl.flock(handle, fcntl.LOCK_UN)
