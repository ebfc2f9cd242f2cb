"""`serve()`: load the model once and run the app with uvicorn, behind the connection guard."""

from __future__ import annotations

import copy
import ipaddress
import logging
import socket
from pathlib import Path

from deepshield.errors import DeepShieldError
from deepshield.one_line import one_line
from deepshield.serving.app import create_app
from deepshield.serving.settings import ServerSettings

__all__ = ["create_app", "serve", "uvicorn_config"]

log = logging.getLogger("deepshield.serving")


class WithoutQuery(logging.Filter):
    """The access log's request lines without their query strings: a callback_url there often carries
    its receiver's token, and every request was logged with it at INFO. Each line stays one line: the
    client's address is an X-Forwarded-For header's where proxies are trusted, and one holding an ANSI
    escape (ESC[2J, an OSC 8 link: the HTTP parser lets them through) was written raw; control characters in
    the line's parts are escaped (\\x1b), as the commands' lines on stderr are."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            args = (*args[:2], args[2].split("?", 1)[0] + "?…", *args[3:])
        if isinstance(args, tuple):
            record.args = tuple(one_line(arg) if isinstance(arg, str) else arg for arg in args)
        return True


class WithRequestId(logging.Filter):
    """Each access log record's `request_id` (its request's X-Request-ID: app.RequestId), which the access
    line ends with (access_log_config); "-" for a request answered before the app (a connection refused)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from deepshield.serving.errors import REQUEST_ID

        record.request_id = REQUEST_ID.get() or "-"
        return True


def access_log_config() -> dict:
    """uvicorn's logging configuration, its access line ending in the request's id, e.g.
    `INFO:     127.0.0.1:50112 - "GET /v1/jobs/… HTTP/1.1" 404 Not Found 5f0c…`."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["access"]["fmt"] += " %(request_id)s"
    return config


class LoggedOnce(logging.Filter):
    """uvicorn's 'Exception in ASGI application' left out for an exception the app logged already: a request's
    crash is answered 500 by the app's handler, which logs it ('request failed (request <id>)', its traceback), and Starlette
    then raises it again to uvicorn, whose error log gave the same traceback a second time."""

    def filter(self, record: logging.LogRecord) -> bool:
        from deepshield.serving.errors import LOGGED

        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, LOGGED, False)


class CutOffAtWarning(logging.Filter):
    """uvicorn's 'Cancel N running task(s), timeout graceful shutdown exceeded' at WARNING, not ERROR: the
    requests cut off are answered 503 `shutting_down` and each logged at WARNING (app.CutOffAtShutdown), as the
    README says a restart does; at ERROR it raised the alarms of operators alerting on ERROR lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).endswith("timeout graceful shutdown exceeded"):
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


def uvicorn_config(app, settings: ServerSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    """uvicorn's configuration for the app: header and keep-alive timeouts and the connection budget
    (connections.py) instead of uvicorn's limit_concurrency, whose 503 would also hit /healthz."""
    import uvicorn

    from deepshield.serving.connections import ConnectionGuard, guarded_protocol

    guard = ConnectionGuard(settings.max_connections, settings.header_timeout_s)
    access = logging.getLogger("uvicorn.access")
    for kind in (WithoutQuery, WithRequestId):
        if not any(isinstance(f, kind) for f in access.filters):
            access.addFilter(kind())
    errors = logging.getLogger("uvicorn.error")
    for fix in (LoggedOnce, CutOffAtWarning):
        if not any(isinstance(f, fix) for f in errors.filters):
            errors.addFilter(fix())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=access_log_config(),
        http=guarded_protocol(guard),
        timeout_keep_alive=settings.keep_alive_s,  # type: ignore[arg-type]  # any number of seconds works; the hint says int
        # uvicorn's default waits for every request, so a slow upload held a restart for minutes.
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]  # as above
        server_header=False,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: only from the proxies named.
        proxy_headers=settings.forwarded_allow_ips is not None,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )


def serve(
    host: str = "127.0.0.1", port: int = 8000, model: str | Path | None = None, settings: ServerSettings | None = None
) -> None:
    """Serve the web page and the REST API until interrupted. model None: the shipped default bundle."""
    # The server's own lines from INFO up, as uvicorn's, from its start: at the commands' WARNING, the jobs a
    # restart requeued, a client gone mid-upload and 'stopped' were left out (`deepshield -v serve` showed them).
    log.setLevel(logging.INFO)
    import uvicorn

    from deepshield.inference.analysis import Detector

    if settings is None:
        try:
            settings = ServerSettings.from_env()
        except ValueError as exc:
            raise DeepShieldError(f"invalid server setting in the environment: {exc}") from None
    from deepshield.media.provenance import TrustAnchors
    from deepshield.models.card import NOT_CALIBRATED

    listening = _listening_socket(host, port)  # before the model loads and the address is printed
    port = listening.getsockname()[1]  # the port chosen, for --port 0
    address = _address(host, port)
    anchors = settings.c2pa_trust_anchors
    detector = Detector.from_bundle(model, trust_anchors=None if anchors is None else TrustAnchors.load(anchors))
    app = create_app(detector, settings, listen_host=host)
    print(
        f"Deepfake Shield: model {detector.model_name}; web page http://{address}/ , API docs http://{address}/docs",
        flush=True,
    )
    if not detector.card.calibration.fitted:  # its verdicts are called with the defaults: said where it starts
        print(f"Deepfake Shield: warning: model {detector.model_name}: {NOT_CALIBRATED}", flush=True)
    if anchors is not None:
        print(f"Deepfake Shield: Content Credentials signers are checked against {anchors}", flush=True)
    if settings.callback_hosts:
        print(f"Deepfake Shield: job callbacks may go to {settings.callback_hosts}", flush=True)
    if settings.api_key:
        print("Deepfake Shield: API key required on /v1 (header X-API-Key)", flush=True)
    jobs = app.state.runtime.jobs

    class Server(uvicorn.Server):
        """uvicorn's server, taking no job once it starts shutting down: an upload still arriving got 202
        and a job id, then the stopping server dropped the job."""

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            jobs.refuse_new()
            await super().shutdown(sockets=sockets)

    try:
        Server(uvicorn_config(app, settings, host, port)).run(sockets=[listening])
    except KeyboardInterrupt:
        # uvicorn raises the stopping signal again once it has shut down cleanly, which the CLI read as an
        # interruption (exit 130): a `systemctl stop` or `docker stop` of a server is its normal end (exit 0).
        log.info("stopped")


def _listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound: a port in use is refused in one line before anything is printed (uvicorn
    printed the page's address, then failed, and the address led to whatever held the port)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise DeepShieldError(f"cannot serve on {_address(host, port)}: {exc.strerror or exc}") from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart reuses the port at once
        listening.bind((host, port))
    except (OSError, OverflowError) as exc:  # OverflowError: a port above 65535 from the Python API
        listening.close()
        raise DeepShieldError(
            f"cannot serve on {_address(host, port)}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return listening


def _address(host: str, port: int) -> str:
    """host:port as a URL writes it: an IPv6 address in brackets (http://::1:8000/ was printed, no address)."""
    try:
        ipv6 = ipaddress.ip_address(host).version == 6
    except ValueError:  # a name, or no address at all (said as given)
        ipv6 = False
    return f"[{host}]:{port}" if ipv6 else f"{host}:{port}"
