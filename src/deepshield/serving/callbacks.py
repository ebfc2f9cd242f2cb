"""Job callbacks: a finished job, as `GET /v1/jobs/{id}` gives it, POSTed to the URL its submitter
named, so that a pipeline need not poll.

Off unless the server names the hosts callbacks may go to (a server that POSTs wherever a request says
could be made to reach its own network). Redirects are not followed, for the same reason. With a
secret, each body is signed: `X-DeepShield-Signature: sha256=<HMAC-SHA256 of the body, hex>`.
Delivery is retried with doubling waits; its outcome is the job's `callback_status`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import http.client
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from deepshield.serving.errors import ApiError

log = logging.getLogger("deepshield.serving")

SIGNATURE_HEADER = "X-DeepShield-Signature"


def host_key(name: str) -> str:
    """A host name as callbacks compare it: lower case, without the trailing dot of a fully qualified name
    (hooks.example.com. is the same host, and was refused)."""
    return name.lower().removesuffix(".")


@dataclass(frozen=True)
class CallbackPolicy:
    hosts: frozenset[str]  # lower-case host names (or addresses) callbacks may go to; empty: callbacks off
    secret: str | None = None
    attempts: int = 4
    first_retry_s: float = 2.0  # then 4, 8, ...
    timeout_s: float = 10.0  # one attempt

    @classmethod
    def from_settings(cls, hosts: str | None, secret: str | None, first_retry_s: float) -> CallbackPolicy:
        """`hosts`: comma-separated, as DEEPSHIELD_CALLBACK_HOSTS gives them."""
        # An IPv6 address may come in brackets, as in a URL; a URL's hostname has none.
        names = frozenset(
            host_key(name.strip().removeprefix("[").removesuffix("]"))
            for name in (hosts or "").split(",")
            if name.strip()
        )
        return cls(hosts=names, secret=secret, first_retry_s=first_retry_s)

    def check(self, url: str) -> str:
        """The URL, if a callback may go there; else a 400 that says why."""
        if not self.hosts:
            raise ApiError(
                400, "invalid_request", "callbacks are off on this server (it names no DEEPSHIELD_CALLBACK_HOSTS)"
            )
        not_a_url = ApiError(400, "invalid_request", f"callback_url must be an http or https URL, not {url[:200]!r}")
        # urlsplit drops tabs and line breaks before reading the host, but the URL kept them where it was
        # stored and logged: a forged log line rode in on a newline.
        if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
            raise not_a_url
        try:
            parts = urlsplit(url)
            port = parts.port  # raises for a port that is no number up to 65535: here, not at each delivery
        except ValueError:  # that, or an unclosed [ of an IPv6 address
            raise not_a_url from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise not_a_url
        # urllib connects to the whole authority, %-escapes decoded, where urlsplit reads the host after its last
        # "@": http://127.0.0.1%23@hooks.example.org/ was checked as hooks.example.org and sent to the name
        # '127.0.0.1#@hooks.example.org'. (urllib sends no user name or password either.)
        if "@" in parts.netloc or "%" in parts.netloc:
            raise ApiError(
                400,
                "invalid_request",
                f"callback_url must name its host plainly, with no user name, password or %-escape: {url[:200]!r}",
            )
        if host_key(parts.hostname) not in self.hosts:
            raise ApiError(
                400,
                "invalid_request",
                f"callbacks may not go to {parts.hostname!r}; this server allows {', '.join(sorted(self.hosts))}",
            )
        return url

    def headers(self, job_id: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-DeepShield-Job": job_id}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        return headers


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx is then an HTTPError: a failed attempt


class _AttemptClock:
    """Cuts an attempt's connection once its time is up. urllib's timeout bounds each wait for the receiver's next
    bytes, not the attempt: a receiver sending a byte every few seconds held an attempt, and one of the two
    callback threads, for as long as it liked (two such receivers held back every callback)."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.up = False
        self._timer = threading.Timer(seconds, self._time_up)
        self._timer.daemon = True

    def __enter__(self) -> _AttemptClock:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def connect(self, *args: Any, **kwargs: Any) -> socket.socket:
        """socket.create_connection, the socket kept to be cut."""
        sock = socket.create_connection(*args, **kwargs)
        with self._lock:
            self._sockets.append(sock)
            up = self.up
        if up:
            _cut(sock)
        return sock

    def _time_up(self) -> None:
        with self._lock:
            self.up = True
            sockets = list(self._sockets)
        for sock in sockets:
            _cut(sock)


