"""`deepshield evaluate`: metrics with confidence intervals, robustness and calibration on a labelled set."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from deepshield.cli.args import (
    check_engine_arguments,
    check_output_folder,
    check_tracking_store,
    engine_arguments,
    ffpp_compression_argument,
    given_path,
    log_to_mlflow,
    model_argument,
    non_negative_int,
    positive_int,
    probability,
    progress_argument,
    tracking_arguments,
)
from deepshield.errors import DeepShieldError, say
from deepshield.evaluation.perturb import SYNTAX
from deepshield.evaluation.shown import fraction_text
from deepshield.faces.detector import DEFAULT_MIN_FACE_SIZE
from deepshield.inference.verdict import ScoreRule
from deepshield.media.video import DEFAULT_VIDEO_FRAMES
from deepshield.plural import numbered, plural

FORMAT_CHOICES = ("auto", "dfdc", "ffpp", "folders", "csv")
FACES_JOURNAL = ".faces-in-progress"  # in the report folder, while an evaluation runs
RULE_CHOICES = ("topk-mean", "mean", "max")


def add_labelled_set_arguments(parser: argparse.ArgumentParser) -> None:
    """The inputs `evaluate` and `calibrate` share: which labelled media, which model, how it is sampled."""
    parser.add_argument(
        "datasets",
        nargs="+",
        type=given_path,
        metavar="DATASET",
        help="labelled dataset(s), or one prepared dataset folder",
    )
    model_argument(parser)
    parser.add_argument(
        "--format", choices=FORMAT_CHOICES, default="auto", help="raw dataset layout (default: detected per DATASET)"
    )
    add_face_arguments(parser, "prepared datasets: which split to use (default all)")
    ffpp_compression_argument(parser)
    progress_argument(parser)
    engine_arguments(
        parser,
        "raw media: with --engine local, processes decoding and finding faces at once (default 1: this process); "
        "with --engine ray, files in flight on the cluster (default: twice its CPUs). Faces are scored here, once",
    )


def add_face_arguments(parser: argparse.ArgumentParser, split_help: str) -> None:
    """Which faces of a labelled set are scored (evaluate, calibrate, compare): --frames and --min-face-size
    for raw media, --split for prepared datasets."""
    parser.add_argument(
        "--frames",
        type=positive_int,
        default=None,
        help=f"raw media: frames sampled uniformly per video (default {DEFAULT_VIDEO_FRAMES})",
    )
    parser.add_argument("--split", choices=("all", "train", "val", "test"), default="all", help=split_help)
    parser.add_argument(
        "--min-face-size",
        type=positive_int,
        default=None,
        help=f"raw media: ignore faces smaller than this (pixels; default {DEFAULT_MIN_FACE_SIZE})",
    )


def raw_face_settings(args: argparse.Namespace) -> tuple[int, int]:
    """The frames per video and smallest face that raw media are read with: the options', else the defaults."""
    return args.frames or DEFAULT_VIDEO_FRAMES, args.min_face_size or DEFAULT_MIN_FACE_SIZE


def refuse_face_options(prepared: Path, args: argparse.Namespace) -> None:
    """--frames and --min-face-size find faces: a prepared dataset's were found when it was prepared."""
    if args.frames is not None or args.min_face_size is not None:
        raise DeepShieldError(
            f"--frames and --min-face-size apply to raw media: {prepared} is a prepared dataset, whose faces "
            "were found when it was prepared (its dataset.json says with which settings)"
        )


# A 95% interval's ends are the 2.5th and 97.5th percentiles of the resamples: with --bootstrap 1 the
# "interval" was one resample's AUC, and left out the figure it was printed beside.
MIN_RESAMPLES = 20


def bootstrap_resamples(text: str) -> int:
    value = non_negative_int(text)
    if 0 < value < MIN_RESAMPLES:
        raise argparse.ArgumentTypeError(f"must be 0 (no intervals) or at least {MIN_RESAMPLES}")
    return value


