"""Where a run's weights start from: a frozen parent run (synthetic mode), model.init's checkpoint or
bundle, and the WiSE-FT mix of trained weights with those."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from deepshield.errors import DeepShieldError
from deepshield.inference.runtime import checked_graph, read_card
from deepshield.models.card import SYNTHETIC_OUTPUT, ModelCard
from deepshield.models.network import DeepfakeNet
from deepshield.models.onnx_import import load_onnx_weights
from deepshield.training.checkpoint import load_checkpoint
from deepshield.training.config import TrainConfig, checkpoint_config
from deepshield.training.export import epoch_record, training_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParentRun:
    """Frozen synthetic mode: the manipulation run whose trunk and head are kept as they are. Either a
    run's best.pt, or a bundle whose checkpoint was not kept (`card`: its calibration and figures are
    kept as shipped, its weights read back from the graph)."""

    path: Path
    checkpoint: dict
    config: TrainConfig
    card: ModelCard | None = None

    def record(self) -> dict[str, Any]:
        """What a frozen run's best checkpoint keeps of its parent: the manipulation head's validation
        logits and benchmark reals (its calibration is fitted from them, as the parent's was) and figures;
        for a bundle parent, its card."""
        parent = {
            "path": str(self.path),
            "command": self.checkpoint.get("command", ""),
            "export": self.config.export.model_dump(mode="json"),  # its threshold rule and test-time flip
        }
        if self.card is not None:
            # Its recorded configuration without the machine's folders, as a card exported now records it.
            # A card that recorded none (a soup: not trained) keeps none rather than this run's defaults.
            recorded = self.config.recorded() if self.card.training.config else {}
            training = self.card.training.model_copy(update={"config": recorded})
            return {
                "parent": parent
                | {
                    "run_id": None,
                    "epoch": max(self.card.training.epochs - 1, 0),
                    "metrics": self.card.metrics,
                    "card": self.card.model_dump(mode="json"),
                    "training": training.model_dump(mode="json"),
                }
            }
        training = training_info(self.config, self.checkpoint)
        return {
            "val_logits": self.checkpoint["val_logits"],
            "val_labels": self.checkpoint["val_labels"],
            "benchmark_reals": self.checkpoint.get("benchmark_reals", {}),
            "benchmark_faces": self.checkpoint.get("benchmark_faces", {}),
            "parent": parent
            | {
                "run_id": self.checkpoint.get("progress", {}).get("run_id"),
                "epoch": int(self.checkpoint["epoch"]),
                "metrics": epoch_record(self.checkpoint),
                "training": training.model_dump(mode="json"),
            },
        }


def load_parent(config: TrainConfig) -> ParentRun:
    if config.synthetic is None or config.synthetic.init is None:
        raise DeepShieldError(
            "frozen synthetic mode needs synthetic.init: the manipulation run's best.pt (or an epoch_NNN.pt) or a bundle"
        )
    path = Path(config.synthetic.init).expanduser()
    if path.is_dir():
        return _parent_from_bundle(path)
    if not path.is_file():
        raise DeepShieldError(
            f"synthetic.init {path} is neither a checkpoint file (a run's checkpoints/best.pt or epoch_NNN.pt) nor a bundle folder"
        )
    checkpoint = load_checkpoint(path)
    if "val_logits" not in checkpoint:
        raise DeepShieldError(
            f"synthetic.init {path} holds no validation logits: "
            "give a run's best.pt or one of its epoch_NNN.pt, not last.pt"
        )
    parent = checkpoint_config(checkpoint, path)
    if parent.synthetic is not None:
        raise DeepShieldError(f"synthetic.init {path} already has a synthetic head: give a manipulation-only run")
    return ParentRun(path, checkpoint, parent)


def cam_pooling_temperature(card: ModelCard) -> float | None:
    """How a bundle's face-swap logit pools its CAM: model.cam_pooling_temperature of the run that trained it
    (None: the mean). A soup recorded no configuration: its ingredients' (which agree, or it was refused) were
    read as the mean, and a soup of soups, or a head trained on a soup, pooled by the mean what they learnt by
    the log-mean-exp."""
    training = card.manipulation_training()
    while training.soup and not training.config:
        training = training.soup[0].training
    return training.config.get("model", {}).get("cam_pooling_temperature")


def _parent_from_bundle(bundle: Path) -> ParentRun:
    card = read_card(bundle)
    weights = bundle_weights(bundle, card)
    if card.synthetic is not None:
        # A two-output bundle: its face-swap score is the parent, and this run's head replaces its own (the
        # shipped model's checkpoint is not kept, so this is how its synthetic head is retrained).
        log.info("synthetic.init %s has a synthetic head: this run trains a new one in its place", bundle)
        weights = {key: value for key, value in weights.items() if not key.startswith("synthetic_head.")}
        card = card.model_copy(
            update={
                "synthetic": None,
                "outputs": {name: doc for name, doc in card.outputs.items() if name != SYNTHETIC_OUTPUT},
                "training": card.manipulation_training(),
                "metrics": {key: value for key, value in card.metrics.items() if not key.startswith("synthetic_")},
            }
        )
    # The training configuration the card recorded (model settings, threshold rule), else the card's own; what
    # the graph computes (pooling, test-time flip) always the card's, as a soup's card alone says it.
    config = TrainConfig.model_validate(card.training.config) if card.training.config else TrainConfig()
    model = config.model.model_copy(
        update={
            "backbone": card.architecture,
            "input_size": card.input_size,
            "crop_scale": card.crop_policy.scale,
            "cam_pooling_temperature": cam_pooling_temperature(card),
        }
    )
    export = config.export.model_copy(update={"test_time_flip": card.test_time_flip})
    config = config.model_copy(update={"model": model, "export": export, "synthetic": None})
    checkpoint = {"model": weights, "command": card.training.command}
    return ParentRun(bundle, checkpoint, config, card)


def bundle_weights(bundle: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    """A bundle's weights read back from its graph (batch norms folded into the convolutions), the graph
    checked against its card as scan checks it: a replaced graph was averaged into a soup (or trained on)
    under the card's name and checksum, and a cut-off or missing one ended in a protobuf traceback."""
    centre = None if card.synthetic is None else 1 / card.crop_policy.scale  # pooling only: weights load alike
    net = DeepfakeNet(card.architecture, card.input_size, pretrained=False, synthetic_center=centre)
    return load_onnx_weights(net, checked_graph(bundle, card)).state_dict()


def check_init_path(config: TrainConfig) -> None:
    """model.init, when set, names a checkpoint file or a bundle folder that is there: said before the data
    is built, where a missing one was found only after the face bank (minutes to an hour)."""
    if config.model.init is not None:
        path = Path(config.model.init).expanduser()
        if not (path.is_dir() or path.is_file()):
            raise _no_init(path)


def _no_init(path: Path) -> DeepShieldError:
    return DeepShieldError(f"model.init {path} is neither a checkpoint file (a run's best.pt) nor a bundle folder")


def initial_weights(config: TrainConfig) -> dict[str, torch.Tensor]:
    """model.init's weights (a run's checkpoint or a bundle), checked to fit config.model."""
    init = config.model.init
    if init is None:
        raise DeepShieldError("model.init is not set")
    path = Path(init).expanduser()
    if path.is_dir():
        card = read_card(path)
        found, found_size, found_crop = card.architecture, card.input_size, card.crop_policy.scale
        state = bundle_weights(path, card)
    elif path.is_file():
        checkpoint = load_checkpoint(path)
        model = checkpoint_config(checkpoint, path).model
        found, found_size, found_crop = model.backbone, model.input_size, model.crop_scale
        state = checkpoint["model"]
    else:
        raise _no_init(path)
    if found != config.model.backbone:
        raise DeepShieldError(
            f"model.init {path} is a {found} network, but this run's model.backbone is {config.model.backbone}: "
            "set it to match"
        )
    # The weights are convolutions pooled globally: another input size or crop scale only moves the
    # resolution and framing they learnt, which the fine-tune then adapts to.
    if found_size != config.model.input_size:
        log.info("model.init was trained at %s px: fine-tuning it to %s px", found_size, config.model.input_size)
    if found_crop != config.model.crop_scale:
        log.info("model.init was trained at crop scale %s: fine-tuning it to %s", found_crop, config.model.crop_scale)
    return state


def mixed_with_init(net: DeepfakeNet, init_state: dict[str, torch.Tensor], share: float) -> DeepfakeNet:
    """A copy of `net` whose weights are share x init_state + (1 - share) x its own (WiSE-FT); what the
    initial weights lack (a new head) and integer counters stay as trained."""
    mixed = copy.deepcopy(net)
    state = mixed.state_dict()  # the copy's own tensors: changed in place
    with torch.no_grad():
        for key, start in init_state.items():
            if state[key].is_floating_point():
                state[key].mul_(1 - share).add_(start, alpha=share)
    return mixed
