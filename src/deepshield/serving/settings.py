"""Server settings: limits, concurrency, jobs and the optional API key. Each can be set by environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.plural import plural
from deepshield.training.config import DATA_DIR_ENV

ENV_PREFIX = "DEEPSHIELD_"
# The API's bound on frames per video; `deepshield scan --frames` accepts the same range.
MAX_VIDEO_FRAMES = 128


class ServerSettings(BaseModel):
    """Everything the server decides by itself. Environment variable: DEEPSHIELD_<FIELD NAME IN CAPITALS>.

    A plain model rather than pydantic-settings' BaseSettings: `ServerSettings()` is the defaults,
    whatever the process environment says; only `from_env()` reads variables. Unknown keys are errors."""

    # inf and nan are no limits: a TTL of inf made every unknown job's 404 a 500 (its wording overflowed).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    max_upload_bytes: int = Field(
        200_000_000, gt=0
    )  # above: 413 (videos are further limited by duration and frame size)
    max_concurrency: int = Field(
        2, gt=0
    )  # analyses running at once (threads); more cores do not help MediaPipe, which is serialised
    max_queue: int = Field(16, ge=0)  # analyses allowed to wait beyond those running; above: 503 (uploads do not count)
    request_timeout_s: float = Field(60.0, gt=0)  # analysis of one /v1/analyze request, queueing included; above: 504
    upload_timeout_s: float = Field(300.0, gt=0)  # receiving one whole upload; above: 408
    min_upload_rate: int = Field(
        16_000, gt=0
    )  # bytes/s an upload must average once upload_grace_s have passed; below: 408
    upload_grace_s: float = Field(10.0, gt=0)  # time an upload gets before its rate counts
    max_uploads: int = Field(32, gt=0)  # uploads being received at once; above: 503
    max_uploads_per_client: int = Field(4, gt=0)  # uploads at once from one client address; above: 429
    # Proxies (comma-separated addresses, or *) whose X-Forwarded-For names the client; None: the peer's
    # own address, always (a local client could otherwise name any address and pass the per-client limit).
    forwarded_allow_ips: str | None = None
    header_timeout_s: float = Field(10.0, gt=0)  # a connection must finish a request's headers within this; else closed
    keep_alive_s: float = Field(5.0, gt=0)  # an idle keep-alive connection is closed after this
    shutdown_grace_s: float = Field(10.0, gt=0)  # on shutdown, requests in flight get this long; then cut off
    max_connections: int = Field(512, gt=0)  # open connections; beyond, the oldest still sending headers is dropped
    job_timeout_s: float = Field(600.0, gt=0)  # one job's analysis; above: the job fails with "timeout"
    video_frames: int = Field(DEFAULT_VIDEO_FRAMES, gt=0)  # frames sampled per video when the request does not say
    max_video_frames: int = Field(MAX_VIDEO_FRAMES, gt=0)
    job_workers: int = Field(1, gt=0)  # jobs analysed at once
    max_pending_jobs: int = Field(8, gt=0)  # queued + running jobs; above: 503
    max_jobs: int = Field(200, gt=0)  # jobs remembered (finished ones are forgotten oldest first)
    job_ttl_s: float = Field(3600.0, gt=0)  # a finished job is forgotten this long after it ends
    preview_max_side: int = Field(1280, gt=0)  # the analysed image sent back to the web page (?preview=true) fits this
    # Comma-separated names the server answers to (the Host header, its port aside; *: any); None: only loopback
    # names when it listens on a loopback address, any otherwise. A page of another site whose name is made to
    # resolve to 127.0.0.1 (DNS rebinding) is then of the same origin, and could submit files and read results.
    allowed_hosts: str | None = None
    callback_hosts: str | None = None  # comma-separated hosts job callbacks may go to; None: callbacks off
    callback_secret: str | None = None  # when set, callbacks are signed (X-DeepShield-Signature, HMAC-SHA256)
    callback_retry_s: float = Field(2.0, gt=0)  # wait before a failed callback's first retry; doubles after
    c2pa_trust_anchors: Path | None = None  # PEM roots whose Content Credentials signers count as trusted
    api_key: str | None = None  # when set, every /v1 call needs the header X-API-Key with this value
    tmp_dir: Path | None = None  # uploads go to a private folder created under this (default: the system's)
    state_dir: Path | None = (
        None  # jobs are kept in <state_dir>/jobs.sqlite3 (and uploads there) across restarts; None: in memory
    )

    @field_validator("tmp_dir")
    @classmethod
    def _usable_tmp_dir(cls, folder: Path | None) -> Path | None:
        # Checked here, not at the first upload's folder: a missing folder or a file ended the start in a
        # FileNotFoundError or NotADirectoryError traceback.
        if folder is None:
            return folder
        if not folder.exists():
            raise ValueError("no such folder (it is not made: name an existing one)")
        if not folder.is_dir():
            raise ValueError("is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError("this user cannot make folders in it")
        return folder

    @field_validator("state_dir")
    @classmethod
    def _makeable_state_dir(cls, folder: Path | None) -> Path | None:
        # Made at start if missing; a file there (FileExistsError) or above it (NotADirectoryError) was a traceback.
        if folder is None:
            return folder
        if folder.exists() and not folder.is_dir():
            raise ValueError("is a file, not a folder")
        for above in folder.parents:
            if above.exists():
                if not above.is_dir():
                    raise ValueError(f"cannot be made: {above} is a file, not a folder")
                break
        return folder

    # The checks across settings name each one as it was given (DEEPSHIELD_VIDEO_FRAMES=200, or unset and
    # its default): "video_frames must not exceed max_video_frames" named neither variable nor value.
    @model_validator(mode="after")
    def _frames_within_bound(self, info: ValidationInfo) -> ServerSettings:
        if self.video_frames > self.max_video_frames:
            raise ValueError(
                f"{self._given('video_frames', info)} must not exceed {self._given('max_video_frames', info)}"
            )
        return self

    @model_validator(mode="after")
    def _room_for_finished_jobs(self, info: ValidationInfo) -> ServerSettings:
        # Finished jobs make the room for a new one only when pending ones cannot fill all of max_jobs.
        if self.max_pending_jobs >= self.max_jobs:
            raise ValueError(
                f"{self._given('max_pending_jobs', info)} must be below {self._given('max_jobs', info)}"
                " (finished jobs need room)"
            )
        return self

    def _given(self, name: str, info: ValidationInfo) -> str:
        """A setting as it was given: its variable and text from from_env, else its keyword, or its default."""
        environ = (info.context or {}).get(_ENVIRON_CONTEXT)
        value = getattr(self, name)
        if environ is not None and name in environ:
            return f"{env_name(name)}={environ[name]}"
        if name in self.model_fields_set:
            return f"{name}={value}"
        return f"{env_name(name)} (unset, so {value})" if environ is not None else f"{name} (by default {value})"

    @field_validator("allowed_hosts", "callback_hosts")
    @classmethod
    def _host_names(cls, hosts: str | None, info: ValidationInfo) -> str | None:
        # A URL or a name with its port never matches a Host header's name, nor a callback URL's host: the
        # server answered to nothing, or started and then refused every callback (hooks.example.com:8080).
        for name in (hosts or "").split(","):
            name = name.strip()
            if (
                any(mark in name for mark in "/ @")
                or (name.count(":") == 1 and not name.startswith("["))
                or (name.startswith("[") and not name.endswith("]"))
            ):
                raise ValueError(f"{name!r} is not a host name (give names alone, no scheme, port or path)")
            if "*" in name and info.field_name == "callback_hosts":  # no wildcard: a callback goes to hosts named
                raise ValueError(f"{name!r} is not a host name: callbacks go only to the hosts named, no wildcard")
        return hosts

    @field_validator("api_key")
    @classmethod
    def _sendable_api_key(cls, key: str | None) -> str | None:
        # Header bytes beyond ASCII are read as Latin-1 here and sent as UTF-8 by most clients: such a key never matched.
        if key is not None and not key.isascii():
            raise ValueError("must be ASCII: clients encode other characters in headers differently")
        # HTTP strips blanks around a header's value, and control characters cannot be sent: such a key never matched.
        if key is not None and (key != key.strip() or not key.isprintable()):
            raise ValueError("must not begin or end with blanks or hold control characters: no request could send it")
        return key

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServerSettings:
        """Defaults, then DEEPSHIELD_* environment variables, then keyword overrides.
        Raises ValueError naming the setting (and its variable) for a value that is not valid, and the
        variables set but empty (an empty DEEPSHIELD_API_KEY started a server with no key)."""
        environ = os.environ if environ is None else environ
        # A misspelt variable is an error, as an unknown key is: DEEPSHIELD_API_KEYS started a server with no key.
        known = {env_name(name) for name in cls.model_fields} | {DATA_DIR_ENV}
        unknown = sorted(name for name in environ if name.startswith(ENV_PREFIX) and name not in known)
        # A misspelt prefix too (DEEPSHEILD_API_KEY started a server with no key): a name this close to a
        # setting's, under another prefix, is refused as well.
        unknown += sorted(
            name for name in environ if not name.startswith(ENV_PREFIX) and get_close_matches(name, known, 1, 0.85)
        )
        if unknown:
            hints = [
                f"{name}{f' (did you mean {close[0]}?)' if (close := get_close_matches(name, known, 1)) else ''}"
                for name in unknown
            ]
            raise ValueError(f"unknown server setting {', '.join(hints)}: the settings are in the README")
        # Set but empty is no default either: `DEEPSHIELD_API_KEY= deepshield serve` (or a key from an unset
        # shell variable) started a server open to all. DEEPSHIELD_DATA_ROOT is model building's, not read here.
        empty = sorted(env_name(name) for name in cls.model_fields if environ.get(env_name(name)) == "")
        if empty:
            n = len(empty)
            raise ValueError(
                f"{', '.join(empty)} {plural(n, 'is', 'are')} set but empty: "
                f"give {plural(n, 'it', 'each')} a value, or unset {plural(n, 'it', 'them')} for the default"
            )
        from_environ = {
            name: environ[env_name(name)]
            for name in cls.model_fields
            if env_name(name) in environ and name not in overrides
        }
        try:
            return cls.model_validate({**from_environ, **overrides}, context={_ENVIRON_CONTEXT: from_environ})
        except ValidationError as exc:
            raise ValueError("; ".join(_describe(error, from_environ) for error in exc.errors())) from None


_ENVIRON_CONTEXT = "environ"  # the validation context's settings read from the environment, as text
# Named in an error by their variable alone: a key's value printed would be left in logs.
_SECRETS = frozenset({"api_key", "callback_secret"})


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _describe(error: Mapping[str, Any], from_environ: Mapping[str, str]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across settings: its message names them
        return message
    name = str(error["loc"][0])
    where = ""
    if name in from_environ:
        where = (
            f" ({env_name(name)}, its value not shown)"
            if name in _SECRETS
            else f" ({env_name(name)}={from_environ[name]!r})"
        )
    return f"server setting {name}{where}: {message}"