def face_settings(args: argparse.Namespace) -> tuple[int, int]:
    """The frames per video and the smallest face of the faces scored: the options', or a prepared
    dataset's (its faces were found when it was prepared: the options were ignored there and recorded
    as if they had been applied)."""
    from deepshield.data.manifest import read_info
    from deepshield.evaluation.scoring import is_prepared_dataset

    prepared = [Path(d) for d in args.datasets if is_prepared_dataset(Path(d))]
    if not prepared:
        return raw_face_settings(args)
    refuse_face_options(prepared[0], args)
    # Taken silently before: how raw media are read and where their faces are found mean nothing here.
    raw_only = {
        "--format": args.format != "auto",
        "--ffpp-compression": bool(args.ffpp_compression),
        "--workers": getattr(args, "workers", None) is not None,
        "--engine ray": args.engine != "local",
    }
    if given := [flag for flag, used in raw_only.items() if used]:
        raise DeepShieldError(
            f"{', '.join(given)} {plural(len(given), 'applies', 'apply')} to raw media: {prepared[0]} is a prepared "
            "dataset, whose crops are read as they are"
        )
    info = read_info(prepared[0])
    return info.frames, info.min_face_size


def score_labelled_set(args: argparse.Namespace, classifier, rule, **options):
    """score_datasets on the inputs that add_labelled_set_arguments parsed, its raw media cropped where
    --engine says."""
    from deepshield.engines import make_engine
    from deepshield.evaluation.scoring import score_datasets

    check_engine_arguments(args)
    frames, min_face_size = face_settings(args)
    # Named by the command, as its other warnings are (they said 'deepshield: warning: ...').
    options.setdefault("warn", lambda message: say(f"deepshield {args.command}: warning: {message}"))
    with make_engine(args.engine, workers=args.workers, address=args.ray_address) as engine:
        return score_datasets(
            args.datasets,
            classifier,
            fmt=args.format,
            frames=frames,
            rule=rule,
            min_face_size=min_face_size,
            split=args.split,
            ffpp_compressions=args.ffpp_compression,
            progress=not args.no_progress,
            engine=engine,
            base_dir=os.getcwd() if args.engine == "ray" else None,  # Ray workers may run in another directory
            **options,
        )


def add_perturb_argument(parser: argparse.ArgumentParser) -> None:
    """--perturb, as evaluate (and bench/bench_evaluate.py) take it; parse_perturbations reads its specs."""
    parser.add_argument(
        "--perturb",
        nargs="*",  # --perturb with no spec: the clean set only
        action="extend",
        default=[],
        metavar="SPEC",
        help=(
            f"perturbations, each {SYNTAX}; e.g. jpeg:90,70,50 h264:23,35 resize:0.5 blur:1.5 noise:5 smooth:6; "
            "--perturb with none: the clean set only"
        ),
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model on a labelled set (report with metrics, intervals, robustness)",
        description=(
            "Score every face of every sampled frame of a labelled set once, then report face- and file-level AUC, AP, EER, "
            "log-loss, balanced accuracy and precision/recall/F1 at the model's threshold, each with a bootstrap confidence "
            "interval over files; per source and per manipulation method; calibration; video rules side by side; and, with "
            "--perturb, the same set re-scored under JPEG, H.264, resizing, blur, noise, a beauty filter's smoothing, sharpening, "
            "a GIF's palette and a close cut. DATASET: DFDC folders, FaceForensics++, "
            "folders named real/ and fake/, a CSV (path or filename,label[,group][,method][,source]) or a prepared dataset folder (manifest.csv)."
        ),
        epilog="example: deepshield evaluate data/test --model bundle --perturb jpeg:90,70,50 resize:0.5 blur:1.5 noise:5 --out report",
    )
    add_labelled_set_arguments(parser)
    parser.add_argument(
        "--out",
        type=given_path,
        default=Path("evaluation-report"),
        metavar="REPORT_DIR",
        help="report folder (default ./evaluation-report)",
    )
    add_perturb_argument(parser)
    parser.add_argument(
        "--video-rule",
        nargs="+",
        action="extend",  # given twice, as --perturb may be: the first's rules were dropped
        choices=RULE_CHOICES,
        default=None,
        metavar="RULE",
        help="video rules to compare (topk-mean, mean, max); the first gives the headline figures (default: topk-mean mean max)",
    )
    parser.add_argument(
        "--bootstrap",
        type=bootstrap_resamples,
        default=1000,
        metavar="N",
        help=f"bootstrap resamples for the intervals (0: none, else at least {MIN_RESAMPLES}; default 1000)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,  # a negative one failed every noisy file, counted as faces lost to the noise
        default=0,
        help="seed of the bootstrap and of the noise perturbation (default 0)",
    )
    parser.add_argument(
        "--threshold",
        type=probability,
        default=None,
        help="the face-swap score's threshold (default: the model card's); a synthetic-face score is measured at "
        "its card's own",
    )
    parser.add_argument(
        "--no-face",
        choices=("exclude", "zero"),
        default="exclude",
        help="files without a face in file-level metrics: left out and counted (exclude, default) or scored 0 (zero)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"keep each file's faces in REPORT_DIR/{FACES_JOURNAL} as they are found (about 150 KB a face and "
        "perturbation; removed once the report is written) and read back those an interrupted --resume run of the "
        "same files and settings left there, instead of finding them again",
    )
    parser.add_argument(
        "--examples",
        type=non_negative_int,
        default=8,
        metavar="N",
        help="real files scored highest and fake files scored lowest shown, each (default 8)",
    )
    tracking_arguments(parser, "the report", "deepshield-evaluate")
    parser.set_defaults(run=run)