def _cut(sock: socket.socket) -> None:
    """Wake the thread waiting on `sock` (closing it would not) and end the connection."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _WatchedConnection(http.client.HTTPConnection):
    """A connection whose socket its attempt's clock can cut: taken as it is made, before a TLS handshake."""

    def __init__(self, host: str, clock: _AttemptClock, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._create_connection = clock.connect


class _WatchedHTTPSConnection(_WatchedConnection, http.client.HTTPSConnection):
    pass


class _WatchedHTTP(urllib.request.HTTPHandler):
    def __init__(self, clock: _AttemptClock) -> None:
        super().__init__()
        self.clock = clock

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedConnection, clock=self.clock), req)


class _WatchedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, clock: _AttemptClock) -> None:
        super().__init__()
        self.clock = clock

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_WatchedHTTPSConnection, clock=self.clock), req)  # certificates checked


class CallbackSender:
    """Delivers callbacks on two threads of its own, so that a slow receiver never holds a job worker."""

    def __init__(self, policy: CallbackPolicy) -> None:
        self.policy = policy
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deepshield-callback")

    def send(self, url: str, job_id: str, body: Callable[[], bytes | None], report: Callable[[str], None]) -> None:
        """POST the job's body to `url` in the background; `report` gets "delivered" or "failed: <why>". The URL is
        checked again: a job taken back after a restart was allowed by the last run's hosts. `body` is asked for
        at each attempt, None once the job is forgotten (deleted, expired): then nothing more is sent, and the
        waiting delivery held nothing of the job (each held its whole result, well past the job's expiry, while
        a receiver was down)."""
        try:
            self.policy.check(url)
        except ApiError as exc:
            report(f"failed: not sent, {exc.detail}")
            return
        try:
            self._executor.submit(self._deliver, url, job_id, body, report)
        except RuntimeError:  # shut down
            report("failed: the server shut down before sending it")

    def _deliver(self, url: str, job_id: str, body: Callable[[], bytes | None], report: Callable[[str], None]) -> None:
        policy = self.policy
        reason = ""
        for attempt in range(policy.attempts):
            if attempt:
                time.sleep(policy.first_retry_s * 2 ** (attempt - 1))
            data = body()
            if data is None:
                log.info("callback for job %s not sent: the job was forgotten first", job_id)
                return
            request = urllib.request.Request(url, data=data, headers=policy.headers(job_id, data), method="POST")
            clock = _AttemptClock(policy.timeout_s)
            opener = urllib.request.build_opener(_NoRedirects, _WatchedHTTP(clock), _WatchedHTTPS(clock))
            try:
                with clock, opener.open(request, timeout=policy.timeout_s) as response:
                    response.read(1024)
                report("delivered")
                return
            except urllib.error.HTTPError as exc:
                reason = f"the receiver answered {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                reason = f"the receiver could not be reached ({getattr(exc, 'reason', exc)})"
            except Exception as exc:  # noqa: BLE001 - anything else (a bad status line...) fails the attempt: the job's callback must not stay "pending"
                reason = f"the delivery failed ({type(exc).__name__}: {exc})"
            if clock.up:  # its connection was cut, whatever that raised
                reason = f"the receiver took longer than {policy.timeout_s:g} s"
        log.warning("callback for job %s to %r failed: %s", job_id, urlsplit(url).hostname, reason)  # no path: tokens
        report(f"failed: {reason}, {policy.attempts} attempts")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
