"""`deepshield facebank pack`: a training configuration's real faces as one portable file."""

from __future__ import annotations

import argparse

from deepshield.cli.args import (
    check_output_file,
    config_arguments,
    config_overrides,
    given_path,
    jpeg_quality,
    non_negative_int,
    positive_int,
    progress_argument,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "facebank",
        help="pack a training configuration's real faces into one portable file",
        description="Face banks: the real faces a training run synthesises its fakes from.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    pack = actions.add_parser(
        "pack",
        help="detect, crop and mesh the configuration's real faces (cached), write them as one file",
        description=(
            "Write the configuration's real-face bank (crop policy of its model settings) as one .npz of JPEG "
            "crops and landmarks. Name it in data.real_dirs on a machine without the photos or MediaPipe."
        ),
    )
    config_arguments(pack, "override a config value, e.g. model.input_size=288 (repeatable)")
    pack.add_argument("--out", type=given_path, required=True, help="the .npz file to write")
    pack.add_argument("--max-faces", type=positive_int, help="keep this many faces, drawn at random (default: all)")
    pack.add_argument("--quality", type=jpeg_quality, default=90, metavar="50-100", help="JPEG quality (default 90)")
    pack.add_argument(
        "--seed",
        type=non_negative_int,
        default=None,
        help="seed of the --max-faces draw (default: the configuration's)",
    )
    progress_argument(pack)
    pack.set_defaults(run=run_pack)


def run_pack(args: argparse.Namespace) -> int:
    import numpy as np

    from deepshield.errors import DeepShieldError
    from deepshield.faces.crop import CropPolicy
    from deepshield.media.units import format_bytes
    from deepshield.training.config import load_config
    from deepshield.training.facebank import facebank_for, pack_facebank, packed_source_digests

    if args.out.suffix != ".npz":
        raise DeepShieldError(f"--out {args.out}: a packed face bank is an .npz file")
    check_output_file(args.out, "--out")  # before the faces are found
    config = load_config(args.config, config_overrides(args), None)
    # Packed into itself (a --max-faces subset on the machine the bank was carried to, without the photos),
    # the bank was replaced by the subset for good, unsaid.
    read = [config.data.locate(p, "real-face folder or packed face bank") for p in config.data.real_dirs]
    if any(args.out.resolve() == path.resolve() for path in read):
        raise DeepShieldError(
            f"--out {args.out} is a packed bank the configuration reads (data.real_dirs): writing it there would "
            "replace it; give another file"
        )
    bank = facebank_for(config, progress=not args.no_progress)
    if args.max_faces and args.max_faces < len(bank):
        rng = np.random.default_rng(config.seed if args.seed is None else args.seed)
        bank = bank.subset(np.sort(rng.choice(len(bank), args.max_faces, replace=False)))
    policy = CropPolicy(size=config.model.input_size, scale=config.model.crop_scale)
    size = pack_facebank(bank, policy, args.out, args.quality, packed_source_digests(config.data))
    print(
        f"{len(bank)} faces ({policy.size} px, crop scale {policy.scale:g}) packed into {args.out}: {format_bytes(size)}"
    )
    return 0
