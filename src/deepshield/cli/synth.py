"""`deepshield synth`: write synthesised fakes and a contact sheet to look at."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from deepshield.cli.args import given_path, non_negative_int, positive_int, probability, progress_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="synthesise example fakes from real faces",
        description="Blend real faces into training fakes and write them with their masks and a contact sheet.",
    )
    parser.add_argument("real_dir", type=given_path, help="folder of real face images")
    parser.add_argument(
        "out_dir", type=given_path, help="folder for the fakes (fake_NNN.png), their masks and contact_sheet.png"
    )
    parser.add_argument("-n", type=positive_int, default=16, help="number of fakes (default 16)")
    parser.add_argument(
        "--method",
        choices=("self", "cross", "paste", "mixed"),
        default="mixed",
        help="self-blend, cross-identity blend, one part of another face pasted on, or each in turn (default)",
    )
    parser.add_argument(
        "--smooth-probability",
        type=probability,
        default=0.0,
        help="chance a blend's source is smoothed like a face restorer's output (synthesis.smooth_probability; default 0)",
    )
    parser.add_argument(
        "--source-jpeg-probability",
        type=probability,
        default=0.0,
        help="chance a blend's source is JPEG-compressed on its own (synthesis.source_jpeg_probability; default 0)",
    )
    parser.add_argument(
        "--mesh-warp-probability",
        type=probability,
        default=0.0,
        help="chance a cross blend's donor is warped onto the target's face mesh (synthesis.mesh_warp_probability; default 0)",
    )
    parser.add_argument(
        "--cross-colour-probability",
        type=probability,
        default=0.0,
        help="chance a cross blend's source also gets a colour jitter (synthesis.cross_colour_probability; default 0)",
    )
    parser.add_argument(
        "--seamless-probability",
        type=probability,
        default=0.0,
        help="chance a blend is a Poisson (seamless) composite (synthesis.seamless_probability; default 0)",
    )
    parser.add_argument("--size", type=int, default=224, help="crop size in pixels, 16 to 1024 (default 224)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--force", action="store_true", help="replace the fakes an earlier synth wrote to out_dir")
    progress_argument(parser)  # the face bank's bar
    parser.set_defaults(run=run)


# What a synth writes: another run's files left beside a new one's (fewer, or of another method) mixed two sets.
OWN_FILE = re.compile(r"fake_\d{3,}(_mask)?\.png|contact_sheet\.png")


def earlier_outputs(out_dir: Path) -> list[Path]:
    return sorted(p for p in out_dir.iterdir() if OWN_FILE.fullmatch(p.name)) if out_dir.is_dir() else []


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from deepshield.cli.prepare import crop_policy
    from deepshield.data.layout import atomic_write_bytes
    from deepshield.errors import DeepShieldError
    from deepshield.evaluation.plots import example_grid
    from deepshield.media.images import encode_png
    from deepshield.synthesis.blend import SynthesisConfig, cross_blend, part_paste, self_blend
    from deepshield.training.facebank import build_facebank

    if args.out_dir.resolve().is_relative_to(args.real_dir.resolve()):
        # Its fakes, masks and contact sheet were read back as real faces on the next run (22 "real" of 11).
        raise DeepShieldError(
            f"the output folder {args.out_dir} is inside the real faces' {args.real_dir}: write elsewhere"
        )
    earlier = earlier_outputs(args.out_dir)
    if earlier and not args.force:
        raise DeepShieldError(
            f"{args.out_dir} holds an earlier synth's fakes and contact sheet: use --force to replace them, "
            "or write to another folder"
        )
    config = SynthesisConfig(
        smooth_probability=args.smooth_probability,
        source_jpeg_probability=args.source_jpeg_probability,
        seamless_probability=args.seamless_probability,
        mesh_warp_probability=args.mesh_warp_probability,
        cross_colour_probability=args.cross_colour_probability,
    )
    bank = build_facebank(
        [args.real_dir], crop_policy(args.size, None), args.out_dir / ".cache", workers=1, progress=not args.no_progress
    )
    rng = np.random.default_rng(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sheet_images, captions = [], []
    for k in range(args.n):
        index = int(rng.integers(len(bank)))
        method = ("self", "cross", "paste")[k % 3] if args.method == "mixed" else args.method
        if method != "self" and len(bank) > 1:
            with_donor = cross_blend if method == "cross" else part_paste
            result = with_donor(bank.sample(index), bank.sample(bank.donor_for(index, rng)), rng, config)
        else:
            result = self_blend(bank.sample(index), rng, config)
        atomic_write_bytes(args.out_dir / f"fake_{k:03d}.png", encode_png(result.image))
        mask = result.mask_levels()
        atomic_write_bytes(args.out_dir / f"fake_{k:03d}_mask.png", encode_png(mask))
        sheet_images += [bank.images[index], result.image, np.repeat(mask[..., None], 3, 2)]
        captions += ["real", result.method, "mask"]
    sheet = example_grid(
        sheet_images, captions, args.out_dir / "contact_sheet.png", columns=6, title="synthesised fakes"
    )
    kept = {f"fake_{k:03d}{end}" for k in range(args.n) for end in (".png", "_mask.png")} | {"contact_sheet.png"}
    for path in earlier:  # the earlier run's beyond this one's, once this one is whole (each file was replaced whole)
        if path.name not in kept:
            path.unlink()
    print(f"{args.n} fakes and {sheet} written")
    return 0
