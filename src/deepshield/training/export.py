"""From a training checkpoint to a served bundle: calibration fitted on the validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepshield.evaluation.calibration import fit_inconclusive_band, fit_temperature, fit_threshold, sigmoid
from deepshield.evaluation.metrics import detection_metrics
from deepshield.faces.crop import CropPolicy
from deepshield.models.card import Calibration, ModelCard, TrainingInfo
from deepshield.models.export import export_bundle
from deepshield.models.network import DeepfakeNet
from deepshield.training.checkpoint import load_checkpoint
from deepshield.training.config import TrainConfig


def network_from_checkpoint(checkpoint: dict) -> tuple[DeepfakeNet, TrainConfig]:
    config = TrainConfig.model_validate(checkpoint["config"])
    net = DeepfakeNet(config.model.backbone, config.model.input_size, pretrained=False, dropout=config.model.dropout)
    net.load_state_dict(checkpoint["model"])
    return net.eval(), config


def export_checkpoint(checkpoint_path: Path, out_dir: Path, name: str | None = None, version: str | None = None) -> ModelCard:
    """Write a bundle from a checkpoint holding validation logits (the trainer's best.pt)."""
    checkpoint = load_checkpoint(checkpoint_path)
    net, config = network_from_checkpoint(checkpoint)
    labels = np.asarray(checkpoint["val_labels"])
    logits = np.asarray(checkpoint["val_logits"], dtype=np.float64)
    temperature = fit_temperature(labels, logits)
    probabilities = sigmoid(logits / temperature)
    threshold = fit_threshold(labels, probabilities)
    metrics = detection_metrics(labels, probabilities, threshold)
    card = ModelCard(
        name=name or config.export.name,
        version=version or config.export.version,
        architecture=config.model.backbone,
        input_size=config.model.input_size,
        crop_policy=CropPolicy(size=config.model.input_size, scale=config.model.crop_scale),
        calibration=Calibration(
            temperature=temperature,
            threshold=threshold,
            fitted_on=f"validation split ({len(labels)} faces: real + synthesised fakes, identity-disjoint)",
            inconclusive=fit_inconclusive_band(labels, probabilities, threshold),
        ),
        training=TrainingInfo(
            data=[str(p) for p in config.data.real_dirs] + [f"prepared dataset {p}" for p in config.data.datasets],
            command=checkpoint.get("command", ""),
            config=config.model_dump(mode="json"),
            epochs=int(checkpoint["epoch"]) + 1,
            seed=config.seed,
        ),
        metrics={f"val_{k}": round(float(v), 4) for k, v in metrics.model_dump().items() if k not in ("count", "positives", "threshold")},
        intended_use=config.export.intended_use,
        license=config.export.license,
    )
    export_bundle(net, card, out_dir)
    return card
