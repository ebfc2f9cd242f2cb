"""Run the app on a real socket for tests and benchmarks (bench/ imports it too): in a background thread, or as a subprocess."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from deepshield.native_logs import QUIET_ENV


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(base_url: str, timeout_s: float = 60.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before answering")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"server at {base_url} not healthy after {timeout_s:.0f} s")


@contextlib.contextmanager
def live_server(app, host: str = "127.0.0.1", settings=None) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread on a free port; yields the base URL. With
    `settings` (ServerSettings) it runs behind serve()'s connection guard and timeouts."""
    import uvicorn

    from deepshield.serving.server import uvicorn_config

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    if settings is None:
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=5)
    else:
        config = uvicorn_config(app, settings, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="deepshield-live-server", daemon=True)
    thread.start()
    base_url = f"http://{host}:{port}"
    try:
        wait_healthy(base_url, timeout_s=30)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@contextlib.contextmanager
def server_process(
    model: str | Path | None, env: dict[str, str] | None = None, host: str = "127.0.0.1", log_path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `deepshield serve` as a subprocess on a free port; yields (base URL, process)."""
    port = free_port(host)
    command = [sys.executable, "-m", "deepshield.cli.main", "serve", "--host", host, "--port", str(port)]
    if model is not None:
        command += ["--model", str(model)]
    full_env = {**os.environ, **QUIET_ENV, **(env or {})}
    with open(log_path, "wb") if log_path else contextlib.nullcontext(subprocess.DEVNULL) as log:
        process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://{host}:{port}"
        try:
            wait_healthy(base_url, timeout_s=120, process=process)
            yield base_url, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
