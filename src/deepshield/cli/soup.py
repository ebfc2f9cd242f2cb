"""`deepshield soup`: average the face-swap networks of several bundles into one new bundle."""

from __future__ import annotations

import argparse
import shlex

from deepshield.cli.args import bundle_folder, bundle_name, bundle_version, given_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "soup",
        help="average the face-swap networks of bundles of one architecture (a model soup)",
        description=(
            "Write a bundle whose face-swap network is the weighted average of the bundles' (same architecture, "
            "input size and crop policy; meaningful for networks trained from one start, e.g. the same ImageNet "
            "weights). Any synthetic-face head is left out and the scores are not calibrated: give the soup a head "
            "(train --config src/deepshield/training/synthetic-frozen.toml --set synthetic.init=SOUP) and/or "
            "`deepshield calibrate` it. The card records each ingredient, its weight and how it was trained."
        ),
        epilog="example: deepshield soup bundle-a bundle-b --weights 0.5 0.5 --out soup --name my-model --version 2.0.0",
    )
    parser.add_argument(
        "bundles",
        nargs="+",
        type=bundle_folder,
        metavar="BUNDLE",
        help="two or more model bundle folders ('default': the shipped model)",
    )
    parser.add_argument(
        "--weights", nargs="+", action="extend", type=float, help="one per bundle, normalised to sum 1 (default: equal)"
    )
    parser.add_argument("--out", type=given_path, required=True, metavar="NEW_BUNDLE", help="folder for the new bundle")
    parser.add_argument("--name", type=bundle_name, default="soup", help="the new bundle's name (default soup)")
    parser.add_argument(
        "--version", type=bundle_version, default="0.0.0", help="the new bundle's version (default 0.0.0)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace NEW_BUNDLE if it holds a bundle (any other folder or file is kept, refused)",
    )
    parser.set_defaults(run=run_soup)


def run_soup(args: argparse.Namespace) -> int:
    from deepshield.inference.runtime import bundle_dir
    from deepshield.models.card import check_bundle_folder
    from deepshield.training.config import portable_path
    from deepshield.training.soup import make_soup, write_soup

    check_bundle_folder(args.out, args.force)
    # From the parsed arguments (not sys.argv): the same record whether run from a shell or main(argv). Its
    # folders as a card records paths: absolute ones named this machine's folders in the card.
    words = ["soup", *map(portable_path, args.bundles)]
    words += ["--weights", *map(str, args.weights)] if args.weights else []
    command = "deepshield " + shlex.join(
        [*words, "--out", portable_path(args.out), "--name", args.name, "--version", args.version]
    )
    soup = make_soup([bundle_dir(bundle) for bundle in args.bundles], args.weights, args.name, args.version, command)
    card = write_soup(soup, args.out)
    shares = ", ".join(f"{i.name} {i.version} x {i.weight:.3g}" for i in card.training.soup)
    # Said where it happens: the help's word alone, and a soup of two-score bundles served no synthetic-face score.
    heads = (
        f"; no synthetic-face score: the heads of {', '.join(soup.heads_left_out)} left out (give it one: "
        f"train --config src/deepshield/training/synthetic-frozen.toml --set synthetic.init={shlex.quote(str(args.out))})"
        if soup.heads_left_out
        else ""
    )
    print(f"bundle written to {args.out}: {card.name} {card.version} = {shares} (not calibrated{heads})")
    return 0
