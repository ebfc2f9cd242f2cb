"""Benchmark the REST API: sustained images/s and p50/p95 latency at 1, 4 and 8 concurrent clients.

Starts `deepshield serve` on 127.0.0.1 (a free port) with the default bundle, or --model BUNDLE,
posts one photo to /v1/analyze as fast as each client can for --duration seconds per level, and
samples the server's RSS throughout. Prints a table (with the 1-minute load average after each
level, this bench's own server and clients included) and checks the targets:
>= 10 images/s and p95 <= 500 ms at 4 clients, RSS <= 1 GB.

Every client posts from 127.0.0.1, one address to the server: the server started here admits as many
uploads at once from one client as the highest level has clients (DEEPSHIELD_MAX_UPLOADS_PER_CLIENT; the
default, 4 since 2026-12-01, refused the 8-client level's uploads with 429 too_many_uploads), and queues
them all (DEEPSHIELD_MAX_QUEUE), so the figures are throughput and latency, not refusals. With --url the
running server's own limits apply: above its per-client cap, requests are refused and counted as errors.

    python bench/bench_serving.py [--model BUNDLE] [--duration 15] [--clients 1,4,8] [--image PATH]
    python bench/bench_serving.py --url http://127.0.0.1:8000   # an already running server (no RSS)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for tests/serving_support.py
from tests.serving_support import rss_bytes, server_process

from deepshield.errors import exit_status

DEFAULT_IMAGE = (
    Path(__file__).resolve().parent.parent
    / "src"
    / "deepshield"
    / "serving"
    / "static"
    / "examples"
    / "astronaut-real.jpg"
)
TARGET_RATE_AT_4 = 10.0
TARGET_P95_AT_4_MS = 500.0
TARGET_RSS_BYTES = 1_000_000_000


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class RssSampler:
    def __init__(self, pid: int | None, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, RuntimeError):
                return
            self._stop.wait(self.interval_s)

    def __enter__(self):
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def run_level(base_url: str, image: bytes, clients: int, duration_s: float, headers: dict[str, str]) -> dict:
    stop_at = time.monotonic() + duration_s

    def client(_: int) -> tuple[list[float], dict[int, int]]:
        latencies, statuses = [], {}
        with httpx.Client(base_url=base_url, timeout=120, headers=headers) as http:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    status = http.post("/v1/analyze", files={"file": ("bench.jpg", image, "image/jpeg")}).status_code
                except httpx.HTTPError:
                    status = 0
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    latencies.append(time.perf_counter() - started)
        return latencies, statuses

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(client, range(clients)))
    elapsed = time.monotonic() - started
    latencies = sorted(latency for client_latencies, _ in outcomes for latency in client_latencies)
    statuses: dict[int, int] = {}
    for _, counts in outcomes:
        for status, count in counts.items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "clients": clients,
        "ok": len(latencies),
        "errors": sum(c for s, c in statuses.items() if s != 200),
        "statuses": statuses,
        "rate": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
    }


def bench(
    base_url: str, pid: int | None, image: bytes, levels: list[int], duration_s: float, headers: dict[str, str]
) -> list[dict]:
    print(f"warming up ({base_url}); load average at start {os.getloadavg()[0]:.2f} ...", flush=True)
    run_level(base_url, image, max(levels), min(5.0, duration_s), headers)
    rows = []
    for clients in levels:
        with RssSampler(pid) as sampler:
            row = run_level(base_url, image, clients, duration_s, headers)
        row["rss_peak"] = sampler.peak
        row["load_1m"] = os.getloadavg()[0]  # after the level: its own server and clients count too
        rows.append(row)
        print(
            f"  {clients} client(s): {row['rate']:.1f} images/s, p95 {row['p95_ms']:.0f} ms, load {row['load_1m']:.2f}",
            flush=True,
        )
    return rows


def print_table(rows: list[dict], model: str) -> bool:
    print()
    print(f"Deepfake Shield REST API, POST /v1/analyze, model: {model}")
    header = f"{'clients':>7}  {'images/s':>8}  {'p50 ms':>7}  {'p95 ms':>7}  {'mean ms':>7}  {'ok':>6}  {'errors':>6}  {'RSS peak MiB':>12}  {'load':>5}"
    print(header)
    print("-" * len(header))
    for r in rows:
        rss = f"{r['rss_peak'] / 2**20:.0f}" if r["rss_peak"] else "-"
        print(
            f"{r['clients']:>7}  {r['rate']:>8.1f}  {r['p50_ms']:>7.0f}  {r['p95_ms']:>7.0f}  {r['mean_ms']:>7.0f}  {r['ok']:>6}  {r['errors']:>6}  {rss:>12}  {r['load_1m']:>5.2f}"
        )
    print()
    ok = True
    at4 = next((r for r in rows if r["clients"] == 4), None)
    if at4 is not None:
        for label, value, target, good in (
            (
                "throughput at 4 clients",
                f"{at4['rate']:.1f} images/s",
                f">= {TARGET_RATE_AT_4:.0f}",
                at4["rate"] >= TARGET_RATE_AT_4,
            ),
            (
                "p95 latency at 4 clients",
                f"{at4['p95_ms']:.0f} ms",
                f"<= {TARGET_P95_AT_4_MS:.0f} ms",
                at4["p95_ms"] <= TARGET_P95_AT_4_MS,
            ),
        ):
            print(f"  {'PASS' if good else 'FAIL'}  {label}: {value} (target {target})")
            ok &= good
    peak = max((r["rss_peak"] for r in rows), default=0)
    if peak:
        good = peak <= TARGET_RSS_BYTES
        print(
            f"  {'PASS' if good else 'FAIL'}  server RSS peak: {peak / 1e6:.0f} MB (target <= {TARGET_RSS_BYTES / 1e6:.0f} MB)"
        )
        ok &= good
    errors = sum(r["errors"] for r in rows)
    if errors:
        print(f"  FAIL  {errors} requests did not answer 200: {[r['statuses'] for r in rows]}")
        ok = False
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description="Benchmark the Deepfake Shield REST API.")
    parser.add_argument("--model", default=None, help="model bundle folder (default: the shipped model)")
    parser.add_argument("--url", default=None, help="benchmark this running server instead of starting one")
    parser.add_argument(
        "--image", type=Path, default=DEFAULT_IMAGE, help="the photo to send (default: the astronaut example)"
    )
    parser.add_argument("--clients", default="1,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per level")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    image = args.image.read_bytes()
    headers = {"X-API-Key": os.environ["DEEPSHIELD_API_KEY"]} if os.environ.get("DEEPSHIELD_API_KEY") else {}
    if args.url:
        model = httpx.get(args.url.rstrip("/") + "/healthz", timeout=10).json()["model"]
        rows = bench(args.url.rstrip("/"), None, image, levels, args.duration, headers)
        return 0 if print_table(rows, model) else 1
    # The server must admit every client at once, all from one address: size its queue, its uploads at
    # once and its per-client cap for the highest level.
    env = {
        "DEEPSHIELD_MAX_QUEUE": str(max(16, 2 * max(levels))),
        "DEEPSHIELD_MAX_UPLOADS": str(max(32, max(levels))),
        "DEEPSHIELD_MAX_UPLOADS_PER_CLIENT": str(max(4, max(levels))),
    }
    log_path = Path(tempfile.mkstemp(prefix="deepshield-bench-", suffix=".log")[1])
    try:
        with server_process(args.model, env=env, log_path=log_path) as (base_url, process):
            model = httpx.get(base_url + "/healthz", timeout=10).json()["model"]
            rows = bench(base_url, process.pid, image, levels, args.duration, headers)
    except (RuntimeError, TimeoutError) as exc:
        print(f"bench_serving: could not start the server: {exc}", file=sys.stderr)
        print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        return 2
    finally:
        log_path.unlink(missing_ok=True)
    return 0 if print_table(rows, model) else 1


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_serving"))
