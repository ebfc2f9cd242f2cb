"""Receive one uploaded file: streamed straight to a temp file with a server-chosen name, byte-, time-
and rate-limited, with bounded uploads at once (in all and per client).

FastAPI's UploadFile would parse the whole body before the handler could refuse it; this parser
counts bytes as they arrive and stops at the limit, so an oversized upload costs at most the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from deepshield.media.sniff import HEADER_BYTES
from deepshield.media.units import format_bytes
from deepshield.plural import numbered, plural
from deepshield.serving.errors import ApiError
from deepshield.serving.settings import ServerSettings

if TYPE_CHECKING:  # a typing-only name of python-multipart
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("deepshield.serving")

FIELD_NAME = "file"
# Multipart framing rides on top of the file itself.
_OVERHEAD_BYTES = 64 * 1024


@dataclass
class Upload:
    path: Path  # server-chosen name inside the server's private temp folder
    filename: str  # as the client named it: shown back, never used as a path
    size: int
    sha256: str
    head: bytes  # first bytes, for sniffing the type

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


_EXTENDED_FILENAME = re.compile(rb"""filename\*\s*=\s*([!#$%&+^`{}~\w.-]+)'[^']*'([^;\s"]+)""", re.IGNORECASE)


def _extended_filename(disposition: bytes) -> bytes | None:
    """RFC 6266's `filename*=UTF-8''caf%C3%A9.jpg` (what clients send for names beyond ASCII), as UTF-8;
    None without one. python-multipart drops it, and such files were all named "upload"."""
    found = _EXTENDED_FILENAME.search(disposition)
    if found is None:
        return None
    charset = found.group(1).decode("ascii")
    try:
        return urllib.parse.unquote_to_bytes(found.group(2)).decode(charset, errors="replace").encode("utf-8")
    except (LookupError, UnicodeError):  # a charset Python does not know, or one it cannot decode leniently (idna)
        return None


# How browsers write a file name's quote, line feed and carriage return in filename="..." (WHATWG's
# multipart/form-data; curl, httpx and requests do the same): percent-escaped, and only those. Kept so,
# O'Brien "interview".png was shown back as O'Brien %22interview%22.png.
_FORM_ESCAPE = re.compile(rb"%(22|0A|0D)")


def _plain_filename(raw: bytes | None) -> bytes | None:
    """The file name of a plain filename="..." as the client's own file has it."""
    return None if raw is None else _FORM_ESCAPE.sub(lambda found: bytes.fromhex(found.group(1).decode()), raw)


def _display_name(raw: bytes | None) -> str:
    if not raw:
        return "upload"
    name = raw.decode("utf-8", errors="replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:200] or "upload"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the upload is above the {format_bytes(limit)} limit")


class _Receiver:
    def __init__(self, handle, limit: int) -> None:
        self.handle = handle
        self.limit = limit
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = b""
        self.filename: str | None = None
        self.found = False
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}

    # python-multipart callbacks --------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.lower()] = self._header_value
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition = self._headers.get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        if options.get(b"name") != FIELD_NAME.encode():
            name = options.get(b"name", b"").decode("utf-8", "replace")[:40]
            if b"filename" in options:
                raise ApiError(
                    400,
                    "bad_request",
                    f"no file: send the media in a multipart field named '{FIELD_NAME}', not '{name}'",
                )
            # An option sent as a form field (-F frames=64) was ignored, and the whole video analysed at the default.
            raise ApiError(
                400,
                "invalid_request",
                f"form.{name}: unknown field; the form holds only the '{FIELD_NAME}' field: give options in the "
                f"query (?{name}=...)",
            )
        if self.found:  # which one was meant? neither is guessed
            raise ApiError(400, "bad_request", f"more than one '{FIELD_NAME}' field: send one file per request")
        self.found = True
        self.filename = _display_name(_extended_filename(disposition) or _plain_filename(options.get(b"filename")))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self.size += len(chunk)
        if self.size > self.limit:
            raise _too_large(self.limit)
        if len(self.head) < HEADER_BYTES:
            self.head += chunk[: HEADER_BYTES - len(self.head)]
        self.digest.update(chunk)
        self.handle.write(chunk)

    def upload(self, path: Path) -> Upload:
        """The received file, once the body has ended; refused when it holds no file or an empty one."""
        if not self.found:
            raise ApiError(400, "bad_request", f"no file: send the media in a multipart field named '{FIELD_NAME}'")
        if self.size == 0:
            raise ApiError(400, "empty_file", "the uploaded file is empty")
        return Upload(path, self.filename or "upload", self.size, self.digest.hexdigest(), self.head)

    def callbacks(self) -> MultipartCallbacks:
        names = (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
        )
        return cast("MultipartCallbacks", {name: getattr(self, name) for name in names})


@dataclass(frozen=True)
class UploadPolicy:
    max_bytes: int
    timeout_s: float  # the whole upload
    min_rate: int  # bytes/s averaged from the start, enforced once grace_s have passed
    grace_s: float  # time before the rate counts (connection set-up, a slow start)
    max_uploads: int  # at once, all clients
    max_per_client: int  # at once, one client address

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> UploadPolicy:
        return cls(
            max_bytes=settings.max_upload_bytes,
            timeout_s=settings.upload_timeout_s,
            min_rate=settings.min_upload_rate,
            grace_s=settings.upload_grace_s,
            max_uploads=settings.max_uploads,
            max_per_client=settings.max_uploads_per_client,
        )


class UploadSlots:
    """Uploads being received, in all and per client address: the bounds that keep slow uploads
    from taking the server (they hold no analysis slot while they trickle in)."""

    def __init__(self, policy: UploadPolicy) -> None:
        self.policy = policy
        self.active = 0
        self._per_client: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, client: str):
        if self._per_client.get(client, 0) >= self.policy.max_per_client:
            raise ApiError(
                429,
                "too_many_uploads",
                f"at most {numbered(self.policy.max_per_client, 'upload')} at once from one client; wait for one to finish",
                headers={"Retry-After": "5"},
            )
        if self.active >= self.policy.max_uploads:
            raise ApiError(
                503,
                "busy",
                f"{numbered(self.policy.max_uploads, 'upload')} {plural(self.policy.max_uploads, 'is', 'are')} already being "
                "received; retry in a few seconds",
                headers={"Retry-After": "5"},
            )
        self.active += 1
        self._per_client[client] = self._per_client.get(client, 0) + 1
        try:
            yield
        finally:
            self.active -= 1
            left = self._per_client.pop(client) - 1
            if left:
                self._per_client[client] = left


