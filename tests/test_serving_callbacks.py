"""Job callbacks (deepshield.serving.callbacks): a finished job POSTed to its submitter's URL."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deepshield.serving.callbacks import SIGNATURE_HEADER
from tests.test_serving_api import assert_error, client_for, encode, upload, upload_files, wait_for_job


@dataclass
class Receiver:
    """A callback receiver on 127.0.0.1: answers each POST with the next queued status (then 200)."""

    url: str
    answers: queue.Queue[int] = field(default_factory=queue.Queue)
    received: list[tuple[str, Message, bytes]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)  # cleared: each POST waits until it is set

    def __post_init__(self) -> None:
        self.released.set()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.released.wait(timeout=30)
            state.received.append((self.path, self.headers, body))  # names case-insensitive, as in HTTP
            status = 200 if state.answers.empty() else state.answers.get()
            self.send_response(status)
            if status in (301, 302, 307):
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/deepshield"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _callback_settled(client, job_id: str, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["callback_status"] not in (None, "pending"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"the callback of job {job_id} did not settle in {timeout_s} s")


@pytest.fixture(scope="module")
def photo(astronaut) -> bytes:
    return encode(astronaut)


def test_callbacks_go_only_to_hosts_the_server_names(detector, photo):
    with client_for(detector) as client:
        body = assert_error(client.post("/v1/jobs?callback_url=http://127.0.0.1:9/x", files=upload(photo)), 400)
        assert "callbacks are off on this server" in body["detail"]
    with client_for(detector, callback_hosts="hooks.example.org, 127.0.0.1") as client:
        body = assert_error(client.post("/v1/jobs?callback_url=http://10.0.0.5/admin", files=upload(photo)), 400)
        assert body["detail"] == "callbacks may not go to '10.0.0.5'; this server allows 127.0.0.1, hooks.example.org"
        body = assert_error(client.post("/v1/jobs?callback_url=file:///etc/passwd", files=upload(photo)), 400)
        assert "must be an http or https URL" in body["detail"]
        # URLs urllib cannot take: refused at submit (an unclosed [ was a 500; a port ':abc' a callback pending for good)
        for url in (
            "http://[127.0.0.1/x",
            "http://127.0.0.1:abc/x",
            "http://127.0.0.1:99999/x",
            "http://127.0.0.1:0/x",
            "http://127.0.0.1/x\nINFO: forged log line",  # urlsplit dropped the newline; the log kept it
            "http://169.254.169.254\t@127.0.0.1/",
        ):
            body = assert_error(client.post("/v1/jobs", params={"callback_url": url}, files=upload(photo)), 400)
            assert body["detail"] == f"callback_url must be an http or https URL, not {url!r}"
        assert upload_files(client) == [] and len(client.app.state.runtime.jobs) == 0  # refused before the upload


def test_a_callback_url_is_refused_unless_its_host_is_written_plainly(detector, photo):
    # urllib connects to the whole authority, %-decoded: these passed as hooks.example.org and went to
    # '127.0.0.1#@hooks.example.org' (a name for the resolver, not the host checked), or to 'user:pw@...'.
    with client_for(detector, callback_hosts="hooks.example.org") as client:
        for url in (
            "http://127.0.0.1%23@hooks.example.org:8080/x",
            "http://10.0.0.5%2f@hooks.example.org/",
            "https://user:password@hooks.example.org/x",
            "http://hooks.example.org%2e/x",
        ):
            body = assert_error(client.post("/v1/jobs", params={"callback_url": url}, files=upload(photo)), 400)
            assert body["detail"] == (
                f"callback_url must name its host plainly, with no user name, password or %-escape: {url!r}"
            )
        # Escapes elsewhere in the URL are the receiver's to read.
        accepted = client.post(
            "/v1/jobs", params={"callback_url": "https://hooks.example.org/a%20b?token=x%40y"}, files=upload(photo)
        )
        assert accepted.status_code == 202, accepted.text


def test_callback_hosts_that_are_no_host_names_are_refused_at_start():
    # hooks.example.com:8080 started a server that then refused every callback (its URL's host has no port).
    from deepshield.serving.callbacks import CallbackPolicy
    from deepshield.serving.settings import ServerSettings

    for hosts in (
        "hooks.example.com:8080",
        "https://hooks.example.com",
        "hooks.example.com/deepshield",
        "[fd00::1]:80",
    ):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"server setting callback_hosts (DEEPSHIELD_CALLBACK_HOSTS={hosts!r}): {hosts!r} is not a host name "
                "(give names alone, no scheme, port or path)"
            ),
        ):
            ServerSettings.from_env({"DEEPSHIELD_CALLBACK_HOSTS": hosts})
    for wildcard in ("*", "*.example.com"):  # the policy matches names exactly: every callback was refused
        with pytest.raises(ValueError, match=rf"'{re.escape(wildcard)}' is not a host name: callbacks go only to"):
            ServerSettings.from_env({"DEEPSHIELD_CALLBACK_HOSTS": wildcard})
    settings = ServerSettings.from_env({"DEEPSHIELD_CALLBACK_HOSTS": "hooks.example.com, 10.0.0.7, [fd00::1], fd00::2"})
    policy = CallbackPolicy.from_settings(settings.callback_hosts, None, 1.0)
    for url in (
        "http://hooks.example.com:8080/x",
        "https://10.0.0.7/x",
        "http://[fd00::1]:8000/x",
        "http://[fd00::2]/",
        "https://Hooks.Example.COM./x",  # fully qualified: the same host, refused before
    ):
        assert policy.check(url) == url  # any port of a host named


def test_a_finished_job_is_posted_signed_and_retried(detector, photo, receiver):
    receiver.answers.put(503)  # the first attempt fails; the retry is delivered
    settings = {"callback_hosts": "127.0.0.1", "callback_secret": "s3cret", "callback_retry_s": 0.05}
    with client_for(detector, **settings) as client:
        job = client.post(f"/v1/jobs?callback_url={receiver.url}", files=upload(photo)).json()
        assert job["callback_url"] == receiver.url
        assert wait_for_job(client, job["id"])["status"] == "done"
        settled = _callback_settled(client, job["id"])
    assert settled["callback_status"] == "delivered"
    assert len(receiver.received) == 2
    path, headers, body = receiver.received[-1]
    assert path == "/hooks/deepshield" and headers["X-DeepShield-Job"] == job["id"]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    sent = json.loads(body)
    assert (sent["id"], sent["status"], sent["result"]["kind"]) == (job["id"], "done", "image")
    assert len(sent["result"]["faces"]) == 1


def test_a_callback_that_cannot_be_delivered_says_why(detector, photo, receiver):
    for _ in range(4):
        receiver.answers.put(302)  # a redirect is not followed: it could lead anywhere
    with client_for(detector, callback_hosts="127.0.0.1", callback_retry_s=0.01) as client:
        job = client.post(f"/v1/jobs?callback_url={receiver.url}", files=upload(photo)).json()
        assert (
            _callback_settled(client, job["id"])["callback_status"] == "failed: the receiver answered 302, 4 attempts"
        )
        assert [path for path, _, _ in receiver.received] == ["/hooks/deepshield"] * 4
        with contextlib.closing(socket.socket()) as free:  # a port nobody listens on
            free.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{free.getsockname()[1]}/"
        job = client.post(f"/v1/jobs?callback_url={closed}", files=upload(photo)).json()
        status = _callback_settled(client, job["id"])["callback_status"]
        assert status.startswith("failed: the receiver could not be reached") and status.endswith("4 attempts")


def test_a_receiver_answering_garbage_fails_the_callback_instead_of_leaving_it_pending(detector, photo):
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_garbage() -> None:
        for _ in range(4):
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"this is no HTTP status line\r\n\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    with listener, client_for(detector, callback_hosts="127.0.0.1", callback_retry_s=0.01) as client:
        job = client.post("/v1/jobs", params={"callback_url": url}, files=upload(photo)).json()
        status = _callback_settled(client, job["id"])["callback_status"]
    assert status.startswith("failed: the delivery failed (BadStatusLine") and status.endswith("4 attempts")


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_attempts_time_limit():
    # urllib's timeout bounds each wait for bytes: a byte every 0.2 s held the attempt (and a callback thread) for good.
    from deepshield.serving.callbacks import CallbackPolicy, CallbackSender

    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 100:
                connection.sendall(bytes([byte]))
                time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    sender = CallbackSender(CallbackPolicy(hosts=frozenset({"127.0.0.1"}), attempts=1, timeout_s=1.0))
    outcomes: queue.Queue[str] = queue.Queue()
    started = time.monotonic()
    with listener:
        sender.send(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", "job", lambda: b"{}", outcomes.put)
        assert outcomes.get(timeout=10) == "failed: the receiver took longer than 1 s, 1 attempts"
    assert time.monotonic() - started < 3
    sender.close()


def test_a_forgotten_jobs_callback_is_not_sent_and_holds_nothing_of_it(detector, photo, receiver):
    # A receiver that is down or slow held every finished job's whole result (a photo's: ~0.5 MB, with its
    # preview) in the callbacks' queue, past its deletion and its expiry, and then sent it anyway: a server
    # taking jobs faster than one per 7 s grew without bound while its receiver was down.
    import gc
    import weakref

    receiver.released.clear()  # its two threads are held by the first two jobs' callbacks
    with client_for(detector, callback_hosts="127.0.0.1") as client:
        jobs = client.app.state.runtime.jobs

        def submitted() -> str:
            job_id = client.post(f"/v1/jobs?callback_url={receiver.url}", files=upload(photo)).json()["id"]
            assert wait_for_job(client, job_id)["status"] == "done"
            return job_id

        holding = [submitted() for _ in range(2)]
        waiting = [submitted() for _ in range(4)]
        kept = [weakref.ref(jobs.get(job_id)) for job_id in waiting]
        for job_id in waiting:
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        gc.collect()
        assert [job() for job in kept] == [None] * 4
        receiver.released.set()
        last = submitted()  # queued behind the forgotten ones: they were passed over once it is delivered
        for job_id in [*holding, last]:
            assert _callback_settled(client, job_id)["callback_status"] == "delivered"
    assert sorted(json.loads(body)["id"] for _, _, body in receiver.received) == sorted([*holding, last])


def _ledger_with_a_running_job(state, callback_url: str):
    """A state folder's job ledger holding a video job left running by a server that stopped (the ledger
    still open, and that job's record)."""
    from deepshield.media.video import VideoSpan
    from deepshield.serving.job_ledger import JobLedger, JobRecord
    from deepshield.serving.schemas import FileInfo

    state.mkdir()
    ledger = JobLedger(state / "jobs.sqlite3")
    file = FileInfo(name="clip.mp4", size_bytes=3, sha256="0" * 64, kind="video")
    running = JobRecord(
        id="was-running", kind="video", file=file, frames=8, span=VideoSpan(), upload_path=state / "gone.bin",
        status="running", stage="detecting faces", progress=0.4, created_at=time.time(), started_at=time.time(),
        finished_at=None, result=None, error=None, callback_url=callback_url,
    )  # fmt: skip
    ledger.save(running)
    return ledger, running


