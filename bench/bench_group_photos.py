"""Faces found in group photos: real faces of a given width set into large frames, several a frame,
found by the shipped detector (`FaceDetector.detect`: tiles of 0.6 times the longer side, at most
TILE_FROM px) and by the baseline in the same run, the tiling it replaced (0.6 times the longer side at
any size, two tiles along each side, and none up to TILE_FROM px: frames of TILE_ABOVE to TILE_FROM px, e.g.
`--sizes 1024x1024 1280x720`, compare the tiles with the whole image alone).

    DEEPSHIELD_DATA_ROOT=../shared/data .venv/bin/python bench/bench_group_photos.py \\
        [--dirs dev-eval/face-edits/real dev-eval/modern-swaps/real] [--widths 80 100 130 170 220] \\
        [--sizes 4032x3024 1920x1080] [--frames 6] [--faces 8] [--limit 80]

Each real photo whose detector finds exactly one face gives a crop of 2.2 times that face's box. A frame
is a blurred-noise background with `--faces` such crops, each scaled so that its face is `width` px wide
and placed in its own cell of a grid (cells three face widths wide), so faces never overlap. A placed
face counts as found when a detection's corner lies within half a face width of its box's corner; any
other detection counts as extra (on this background, a false face). Per frame size and width it prints
faces found by each rule with a 95% Wilson interval, extra detections, and the detection time per frame.

With `--verdicts`, each frame is then analysed as `scan` does (`Detector.analyze_image`, shipped tiling and
bundle, or `--model`): all its faces are real, so any face at or above the threshold is a false alarm, and
the file's verdict (the most severe of its faces) says how often a real group photo is called likely
manipulated or inconclusive.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from deepshield.errors import exit_status
from deepshield.faces import detector as detector_module
from deepshield.faces.detector import Face, FaceDetector, Tile
from deepshield.inference.analysis import Detector
from deepshield.inference.runtime import bundle_dir
from deepshield.media.images import load_image

sys.path.insert(0, str(Path(__file__).parent))
from bench_small_faces import real_photos, wilson

PlacedFace = tuple[float, float, float]  # x0, y0 of the face's box and its width


def baseline_tiles(height: int, width: int) -> list[Tile]:
    """The tiling before December 2026: tiles of 0.6 times the longer side at any size, two along each
    side longer than that."""
    if max(height, width) <= detector_module.TILE_FROM:
        return []
    side = -(-3 * max(height, width) // 5)

    def spans(length: int) -> list[tuple[int, int]]:
        return [(0, length)] if length <= side else [(0, side), (length - side, length)]

    return [Tile(x0, y0, x1, y1) for y0, y1 in spans(height) for x0, x1 in spans(width)]


def face_crops(files: list[Path], detector: FaceDetector) -> list[tuple[np.ndarray, PlacedFace]]:
    """Each one-face photo's crop around its face, with the face's box in the crop."""
    crops = []
    for path in files:
        image = load_image(path)
        faces = detector.detect(image)
        if len(faces) != 1:
            continue
        box = faces[0].box
        (cx, cy), reach = box.center, 1.1 * max(box.width, box.height)
        x0, y0 = int(max(0, cx - reach)), int(max(0, cy - reach))
        x1, y1 = int(min(image.shape[1], cx + reach)), int(min(image.shape[0], cy + reach))
        crops.append((image[y0:y1, x0:x1], (box.x0 - x0, box.y0 - y0, box.width)))
    return crops


def group_frame(
    crops: list[tuple[np.ndarray, PlacedFace]], size: tuple[int, int], width: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[PlacedFace]]:
    frame_w, frame_h = size
    background = rng.integers(60, 200, (frame_h // 8, frame_w // 8, 3), dtype=np.uint8)
    frame = cv2.resize(cv2.GaussianBlur(background, (0, 0), 3), (frame_w, frame_h), interpolation=cv2.INTER_LINEAR)
    cell = 3 * width
    cells = [(i, j) for i in range(frame_w // cell) for j in range(frame_h // cell)]
    placed = []
    for index in rng.permutation(len(cells))[:count]:
        i, j = cells[index]
        crop, (face_x, face_y, face_w) = crops[int(rng.integers(len(crops)))]
        scale = width / face_w
        scaled = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)[:cell, :cell]
        h, w = scaled.shape[:2]
        x, y = i * cell + int(rng.integers(0, cell - w + 1)), j * cell + int(rng.integers(0, cell - h + 1))
        frame[y : y + h, x : x + w] = scaled
        placed.append((x + face_x * scale, y + face_y * scale, float(width)))
    return frame, placed


def matches(face: Face, placed: PlacedFace) -> bool:
    x, y, width = placed
    return abs(face.box.x0 - x) < width / 2 and abs(face.box.y0 - y) < width / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dirs", nargs="+", default=["dev-eval/face-edits/real", "dev-eval/modern-swaps/real"])
    parser.add_argument("--widths", nargs="+", type=int, default=[80, 100, 130, 170, 220], help="face widths (px)")
    parser.add_argument("--sizes", nargs="+", default=["4032x3024", "1920x1080"], help="frame sizes, WxH")
    parser.add_argument("--frames", type=int, default=6, help="frames per size and width")
    parser.add_argument("--faces", type=int, default=8, help="faces per frame at most (as many as fit)")
    parser.add_argument("--limit", type=int, default=80, help="real photos at most")
    parser.add_argument("--verdicts", action="store_true", help="also analyse each frame: false alarms, verdicts")
    parser.add_argument("--model", default=None, help="bundle for --verdicts (default: the shipped one)")
    args = parser.parse_args()
    files = real_photos(args.dirs, args.limit)
    analysis = Detector.from_bundle(bundle_dir(args.model)) if args.verdicts else None
    detector = analysis.faces if analysis is not None else FaceDetector()
    crops = face_crops(files, detector)
    verdicts: list[str] = []
    rules: dict[str, Callable[[int, int], list[Tile]]] = {"shipped": detector_module.tiles, "baseline": baseline_tiles}
    rng = np.random.default_rng(0)
    print(f"{len(crops)} real faces from {len(files)} photos; load average {os.getloadavg()[0]:.2f}")
    print("frame      width  rule      found [95%]                extra  ms/frame")
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.split("x"))
        for width in args.widths:
            frames = [group_frame(crops, size, width, args.faces, rng) for _ in range(args.frames)]  # type: ignore[arg-type]
            total = sum(len(placed) for _, placed in frames)
            for name, rule in rules.items():
                detector_module.tiles = rule  # type: ignore[assignment]
                found = extra = 0
                started = time.perf_counter()
                for frame, placed in frames:
                    faces = detector.detect(frame)
                    found += sum(any(matches(face, p) for face in faces) for p in placed)
                    extra += sum(not any(matches(face, p) for p in placed) for face in faces)
                elapsed = (time.perf_counter() - started) / len(frames)
                detector_module.tiles = rules["shipped"]  # type: ignore[assignment]
                low, high = wilson(found, total)
                print(
                    f"{size_text:10s} {width:5d}  {name:8s}  {found:3d}/{total:<3d} {found / total:5.1%} "
                    f"[{low:.1%}, {high:.1%}]  {extra:5d}  {1000 * elapsed:8.0f}",
                    flush=True,
                )
            if analysis is not None:
                verdicts.append(group_verdicts(analysis, [frame for frame, _ in frames], f"{size_text:10s} {width:5d}"))
    if verdicts:
        print(f"\nreal group photos analysed, threshold {analysis.threshold:.4f} ({analysis.model_name})")  # type: ignore[union-attr]
        print("frame      width  faces  flagged [95%]         files: likely manipulated / inconclusive / no signs")
        print("\n".join(verdicts))
    return 0


def group_verdicts(analysis: Detector, frames: list[np.ndarray], head: str) -> str:
    """One line: the frames' real faces at or above the threshold, and the frames' verdicts."""
    faces = flagged = 0
    labels = {"likely_manipulated": 0, "inconclusive": 0, "no_signs_found": 0, "no_face": 0}
    for frame in frames:
        result = analysis.analyze_image(frame, heatmaps=False)
        faces += len(result.faces)
        flagged += sum(face.probability >= analysis.threshold for face in result.faces)
        labels[result.verdict.label] += 1
    low, high = wilson(flagged, faces)
    share = flagged / faces if faces else float("nan")
    return (
        f"{head}  {faces:5d}  {flagged:3d} {share:5.1%} [{low:.1%}, {high:.1%}]  "
        f"{labels['likely_manipulated']} / {labels['inconclusive']} / {labels['no_signs_found']} of {len(frames)}"
    )


if __name__ == "__main__":
    sys.exit(exit_status(main, "bench_group_photos"))
