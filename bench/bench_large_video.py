"""Large videos: time and peak memory of `Detector.analyze_video` on 4K and 8K clips, read as the
product reads them (8K frames at 1/2; many frames of 4K at 1/2, within the frames' 1 GB), against the
same 4K clip's frames all read whole (the behaviour before the frames' memory limit), in the same run.

Each analysis runs in its own Python process, so that its peak RSS (from `os.wait4`) is its own and
includes the model's load. The clips are made here: the scikit-image astronaut drifting across a
smooth background, H.264, a keyframe a second, 30 fps:

    python bench/bench_large_video.py [--seconds 5] [--model BUNDLE]

Before the change an 8K clip was refused ("video frames are 7680x4320 = 33.2 megapixels, above the 8.3
megapixel limit"), so it has no baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

from deepshield.errors import exit_status
from deepshield.inference.runtime import bundle_dir, read_card

# One analysis, run in a child process: prints the result's read scale, tracks and elapsed seconds.
CHILD = """
import json, sys, time
from deepshield import Detector
from deepshield.media.video import VideoLimits
path, frames, frames_bytes, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None
detector = Detector.from_bundle(model, video_limits=VideoLimits(max_frames_bytes=frames_bytes))
started = time.perf_counter()
result = detector.analyze_video(path, frames=frames)
print(json.dumps({"scale": result.video.decoded_scale, "tracks": len(result.tracks),
                  "seconds": time.perf_counter() - started, "verdict": result.verdict.label}))
"""


def make_clip(path: Path, width: int, height: int, seconds: int) -> Path:
    """The astronaut (3/8 of the height) drifting right over a smooth colour gradient."""
    rows = np.linspace(40, 200, height, dtype=np.float32)[:, None]
    cols = np.linspace(60, 180, width, dtype=np.float32)[None, :]
    background = np.stack([rows + 0 * cols, 0 * rows + cols, (rows + cols) / 2], axis=-1).astype(np.uint8)
    side = height * 3 // 8
    face = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    frames = seconds * 30
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "30", "crf": "23"}
        for i in range(frames):
            image = background.copy()
            x = width // 8 + i * (width // 2) // frames
            image[height // 4 : height // 4 + side, x : x + side] = face
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def analyse(path: Path, frames: int, frames_bytes: int, model: str | None) -> dict:
    """One analysis in a fresh process: its figures and its peak RSS."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(frames), str(frames_bytes), model or ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"analysis of {path.name} failed (exit {process.returncode})")
    return json.loads(output.strip().splitlines()[-1]) | {"peak_gb": usage.ru_maxrss * 1024 / 1e9}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="clip length (default 5)")
    parser.add_argument("--model", default=None, help="bundle (default: the shipped model)")
    args = parser.parse_args()
    read_card(bundle_dir(args.model))  # before the clips: each analysis's process would fail with no word why
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 CPU cores here; a busy machine slows every figure)")
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        uhd = make_clip(Path(folder) / "4k.mp4", 3840, 2160, args.seconds)
        eight_k = make_clip(Path(folder) / "8k.mp4", 7680, 4320, args.seconds)
        print(f"clips made in {time.perf_counter() - started:.0f} s ({args.seconds} s each, H.264, 30 fps)")
        default_bytes = 1_000_000_000
        runs = [
            ("4K, 32 frames", uhd, 32, default_bytes),
            ("4K, 128 frames (as the product reads them: 1 GB of frames)", uhd, 128, default_bytes),
            ("4K, 128 frames read whole (baseline: no frames' memory limit)", uhd, 128, 10**12),
            ("8K, 32 frames (as the product reads them)", eight_k, 32, default_bytes),
        ]
        print(f"\n| {'analysis':<64} | scale | tracks | verdict | seconds | peak RSS |")
        print(f"|{'-' * 66}|-------|--------|---------|---------|----------|")
        figures = {}
        for name, path, frames, frames_bytes in runs:
            result = analyse(path, frames, frames_bytes, args.model)
            figures[name] = result
            print(
                f"| {name:<64} | 1/{result['scale']}   | {result['tracks']:>6} | {result['verdict']} | {result['seconds']:>7.1f} "
                f"| {result['peak_gb']:>5.2f} GB |"
            )
    reduced, whole = figures[runs[1][0]], figures[runs[2][0]]
    # The cheaper read is only a saving if it reaches the same answer: said, not assumed.
    agree = (reduced["tracks"], reduced["verdict"]) == (whole["tracks"], whole["verdict"])
    print(
        f"\n128 frames of 4K read at 1/{reduced['scale']} against read whole: "
        + (
            "the same tracks and verdict"
            if agree
            else f"DIFFERENT: {reduced['tracks']} tracks, {reduced['verdict']} against {whole['tracks']} tracks, {whole['verdict']}"
        )
    )
    print(
        f"128 frames of 4K: {reduced['peak_gb'] / whole['peak_gb']:.2f} times the baseline's peak memory, "
        f"{reduced['seconds'] / whole['seconds']:.2f} times its time"
    )
    print(
        f"target: every analysis here under 2 GB peak RSS: {'met' if all(f['peak_gb'] < 2 for n, f in figures.items() if 'baseline' not in n) else 'missed'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_large_video"))
