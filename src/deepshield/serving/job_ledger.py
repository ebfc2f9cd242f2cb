"""The job ledger: every job's state in SQLite, so that accepted jobs survive a crash or restart."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deepshield.errors import DeepShieldError
from deepshield.media.video import VideoSpan
from deepshield.serving.errors import ErrorBody
from deepshield.serving.schemas import FileInfo

log = logging.getLogger("deepshield.serving")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    file TEXT NOT NULL,
    frames INTEGER NOT NULL,
    upload_path TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL,
    progress REAL NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT,
    start_s REAL NOT NULL DEFAULT 0,
    end_s REAL,
    callback_url TEXT,
    callback_status TEXT
)
"""
# Columns added since the first ledger, with their definitions: an older ledger gains them when opened.
_ADDED_COLUMNS = {
    "start_s": "REAL NOT NULL DEFAULT 0",
    "end_s": "REAL",
    "callback_url": "TEXT",
    "callback_status": "TEXT",
}


@dataclass
class JobRecord:
    """One row: what a job is and how far it got (result and error as JSON-ready values)."""

    id: str
    kind: str
    file: FileInfo
    frames: int
    span: VideoSpan
    upload_path: Path
    status: str
    stage: str
    progress: float
    created_at: float
    started_at: float | None
    finished_at: float | None
    result: dict | None
    error: ErrorBody | None
    callback_url: str | None = None
    callback_status: str | None = None


class JobLedger:
    """Thread-safe; one connection, every write committed at once (a SIGKILL loses nothing written)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            # This user's alone (the database and its -wal and -shm were 644), and a deleted job's bytes are
            # overwritten rather than left in free pages: nothing of it survives on disk, as the README says.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute("PRAGMA journal_mode=WAL")
            for own in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if own.exists():
                    own.chmod(0o600)
            self._db.execute(_SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, definition in _ADDED_COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
        except sqlite3.DatabaseError as exc:  # a damaged file: the server died with a traceback
            raise DeepShieldError(
                f"the job ledger {path} cannot be used ({exc}); move it aside to start with no saved jobs"
            ) from None

    @staticmethod
    def _row(record: JobRecord) -> tuple:
        return (
            record.id,
            record.kind,
            record.file.model_dump_json(),
            record.frames,
            str(record.upload_path),
            record.status,
            record.stage,
            record.progress,
            record.created_at,
            record.started_at,
            record.finished_at,
            None if record.result is None else json.dumps(record.result),
            None if record.error is None else record.error.model_dump_json(),
            record.span.start_s,
            record.span.end_s,
            record.callback_url,
            record.callback_status,
        )

    def save(self, record: JobRecord) -> None:
        with self._lock:
            if self._closed:  # a job still running at shutdown: close() has written its last word
                return
            self._write(record)

    def _write(self, record: JobRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._row(record)
        )

    def delete(self, job_ids: list[str]) -> None:
        with self._lock:
            if self._closed:
                return
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in job_ids])
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the deleted rows' copies leave the -wal too

    def load(self) -> list[JobRecord]:
        """Every saved job; a row this version cannot read (saved by another version) is dropped, and said."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created_at").fetchall()
        records = []
        for row in rows:
            try:
                records.append(self._record(row))
            except ValueError as exc:  # pydantic's ValidationError and json's errors among them
                log.warning("job ledger: job %s dropped, unreadable by this version (%s)", row[0], type(exc).__name__)
                self.delete([row[0]])
        return records

    @staticmethod
    def _record(row: tuple) -> JobRecord:
        return JobRecord(
            id=row[0],
            kind=row[1],
            file=FileInfo.model_validate_json(row[2]),
            frames=row[3],
            span=VideoSpan(row[13], row[14]),
            upload_path=Path(row[4]),
            status=row[5],
            stage=row[6],
            progress=row[7],
            created_at=row[8],
            started_at=row[9],
            finished_at=row[10],
            result=None if row[11] is None else json.loads(row[11]),
            error=None if row[12] is None else ErrorBody.model_validate_json(row[12]),
            callback_url=row[15],
            callback_status=row[16],
        )

    def close(self, last: Sequence[JobRecord] = ()) -> None:
        """Write `last` (the jobs a clean stop queues again), then nothing more."""
        with self._lock:
            for record in last:
                self._write(record)
            self._closed = True
            self._db.close()