def test_after_a_restart_the_callbacks_not_yet_sent_go_out(detector, photo, receiver, tmp_path):
    state = tmp_path / "data"
    ledger, running = _ledger_with_a_running_job(state, receiver.url)
    with client_for(detector) as client:
        result = client.post("/v1/analyze", files=upload(photo)).json()
    finished = {"status": "done", "stage": "done", "progress": 1.0, "finished_at": time.time(), "result": result}
    # done, but the server stopped before its callback went out, or after it was delivered
    ledger.save(replace(running, id="was-calling", callback_status="pending", **finished))
    ledger.save(replace(running, id="was-told", callback_status="delivered", **finished))
    # done long ago and never told: its result has expired, so there is nothing left to send
    expired = {**finished, "finished_at": time.time() - 7200}
    ledger.save(replace(running, id="was-expired", callback_status="pending", **expired))
    ledger.close()
    with client_for(detector, state_dir=state, callback_hosts="127.0.0.1", job_ttl_s=3600) as client:
        assert _callback_settled(client, "was-running")["callback_status"] == "delivered"
        assert _callback_settled(client, "was-calling")["callback_status"] == "delivered"
        assert client.get("/v1/jobs/was-expired").status_code == 404
    sent = {json.loads(body)["id"]: json.loads(body) for _, _, body in receiver.received}
    assert sorted(sent) == ["was-calling", "was-running"] and len(receiver.received) == 2
    assert (sent["was-running"]["status"], sent["was-running"]["error"]["error"]) == ("failed", "server_restarted")
    assert sent["was-calling"]["status"] == "done"


