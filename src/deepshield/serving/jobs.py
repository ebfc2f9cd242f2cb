"""Analysis jobs (videos, or images submitted as jobs): run by a small thread pool, each under a time limit.

Bounded: at most `max_pending` queued or running (more: 503), at most `max_jobs` remembered
(finished ones are forgotten oldest first), finished ones forgotten `ttl_s` after they end, and a
job running longer than `timeout_s` fails with "timeout" at its next progress report.
A job's uploaded file is deleted as soon as the job ends, however it ends. A cancelled job is
forgotten at once; if it was running, its analysis stops at its next progress report.

With a ledger (a server state folder) every state change is written to SQLite: on start, jobs that
were queued, or running when the server was stopped, run again (their uploads kept), jobs that were
running when the server died are failed (running them again could kill it again), finished ones are served until they expire, and upload
files no queued job refers to are removed.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, TypeAdapter, ValidationError

from deepshield.errors import DeepShieldError
from deepshield.media.video import WHOLE_VIDEO, VideoSpan
from deepshield.plural import numbered, plural
from deepshield.serving.callbacks import CallbackSender
from deepshield.serving.errors import ApiError, ErrorBody, from_library_error
from deepshield.serving.job_ledger import JobLedger, JobRecord
from deepshield.serving.schemas import AnalyzeResponse, FileInfo, JobView, VideoResponse
from deepshield.serving.uploads import Upload

# Job ids are 16 characters (token_urlsafe(12)); a 404 echoes at most this much of whatever was asked for.
_SHOWN_ID_CHARS = 40
log = logging.getLogger("deepshield.serving")

ProgressFn = Callable[[float, str], None]
JobWork = Callable[[ProgressFn], BaseModel]  # a job's analysis, reporting progress; its result


class JobTimeout(Exception):
    """Raised from a job's progress report once its time is up (threads cannot be stopped from outside)."""


class JobCancelled(Exception):
    """Raised from a cancelled job's progress report, to stop its analysis."""


