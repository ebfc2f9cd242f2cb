"""`deepshield calibrate`: refit a bundle's temperature and threshold on a labelled set -> a new bundle version."""

from __future__ import annotations

import argparse
import shutil
from datetime import date
from pathlib import Path

from deepshield.cli.args import bundle_version, check_output_folder, given_path
from deepshield.cli.evaluate import RULE_CHOICES, add_labelled_set_arguments, face_settings
from deepshield.errors import say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="refit a model's temperature and threshold on a labelled set",
        description=(
            "Score a labelled set (same inputs as `evaluate`), fit the temperature on the face logits and the threshold on "
            "the file scores, and write NEW_BUNDLE: model.onnx copied unchanged, a model card with the new calibration, "
            "fitted_on, a version ending 'cal.<date>' (or --version) and the metrics before and after; the card's rates (real "
            "files flagged, fakes caught) measured again at the new thresholds on the labelled sets it names that the set "
            "holds whole, the refitted score's others removed. Calibrate and evaluate on different sets; "
            "with several sources, each is also held out in turn (fitted on the others, measured on it)."
        ),
        epilog="example: deepshield calibrate data/val --model bundle --out bundle-cal --target-fpr 0.05",
    )
    add_labelled_set_arguments(parser)
    parser.add_argument("--out", type=given_path, required=True, metavar="NEW_BUNDLE", help="folder for the new bundle")
    goal = parser.add_mutually_exclusive_group()
    goal.add_argument(
        "--target-fpr",
        type=_rate,
        default=None,
        metavar="RATE",
        help="threshold: lowest with at most this false-positive rate over the real files of each source",
    )
    goal.add_argument(
        "--balanced", action="store_true", help="threshold: best balanced accuracy over files (the default)"
    )
    parser.add_argument(
        "--video-rule",
        choices=RULE_CHOICES,
        default="topk-mean",
        help="rule turning face scores into file scores (default topk-mean, the detector's)",
    )
    parser.add_argument(
        "--keep-temperature",
        action="store_true",
        help="keep the bundle's temperature: refit only the threshold and band (e.g. a threshold on real media)",
    )
    parser.add_argument(
        "--keep-verdicts",
        action="store_true",
        help="refit only the temperature (and with --fit-offset the offset); the threshold and band stay at the same "
        "logits, so every image's verdict is unchanged (e.g. probabilities honest on real media without moving a "
        "false-positive-rate threshold)",
    )
    parser.add_argument(
        "--fit-offset",
        action="store_true",
        help="fit an offset with the temperature (Platt scaling; with --keep-temperature the offset alone): for a "
        "score that ranks well but is shifted, e.g. real photos all scored high and generated faces higher",
    )
    parser.add_argument(
        "--score",
        choices=("manipulation", "synthetic"),
        default="manipulation",
        help="which score to refit: the face-swap score (default) or the synthetic-face score "
        "(labelled fake = a generated face; e.g. --target-fpr on your own real photos beside generated ones)",
    )
    parser.add_argument(
        "--version",
        type=bundle_version,
        default=None,
        help="the new bundle's version (default: the old one's with cal.<date> ending its local part: 1.2.0+cal.<date>, "
        "a trained bundle's 0.0.0+<run id>.ep<epoch>.cal.<date>)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace NEW_BUNDLE if it holds a bundle (any other folder or file is kept, refused)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"keep each file's faces in NEW_BUNDLE{FACES_JOURNAL_SUFFIX} as they are found (removed once the bundle "
        "is written) and read back those an interrupted --resume run of the same files and settings left there, "
        "instead of finding them again",
    )
    parser.set_defaults(run=run)


# Beside the new bundle, not in it: the bundle folder is refused if it exists (without --force).
FACES_JOURNAL_SUFFIX = ".faces-in-progress"


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1")
    return value