def test_after_a_restart_callbacks_go_only_to_the_hosts_the_server_names_now(detector, receiver, tmp_path):
    # A host struck off the list (abused, say) still got the callbacks of the jobs taken back at a restart.
    state = tmp_path / "data"
    ledger, _ = _ledger_with_a_running_job(state, receiver.url)
    ledger.close()
    with client_for(detector, state_dir=state, callback_hosts="hooks.example.org") as client:
        job = _callback_settled(client, "was-running")
    assert job["callback_status"] == (
        "failed: not sent, callbacks may not go to '127.0.0.1'; this server allows hooks.example.org"
    )
    assert receiver.received == []


def test_the_access_log_leaves_query_strings_out():
    # A callback_url in the query often carries its receiver's token; uvicorn logged every request whole.
    import logging

    from deepshield.serving.server import WithoutQuery

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "POST", "/v1/jobs?callback_url=https%3A%2F%2Fh%2Fx%3Ftoken%3Dsecret", "1.1", 202),
        None,
    )
    assert WithoutQuery().filter(record) and "secret" not in record.getMessage()
    assert record.getMessage() == '1.2.3.4:5 - "POST /v1/jobs?… HTTP/1.1" 202'


def test_an_access_log_line_stays_one_line_whatever_a_forwarded_address_holds():
    # With proxies trusted (DEEPSHIELD_FORWARDED_ALLOW_IPS), the client's address is its X-Forwarded-For header's,
    # and one with a vertical tab, an ANSI clear-screen or an OSC 8 link was written raw on the access log.
    import logging

    from deepshield.serving.server import WithoutQuery

    forged = "1.2.3.4\x1b[2J\x1b]8;;http://x.test/\x07evil\x1b]8;;\x07\x0b\x0cforged:0"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', (forged, "GET", "/healthz", "1.1", 200), None
    )
    assert WithoutQuery().filter(record)
    assert record.getMessage() == (
        '1.2.3.4\\x1b[2J\\x1b]8;;http://x.test/\\x07evil\\x1b]8;;\\x07\\x0b\\x0cforged:0 - "GET /healthz HTTP/1.1" 200'
    )