def _kept_for(seconds: float) -> str:
    """How long finished jobs are kept, in words: "1 hour", "5 minutes", "20 seconds" (a TTL under a minute
    read "0 minutes")."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if (seconds >= size and seconds % size == 0) or seconds >= 2 * size:
            count = round(seconds / size)
            return numbered(count, unit)
    return f"{seconds:g} {plural(seconds, 'second')}"


@dataclass
class Job:
    id: str
    kind: str
    file: FileInfo
    frames: int
    upload: Upload
    span: VideoSpan = WHOLE_VIDEO
    status: str = "queued"
    progress: float = 0.0
    stage: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: BaseModel | dict | None = None  # a dict when read back from the ledger
    error: ErrorBody | None = None
    cancelled: bool = False  # set (under the store's lock) once the job is forgotten on request
    # Stopped by a clean shutdown and queued again in the ledger (under the store's lock): its upload stays.
    kept_for_restart: bool = False
    callback_url: str | None = None  # where the finished job is POSTed (serving.callbacks)
    callback_status: str | None = None  # pending / delivered / failed: <why>

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def view(self, ttl_s: float) -> JobView:
        return JobView(
            id=self.id,
            status=self.status,
            kind=self.kind,
            progress=round(self.progress, 3),
            stage=self.stage,
            file=self.file,
            # Frames and a span only apply to a video: an image job does not echo their defaults.
            frames=self.frames if self.kind == "video" else None,
            start_s=self.span.start_s if self.kind == "video" else None,
            end_s=self.span.end_s if self.kind == "video" else None,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            expires_at=None if self.finished_at is None else self.finished_at + ttl_s,
            result=self.result,
            error=self.error,
            callback_url=self.callback_url,
            callback_status=self.callback_status,
        )

    def record(self) -> JobRecord:
        result = self.result.model_dump(mode="json") if isinstance(self.result, BaseModel) else self.result
        return JobRecord(
            id=self.id,
            kind=self.kind,
            file=self.file,
            frames=self.frames,
            span=self.span,
            upload_path=self.upload.path,
            status=self.status,
            stage=self.stage,
            progress=self.progress,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            result=result,
            error=self.error,
            callback_url=self.callback_url,
            callback_status=self.callback_status,
        )

    @classmethod
    def from_record(cls, record: JobRecord) -> Job:
        upload = Upload(record.upload_path, record.file.name, record.file.size_bytes, record.file.sha256, head=b"")
        return cls(
            id=record.id,
            kind=record.kind,
            file=record.file,
            frames=record.frames,
            span=record.span,
            upload=upload,
            status=record.status,
            progress=record.progress,
            stage=record.stage,
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            result=record.result,
            error=record.error,
            callback_url=record.callback_url,
            callback_status=record.callback_status,
        )


_RESULT = TypeAdapter(AnalyzeResponse | VideoResponse)


def _readable(result: dict | BaseModel | None) -> bool:
    try:
        _RESULT.validate_python(result)
    except ValidationError:
        return False
    return True


def _busy(max_pending: int) -> ApiError:
    return ApiError(
        503,
        "busy",
        f"{numbered(max_pending, 'job')} {plural(max_pending, 'is', 'are')} already queued or running; retry in a minute",
        headers={"Retry-After": "30"},
    )


def shutting_down() -> ApiError:
    # A restart is a matter of seconds: a client told when to retry comes back to the new server.
    return ApiError(503, "shutting_down", "the server is shutting down", headers={"Retry-After": "10"})


class JobStore:
    def __init__(
        self,
        workers: int,
        max_pending: int,
        max_jobs: int,
        ttl_s: float,
        timeout_s: float,
        work_for: Callable[[Job], JobWork],
        ledger: JobLedger | None = None,
        callbacks: CallbackSender | None = None,
        on_finish: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self.max_pending = max_pending
        self.max_jobs = max_jobs
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._work_for = work_for
        self._ledger = ledger
        self._callbacks = callbacks
        self._on_finish = on_finish  # hears every job that ends done or failed (the server's metrics)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepshield-job")
        self._closed = False

    # bookkeeping -------------------------------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.finished)

    def running(self) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.status == "running")

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def _save(self, job: Job) -> bool:
        """Write the job to the ledger (True when written, or with no ledger). A failed write (the file
        locked by a backup, a full disk) is logged, and the job goes on in memory: raised from a worker, it
        left the job 'running' for good."""
        if self._ledger is None:
            return True
        try:
            self._ledger.save(job.record())
        except (sqlite3.Error, OSError) as exc:
            log.error("job %s could not be written to the job ledger: %s", job.id, exc)
            return False
        return True

    def _forget(self, job_ids: list[str]) -> None:
        """Drop jobs from memory and ledger (the caller holds the lock)."""
        for job_id in job_ids:
            del self._jobs[job_id]
        if self._ledger is not None and job_ids:
            try:
                self._ledger.delete(job_ids)
            except (sqlite3.Error, OSError) as exc:  # rows left are purged at a later start
                log.error("forgotten jobs could not be deleted from the job ledger: %s", exc)

    def purge(self, now: float | None = None) -> int:
        """Forget finished jobs past their expiry. Returns how many were forgotten."""
        now = time.time() if now is None else now
        with self._lock:
            expired = [
                job_id
                for job_id, job in self._jobs.items()
                if job.finished_at is not None and job.finished_at + self.ttl_s <= now
            ]
            self._forget(expired)
        return len(expired)

    def check_capacity(self) -> None:
        """Refuse (503) before an upload is received when no new job could be taken."""
        if self._closed:
            raise shutting_down()
        if self.pending() >= self.max_pending:
            raise _busy(self.max_pending)

    def get(self, job_id: str) -> Job:
        self.purge()
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            shown = job_id if len(job_id) <= _SHOWN_ID_CHARS else job_id[:_SHOWN_ID_CHARS] + "..."
            raise ApiError(
                404,
                "job_not_found",
                f"no job {shown!r}: unknown, deleted, or finished more than {_kept_for(self.ttl_s)} ago and forgotten",
            )
        return job

    def cancel(self, job_id: str) -> None:
        """Forget a job on request: a queued one never runs, a running one stops at its next progress
        report, a finished one's result is gone. Its upload is deleted (a running job's when it stops)."""
        job = self.get(job_id)
        with self._lock:
            # Cancelled, or forgotten since it was looked up (expired, evicted): removing it again was a 500.
            if job.cancelled or self._jobs.get(job.id) is not job:
                return
            job.cancelled = True
            self._forget([job.id])
            queued = job.status == "queued"  # else _run deletes the upload when the analysis stops
        if queued:
            job.upload.delete()

    # running -------------------------------------------------------------------------------------
    def submit(
        self,
        kind: str,
        file: FileInfo,
        frames: int,
        upload: Upload,
        span: VideoSpan = WHOLE_VIDEO,
        callback_url: str | None = None,
    ) -> Job:
        """Create a job and queue it. Takes ownership of the upload (deleted when the job ends)."""
        self.purge()
        job = Job(
            id=secrets.token_urlsafe(12),
            kind=kind,
            file=file,
            frames=frames,
            upload=upload,
            span=span,
            callback_url=callback_url,
        )
        with self._lock:
            pending = sum(1 for j in self._jobs.values() if not j.finished)
            if self._closed or pending >= self.max_pending:
                upload.delete()
                raise shutting_down() if self._closed else _busy(self.max_pending)
            # The longest finished go first (by submission, a long job that had just ended went first and its
            # poller got a 404). Pending jobs never exceed max_pending < max_jobs, so finished ones make the room.
            finished = [j.id for j in sorted(self._jobs.values(), key=lambda j: j.finished_at or 0.0) if j.finished]
            self._forget(finished[: max(0, len(self._jobs) - self.max_jobs + 1)])
            # Recorded before it is taken: a job the ledger cannot keep would not survive a restart, which
            # is what a state folder promises (it stayed queued in memory, holding a slot, unrun).
            if not self._save(job):
                upload.delete()
                raise ApiError(
                    503,
                    "busy",
                    "the server could not record the job (its job ledger failed); retry later",
                    headers={"Retry-After": "30"},
                )
            self._jobs[job.id] = job
        self._queue(job)
        return job

    def _queue(self, job: Job) -> None:
        try:
            self._executor.submit(self._run, job)
        except RuntimeError:  # executor shut down between the check and here
            with self._lock:
                self._forget([job.id])
            job.upload.delete()
            raise shutting_down() from None

    def _run(self, job: Job) -> None:
        deadline = time.monotonic() + self.timeout_s

        def progress(fraction: float, stage: str) -> None:
            if job.cancelled:
                raise JobCancelled
            if time.monotonic() > deadline:
                raise JobTimeout
            job.progress = max(job.progress, min(1.0, float(fraction)))
            job.stage = stage

        with self._lock:
            if job.cancelled:  # while it was queued: cancel() deleted its upload
                return
            job.started_at = time.time()
            job.status = "running"
            job.stage = "starting"
            self._save(job)
        status, result, error = "failed", None, None
        try:
            result = self._work_for(job)(progress)
            status = "done"
        except JobCancelled:
            pass
        except JobTimeout:
            error = ErrorBody(
                error="timeout",
                detail=f"the analysis did not finish within the {self.timeout_s:g} s job limit; the file is too long or too heavy to decode",
            )
        except DeepShieldError as exc:
            api = from_library_error(exc)
            error = ErrorBody(error=api.code, detail=api.detail)
        except Exception as exc:  # one bad file never takes the worker down
            log.error("job %s failed", job.id, exc_info=True)
            error = ErrorBody(error="internal_error", detail=f"the analysis failed unexpectedly ({type(exc).__name__})")
        finally:
            with self._lock:  # under the lock: close() keeps the upload of a job it queues again
                if not job.kept_for_restart:
                    job.upload.delete()
        with self._lock:  # a job cancelled meanwhile is forgotten: nothing of it is kept
            if job.cancelled:
                return
            # Everything a reader needs is in place before the status says the job is finished.
            job.result, job.error = result, error
            if status == "done":
                job.progress = 1.0
            job.finished_at = time.time()
            job.stage = status
            job.status = status
            self._save(job)
        self._on_finish(job)
        self._call_back(job)

    def _call_back(self, job: Job) -> None:
        """Send a finished job to its callback URL, if it names one; the outcome becomes its callback_status.
        The delivery knows the job by its id alone: one waiting for a receiver that is down keeps nothing of a
        job forgotten meanwhile (deleted, expired), and sends it no more."""
        if job.callback_url is None or self._callbacks is None:
            return
        job_id = job.id
        self._report_callback(job_id, "pending")
        self._callbacks.send(
            job.callback_url,
            job_id,
            lambda: self._callback_body(job_id),
            lambda outcome: self._report_callback(job_id, outcome),
        )

    def _callback_body(self, job_id: str) -> bytes | None:
        """The job as `GET /v1/jobs/{id}` gives it, as a callback's body; None once it is forgotten."""
        with self._lock:
            job = self._jobs.get(job_id)
        return None if job is None else job.view(self.ttl_s).model_dump_json().encode()

    def _report_callback(self, job_id: str, outcome: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:  # not forgotten meanwhile
                job.callback_status = outcome
                self._save(job)

    # restart -------------------------------------------------------------------------------------
    def recover(self, upload_dir: Path) -> None:
        """Take the ledger's jobs back after a restart (see the module docstring)."""
        if self._ledger is None:
            return
        requeue, failed, undelivered = [], [], []
        now = time.time()
        with self._lock:
            for record in self._ledger.load():
                job = Job.from_record(record)
                if job.status == "running" or (job.status == "queued" and not job.upload.path.is_file()):
                    job.status = job.stage = "failed"
                    job.finished_at = now
                    job.error = ErrorBody(
                        error="server_restarted",
                        detail="the server stopped before this job finished; submit the file again",
                    )
                    job.upload.delete()
                    self._save(job)
                    failed.append(job)
                elif job.status == "done" and not _readable(job.result):
                    # Saved by an earlier version whose result this one's schema refuses: every poll was a 500.
                    job.status = job.stage = "failed"
                    job.result = None
                    job.error = ErrorBody(
                        error="result_unreadable",
                        detail="this job's result was saved by another version of the server, which this one "
                        "cannot read; submit the file again",
                    )
                    self._save(job)
                elif job.status == "queued":
                    requeue.append(job)
                elif job.callback_status == "pending":  # finished, but the server stopped before telling
                    undelivered.append(job)
                self._jobs[job.id] = job
        kept = {job.upload.path.name for job in requeue}
        orphans = [path for path in upload_dir.glob("upload-*.bin") if path.name not in kept]
        for path in orphans:
            path.unlink(missing_ok=True)
        log.info(
            "job ledger: %s requeued, %s removed",
            numbered(len(requeue), "job"),
            numbered(len(orphans), "orphaned upload"),
        )
        for job in requeue:
            self._queue(job)
        self.purge()
        # Their submitters hear of the failed as of any failure; a finished job's callback the last run
        # did not deliver is sent again, unless its result has expired meanwhile.
        for job in failed + [job for job in undelivered if job.id in self._jobs]:
            self._call_back(job)

    @property
    def refusing_new(self) -> bool:
        """Whether the server is shutting down (refuse_new or close was called)."""
        return self._closed

    def refuse_new(self) -> None:
        """Take no more jobs (503 shutting_down), the rest left as it is: a server shutting down still
        receives the uploads in flight, and would drop the jobs made of them."""
        self._closed = True

    def close(self) -> None:
        """Stop taking jobs; running ones stop at their next progress report (the process waited up to the
        job time limit for a result it then dropped). Queued jobs are dropped (their files deleted), unless a
        ledger keeps them for the next start; with one, the running ones are queued again there too: a clean
        stop is no crash, which a job might cause again (they were failed, "submit the file again")."""
        self.refuse_new()
        requeued: list[JobRecord] = []
        with self._lock:
            for job in self._jobs.values():
                if job.status == "running":
                    job.cancelled = True
                    if self._ledger is not None and job.upload.path.is_file():
                        job.kept_for_restart = True
                        record = job.record()
                        requeued.append(replace(record, status="queued", stage="queued", progress=0.0, started_at=None))
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._callbacks is not None:
            self._callbacks.close()
        if self._ledger is not None:
            self._ledger.close(requeued)
            return
        with self._lock:
            for job in self._jobs.values():
                if job.status == "queued":
                    job.upload.delete()
