"""`deepshield scan`: analyse images and videos, one result row per file."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

from deepshield.cli.args import (
    check_engine_arguments,
    engine_arguments,
    int_up_to,
    positive_int,
    probability,
)
from deepshield.serving.settings import ServerSettings

SUMMARY_FIELDS = ("path", "status", "kind", "verdict", "probability", "faces", "elapsed_ms", "error")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scan", help="analyse images and videos", description="Score every face in images and videos.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders (images and videos mixed)")
    parser.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    most = ServerSettings.max_video_frames  # the API's bound, so both accept the same requests
    parser.add_argument("--frames", type=int_up_to(most), default=32, help=f"frames sampled per video, 1 to {most} (default 32)")
    parser.add_argument("--format", choices=("table", "json", "jsonl", "csv"), default="table", help="output format")
    parser.add_argument("--out", type=Path, help="write results here instead of standard output")
    parser.add_argument("--model", default=None, help="model bundle folder (default: the shipped model)")
    parser.add_argument(
        "--threshold", type=probability, default=None, help="threshold (default: the model card's); the inconclusive band moves with it, keeping its width"
    )
    parser.add_argument("--min-face-size", type=positive_int, default=20, help="ignore faces smaller than this (pixels)")
    parser.add_argument(
        "--heatmaps", type=Path, metavar="DIR", help="write heatmap overlay PNGs here: one per face of an image, one per face track of a video (its most suspicious frame)"
    )
    engine_arguments(
        parser,
        workers_help="files in parallel: local worker processes, one model each (default 1: in this process); "
        "with --engine ray, files in flight on the cluster (default: twice its CPUs)",
    )
    parser.set_defaults(run=run)


def _summary(row) -> dict:
    return {name: getattr(row, name) for name in SUMMARY_FIELDS}


def render(rows: list, fmt: str) -> str:
    if fmt == "json":
        return json.dumps([row.model_dump(exclude_none=True) for row in rows], indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(row.model_dump_json(exclude_none=True) + "\n" for row in rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow(_summary(row))
        return buffer.getvalue()
    return _table(rows)


def _table(rows: list) -> str:
    header = ("FILE", "KIND", "VERDICT", "P(FAKE)", "FACES", "MS", "ERROR")
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.path,
                row.kind or "-",
                row.verdict or "ERROR",
                "-" if row.probability is None else f"{row.probability:.1%}",
                "-" if row.faces is None else str(row.faces),
                "-" if row.elapsed_ms is None else f"{row.elapsed_ms:.0f}",
                row.error or "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() + "\n" for line in lines)
    return table + "\n" + table_note()


def table_note() -> str:
    """Under the table, for people: what the verdicts mean and what the model does not judge."""
    from deepshield.inference.results import SCOPE

    return f"no_signs_found does not prove a file authentic; inconclusive: too close to the threshold to call.\n{SCOPE}\n"


def write_heatmaps(row, directory: Path, used_stems: set[str] | None = None) -> None:
    """One overlay PNG per face of an image, `<file stem>_face<index>.png`, or per face track of a
    video, `<file stem>_track<id>.png` (its most suspicious frame). Pass the same `used_stems` set for
    every row of a scan: files sharing a stem (a.jpg and a.png, or dir1/a.jpg and dir2/a.jpg) then get
    `<stem>-2_face0.png` and so on instead of overwriting each other's heatmaps."""
    from deepshield.inference.heatmap import encode_png, overlay

    directory.mkdir(parents=True, exist_ok=True)
    stem = Path(row.path).stem
    if used_stems is not None:
        base, number = stem, 1
        while stem in used_stems:
            number += 1
            stem = f"{base}-{number}"
        used_stems.add(stem)
    named = [(f"face{face.index}", face) for face in row.result.faces] if row.kind == "image" else [(f"track{t.track_id}", t) for t in row.result.tracks]
    for name, scored in named:
        if scored.crop is not None and scored.heatmap is not None:
            (directory / f"{stem}_{name}.png").write_bytes(encode_png(overlay(scored.crop, scored.heatmap)))


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deepshield.cli.main import EXIT_OK, EXIT_SOME_FAILED
    from deepshield.engines import make_engine
    from deepshield.inference.scan import ScanJob, collect_files

    check_engine_arguments(args)
    files = collect_files(args.paths, args.recursive)
    if not files:
        print("deepshield scan: no media files found", file=sys.stderr)
        return EXIT_SOME_FAILED
    job = ScanJob(
        bundle=args.model,
        min_face_size=args.min_face_size,
        threshold=args.threshold,
        frames=args.frames,
        heatmaps=args.heatmaps is not None,
        base_dir=os.getcwd() if args.engine == "ray" else None,  # Ray workers may run in another directory
    )
    rows = []
    used_stems: set[str] = set()
    with make_engine(args.engine, workers=args.workers, address=args.ray_address) as engine:
        for row in tqdm(engine.map(job, files), total=len(files), unit="file", file=sys.stderr, disable=None):
            if args.heatmaps is not None and row.status == "ok":
                write_heatmaps(row, args.heatmaps, used_stems)
            rows.append(row)
    text = render(rows, args.format)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK if all(row.status == "ok" for row in rows) else EXIT_SOME_FAILED
