"""`deepshield prepare`: raw DFDC / FaceForensics++ / labelled folders / CSV -> a face-crop dataset."""

from __future__ import annotations

import argparse

from deepshield.cli.args import (
    check_engine_arguments,
    check_output_folder,
    engine_arguments,
    ffpp_compression_argument,
    given_path,
    non_negative_int,
    positive_int,
    progress_argument,
)
from deepshield.errors import say
from deepshield.media.video import DEFAULT_VIDEO_FRAMES

FORMAT_CHOICES = ("auto", "dfdc", "ffpp", "folders", "csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="build a face dataset from raw videos and images",
        description=(
            "Extract face crops (lossless PNG) from DFDC folders, FaceForensics++, folders named real/ and fake/, "
            "or a CSV manifest (path or filename,label[,group][,method][,source]) into DATASET_DIR with manifest.csv, errors.csv "
            "and a group-aware train/val/test split. Re-running resumes: finished files are skipped."
        ),
    )
    parser.add_argument("sources", nargs="+", type=given_path, metavar="SOURCE", help="dataset folders or CSV files")
    parser.add_argument("--out", type=given_path, required=True, metavar="DATASET_DIR", help="output dataset folder")
    parser.add_argument(
        "--format", choices=FORMAT_CHOICES, default="auto", help="source layout (default: detected per SOURCE)"
    )
    parser.add_argument(
        "--frames",
        type=positive_int,
        default=DEFAULT_VIDEO_FRAMES,
        help=f"frames sampled uniformly per video (default {DEFAULT_VIDEO_FRAMES})",
    )
    parser.add_argument(
        "--faces", choices=("all", "largest"), default="all", help="every face per frame (default), or the largest only"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="split seed (default 0)")
    parser.add_argument(
        "--split", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST", help="split fractions (default 0.8,0.1,0.1)"
    )
    parser.add_argument("--crop-size", type=int, default=None, help="crop side in pixels (default: CropPolicy's, 224)")
    parser.add_argument(
        "--crop-scale", type=float, default=None, help="crop side / face box side (default: CropPolicy's, 1.5)"
    )
    parser.add_argument("--align", action="store_true", help="rotate crops so that the eyes are level")
    parser.add_argument(
        "--min-face-size",
        type=positive_int,
        default=20,
        help="ignore faces smaller than this (pixels; default %(default)s)",
    )
    ffpp_compression_argument(parser)
    progress_argument(parser)
    engine_arguments(
        parser,
        workers_help="worker processes (default 1); with --engine ray, files in flight on the cluster (default: twice its CPUs). "
        "With a multi-node Ray cluster, DATASET_DIR and the sources must be on storage every node mounts at the same path",
    )
    parser.set_defaults(run=run)


def crop_policy(size: int | None, scale: float | None, align: bool = False):
    from pydantic import ValidationError

    from deepshield.errors import DeepShieldError
    from deepshield.faces.crop import CropPolicy

    values: dict[str, bool | int | float] = {"align": align}
    if size is not None:
        values["size"] = size
    if scale is not None:
        values["scale"] = scale
    try:
        return CropPolicy(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DeepShieldError(f"invalid crop policy: {problems}") from exc


def run(args: argparse.Namespace) -> int:
    from deepshield.cli.main import EXIT_OK, EXIT_SOME_FAILED
    from deepshield.data.extract import ExtractSettings
    from deepshield.data.prepare import prepare_dataset
    from deepshield.data.split import parse_ratios
    from deepshield.engines import make_engine

    check_engine_arguments(args)
    check_output_folder(args.out, "--out")
    settings = ExtractSettings(
        frames=args.frames,
        faces=args.faces,
        policy=crop_policy(args.crop_size, args.crop_scale, args.align),
        min_face_size=args.min_face_size,
    )
    ratios = parse_ratios(args.split)
    with make_engine(args.engine, workers=args.workers, address=args.ray_address) as engine:
        summary = prepare_dataset(
            args.sources,
            args.out,
            fmt=args.format,
            settings=settings,
            workers=args.workers or 1,
            seed=args.seed,
            ratios=ratios,
            progress=not args.no_progress,
            ffpp_compressions=args.ffpp_compression,
            engine=engine,
        )
    for warning in summary.warnings():
        say(f"deepshield prepare: warning: {warning}")
    say(f"deepshield prepare: {summary.describe()}")
    return EXIT_OK if summary.crops else EXIT_SOME_FAILED
