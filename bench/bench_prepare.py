"""Benchmark `prepare`: face crops extracted per second with 1 and 2 worker processes.

    python bench/bench_prepare.py [--source DFDC_DIR] [--frames 32] [--workers 1,2] [--repeat 1]

Reads the source read-only; every run writes to a fresh temporary folder (deleted afterwards), so
no run resumes from another. Wall time includes starting the worker processes (spawn, importing
MediaPipe: about a second each), decoding every frame of each video (PyAV decodes the whole
stream to pick N uniform frames), detection, cropping and PNG writing. The host's load average is
printed next to the figures: other jobs on the machine skew them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from deepshield.cpus import usable_cpus
from deepshield.data.extract import ExtractJob, ExtractSettings
from deepshield.engines import FileJob
from deepshield.engines.local import LocalEngine
from deepshield.errors import exit_status
from deepshield.faces.detector import FaceDetector
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.training.config import DataConfig

REPO = Path(__file__).resolve().parents[1]


def run_once(source: Path, frames: int, workers: int) -> dict:
    from deepshield.data.prepare import prepare_dataset

    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        started = time.perf_counter()
        summary = prepare_dataset(
            [source], Path(tmp) / "ds", settings=ExtractSettings(frames=frames), workers=workers, progress=False
        )
        wall = time.perf_counter() - started
    return {
        "workers": workers,
        "files": summary.files,
        "errors": summary.errors,
        "crops": summary.crops,
        "wall_s": round(wall, 2),
        "crops_per_s": round(summary.crops / wall, 2),
    }


@dataclass(frozen=True)
class _StartupJob(FileJob):
    """prepare's own job's worker set-up (quiet logs, one OpenCV thread, a face detector), with items that
    do nothing but name the worker's process: what is timed is the engine's start-up, not any file."""

    job: ExtractJob

    def worker_init(self) -> None:
        self.job.worker_init()

    def setup(self) -> FaceDetector:
        return self.job.setup()

    def run(self, state: FaceDetector, item: int) -> int:
        return os.getpid()

    def fail(self, item: int, reason: str) -> int:
        raise RuntimeError(f"start-up probe {item}: {reason}")


def pool_startup_s(workers: int, frames: int) -> float:
    """Seconds to spawn `workers` processes and build their face detectors (the pool's fixed cost); one
    worker builds its detector in this process, a cost subtracted alike (only the pool's was, which
    flattered the speed-up after start-up of two workers). The pool is prepare's own (LocalEngine.map,
    with its initialiser and arguments): a copy of its set-up here broke when the initialiser gained an
    argument (TypeError in every worker, then BrokenProcessPool). The map ends with the pool's shutdown,
    which waits for every worker it spawned, set-up included, even one that answered no probe."""
    with tempfile.TemporaryDirectory(prefix="bench_pool_") as tmp:
        started = time.perf_counter()
        list(LocalEngine(workers).map(_StartupJob(ExtractJob(tmp, ExtractSettings(frames=frames))), range(workers)))
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, default=None, help="a DFDC folder (default: $DEEPSHIELD_DATA_ROOT/dev-eval/dfdc-sample)"
    )
    parser.add_argument("--frames", type=int, default=DEFAULT_VIDEO_FRAMES)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count; the fastest is kept")
    args = parser.parse_args()
    source = args.source or DataConfig().locate(Path("dev-eval/dfdc-sample"), "the DFDC sample")
    if not source.exists():
        print(f"bench_prepare: {source} not found", file=sys.stderr)
        return 2
    results = []
    for workers in (int(w) for w in args.workers.split(",")):
        best = max((run_once(source, args.frames, workers) for _ in range(args.repeat)), key=lambda r: r["crops_per_s"])
        best["pool_startup_s"] = round(pool_startup_s(workers, args.frames), 2)
        best["crops_per_s_after_startup"] = round(best["crops"] / max(best["wall_s"] - best["pool_startup_s"], 1e-6), 2)
        best["load_avg_1m"] = round(os.getloadavg()[0], 2)
        results.append(best)
        print(json.dumps(best), flush=True)
    base = results[0]["crops_per_s"]
    print(
        f"\nsource {source} ({results[0]['files']} files listed, {results[0]['errors']} errors), {args.frames} frames per video, {usable_cpus()} CPUs"
    )
    print(
        f"{'workers':>7}  {'crops':>6}  {'wall s':>7}  {'crops/s':>8}  {'speed-up':>8}  {'start-up s':>10}  {'crops/s after':>13}  {'load':>5}"
    )
    for r in results:
        print(
            f"{r['workers']:>7}  {r['crops']:>6}  {r['wall_s']:>7.2f}  {r['crops_per_s']:>8.2f}  {r['crops_per_s'] / base:>7.2f}x  "
            f"{r['pool_startup_s']:>10.2f}  {r['crops_per_s_after_startup']:>13.2f}  {r['load_avg_1m']:>5.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_prepare"))