def run(args: argparse.Namespace) -> int:
    from deepshield.cli.evaluate import load_classifier, score_labelled_set
    from deepshield.cli.main import EXIT_OK
    from deepshield.errors import BundleError, DeepShieldError
    from deepshield.evaluation.recalibrate import (
        Method,
        benchmarks_held,
        check_calibrated_folder,
        new_bundle_version,
        recalibrate,
        training_folders_in,
        write_calibrated_bundle,
    )
    from deepshield.evaluation.scoring import describe_counts
    from deepshield.inference.analysis import SCORE_NAMES
    from deepshield.inference.runtime import OnnxClassifier
    from deepshield.inference.video_rule import VideoRule
    from deepshield.training.config import portable_path

    if args.keep_verdicts and (args.target_fpr is not None or args.balanced):
        raise DeepShieldError(
            "--keep-verdicts keeps the threshold: it cannot be combined with --target-fpr or --balanced"
        )
    # checked before the slow scoring
    method = Method(args.target_fpr, args.keep_temperature, args.keep_verdicts, args.fit_offset)
    classifier, bundle = load_classifier(args.model)
    out = Path(args.out)
    check_calibrated_folder(Path(bundle), out, args.force)  # said before the slow scoring
    check_output_folder(out.parent, "--out's folder")
    if args.score == "synthetic" and classifier.card.synthetic is None:
        raise BundleError(f"{bundle} has no synthetic-face score to calibrate")
    new_bundle_version(classifier.card.version, args.version, date.today())  # a version taken, said before scoring
    from deepshield.evaluation.metrics import few_files_caution

    rule = VideoRule(kind=args.video_rule)
    journal = out.with_name(out.name + FACES_JOURNAL_SUFFIX) if args.resume else None
    scored = score_labelled_set(args, classifier, rule, examples=0, journal_dir=journal, needs_both_classes="calibrate")
    say(f"deepshield calibrate: {describe_counts(scored)}")
    # As a card records paths: absolute ones named this machine's folders in the card and its README.
    described = ", ".join(portable_path(d) for d in args.datasets) + (
        f" (split {args.split})" if args.split != "all" else ""
    )

    def warn(message: str) -> None:
        say(f"deepshield calibrate: warning: {message}")

    if trained := training_folders_in(classifier.card, [record.path for record in scored.files], warn):
        # Said, and kept in the card: the fit is to scores the network gives faces it learnt.
        say(
            f"deepshield calibrate: warning: the set holds files of the model's own training data ({', '.join(trained)}): "
            "it scores them more surely than new faces, so the calibration fits scores it will not see in use"
        )
        described += f", which holds files of the model's training data ({', '.join(trained)})"
    result = recalibrate(
        scored,
        classifier.card,
        method,
        rule,
        described,
        frames=face_settings(args)[0],
        score=args.score,
        version=args.version,
        benchmarks=benchmarks_held(classifier.card, scored),
    )
    if caution := few_files_caution(result.real_files, result.files - result.real_files):
        say(f"deepshield calibrate: warning: {caution}: a calibration fitted on so few is unreliable")
    write_calibrated_bundle(bundle, args.out, result.card, force=args.force, rates_measured_on=result.rates_measured_on)
    OnnxClassifier(args.out)  # the new bundle loads (checksum, card, graph)
    if journal is not None:
        shutil.rmtree(journal, ignore_errors=True)  # the bundle holds what it was for
    refitted = SCORE_NAMES[args.score]  # the scores' names, as everywhere else, not the option's words
    print(
        f"{refitted} score: temperature {result.shipped.temperature:.4g} -> {result.temperature_after:.4g}; "
        f"offset {result.shipped.offset:.4g} -> {result.calibration.offset:.4g}; "
        f"threshold {result.shipped.threshold:.4f} -> {result.threshold_after:.4f}"
    )
    if result.scale_note is not None:
        say(f"deepshield calibrate: note: {result.scale_note}")
    band = result.calibration.inconclusive
    assert band is not None, "recalibrate fits the band"
    print(f"inconclusive band {band.low:.4f} to {band.high:.4f} ({band.fitted_on})")
    # Counted by the refitted score's calls alone: of a two-score bundle, the number read as the files whose
    # verdict moved, which the other score may hold where it was.
    other = next(name for score, name in SCORE_NAMES.items() if score != args.score)
    alone = f" (by the {refitted} score's call alone; the {other} score's call may hold a verdict)"
    print(
        f"verdicts changed: {result.verdicts_changed} of {result.files} files"
        + (alone if classifier.card.synthetic is not None else "")
    )
    print(f"{'metric (calibration set)':<34} {'before':>8} {'after':>8}")
    for level in ("file", "face"):
        for name, value in result.before[level].items():
            print(f"  {level + ' ' + name:<32} {value:>8.4f} {result.after[level][name]:>8.4f}")
    if result.held_out:
        print("each source held out (fitted on the others, measured on it: the bundle's calibration -> the refit):")
        for check in result.held_out:
            b, a = check.before, check.after
            rates = [
                f"{what} {b[key]:.3f} -> {a[key]:.3f} (of {count})"
                for what, key, count in (
                    ("real files flagged", "flagged", check.real_files),
                    ("fakes caught", "caught", check.fake_files),
                )
                if count  # a source of one class has no rate for the other
            ]
            print(
                f"  {check.source}: temperature {check.fit.temperature:.3g}, offset {check.fit.offset:.3g}, "
                f"threshold {check.fit.threshold:.3f}; {', '.join(rates)}, face ECE {b['ece']:.3f} -> {a['ece']:.3f}"
            )
    if result.rates_measured_on:
        print(
            f"real files flagged and fakes caught measured again at the new thresholds on: "
            f"{', '.join(result.rates_measured_on)}"
        )
    for reason in result.removed_by_reason(classifier.card):
        print(f"rates at the old {refitted} score's calibration not carried over, {reason}")
    print(f"wrote {args.out} (version {result.card.version}); these figures are in-sample: evaluate it on another set")
    return EXIT_OK
