"""Benchmark `scan` on Ray: throughput of the local engine against Ray on this machine (the Ray
overhead), and Ray with 1 against 2 workers (the speed-up).

    python bench/bench_ray.py [--images 60] [--size 512] [--model BUNDLE] [--repeat 3]

Inputs, made on the fly: `--images` JPEGs of the scikit-image astronaut (one face each; shifted,
mirrored and tinted so that no two are the same file). Model: `--model`, else the shipped bundle
in src/deepshield/models/default/, else an untrained efficientnet_lite0 224 px bundle exported to
a temporary folder (ImageNet backbone, random head: the FLOPs of a trained model).

Engines, each over the same files with the same ScanJob:
- local: the local engine in this process (what `deepshield scan` does by default);
- ray, N CPUs: a private local Ray instance given N CPUs, so at most N Ray worker processes scan
  at once (each loads the model once), with the engine's default in-flight limit (2 x N files);
  this is the "1 vs 2 Ray workers" comparison;
- ray, --workers 1: 2 CPUs but at most one file in flight (`deepshield scan --engine ray
  --workers 1`): every file pays a full round trip, driver -> worker -> driver, with nothing
  overlapping it; the difference to the local engine is Ray's per-file overhead.

Each configuration runs `--repeat` times; the first ("cold") includes loading the model (in this
process, or in each new Ray worker process), the best of the others ("warm") is the steady state.
Ray's start-up (`ray.init`) is timed on its own. The rows of every run are checked against the
local engine's (same verdicts and probabilities). The host's load average is printed: other jobs
on the machine (a training run) skew every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from deepshield.cpus import usable_cpus
from deepshield.errors import exit_status

CONFIGS = (
    ("ray, 1 CPU", 1, None),
    ("ray, 2 CPUs", 2, None),
    ("ray, 2 CPUs, --workers 1", 2, 1),
)  # (label, Ray CPUs, --workers)


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    import cv2
    import numpy as np
    from skimage import data as skdata

    base = cv2.resize(skdata.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = np.roll(base, (i % 9 - 4) * size // 64, axis=1)
        if i % 2:
            image = image[:, ::-1]
        tint = np.array([(i * 7) % 21, (i * 11) % 21, (i * 13) % 21]) - 10
        image = np.clip(image.astype(np.int16) + tint, 0, 255).astype(np.uint8)
        path = folder / f"face_{i:03d}.jpg"
        cv2.imwrite(
            str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        paths.append(path)
    return paths


def resolve_bundle(model: str | None, workdir: Path) -> tuple[Path, str]:
    from deepshield.inference.runtime import DEFAULT_BUNDLE, read_card

    if model or (DEFAULT_BUNDLE / "model_card.json").is_file():
        bundle = Path(model) if model else DEFAULT_BUNDLE
        card = read_card(bundle)
        return bundle, f"{bundle} ({card.name} {card.version}, {card.architecture} {card.input_size} px)"
    from bench_latency import RANDOM_BUNDLE_NOTE, random_bench_bundle  # this folder is on the path when the script runs

    return random_bench_bundle(workdir)[1], RANDOM_BUNDLE_NOTE


def timed_runs(engine, job, files, repeat: int) -> tuple[list[float], list]:
    walls, rows = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        rows = list(engine.map(job, files))
        walls.append(time.perf_counter() - started)
    return walls, rows


def signature(rows) -> list:
    return [
        (row.path, row.status, row.verdict, None if row.probability is None else round(row.probability, 6), row.faces)
        for row in rows
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--model", help="model bundle (default: the shipped one, else an exported untrained one)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration (the first is cold)")
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        print("bench_ray: needs Ray: pip install 'deepfake-shield[ray]'", file=sys.stderr)
        return 2
    from deepshield.engines.local import LocalEngine
    from deepshield.engines.ray import RayEngine
    from deepshield.inference.scan import ScanJob

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        files = make_images(Path(tmp) / "images", args.images, args.size)
        bundle, model_note = resolve_bundle(args.model, Path(tmp))
        job = ScanJob(bundle=str(bundle), frames=1)

        walls, rows = timed_runs(LocalEngine(1), job, files, args.repeat)
        reference = signature(rows)
        results.append(
            {
                "engine": "local",
                "workers": 1,
                "cold_s": walls[0],
                "warm_s": min(walls[1:] or walls),
                "load": os.getloadavg()[0],
            }
        )
        print(json.dumps(results[-1]), flush=True)

        ray_init_s = []
        for label, cpus, workers in CONFIGS:
            started = time.perf_counter()
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
            ray_init_s.append(time.perf_counter() - started)
            try:
                walls, rows = timed_runs(RayEngine(workers=workers), job, files, args.repeat)
            finally:
                ray.shutdown()
            if signature(rows) != reference:
                print(f"bench_ray: {label}: rows differ from the local engine's", file=sys.stderr)
                return 1
            results.append(
                {
                    "engine": label,
                    "cpus": cpus,
                    "in_flight": workers or 2 * cpus,
                    "cold_s": walls[0],
                    "warm_s": min(walls[1:] or walls),
                    "load": os.getloadavg()[0],
                }
            )
            print(json.dumps(results[-1]), flush=True)

    n = args.images
    local, one, two, serial = results
    print(f"\n{n} images {args.size}x{args.size} (one face each), {usable_cpus()} CPUs; model: {model_note}")
    print(
        f"ray.init (a private local instance): {min(ray_init_s):.2f}-{max(ray_init_s):.2f} s, not included below; rows identical to the local engine's: yes"
    )
    print(
        f"{'engine':>22}  {'in flight':>9}  {'cold s':>7}  {'warm s':>7}  {'img/s warm':>10}  {'vs local':>8}  {'load':>5}"
    )
    for r in results:
        rate = n / r["warm_s"]
        print(
            f"{r['engine']:>22}  {r.get('in_flight', 1):>9}  {r['cold_s']:>7.2f}  {r['warm_s']:>7.2f}  {rate:>10.2f}  {rate / (n / local['warm_s']):>7.2f}x  {r['load']:>5.2f}"
        )
    print(f"\nRay overhead, 1 CPU vs the local engine (warm): {one['warm_s'] / local['warm_s']:.2f}x the wall time")
    print(f"Ray overhead per file, one file in flight (warm): {(serial['warm_s'] - local['warm_s']) / n * 1000:.1f} ms")
    print(f"Ray speed-up, 2 workers (CPUs) vs 1 (warm): {one['warm_s'] / two['warm_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_ray"))