def load_classifier(model: str | None):
    from deepshield.inference.runtime import OnnxClassifier, bundle_dir

    path = bundle_dir(model)
    return OnnxClassifier(path), path


def model_info(classifier, path: Path, synthetic: bool = False):
    """The bundle's figures for the summary: the manipulation score's calibration, or (`synthetic`)
    the synthetic-face score's."""
    from deepshield.evaluation.summary import ModelInfo

    card = classifier.card
    calibration = card.synthetic.calibration if synthetic else card.calibration
    return ModelInfo(
        name=card.name,
        version=card.version,
        bundle=str(path),
        temperature=calibration.temperature,
        offset=calibration.offset,
        threshold=calibration.threshold,
        calibration_fitted_on=calibration.fitted_on,
        crop_policy=card.crop_policy,
        onnx_sha256=card.onnx_sha256,
    )


def synthetic_settings(classifier, path: Path, settings):
    """The synthetic-face score's settings (its own threshold and band) and model figures; None without that score."""
    if classifier.card.synthetic is None:
        return None
    calibration = classifier.card.synthetic.calibration
    return replace(
        settings, threshold=calibration.threshold, band=ScoreRule.from_calibration(calibration).band
    ), model_info(classifier, path, synthetic=True)


def list_failed_files(summary, shown: int = 10) -> None:
    """On stderr: the files a listing names but that are missing, apart from those that cannot be read."""
    for entries, what, with_reason in (
        (summary.missing_files, "named by the dataset's listing but missing", False),
        (summary.unreadable_files, "unreadable", True),
    ):
        if entries:
            listed = "; ".join(f"{f.path} ({f.reason})" if with_reason else f.path for f in entries[:shown])
            more = f"; and {len(entries) - shown} more (see the report)" if len(entries) > shown else ""
            say(f"deepshield evaluate: {numbered(len(entries), 'file')} {what}: {listed}{more}")


