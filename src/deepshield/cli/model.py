"""`deepshield model`: what a model bundle is, the terms its verdicts are called with, and how it did on
real labelled media (its card's record), before trusting its scores."""

from __future__ import annotations

import argparse
import sys

from deepshield.cli.args import model_argument
from deepshield.cli.columns import aligned


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "model",
        help="show a model bundle's card: terms, intended use, its figures on real labelled media",
        description="Show a model bundle's card in words, or whole as JSON.",
    )
    model_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the whole model card as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepshield.inference.runtime import bundle_dir, checked_graph, read_card

    folder = bundle_dir(args.model)
    card = read_card(folder)
    checked_graph(folder, card)  # a graph replaced since is not described as the card's
    if args.json:
        sys.stdout.write(card.model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(describe(card))
    return 0


def describe(card) -> str:
    from deepshield.evaluation.shown import auc_text
    from deepshield.inference.verdict import ScoreRule
    from deepshield.models.card import SYNTHESISED_FAKES

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    def auc(figure) -> str:
        return "-" if figure is None else auc_text(figure.value, figure.low, figure.high)

    lines = [f"{card.name} {card.version} ({card.architecture}, {card.input_size} px faces)"]
    for score, calibration in (
        ("face-swap score", card.calibration),
        ("synthetic-face score", getattr(card.synthetic, "calibration", None)),
    ):
        if calibration is None:
            lines.append(f"{score}: not in this model")
            continue
        rule = ScoreRule.from_calibration(calibration)
        unfitted = "" if calibration.fitted else " (not calibrated: the defaults; `deepshield calibrate` fits them)"
        lines.append(
            f"{score}: threshold {rule.threshold:.1%}, inconclusive {rule.band.low:.1%} to {rule.band.high:.1%}"
            + unfitted
        )
        # On what: the validation split, or the labelled set `calibrate` measured (whose figures the table leaves
        # out), which only --json said.
        if calibration.fitted:
            lines.append(f"  fitted on: {calibration.fitted_on}")
    if card.intended_use:
        lines.append(f"intended use: {card.intended_use}")
    # Each score's own data: "trained on" the face-swap network's real faces alone read as what the
    # synthetic-face score learnt too, which learnt one generator's faces.
    training = card.manipulation_training()
    if training.data:
        lines.append(f"face-swap score trained on: {', '.join(training.data)}")
    if training.soup:  # a soup's networks, as `deepshield soup` said them (its lineage was in --json alone)
        lines.append(f"soup of: {', '.join(f'{i.name} {i.version} x {i.weight:g}' for i in training.soup)}")
    if card.synthetic is not None and card.synthetic.data:
        lines.append(f"synthetic-face score trained on: {', '.join(card.synthetic.data)}")
    # The weights' terms (research use only, for the datasets they learnt from): the card's own words.
    if card.license:
        lines.append(f"license: {card.license}")
    record = card.record()
    # The synthetic-face score's own false alarms on the sets, where the card has them: the product flags a
    # file either score flags (a real file flagged by that score read "0.0%" here).
    by_synthetic = any(b.synthetic_real_flagged is not None for b in record.benchmarks)
    extra: tuple[str, ...] = ("BY SYNTH SCORE",) if by_synthetic else ()
    table: list[tuple[str, ...]] = [("LABELLED SET", "FILES AUC", "FACES AUC", "REALS FLAGGED", *extra)]
    table += [
        (
            b.labelled_set + (" †" if b.caution else ""),
            auc(b.file_auc),
            auc(b.face_auc),
            share(b.real_flagged),
            *((share(b.synthetic_real_flagged),) if by_synthetic else ()),
        )
        for b in record.benchmarks
    ]
    if record.synthetic_holdout_auc is not None:
        table.append(
            (
                "AI-generated faces, its generator's unseen ones",
                "-",
                auc(record.synthetic_holdout_auc),
                # The synthetic-face score's own false alarms: in its column, where the table has one.
                *(
                    ("-", share(record.synthetic_real_flagged))
                    if by_synthetic
                    else (share(record.synthetic_real_flagged),)
                ),
            )
        )
    if record.validation_auc is not None:
        table.append(
            (
                "own synthesised blends (validation)"
                if record.validation_fakes == SYNTHESISED_FAKES
                else f"validation: real + {record.validation_fakes}",
                "-",
                auc_text(record.validation_auc),
                share(record.validation_real_flagged),
                *(("-",) if by_synthetic else ()),
            )
        )
    if len(table) > 1:  # a model trained without benchmarks has its validation figures (none were shown)
        lines.append("")
        lines += aligned(table)
        lines += [
            "",
            "AUC: how often a fake scores above a real one (0.5 chance, 1 always), with its 95% interval. Reals",
            "flagged: a set's real files (validation: real faces) at or above the threshold"
            + (";" if by_synthetic else "."),
        ]
        if by_synthetic:
            lines.append(
                "by synth score: at the synthetic-face score's threshold (a file either score flags is flagged)."
            )
        lines += (
            ["The labelled sets chose the model, so they flatter it; fakes from tools it has not met can fare worse."]
            if record.benchmarks
            else ["No real media measured this model: its own blends say little about real deepfakes."]
        )
        lines += [f"† {b.labelled_set}: {b.caution}" for b in record.benchmarks if b.caution]
    return "\n".join(lines) + "\n"
