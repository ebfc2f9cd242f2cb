"""A model soup: the weighted average of the face-swap networks of bundles that share one architecture
and one start (Wortsman et al., 2022), written as a bundle to calibrate and give a synthetic-face head.

Weights are read back from each bundle's graph (`bundle_weights`: batch norms folded into the
convolutions, so each layer is an affine map and averaging them is averaging the folded layers). A
synthetic-face head is dropped: the averaged trunk's features are not those any head was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from deepshield.errors import DeepShieldError
from deepshield.inference.runtime import read_card
from deepshield.models.card import Calibration, ModelCard, SoupIngredient, TrainingInfo, card_outputs
from deepshield.models.export import export_bundle
from deepshield.models.network import DeepfakeNet
from deepshield.training.config import recorded_command
from deepshield.training.export import portable_training
from deepshield.training.parent import bundle_weights, cam_pooling_temperature

NOT_CALIBRATED = (
    "not fitted: a soup's scores are calibrated afterwards (deepshield calibrate, or its synthetic head's run)"
)


@dataclass(frozen=True)
class Soup:
    net: DeepfakeNet
    card: ModelCard
    heads_left_out: list[str]  # the bundles ("name version") whose synthetic-face head the soup has not


def _agree(cards: list[ModelCard]) -> None:
    """Every bundle computes the same function family on the same crops, or averaging means nothing."""
    first = cards[0]
    for card in cards[1:]:
        for what, mine, theirs in (
            ("architecture", first.architecture, card.architecture),
            ("input size", first.input_size, card.input_size),
            ("crop policy", first.crop_policy, card.crop_policy),
            ("normalisation", first.normalization, card.normalization),
            ("CAM pooling", first.outputs["cam"], card.outputs["cam"]),
            ("test-time flip", first.test_time_flip, card.test_time_flip),
        ):
            if mine != theirs:
                raise DeepShieldError(
                    f"cannot average {first.name} {first.version} and {card.name} {card.version}: "
                    f"their {what} differs ({mine} against {theirs})"
                )


def make_soup(bundles: list[Path], weights: list[float] | None, name: str, version: str, command: str) -> Soup:
    """The weighted average of the bundles' face-swap networks (uniform without `weights`)."""
    if len(bundles) < 2:
        raise DeepShieldError("a soup needs at least two bundles")
    weights = weights or [1.0] * len(bundles)
    if len(weights) != len(bundles) or not all(math.isfinite(w) and w > 0 for w in weights):  # nan passed `<= 0`
        raise DeepShieldError(f"give one positive, finite weight per bundle ({len(bundles)}), got {weights}")
    shares = [w / sum(weights) for w in weights]
    if min(round(share, 6) for share in shares) == 0:  # the card keeps shares to 6 digits, and refuses 0
        raise DeepShieldError(f"weights {weights}: a share below 0.0000005 of the soup leaves its bundle out")
    cards = [read_card(bundle) for bundle in bundles]
    _agree(cards)
    first = cards[0]
    net = DeepfakeNet(
        first.architecture,
        first.input_size,
        pretrained=False,
        cam_pooling_temperature=cam_pooling_temperature(first),
    ).eval()
    averaged = {key: torch.zeros_like(value) for key, value in net.state_dict().items()}
    for bundle, card, share in zip(bundles, cards, shares, strict=True):
        ingredient = bundle_weights(bundle, card)
        for key, total in averaged.items():  # a synthetic head's weights have no place here: left out
            if total.is_floating_point():
                total.add_(ingredient[key], alpha=share)
            else:
                total.copy_(ingredient[key])  # counters (batch norms' tracked batches): not averaged
    net.load_state_dict(averaged)
    ingredients = [
        SoupIngredient(
            name=card.name,
            version=card.version,
            onnx_sha256=card.onnx_sha256,
            weight=round(share, 6),
            training=portable_training(card.manipulation_training()),
        )
        for card, share in zip(cards, shares, strict=True)
    ]
    card = ModelCard(
        name=name,
        version=version,
        architecture=first.architecture,
        input_size=first.input_size,
        normalization=first.normalization,
        crop_policy=first.crop_policy,
        outputs=card_outputs(False, cam_pooling_temperature(first)),
        test_time_flip=first.test_time_flip,  # served as its bundles are (it was dropped: another function)
        calibration=Calibration(fitted_on=NOT_CALIBRATED),
        training=TrainingInfo(
            data=sorted({d for i in ingredients for d in i.training.data}),
            command=recorded_command(command),
            epochs=0,
            selected_by="not trained: the weighted average of training.soup",
            soup=ingredients,
        ),
        intended_use=first.intended_use,
        license=_soup_license(cards),
    )
    return Soup(net, card, [f"{c.name} {c.version}" for c in cards if c.synthetic is not None])


def _soup_license(cards: list[ModelCard]) -> str:
    """The soup's terms: its networks', every one of which applies to their average (the first's alone were
    kept, and a later network's research-only terms were lost)."""
    terms = list(dict.fromkeys(card.license for card in cards if card.license))
    if len(terms) <= 1:
        return terms[0] if terms else ""
    return "The terms of every averaged network apply: " + " | ".join(
        f"{card.name} {card.version}: {card.license}" for card in cards if card.license
    )


def write_soup(soup: Soup, out_dir: Path) -> ModelCard:
    export_bundle(soup.net, soup.card, out_dir)
    return read_card(out_dir)
