"""Server settings: limits, concurrency, jobs and the optional API key. Each can be set by environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

ENV_PREFIX = "DEEPSHIELD_"
API_KEY_ENV = "DEEPSHIELD_API_KEY"


@dataclass(frozen=True)
class ServerSettings:
    """Everything the server decides by itself. Environment variable: DEEPSHIELD_<FIELD NAME IN CAPITALS>."""

    max_upload_bytes: int = 200_000_000  # above: 413 (videos are further limited by duration and frame size)
    max_concurrency: int = 2  # analyses running at once (threads); more cores do not help MediaPipe, which is serialised
    max_queue: int = 16  # analyses allowed to wait beyond those running; above: 503 (uploads do not count)
    request_timeout_s: float = 60.0  # analysis of one /v1/analyze request, queueing included; above: 504
    upload_timeout_s: float = 300.0  # receiving one whole upload; above: 408
    min_upload_rate: int = 16_000  # bytes/s an upload must average once upload_grace_s have passed; below: 408
    upload_grace_s: float = 10.0  # time an upload gets before its rate counts
    max_uploads: int = 32  # uploads being received at once; above: 503
    max_uploads_per_client: int = 4  # uploads at once from one client address; above: 429
    header_timeout_s: float = 10.0  # a connection must finish a request's headers within this; else closed
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 512  # open connections; beyond, the oldest still sending headers is dropped
    job_timeout_s: float = 600.0  # one job's analysis; above: the job fails with "timeout"
    video_frames: int = 32  # frames sampled per video when the request does not say
    max_video_frames: int = 128
    job_workers: int = 1  # jobs analysed at once
    max_pending_jobs: int = 8  # queued + running jobs; above: 503
    max_jobs: int = 200  # jobs remembered (finished ones are forgotten oldest first)
    job_ttl_s: float = 3600.0  # a finished job is forgotten this long after it ends
    preview_max_side: int = 1280  # the analysed image sent back to the web page (?preview=true) fits this
    api_key: str | None = None  # when set, every /v1 call needs the header X-API-Key with this value
    tmp_dir: Path | None = None  # uploads go to a private folder created under this (default: the system's)
    state_dir: Path | None = None  # jobs are kept in <state_dir>/jobs.sqlite3 (and uploads there) across restarts; None: in memory

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> ServerSettings:
        """Defaults, then DEEPSHIELD_* environment variables, then keyword overrides."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for field in fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls, field.name)) if getattr(cls, field.name) is not None else str
            if field.name in ("tmp_dir", "state_dir"):
                values[field.name] = Path(raw)
            elif kind in (int, float):
                try:
                    values[field.name] = kind(raw)
                except ValueError:
                    raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r} is not a number") from None
            else:
                values[field.name] = raw
        settings = replace(cls(), **values)
        settings = replace(settings, **overrides)
        settings.check()
        return settings

    def check(self) -> None:
        positive = (
            "max_upload_bytes", "max_concurrency", "video_frames", "max_video_frames", "job_workers", "max_pending_jobs", "max_jobs",
            "preview_max_side", "min_upload_rate", "max_uploads", "max_uploads_per_client", "max_connections",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"server setting {name} must be positive, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ValueError("server setting max_queue must be >= 0")
        timeouts = ("request_timeout_s", "upload_timeout_s", "upload_grace_s", "job_ttl_s", "header_timeout_s", "keep_alive_s", "job_timeout_s")
        for name in timeouts:
            if getattr(self, name) <= 0:
                raise ValueError(f"server setting {name} must be positive, got {getattr(self, name)}")
        if self.video_frames > self.max_video_frames:
            raise ValueError("video_frames must not exceed max_video_frames")