def print_summary(summary, out=None) -> None:
    """The headline figures of an EvaluationSummary on the terminal."""
    from deepshield.evaluation.report import METRIC_LABELS
    from deepshield.evaluation.summary import CALLED_FAKE

    out = out or sys.stdout  # looked up per call: a default bound at import goes stale when stdout is swapped

    def cell(entry) -> str:
        if entry is None or entry.value is None:
            return "-"
        text = fraction_text(entry.value)
        return text + (f" [{fraction_text(entry.low)}, {fraction_text(entry.high)}]" if entry.low is not None else "")

    counts = summary.counts
    print(
        f"{counts.files} files ({counts.real_files} real, {counts.fake_files} fake): {counts.files_with_face} with a face, "
        f"{counts.files_without_face} without, "
        + (f"{counts.missing_files} missing, " if counts.missing_files else "")
        + f"{counts.unreadable_files} unreadable; {counts.faces} faces",
        file=out,
    )
    names = ("auc", "ap", "eer", "log_loss", "balanced_accuracy", "precision", "recall", "f1")
    # How the files without a face enter the file level, as the page says it: unsaid, 26 samples of 28 files.
    without = counts.files_without_face
    no_face = (
        f"; {numbered(without, 'file')} without a face "
        + ("left out" if summary.settings.no_face == "exclude" else "scored 0")
        if without
        else ""
    )
    called = f", {CALLED_FAKE}"  # said once, on the first heading: which class the figures count as positive
    for level, block in (("file", summary.file), ("face", summary.face)):
        within = f"threshold {summary.settings.threshold:.3f}{called}" + (no_face if level == "file" else "")
        # Named: above the synthetic-face score's lines, "file level" alone read as the verdict's figures.
        heading = f"face-swap score, {level} level ({block.count} samples, {within})"
        if not block.metrics:
            # A set of one class has no AUC, but the share it calls right (the page's and metrics.json's figure).
            rate = block.detection_rate or block.true_negative_rate
            what = "detection rate" if block.detection_rate else "true-negative rate"
            figure = f"{heading}: {what} {cell(rate)}; " if rate else f"{level} level: "
            print(f"{figure}{block.error or 'no metrics'}", file=out)
            called = "" if rate else called
            if block.caution:
                print(f"  caution: {block.caution}", file=out)
            continue
        print(f"{heading}:", file=out)
        called = ""
        if block.caution:
            print(f"  caution: {block.caution}", file=out)
        for name in names:
            print(f"  {METRIC_LABELS[name]:<14} {cell(block.metrics[name])}", file=out)
    print_perturbations(summary.perturbations, "face-swap score", out)
    if summary.synthetic is not None:
        print_synthetic(summary.synthetic, cell, out)
        print_perturbations(summary.synthetic.perturbations, "synthetic-face score", out)
    else:  # said, as `deepshield model` says it: on generated faces its silence read as a figure missed
        print("synthetic-face score: not in this model", file=out)


def print_perturbations(rows, score: str, out) -> None:
    """One score's AUCs under each perturbation (none asked for: nothing)."""
    if len(rows) <= 1:
        return
    print(f"{score} under perturbations (file AUC / face AUC):", file=out)
    for row in rows:
        if row.file_auc is None and row.file_false_positive_rate is not None:
            # No AUC over reals alone: the rows printed "- / -" where metrics.json and the page give this share.
            figures = f"real files flagged {fraction_text(row.file_false_positive_rate)}"
        elif row.file_auc is None and row.file_recall is not None:
            figures = f"fake files caught {fraction_text(row.file_recall)}"  # over fakes alone, likewise
        else:
            file_auc = "-" if row.file_auc is None else fraction_text(row.file_auc)
            face_auc = "-" if row.face_auc is None else fraction_text(row.face_auc)
            figures = f"{file_auc:>6} / {face_auc:>6}"
        print(f"  {row.condition:<12} {figures}   files without a face: {files_without_face(row)}", file=out)


def files_without_face(row) -> str:
    """A perturbation row's files without a face, with those it lost by label (a face the clean file has)."""
    lost = f" (lost here: {row.fakes_lost} fake, {row.reals_lost} real)" if row.fakes_lost or row.reals_lost else ""
    return f"{row.files_without_face}{lost}"