def _slow_upload(received: int, elapsed_s: float, policy: UploadPolicy) -> ApiError:
    return ApiError(
        408,
        "upload_too_slow",
        f"the upload is too slow: {format_bytes(received)} in {elapsed_s:.0f} s, below the minimum of {format_bytes(policy.min_rate)}/s",
    )


def storage_error(exc: OSError) -> ApiError:
    """An upload the server could not store (a full disk, an upload folder it cannot make or write): the
    server's failure, not the client's (a 400 is not retried), logged in one line."""
    log.error("an upload could not be stored: %s", exc)
    return ApiError(
        507, "insufficient_storage", f"the server could not store the upload ({exc.strerror or exc}); try later"
    )


async def receive_upload(request: Request, directory: Path, policy: UploadPolicy, slots: UploadSlots) -> Upload:
    """Stream the multipart field `file` of the request into `directory`, holding an upload slot.

    Raises ApiError: 400 (malformed, incomplete, client gone), 408 (too slow, too long), 413, 429, 503, 507 (the upload could not be written)."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise ApiError(
            400, "bad_request", f"expected a multipart/form-data body with the media in a field named '{FIELD_NAME}'"
        )
    limit = policy.max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + _OVERHEAD_BYTES:
        raise _too_large(limit)  # refused before reading a byte
    client = request.client.host if request.client else "unknown"
    with slots.hold(client):
        return await _receive(request, directory, policy, options[b"boundary"])


@contextlib.contextmanager
def _multipart_errors() -> Iterator[None]:
    """python-multipart's own parse errors as a 400; our refusals (raised from the callbacks) and a failed
    write of the upload (the server's: `_receive`) pass as they are."""
    try:
        yield
    except (ApiError, OSError):
        raise
    except Exception as exc:
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from exc


async def _receive(request: Request, directory: Path, policy: UploadPolicy, boundary: bytes) -> Upload:
    limit = policy.max_bytes
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".bin", dir=directory)
    except OSError as exc:
        raise storage_error(exc) from None
    path = Path(name)
    total = 0

    def deadline() -> float:
        """When the upload must have received its next bytes: the overall timeout, or the rate floor."""
        return min(started + policy.timeout_s, started + policy.grace_s + total / policy.min_rate)

    try:
        with os.fdopen(fd, "wb") as handle:
            receiver = _Receiver(handle, limit)
            with _multipart_errors():  # a boundary over 256 characters is refused here (RFC 2046 allows 70)
                parser = MultipartParser(boundary, receiver.callbacks(), max_size=limit + _OVERHEAD_BYTES)
            async with asyncio.timeout_at(deadline()) as timer:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > limit + _OVERHEAD_BYTES:
                        raise _too_large(limit)
                    with _multipart_errors():
                        parser.write(chunk)
                    timer.reschedule(deadline())
            if parser.state != MultipartState.END:
                raise ApiError(
                    400, "incomplete_upload", "incomplete upload: the body ended before the multipart closing boundary"
                )
            with _multipart_errors():
                parser.finalize()
        # Gone as its last bytes arrived (a page's Cancel, a client closing at once): nothing is made of them,
        # it would never hear of it. A large body leaves uvicorn's reading paused (flow control), so its close
        # is only read once the first look resumes reading; the second look, after one turn of the event loop,
        # sees it. (A 10 ms wait there cost every upload 10 ms: about a third of a photo's answer.)
        await request.is_disconnected()
        await asyncio.sleep(0)
        if await request.is_disconnected():
            raise ClientDisconnect()
        return receiver.upload(path)
    except TimeoutError:
        path.unlink(missing_ok=True)
        elapsed = loop.time() - started
        if elapsed >= policy.timeout_s:
            raise ApiError(
                408, "upload_timeout", f"the upload did not complete within {policy.timeout_s:.0f} s"
            ) from None
        raise _slow_upload(total, elapsed, policy) from None
    except ClientDisconnect:
        path.unlink(missing_ok=True)
        # Nobody is left to answer: one line in the log, no traceback.
        log.info("client disconnected mid-upload after %s", format_bytes(total))
        raise ApiError(400, "client_disconnected", "the client disconnected before the upload completed") from None
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise storage_error(exc) from None
    except BaseException:  # refused, malformed, cancelled: nothing is left behind
        path.unlink(missing_ok=True)
        raise
