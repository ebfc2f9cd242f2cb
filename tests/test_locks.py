"""The locks that keep two commands off one output, where a file system keeps none: the work goes on with a
warning instead of stopping at an OSError."""

from __future__ import annotations

import errno
import fcntl
import logging

import pytest

from deepshield.locks import file_lock, folder_lock, waited_lock


def test_a_file_system_without_locks_goes_on_with_a_warning(tmp_path, monkeypatch, caplog):
    # NFS without its lock service: flock raises ENOLCK, and every locked command stopped at an OSError.
    def no_locks(handle, operation):
        if operation != fcntl.LOCK_UN:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with caplog.at_level(logging.WARNING, logger="deepshield.locks"):
        with folder_lock(tmp_path / "run", "this training run"):
            ran.append("folder")
        with file_lock(tmp_path / "rows.csv", "this scan's rows"):
            ran.append("file")
        with waited_lock(tmp_path / "bank.lock"):
            ran.append("waited")
    assert ran == ["folder", "file", "waited"]
    assert caplog.text.count("this file system keeps no locks (No locks available)") == 3

    def failing(handle, operation):  # any other failure is still an error
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fcntl, "flock", failing)
    with pytest.raises(OSError, match="Input/output error"), waited_lock(tmp_path / "bank.lock"):
        pass


def test_a_lock_taken_again_and_again_warns_once(tmp_path, monkeypatch, caplog):
    # tune's grid search takes its claims' lock at every trial: on such a file system each trial warned again.
    def no_locks(handle, operation):
        if operation != fcntl.LOCK_UN:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with caplog.at_level(logging.WARNING, logger="deepshield.locks"):
        for _ in range(3):
            with waited_lock(tmp_path / "study.db.grid-lock"):
                pass
        with waited_lock(tmp_path / "study.db.lock"):  # another lock is warned of in its turn
            pass
    warned = [record.getMessage() for record in caplog.records if "keeps no locks" in record.getMessage()]
    assert [message.split(":")[0] for message in warned] == [
        str(tmp_path / "study.db.grid-lock"),
        str(tmp_path / "study.db.lock"),
    ]