def print_synthetic(synthetic, cell, out) -> None:
    """The synthetic-face score's lines: AUC per level and per source (a source with both classes),
    the shares of real faces it flags and of generated faces it catches (of a generated-only source's faces, the
    share it detects)."""
    print(f"synthetic-face score (threshold {synthetic.settings.threshold:.3f}):", file=out)
    rows = [("all", synthetic.file, synthetic.face)] + [
        (name, block.file, block.face) for name, block in synthetic.by_source.items()
    ]
    width = max(len(name) for name, _, _ in rows)
    cautioned: dict[str, list[str]] = {}  # as the page's footnotes: the headline's lines say theirs, these did not
    for name, file_block, face_block in rows:
        if caution := face_block.caution or file_block.caution:
            cautioned.setdefault(caution, []).append(name)
        parts = []
        if face_block.metrics:
            file_auc = cell(file_block.metrics["auc"]) if file_block.metrics else "-"
            parts.append(f"AUC file {file_auc}, face {cell(face_block.metrics['auc'])}")
        confusion = face_block.confusion
        if confusion is not None and confusion.false_positive_rate is not None:
            reals = confusion.fp + confusion.tn
            rate = confusion.false_positive_rate
            parts.append(f"real faces flagged synthetic {rate:.1%} ({confusion.fp} of {reals})")
        if face_block.metrics and confusion is not None and confusion.tp + confusion.fn:  # else: "detected", below
            fakes = confusion.tp + confusion.fn
            parts.append(f"generated faces caught {confusion.tp / fakes:.1%} ({confusion.tp} of {fakes})")
        if not face_block.metrics and face_block.detection_rate is not None:
            parts.append(f"generated faces detected {cell(face_block.detection_rate)}")
        print(f"  {name:<{width}}  " + "; ".join(parts), file=out)
    for caution, names in cautioned.items():
        print(f"  caution ({', '.join(names)}): {caution}", file=out)


def run(args: argparse.Namespace) -> int:
    from deepshield.cli.main import EXIT_OK
    from deepshield.evaluation.perturb import parse_perturbations
    from deepshield.evaluation.report import log_report, write_report
    from deepshield.evaluation.scoring import describe_counts
    from deepshield.evaluation.summary import EvaluationSettings, summarize

    check_output_folder(args.out, "--out")  # before the scoring, which a report it cannot write would lose
    perturbations = parse_perturbations(args.perturb)  # bad specs fail before the model loads
    check_tracking_store(args)  # before the scoring, which a store it cannot log to refused after
    rules = tuple(dict.fromkeys(args.video_rule)) if args.video_rule else RULE_CHOICES
    classifier, bundle = load_classifier(args.model)
    threshold = classifier.card.calibration.threshold if args.threshold is None else args.threshold
    calibration = classifier.card.calibration
    frames, min_face_size = face_settings(args)  # recorded as the faces were found
    settings = EvaluationSettings(
        threshold=threshold,
        band=ScoreRule.from_calibration(calibration, threshold).band,  # as Detector calls files
        rules=rules,
        bootstrap=args.bootstrap,
        seed=args.seed,
        no_face=args.no_face,
        extra={
            "datasets": [str(d) for d in args.datasets],
            "format": args.format,
            "frames": frames,
            "perturbations": [p.name for p in perturbations],
            "min_face_size": min_face_size,
            "split": args.split,
        },
    )
    # With --resume each file's faces are kept here as they are found, so that an interrupted run resumes.
    journal = args.out / FACES_JOURNAL if args.resume else None
    scored = score_labelled_set(
        args,
        classifier,
        settings.rule,
        perturbations=perturbations,
        examples=args.examples,
        seed=args.seed,
        journal_dir=journal,
    )
    say(f"deepshield evaluate: {describe_counts(scored)}")
    from deepshield.evaluation.recalibrate import training_folders_in

    def warn(message: str) -> None:
        say(f"deepshield evaluate: warning: {message}")

    if trained := training_folders_in(classifier.card, [record.path for record in scored.files], warn):
        # As calibrate and compare say it: a prepared dataset's train split scored with the rest went unsaid.
        say(
            f"deepshield evaluate: warning: the set holds files of the model's own training data ({', '.join(trained)}): "
            "its figures there are not held out (a prepared dataset: --split test)"
        )
    synthetic = synthetic_settings(classifier, bundle, settings)
    summary = summarize(scored, settings, model_info(classifier, bundle), synthetic)
    list_failed_files(summary)
    page = write_report(
        scored,
        settings,
        summary,
        args.out,
        title=f"Evaluation of {classifier.card.name} {classifier.card.version}",
        synthetic=None if synthetic is None else synthetic[0],
    )
    if journal is not None:
        shutil.rmtree(journal, ignore_errors=True)  # the report holds what it was for
    print_summary(summary)
    print(f"report: {page}")
    if args.tracking_uri:
        name = f"evaluate {classifier.card.name} {classifier.card.version}"
        log_to_mlflow(args, name, lambda tracker: log_report(tracker, summary, args.out))
    return EXIT_OK
