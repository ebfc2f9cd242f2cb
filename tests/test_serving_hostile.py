"""Hostile clients against a server each test starts on 127.0.0.1: half-open connections, trickling
uploads, disconnects mid-body, unterminated bodies, timeouts. Every client is bounded in count and
time and stops by itself."""

from __future__ import annotations

import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from deepshield.serving.app import create_app
from deepshield.serving.settings import ServerSettings
from deepshield.serving.testing import live_server
from tests.test_serving_api import HookedDetector, assert_error, client_for, encode, upload, upload_files

BOUNDARY = "hostile"
PART_HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n').encode() + b"\xff\xd8\xff"


@pytest.fixture(scope="module")
def astronaut_jpeg(astronaut) -> bytes:
    return encode(astronaut)


def port_of(base_url: str) -> int:
    return urlsplit(base_url).port


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.settimeout(5)
    return sock


def start_upload(port: int, declared: int = 200_000, source: str = "127.0.0.1") -> socket.socket:
    """A multipart upload whose headers and first body bytes are sent; the rest never comes (yet)."""
    sock = connect(port, source)
    head = f"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n\r\n"
    sock.sendall(head.encode() + PART_HEAD)
    return sock


def answer_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server has sent back within `seconds` (b"" if nothing, or the connection closed)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(4096)
    except (TimeoutError, ConnectionResetError):
        return b""


def closed_by_server(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def other_client(base_url: str) -> httpx.Client:
    """A well-behaved client from another loopback address (127.0.0.2: its own per-client budget)."""
    return httpx.Client(base_url=base_url, timeout=20, transport=httpx.HTTPTransport(local_address="127.0.0.2"))


def test_half_open_connections_leave_healthz_answering(detector):
    settings = ServerSettings(max_connections=40, header_timeout_s=1.5)
    sockets: list[socket.socket] = []
    with live_server(create_app(detector, settings), settings=settings) as base_url:
        port = port_of(base_url)
        try:
            for _ in range(110):
                sock = connect(port)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
                sockets.append(sock)
            started = time.perf_counter()
            with httpx.Client(base_url=base_url, timeout=5) as client:
                for _ in range(5):
                    health = client.get("/healthz")
                    assert health.status_code == 200 and health.json()["status"] == "ok"
            assert time.perf_counter() - started < 2.0
            # The budget dropped the oldest half-open sockets as new ones came (40 open at most, 20 half-open);
            # the header timeout closes the rest.
            dropped = sum(closed_by_server(sock, 0.05) for sock in sockets[:80])
            assert dropped >= 80 - 20, dropped
            assert all(closed_by_server(sock, 3.0) for sock in sockets[-20:])
        finally:
            for sock in sockets:
                sock.close()


def test_slow_uploads_hold_no_analysis_slot_and_are_capped_per_client(detector, astronaut_jpeg):
    settings = ServerSettings(max_concurrency=1, max_queue=1, max_uploads_per_client=4, upload_grace_s=30)
    sockets: list[socket.socket] = []
    with live_server(create_app(detector, settings), settings=settings) as base_url:
        port = port_of(base_url)
        try:
            sockets = [start_upload(port) for _ in range(18)]
            answers = [answer_within(sock, 0.3) for sock in sockets]
            refused = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
            assert len(refused) == 14 and sum(a == b"" for a in answers) == 4
            assert b"too_many_uploads" in refused[0]
            with other_client(base_url) as client:
                started = time.perf_counter()
                response = client.post("/v1/analyze", files=upload(astronaut_jpeg))
                assert response.status_code == 200, response.text
                assert client.post("/v1/jobs", files=upload(astronaut_jpeg)).status_code == 202
                assert time.perf_counter() - started < 10
                health = client.get("/healthz").json()
                assert health["analyses_waiting"] == 0 and health["analyses_running"] == 0
        finally:
            for sock in sockets:
                sock.close()


def test_an_upload_below_the_minimum_rate_is_cut_off(detector):
    settings = ServerSettings(min_upload_rate=2000, upload_grace_s=0.5)
    with live_server(create_app(detector, settings), settings=settings) as base_url:
        sock = start_upload(port_of(base_url))
        try:
            started = time.perf_counter()
            answer = b""
            while not answer and time.perf_counter() - started < 5:
                sock.sendall(b"\x00")  # one byte every 0.1 s: 10 bytes/s
                answer = answer_within(sock, 0.1)
            assert answer.startswith(b"HTTP/1.1 408") and b"upload_too_slow" in answer, answer
            assert time.perf_counter() - started < 2.5
        finally:
            sock.close()


def test_a_disconnect_mid_upload_is_one_info_line(detector, caplog):
    settings = ServerSettings()
    app = create_app(detector, settings)
    with caplog.at_level(logging.INFO), live_server(app, settings=settings) as base_url:
        sock = start_upload(port_of(base_url))
        sock.sendall(b"\x00" * 1000)
        time.sleep(0.2)
        sock.close()
        deadline = time.monotonic() + 5
        while not any("disconnected mid-upload" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        uploads = list(app.state.runtime.upload_dir.iterdir())
    lines = [r for r in caplog.records if "disconnected mid-upload" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert uploads == []


def test_a_multipart_body_without_its_closing_boundary_is_incomplete(detector, astronaut_jpeg):
    complete = (
        PART_HEAD[:-3] + astronaut_jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    with client_for(detector) as client:
        for path in ("/v1/analyze", "/v1/jobs"):
            body = assert_error(client.post(path, content=complete[:1000], headers=headers), 400, "incomplete_upload")
            assert "closing boundary" in body["detail"]
        assert upload_files(client) == []
        assert client.post("/v1/analyze", content=complete, headers=headers).status_code == 200


def test_waiting_count_is_never_negative_after_a_timeout(detector, astronaut_jpeg):
    hooked = HookedDetector(detector)
    entered, release = threading.Event(), threading.Event()
    hooked.hook = lambda: entered.set() or release.wait(20)
    with client_for(hooked, request_timeout_s=0.5) as client:
        assert_error(client.post("/v1/analyze", files=upload(astronaut_jpeg)), 504, "timeout")
        assert entered.is_set()
        health = client.get("/healthz").json()
        assert (health["analyses_running"], health["analyses_waiting"]) == (1, 0)  # it still runs, abandoned
        release.set()
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["analyses_running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get("/healthz").json()
        assert (health["analyses_running"], health["analyses_waiting"]) == (0, 0)
