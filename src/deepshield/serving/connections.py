"""Connection guard for uvicorn: a header timeout and a connection budget that favours requests.

uvicorn has no header timeout (a client may send half a request line and hold the socket forever)
and its `limit_concurrency` counts open sockets, so ~100 half-open connections turn every route,
`/healthz` included, into its plain-text 503. Here instead: a connection must finish each request's
headers within `header_timeout_s` (from connecting, or from the end of its previous response), and
when more than `max_connections` are open, or more than half of them are still sending headers,
the oldest connection still sending headers is closed to make room. Connections with a request in
progress are never dropped, so a flood of half-open sockets cannot lock real requests out.
"""

from __future__ import annotations

import asyncio
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

log = logging.getLogger("deepshield.serving")


class ConnectionGuard:
    """The open connections of one server and, in arrival order, those still sending headers."""

    def __init__(self, max_connections: int, header_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.open: set[GuardedH11Protocol] = set()
        self.awaiting_headers: dict[GuardedH11Protocol, asyncio.TimerHandle] = {}  # oldest first
        self.dropped = 0

    def opened(self, connection: GuardedH11Protocol) -> None:
        self.open.add(connection)
        self.wait_for_headers(connection)
        while len(self.open) > self.max_connections or len(self.awaiting_headers) > max(1, self.max_connections // 2):
            oldest = next(iter(self.awaiting_headers), None)
            if oldest is None:  # every connection carries a request: the newcomer waits for none of them
                self.drop(connection, "connection budget full")
                return
            self.drop(oldest, "connection budget: oldest connection still sending headers")

    def wait_for_headers(self, connection: GuardedH11Protocol) -> None:
        self.headers_received(connection)
        timer = asyncio.get_running_loop().call_later(self.header_timeout_s, self.drop, connection, "header timeout")
        self.awaiting_headers[connection] = timer

    def headers_received(self, connection: GuardedH11Protocol) -> None:
        timer = self.awaiting_headers.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def closed(self, connection: GuardedH11Protocol) -> None:
        self.headers_received(connection)
        self.open.discard(connection)

    def drop(self, connection: GuardedH11Protocol, reason: str) -> None:
        self.closed(connection)
        self.dropped += 1
        log.debug("closing connection from %s: %s", connection.client, reason)
        connection.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[H11Protocol]:
    """uvicorn's h11 protocol class, reporting to `guard` (pass it as uvicorn's `http=`)."""

    class Guarded(GuardedH11Protocol):
        connection_guard = guard

    return Guarded


class GuardedH11Protocol(H11Protocol):
    connection_guard: ConnectionGuard

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.connection_guard.opened(self)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a new request's headers are complete
            self.connection_guard.headers_received(self)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()  # may start a pipelined request at once (handle_events)
        # The next request's headers are awaited only when none started: a pipelined one in progress was
        # cut off by the header timer, and counted as still sending headers.
        if not self.transport.is_closing() and self.cycle is cycle:
            self.connection_guard.wait_for_headers(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection_guard.closed(self)
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse (a malformed Content-Length, a bad header line) in
        the API's own form, JSON `{"error", "detail"}`: it was plain text, which clients reading `error` failed on."""
        detail = "not a valid HTTP/1.1 request: a malformed request line, header or Content-Length"
        body = json.dumps({"error": "invalid_request", "detail": detail})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=STATUS_PHRASES[400]),
            h11.Data(data=body.encode()),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event))
        self.transport.close()
