"""Benchmark the server against hostile media and hostile clients (issue 14's reproductions).

Starts `deepshield serve` on 127.0.0.1 (a free port; a fresh server per figure, so that no figure
inherits another's memory) with the shipped bundle, or --model BUNDLE, and measures:

- RSS peak per request (peak RSS while the request runs, minus RSS just before it) for the worst
  kinds of the issue: a 16-bit 6300 x 6300 PNG (92 KB), a 32-bit float 6300 x 6300 TIFF, and an
  MJPEG .mov whose header says 64 x 64 while its frames are 5000 x 5000 (as a job);
- how long the only job worker is held by a 16 x 16 video of 100,000 frames at 1000 fps, and by
  the same at 240 fps (the frame-rate limit);
- `/healthz` latency (new connection each) and an analysis from another client address while 110
  half-open connections and 18 slow (1 byte/s) uploads are open.

Every client targets 127.0.0.1 only, is bounded in count and time, and stops by itself. It measures
this checkout (its test helpers start the server; an older checkout's code lacks them, so a "before" is
measured by running this script in that checkout's own history, not by pointing PYTHONPATH at it):

    python bench/bench_hostile.py [--model BUNDLE] [--smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import select
import socket
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import av
import httpx
import numpy as np
from PIL import Image

from bench_serving import RssSampler  # this folder is on the path when the script runs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for tests/serving_support.py
from tests.serving_support import rss_bytes, server_process

from deepshield.errors import exit_status
from deepshield.inference.runtime import bundle_dir, read_card

BOUNDARY = "hostile"
JOB_DEADLINE_S = 120.0


# ------------------------------------------------------------------------------------------ media
def png_16_bit(side: int = 6300) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), 30000, np.uint16)).save(buffer, "PNG")
    return buffer.getvalue()


def float_tiff(side: int = 6300) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), 0.5, np.float32), "F").save(buffer, "TIFF", compression="tiff_deflate")
    return buffer.getvalue()


def lying_mjpeg(path: Path, side: int = 5000, frames: int = 10) -> bytes:
    """Header and first two packets 64 x 64 (FFmpeg probes those), then side x side JPEGs."""

    def jpeg(size: int) -> bytes:
        noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, "JPEG", quality=30)
        return buffer.getvalue()

    small, big = jpeg(64), jpeg(side)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p"
        for i in range(frames + 2):
            packet = av.Packet(small if i < 2 else big)
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            container.mux(packet)
    return path.read_bytes()


def tiny_fast_video(path: Path, fps: int, frames: int = 100_000) -> bytes:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        image = np.zeros((16, 16, 3), np.uint8)
        for i in range(frames):
            image[:] = i % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


# ------------------------------------------------------------------------------------------ measuring
def added_mb(peak: int, before: int) -> float:
    return (peak - before) / 1e6


def post(base_url: str, path: str, data: bytes, name: str, timeout: float = 120) -> httpx.Response:
    return httpx.post(base_url + path, files={"file": (name, data, "application/octet-stream")}, timeout=timeout)


def finish_job(base_url: str, submitted: httpx.Response) -> dict:
    if submitted.status_code != 202:
        return {"status": f"refused: {outcome(submitted)}", "error": None}
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + JOB_DEADLINE_S
    while time.monotonic() < deadline:
        job = httpx.get(f"{base_url}/v1/jobs/{job_id}", timeout=30).json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    return {"status": "still running", "error": None}


def outcome(response_or_job) -> str:
    if isinstance(response_or_job, httpx.Response):
        if response_or_job.status_code == 200:
            return "200"
        try:
            code = response_or_job.json().get("error")
        except ValueError:  # not our JSON: uvicorn's own plain-text answer
            code = repr(response_or_job.text[:40])
        return f"{response_or_job.status_code} {code}"
    error = response_or_job.get("error") or {}
    return f"job {response_or_job['status']}" + (
        f" ({error.get('error')}: {error.get('detail', '')[:70]})" if error else ""
    )


def image_peak(model, data: bytes, name: str) -> tuple[float, str]:
    with server_process(model) as (base_url, process):
        warm = post(base_url, "/v1/analyze", png_small(), "warm.png")
        assert warm.status_code == 200, warm.text
        time.sleep(0.5)
        before = rss_bytes(process.pid)
        with RssSampler(process.pid, interval_s=0.01) as rss:
            response = post(base_url, "/v1/analyze", data, name)
        return added_mb(rss.peak, before), outcome(response)


def job_figures(model, data: bytes, name: str, query: str = "") -> tuple[float, float, str]:
    """(added RSS MB, seconds the job took from submission, outcome)."""
    with server_process(model) as (base_url, process):
        time.sleep(0.5)
        before = rss_bytes(process.pid)
        with RssSampler(process.pid, interval_s=0.01) as rss:
            started = time.perf_counter()
            job = finish_job(base_url, post(base_url, "/v1/jobs" + query, data, name))
            elapsed = time.perf_counter() - started
        return added_mb(rss.peak, before), elapsed, outcome(job)


def png_small() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 120, 120)).save(buffer, "PNG")
    return buffer.getvalue()


def answer_status(sock: socket.socket) -> str:
    """The status code of the answer waiting on a socket; 'closed' where the server closed it unanswered."""
    try:
        head = sock.recv(64)
    except OSError:
        return "closed"
    return head.split(b" ", 2)[1].decode() if head.startswith(b"HTTP/") else "closed"


def hostile_clients(model, image: bytes) -> dict:
    """/healthz and an analysis while 110 half-open connections and 18 slow uploads are open."""
    figures: dict = {}
    with server_process(model) as (base_url, _):
        port = urlsplit(base_url).port
        # The server's own address: listening on loopback, it refuses other Host names (400 unknown_host).
        host = urlsplit(base_url).netloc
        sockets: list[socket.socket] = []
        try:
            for _ in range(110):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n".encode())
                sockets.append(sock)
            part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'.encode()
            head = f"POST /v1/analyze HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 1000000\r\n\r\n"
            for _ in range(18):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sock.sendall(head.encode() + part + b"\xff")
                sockets.append(sock)
            time.sleep(1.0)
            for sock in sockets[110:]:  # one more byte each: 1 byte/s
                with contextlib.suppress(OSError):
                    sock.sendall(b"\x00")
            latencies, statuses = [], []
            for _ in range(20):
                started = time.perf_counter()
                try:
                    statuses.append(httpx.get(base_url + "/healthz", timeout=5).status_code)
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)
                latencies.append((time.perf_counter() - started) * 1000)
            figures["healthz_ms"] = (statistics.median(latencies), max(latencies))
            figures["healthz_statuses"] = sorted(set(map(str, statuses)))
            # Readable: answered or closed. A figure with the uploads refused (a 400 at once) measures none.
            answered, _, _ = select.select(sockets[110:], [], [], 0)
            figures["slow_held"] = len(sockets) - 110 - len(answered)
            figures["slow_answers"] = sorted({answer_status(sock) for sock in answered})
            transport = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(base_url=base_url, timeout=30, transport=transport) as client:
                started = time.perf_counter()
                try:
                    response = client.post("/v1/analyze", files={"file": ("photo.jpg", image, "image/jpeg")})
                    figures["analyze"] = outcome(response)
                except httpx.HTTPError as exc:
                    figures["analyze"] = type(exc).__name__
                figures["analyze_ms"] = (time.perf_counter() - started) * 1000
        finally:
            for sock in sockets:
                sock.close()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model bundle (default: the shipped one)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="small media (1000 px images and MJPEG frames, 2,000-frame videos): checks that it starts and finishes",
    )
    args = parser.parse_args()
    # The sizes, or the smoke run's: every row names the size it measured.
    side, frame_side, frames = (1000, 1000, 2_000) if args.smoke else (6300, 5000, 100_000)
    read_card(bundle_dir(args.model))  # a bundle that is not one said in a line, not by a server that never answers
    import deepshield

    print(f"code: {Path(deepshield.__file__).parent}; load average {os.getloadavg()[0]:.1f}", flush=True)
    photo = (
        Path(__file__).resolve().parent.parent / "src/deepshield/serving/static/examples/astronaut-real.jpg"
    ).read_bytes()

    def report(what: str, figure: str, result: str) -> None:
        print(f"{what:<66}  {figure:<36}  {result}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        png16 = png_16_bit(side)
        added, result = image_peak(args.model, png16, "i16.png")
        report(f"16-bit {side}x{side} PNG ({len(png16) / 1e3:.0f} KB), /v1/analyze", f"+{added:.0f} MB RSS", result)
        tiff = float_tiff(side)
        added, result = image_peak(args.model, tiff, "f32.tif")
        report(f"float {side}x{side} TIFF ({len(tiff) / 1e3:.0f} KB), /v1/analyze", f"+{added:.0f} MB RSS", result)
        mjpeg = lying_mjpeg(folder / "liar.mov", frame_side)
        added, elapsed, result = job_figures(args.model, mjpeg, "liar.mov")
        report(
            f"MJPEG .mov, header 64x64, frames {frame_side}x{frame_side} ({len(mjpeg) / 1e6:.1f} MB), job",
            f"+{added:.0f} MB RSS, {elapsed:.1f} s",
            result,
        )
        for fps in (1000, 240):
            video = tiny_fast_video(folder / f"fast{fps}.mp4", fps, frames)
            added, elapsed, result = job_figures(args.model, video, f"fast{fps}.mp4")
            report(
                f"16x16 H.264, {frames:,} frames at {fps} fps ({len(video) / 1e6:.1f} MB), job",
                f"worker held {elapsed:.1f} s, +{added:.0f} MB RSS",
                result,
            )
    clients = hostile_clients(args.model, photo)
    p50, worst = clients["healthz_ms"]
    report(
        "/healthz, 110 half-open + 18 slow uploads open",
        f"p50 {p50:.1f} ms, max {worst:.1f} ms",
        "HTTP "
        + "/".join(clients["healthz_statuses"])
        + f"; slow uploads held {clients['slow_held']}/18"
        + (f", the others answered {'/'.join(clients['slow_answers'])}" if clients["slow_answers"] else ""),
    )
    report("/v1/analyze from 127.0.0.2 meanwhile", f"{clients['analyze_ms']:.0f} ms", clients["analyze"])
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_hostile"))
