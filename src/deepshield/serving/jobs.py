"""Analysis jobs (videos, or images submitted as jobs): run by a small thread pool, kept in memory.

Bounded: at most `max_pending` queued or running (more: 503), at most `max_jobs` remembered
(finished ones are forgotten oldest first), finished ones forgotten `ttl_s` after they end.
A job's uploaded file is deleted as soon as the job ends, however it ends.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deepshield.errors import DeepShieldError
from deepshield.serving.errors import ApiError, ErrorBody, from_library_error
from deepshield.serving.schemas import FileInfo, JobView
from deepshield.serving.uploads import Upload

log = logging.getLogger("deepshield.serving")

ProgressFn = Callable[[float, str], None]
JobWork = Callable[[ProgressFn], object]


@dataclass
class Job:
    id: str
    kind: str
    file: FileInfo
    frames: int
    upload: Upload
    status: str = "queued"
    progress: float = 0.0
    stage: str = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: object = None
    error: ErrorBody | None = None

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
            frames=self.frames,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            expires_at=None if self.finished_at is None else self.finished_at + ttl_s,
            result=self.result,
            error=self.error,
        )


class JobStore:
    def __init__(self, workers: int, max_pending: int, max_jobs: int, ttl_s: float) -> None:
        self.max_pending = max_pending
        self.max_jobs = max_jobs
        self.ttl_s = ttl_s
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepshield-job")
        self._closed = False

    # bookkeeping -------------------------------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if not job.finished)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def purge(self, now: float | None = None) -> int:
        """Forget finished jobs past their expiry. Returns how many were forgotten."""
        now = time.time() if now is None else now
        with self._lock:
            expired = [job_id for job_id, job in self._jobs.items() if job.finished and job.finished_at + self.ttl_s <= now]
            for job_id in expired:
                del self._jobs[job_id]
        return len(expired)

    def check_capacity(self) -> None:
        """Refuse (503) before an upload is received when no new job could be taken."""
        if self._closed:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        if self.pending() >= self.max_pending:
            raise ApiError(503, "busy", f"{self.max_pending} jobs are already queued or running; retry in a minute", headers={"Retry-After": "30"})

    def get(self, job_id: str) -> Job:
        self.purge()
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id!r}: unknown, or finished more than {self.ttl_s / 60:.0f} minutes ago and forgotten")
        return job

    # running -------------------------------------------------------------------------------------
    def submit(self, kind: str, file: FileInfo, frames: int, upload: Upload, work: JobWork) -> Job:
        """Create a job and queue it. Takes ownership of the upload (deleted when the job ends)."""
        self.purge()
        job = Job(id=secrets.token_urlsafe(12), kind=kind, file=file, frames=frames, upload=upload)
        with self._lock:
            pending = sum(1 for j in self._jobs.values() if not j.finished)
            if self._closed or pending >= self.max_pending:
                upload.delete()
                raise ApiError(503, "busy", f"{self.max_pending} jobs are already queued or running; retry in a minute", headers={"Retry-After": "30"})
            while len(self._jobs) >= self.max_jobs:
                oldest = next((j for j in self._jobs.values() if j.finished), None)
                if oldest is None:  # cannot happen while max_pending < max_jobs; kept for safety
                    upload.delete()
                    raise ApiError(503, "busy", "too many jobs in memory; retry later")
                del self._jobs[oldest.id]
            self._jobs[job.id] = job
        try:
            self._executor.submit(self._run, job, work)
        except RuntimeError:  # executor shut down between the check and here
            with self._lock:
                self._jobs.pop(job.id, None)
            upload.delete()
            raise ApiError(503, "shutting_down", "the server is shutting down") from None
        return job

    def _run(self, job: Job, work: JobWork) -> None:
        def progress(fraction: float, stage: str) -> None:
            job.progress = max(job.progress, min(1.0, float(fraction)))
            job.stage = stage

        job.started_at = time.time()
        job.status = "running"
        job.stage = "starting"
        status, result, error = "failed", None, None
        try:
            result = work(progress)
            status = "done"
        except DeepShieldError as exc:
            api = from_library_error(exc)
            error = ErrorBody(error=api.code, detail=api.detail)
        except Exception as exc:  # noqa: BLE001 - one bad file never takes the worker down
            log.error("job %s failed", job.id, exc_info=True)
            error = ErrorBody(error="internal_error", detail=f"the analysis failed unexpectedly ({type(exc).__name__})")
        finally:
            job.upload.delete()
        # Everything a reader needs is in place before the status says the job is finished.
        job.result, job.error = result, error
        if status == "done":
            job.progress = 1.0
        job.finished_at = time.time()
        job.stage = status
        job.status = status

    def close(self) -> None:
        """Stop taking jobs, drop the queued ones (deleting their files), let running ones end."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for job in self._jobs.values():
                if job.status == "queued":
                    job.upload.delete()
